#pragma once
// The server under test: started by us (and stopped by us, every generation) or attached to;
// its main pid followed through the pid file or through the pids its answers name.
#include <sys/types.h>
#include <uv.h>

#include <set>
#include <string>

#include "grace/error.hpp"
#include "harness.hpp"

namespace harness {

class server_control {
 public:
  server_control(uv_loop_t* loop, const options& o);
  // Starts the server command (if any); its output goes to `log_path`.
  grace::result<void> start(const std::string& log_path);
  pid_t main_pid();                    // current main pid, from the pid file when there is one
  void saw_pid(pid_t pid);             // a pid named by an answer: one of the server's processes
  // The same, without taking it for the main pid (udp-session, whose referee follows the new
  // generation itself: a socket holder such as grace-listen stays the main pid).
  void saw_process(pid_t pid) {
    if (pid > 0) known_.insert(pid);
  }
  // The main pid is now `pid` (the old main process is gone); a pid file still has the last word.
  void follow(pid_t pid) {
    if (pid > 0 && options_.pidfile.empty()) last_main_ = pid;
  }
  // Sends the restart signal, or starts --restart-cmd.
  grace::result<void> trigger_restart();
  bool restart_command_running() const noexcept { return command_running_; }
  // Stops every process of the server that we started (SIGTERM, then SIGKILL after `grace_s`);
  // calls `done` once they are all gone. Does nothing to an attached server.
  void stop_all(double grace_s, std::function<void()> done);
  bool started_by_us() const noexcept { return !options_.server_command.empty(); }
  bool first_exited() const noexcept { return first_exited_; }
  std::int64_t first_exit_status() const noexcept { return first_status_; }

 private:
  uv_loop_t* loop_;
  const options& options_;
  uv_process_t process_{};
  uv_process_t command_{};
  bool command_running_ = false;
  bool first_exited_ = false;
  std::int64_t first_status_ = 0;
  pid_t first_pid_ = 0;
  pid_t last_main_ = 0;
  std::set<pid_t> known_;
  uv_timer_t stop_timer_{};
  std::function<void()> on_stopped_;
  std::uint64_t stop_deadline_us_ = 0;
  bool killed_ = false;
};

}  // namespace harness
