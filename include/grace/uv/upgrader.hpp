#pragma once
// The zero-downtime upgrade lifecycle for a libuv server, in one object:
//
//   SIGUSR2 (or upgrade())  -> start the next generation with every listener and a readiness pipe
//   child calls ready()     -> the parent stops accepting, drains, and run() returns 0
//   child dies / times out  -> the child is killed and reaped, the parent serves on as before
//   SIGTERM / SIGINT        -> stop accepting, drain, return; a second SIGTERM closes everything now
//
// with systemd notifications (NOTIFY_SOCKET), an optional pid file, and every event reported
// to a log callback.
#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <tl/expected.hpp>

#include "grace/net.hpp"
#include "grace/readiness.hpp"
#include "grace/uv/server.hpp"

namespace grace::uv {

enum class event_kind {
  serving,           // this generation serves (after ready())
  upgrade_started,   // a child was started
  upgrade_refused,   // an upgrade was asked for but not started (why in message)
  child_ready,       // the child took over; this process drains next
  rollback,          // the child failed (why in message); this process serves on
  draining,          // stopped accepting; count = connections still open
  drain_progress,    // count = connections still open
  forced_close,      // the drain deadline passed; count = connections closed by force
  exiting,           // drained; run() returns
  warning,           // something failed that did not stop the lifecycle (pid file, notify)
};

struct event {
  event_kind kind;
  std::string message;  // one line a person can read
  pid_t child = 0;      // for upgrade events
  std::size_t count = 0;
};

struct upgrader_options {
  std::chrono::milliseconds ready_timeout{60000};
  std::chrono::milliseconds drain_timeout{30000};
  // Processes of this service alive at once, the one being started included. Older generations
  // still draining count, so long-lived connections cannot pile up generations without bound.
  unsigned max_generations = 4;
  std::string pidfile;          // rewritten atomically when a generation takes charge
  bool handle_signals = true;   // SIGUSR2, SIGTERM, SIGINT
  process_options process;      // how the next generation is started
  std::function<void(const event&)> log;  // default: one line on stderr
};

class upgrader {
 public:
  upgrader(uv_loop_t* loop, grace::net& net, upgrader_options options = {});
  ~upgrader();
  upgrader(const upgrader&) = delete;
  upgrader& operator=(const upgrader&) = delete;

  // Serves a listener of `net` on the loop; its connections count for the drain.
  tl::expected<server*, std::error_code> serve(grace::listener* l, server::accept_callback on_accept);
  // Runs once, when this process starts draining: the application's chance to finish work
  // (an HTTP server answers the next request on each connection with "Connection: close").
  void on_drain(std::function<void()> hook);
  // This generation is ready: tells the parent that started it, or (first start) systemd
  // READY=1 and the pid file. Call after opening every listener and initialising.
  tl::expected<void, std::error_code> ready();

  void upgrade();   // what SIGUSR2 does
  void shutdown();  // what SIGTERM does
  // Runs the loop until this process has drained; returns the exit status (0).
  int run();

  unsigned generation() const noexcept { return generation_; }
  bool draining() const noexcept { return state_ == state::draining; }
  bool upgrading() const noexcept { return pending_.has_value(); }
  std::size_t connection_count() const noexcept;

 private:
  enum class state { starting, serving, draining, done };
  void log(event_kind kind, std::string message, pid_t child = 0, std::size_t count = 0);
  void watch_child();
  void on_child_event();
  void settle(upgrade_outcome outcome);
  void stop_accepting();
  void begin_drain(const std::string& why);
  void check_drained();
  void finish();
  void notify(const std::string& state);
  void close_handle(uv_handle_t* h);

  uv_loop_t* loop_;
  grace::net& net_;
  upgrader_options options_;
  unsigned generation_ = 1;
  std::string ancestors_;  // GRACE_ANCESTORS: older generations, possibly still draining
  state state_ = state::starting;
  std::vector<std::unique_ptr<server>> servers_;
  std::function<void()> drain_hook_;
  std::optional<pending_child> pending_;
  pid_t pending_pid_ = 0;
  bool terminate_requested_ = false;
  bool drain_hook_ran_ = false;

  uv_signal_t* usr2_ = nullptr;
  uv_signal_t* term_ = nullptr;
  uv_signal_t* int_ = nullptr;
  uv_poll_t* ready_poll_ = nullptr;
  uv_poll_t* exit_poll_ = nullptr;
  uv_timer_t* ready_timer_ = nullptr;
  uv_timer_t* drain_timer_ = nullptr;
  uv_timer_t* progress_timer_ = nullptr;
};

}  // namespace grace::uv
