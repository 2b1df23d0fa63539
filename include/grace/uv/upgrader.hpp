#pragma once
// The zero-downtime upgrade lifecycle for a libuv server, in one object:
//
//   SIGUSR2 (or upgrade())  -> start the next generation with every listener and a readiness socket
//   a process connects to the hand-over socket -> it gets every listener (grace/takeover.hpp)
//                              and is then watched as a child started by SIGUSR2 would be
//   child calls ready()     -> the parent stops accepting, drains, and run() returns 0
//   child dies / times out  -> the child is killed and reaped, the parent serves on as before
//   child dies after ready  -> while the parent still drains, it accepts again and takes charge
//   parent dies first       -> the child takes charge by itself (pid file, MAINPID, READY=1)
//   SIGTERM / SIGINT        -> stop accepting, drain, return; a second SIGTERM closes everything now
//   SIGHUP                  -> the application's reload hook; without one, logged and ignored
//
// with systemd notifications (NOTIFY_SOCKET), an optional pid file, and every event reported
// to a log callback.
//
// Nothing here blocks the loop: notifications are sent without waiting (and retried), the
// default log is written by a background thread, the pid file is written on libuv's thread
// pool, the next generation is started (clone, exec) on a helper thread, and children are
// reaped only once their exit is known. The calls that may block are said so below.
#include <sys/types.h>
#include <uv.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "grace/error.hpp"
#include "grace/export.hpp"
#include "grace/fd_channel.hpp"
#include "grace/net.hpp"
#include "grace/readiness.hpp"
#include "grace/uv/server.hpp"
#include "grace/uv/worker_group.hpp"

namespace grace::uv {

namespace detail {
class service_notifier;
class pidfile_writer;
class takeover_server;
class child_starter;
struct migration_state;
struct handed_connection;
template <typename Handle>
class owned_handle;
}  // namespace detail

enum class event_kind {
  serving,           // this generation serves (after ready())
  took_charge,       // the parent died before this generation was ready: in charge alone
  upgrade_started,   // a child was started
  upgrade_refused,   // an upgrade was asked for but not started (why in message)
  child_ready,       // the child took over; this process drains next
  rollback,          // the child failed (why in message); this process serves on
  rollback_after_takeover,  // the child took over, then died while this process drained: serving again
  draining,          // stopped accepting; count = connections still open
  drain_progress,    // count = connections still open
  forced_close,      // the drain deadline passed; count = connections closed by force
  exiting,           // drained; run() returns
  reload,            // SIGHUP
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
  // After handing over, this process keeps its listening sockets (not accepting) and watches the
  // new generation while it drains, and at least this long: if the new one dies meanwhile
  // without having handed over or stopped on purpose, this one serves again. 0: only while it
  // drains, which under load ends within milliseconds. A release that may crash on its first
  // requests wants a few seconds here; the old process then lingers that long (and counts
  // towards max_generations).
  std::chrono::milliseconds successor_watch{0};
  // Processes of this service alive at once, the one being started included (at least 2).
  // Older generations still draining count, so long-lived connections cannot pile up
  // generations without bound.
  unsigned max_generations = 4;
  std::string pidfile;          // rewritten atomically when a generation takes charge
  // A unix socket path (or "@name") on which this process hands its listeners to a process
  // started independently that calls net::take_over() with the same path, with the same
  // guarantees as SIGUSR2: rollback, one takeover at a time, the generation cap, pid file,
  // MAINPID. Opened by ready(): taken over or inherited when the previous generation had it,
  // else bound fresh (0600, in a directory only this user may write to). Empty: none.
  std::string handover_socket;
  // Who may take over through it: by default processes of this effective uid only.
  channel_options handover_peers;
  // With a service manager (NOTIFY_SOCKET): keep the listeners in its fd store (FDSTORE=1), so
  // that starting the whole service again (a crash and Restart=, or systemctl restart with
  // FileDescriptorStorePreserve=) gives them back in LISTEN_FDS, and their accept queues survive
  // even a cold restart. Each generation stores, at ready(), the listeners it bound itself,
  // named by their listener name (or "grace-" and their address), and takes out of the store
  // (FDSTOREREMOVE=1) and closes those it was given but does not use. Needs
  // FileDescriptorStoreMax= and NotifyAccess=all in the unit.
  bool fd_store = false;
  bool handle_signals = true;   // SIGUSR2, SIGTERM, SIGINT, SIGHUP
  process_options process;      // how the next generation is started
  // Runs on the loop thread and must not block. Default: one line on stderr, written by a
  // background thread from a bounded buffer (lines are dropped and counted if stderr is stuck).
  std::function<void(const event&)> log;
};

class GRACE_API upgrader {
 public:
  upgrader(uv_loop_t* loop, grace::net& net, upgrader_options options = {});
  ~upgrader();
  upgrader(const upgrader&) = delete;
  upgrader& operator=(const upgrader&) = delete;

