#pragma once
// Runs the command with the sockets, and again and again: when it exits (backing off after fast
// failures), on SIGHUP, on `grace-listen --reload`, and when a watched path changes. The sockets
// stay open throughout.
//
// Each run of the command is a generation, known by the pid that stands for it (the process
// started, or the one it names with MAINPID=). Without --overlap a restart stops the generation
// and then starts the next. With --overlap the next one starts beside the serving one; it serves
// once it says READY=1 on its NOTIFY_SOCKET (or after --ready-after), and only then is the old
// one told to stop (SIGTERM) and left to drain; one that exits or is not ready within
// --ready-timeout is stopped and the old one serves on (a rollback). grace-listen also reaps
// every orphan (it is a child subreaper, or PID 1), and speaks for the service to its own service
// manager (READY=1, RELOADING=1, STOPPING=1).
#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "options.hpp"

namespace grace_listen {

struct held_socket {
  int fd;
  std::string name;
  std::string shown;  // "tcp 127.0.0.1:8080"
};

class notify_inbox;
class control_server;
class path_watch;

class supervisor {
 public:
  supervisor(uv_loop_t* loop, const options& o, std::vector<held_socket> sockets, notify_inbox& inbox);
  ~supervisor();
  // Runs until the command exits after SIGTERM/SIGINT; returns its exit status (128+N for a
  // signal), as a shell would.
  int run();

 private:
  struct generation;
  struct handles;
  using clock_type = std::chrono::steady_clock;

  // What starts generations.
  void start(const std::string& reason, bool beside_serving);
  void restart(const std::string& reason, std::optional<unsigned> waiter);  // SIGHUP, --reload, --watch
  void upgrade(const std::string& reason);  // --overlap: the next generation beside the serving one
  std::string upgrade_refusal() const;
  void start_after_exit(int64_t status, int signal, bool status_known, clock_type::duration ran);
  void stop(int signal);

  // What happens to them.
  void became_ready(generation& g, const std::string& how);
  void on_ready_timeout(generation& g);
  void roll_back(generation& g, const std::string& why);
  void retire(generation& g, int signal);
  void on_exit(generation& g, int64_t status, int signal, bool status_known);
  void reap_children();
  void on_notifications();
  void on_pidfd(generation& g);
  void watch_pid(generation& g);
  void forget(generation& g);
  void settle_waiters(bool ok, const std::string& line);
  void after_upgrade_settled();
  void finish();

  generation* find(pid_t pid) const;
  generation* current() const;  // the newest generation that is not retiring (serving or starting)
  std::string describe(const generation& g) const;
  void tell_manager(const std::string& state);

  uv_loop_t* loop_;
  options options_;
  std::vector<held_socket> sockets_;
  notify_inbox& inbox_;
  std::vector<std::unique_ptr<generation>> generations_;
  generation* serving_ = nullptr;
  generation* candidate_ = nullptr;  // --overlap: started beside serving_, not ready yet
  generation* restarting_ = nullptr;  // without --overlap: stopped to be started again
  unsigned next_number_ = 1;
  bool stopping_ = false;
  int stop_signal_ = 0;
  int exit_status_ = 0;
  std::string restart_reason_;  // without --overlap: what starts the next one once restarting_ exits
  std::string deferred_change_;  // a --watch change that came during an upgrade
  unsigned fast_failures_ = 0;
  std::string pending_reason_;  // for the backoff and debounce timers
  std::vector<unsigned> waiters_;  // --reload requests waiting for the next generation to serve
  std::string unsent_;             // a notification the service manager could not take yet
  std::unique_ptr<control_server> control_;
  std::vector<std::unique_ptr<path_watch>> watches_;
  std::unique_ptr<handles> handles_;
};

}  // namespace grace_listen