  // Serves a listener of `net` on the loop; its connections count for the drain.
  [[nodiscard]] result<server*> serve(grace::listener* l, server::accept_callback on_accept);
  // Serves it on worker k of `workers` instead: the server lives on that worker's loop, and its
  // accept, connection, export and import callbacks run on that worker's thread. Serve one
  // listener on several workers (one shared socket) or each member of a listener_group on its
  // own (SO_REUSEPORT); every member of a group must be served. Blocks until the worker has
  // opened the server; the group must outlive this upgrader. The drain, reload and resume
  // hooks still run on this upgrader's loop: the application tells its workers itself.
  [[nodiscard]] result<server*> serve(grace::listener* l, server::accept_callback on_accept, worker_group& workers,
                                      unsigned worker);
  // Serves every member of `group` (net::listen_group) on `workers`: with one steered socket,
  // every worker accepts from it; with a group, worker k takes member k (modulo the steered
  // members when there are fewer of them than workers). Members past `steered`, inherited from a
  // generation that ran more workers, are served by the workers in turn, so that what queued on
  // them is accepted. The servers, in the order they were opened.
  [[nodiscard]] result<std::vector<server*>> serve(const listener_group& group, server::accept_callback on_accept,
                                                   worker_group& workers);
  // The application serves on worker threads with handles of its own (UDP sockets): run() then
  // returns only once this process has drained, even with nothing left on this loop.
  void serving_elsewhere();
  // Runs once, when this process starts draining: the application's chance to finish work
  // (an HTTP server answers the next request on each connection with "Connection: close").
  void on_drain(std::function<void()> hook);
  // Runs on SIGHUP (reload the configuration, reopen logs). Without a hook SIGHUP is logged and
  // ignored: it never stops the service.
  void on_reload(std::function<void()> hook);
  // Runs when this process serves again after a rollback after takeover: the drain hook's undo
  // (an HTTP server stops answering with "Connection: close").
  void on_resume(std::function<void()> hook);

  // Connection migration (grace/migration.hpp). With both hooks set, a hand-over (SIGUSR2 or a
  // takeover) moves this generation's idle connections to the new one, which serves them on the
  // same TCP connection: no connection is closed, and this process exits as soon as its busy
  // connections have finished and moved too. The drain hook then runs only if the new
  // generation does not take connections.
  //
  // Old side, once the new generation takes connections: for each open connection, stop
  // reading from it and return the bytes the next generation needs to go on (the application's
  // state and input read but not consumed); nullopt keeps it here (busy: hand it over later with
  // migrate(), or let it end).
  void on_export(std::function<std::optional<std::string>(connection&)> hook);
  // New side: a connection handed over with its bytes; set it up and read from it. Also runs in
  // the old process for a connection whose move failed (the new generation died): it stays.
  void on_import(std::function<void(connection&, std::string)> hook);
  // A newer generation takes connections now. Thread-safe.
  bool can_migrate() const noexcept;
  // Moves `c` (no write in flight) to the newer generation with `state`; call it on the thread of
  // the loop `c` is served on. False when none takes connections (the caller ends it its own
  // way). `c` is closed at once (on_closed runs) while a copy of its socket travels: the
  // application must not touch `c` afterwards. If the new generation cannot take it, it comes
  // back as a new connection through the import hook, on the same loop.
  bool migrate(connection& c, std::string bytes);
  // This generation is ready: tells the parent that started it, or (first start, or a parent
  // that died meanwhile) takes charge itself: pid file and READY=1/MAINPID. Call after opening
  // every listener and initialising. Errors: the options are out of range, or GRACE_READY_FD was
  // malformed.
  [[nodiscard]] result<void> ready();

  // What SIGUSR2 does. Returns at once: the next generation is started on a helper thread, and
  // its outcome (an upgrade_started or a rollback event) comes on a later turn of the loop.
  void upgrade();
  void shutdown();  // what SIGTERM does
  void reload();    // what SIGHUP does
  // Runs the loop until this process has drained; returns the exit status (0). At the end it
  // waits up to 1 s for the default log to reach stderr.
  int run();

  unsigned generation() const noexcept { return generation_; }
  bool draining() const noexcept { return state_ == state::draining; }
  // From SIGUSR2 (or a takeover) until the new generation is ready or rolled back.
  bool upgrading() const noexcept;
  // Thread-safe.
  std::size_t connection_count() const noexcept;

 private:
  enum class state { starting, serving, draining, exiting, done };
  struct handles;
  struct reaping;
  struct served;
  // Runs fn on the thread of the loop `s` is served on: here at once, or posted to its worker
  // (counted in worker_tasks_ until it has run).
  void on_loop_of(served& s, std::function<void(server&)> fn);
  served* served_by(const server* s);
  void on_wake();
  void wake() noexcept;
  void log(event_kind kind, std::string message, pid_t child = 0, std::size_t count = 0);
  void release_held_log();
  void after_start_up();  // shortly after ready(): what start-up deferred
  void notify(const std::string& message);
  void write_pidfile(pid_t pid);
  void take_charge();
  result<void> open_handover_socket();
  void keep_listeners_in_fd_store();
  void adopt_taker(pid_t pid, int ready_fd);
  std::optional<std::string> cannot_hand_over() const;
  void on_started(result<pending_child> child);  // the next generation, started off the loop
  void watch_child();
  // Connection migration, old side (upgrader_migration.cpp).
  void offer_connections(const pending_child& successor);
  void on_outbound(result<parcel> p);
  void export_all();
  void export_from(server& s);
  void report_exports();
  void queue_migration(int fd, std::string bytes, server* from);
  void give_back(int fd, std::string bytes, server* from);
  void flush_migrations();
  void stop_migrating(const std::string& why, bool give_back);
  // New side.
  void watch_parent_offer();
  void on_parent_offer();
  void on_inbound(result<parcel> p);
  void on_child_event();
  void settle(upgrade_outcome outcome);
  void watch_successor(pending_child successor);
  void on_successor_event();
  void resume_after_takeover(pid_t successor, int status);
  void reap_later(pending_child child, std::function<void(const pending_child&)> on_reaped);
  static void on_reapable(uv_poll_t* p, int status, int events);
  void stop_accepting();
  void close_listeners();
  void begin_drain(const std::string& why, bool defer_hook = false);
  void run_drain_hook();
  void check_drained();
  void finish();
  void maybe_stop();

  uv_loop_t* loop_;
  grace::net& net_;
  upgrader_options options_;
  std::optional<error> options_error_;
  unsigned generation_ = 1;
  state state_ = state::starting;
  std::vector<served> servers_;
  std::thread::id loop_thread_;
  // Work posted to workers and not run yet: a drain is over only when every worker has stopped.
  std::atomic<int> worker_tasks_{0};
  // Connections between migrate() and the new generation's ack (or their return here).
  std::atomic<std::size_t> moving_{0};
  std::atomic<bool> migration_open_{false};
  std::mutex inbox_mutex_;
  std::vector<detail::handed_connection> inbox_;  // connections migrated on workers, for this loop to send
  std::atomic<int> exports_running_{0};
  std::atomic<std::size_t> exported_{0};
  std::atomic<std::size_t> kept_{0};  // busy when the exports ran: they finish here first
  bool export_report_due_ = false;
  std::vector<grace::listener*> served_;  // in net_, closed there when this process stops for good
  std::function<void()> drain_hook_;
  std::function<void()> reload_hook_;
  std::function<void()> resume_hook_;
  std::optional<pending_child> successor_;  // took over; watched while this process drains
  std::optional<pending_child> pending_;
  std::unique_ptr<detail::child_starter> starter_;  // busy from SIGUSR2 until pending_ is set
  pid_t pending_pid_ = 0;
  std::string pending_kill_reason_;  // why a pending child was killed, if it was
  std::list<reaping> reaping_;       // killed children whose exit is not known yet
  bool terminate_requested_ = false;
  bool drain_hook_ran_ = false;
  std::unique_ptr<handles> handles_;
  std::unique_ptr<detail::service_notifier> notifier_;
  std::unique_ptr<detail::pidfile_writer> pidfile_;
  // The default log's lines until shortly after ready(), written together then.
  bool holding_log_ = true;
  std::vector<std::string> held_log_;
  grace::listener* handover_ = nullptr;  // in net_
  std::unique_ptr<detail::takeover_server> takeover_;
  std::function<std::optional<std::string>(connection&)> export_hook_;
  std::function<void(connection&, std::string)> import_hook_;
  bool pending_offered_connections_ = false;  // the pending child was told it gets connections
  std::unique_ptr<detail::migration_state> migration_;
};

}  // namespace grace::uv
