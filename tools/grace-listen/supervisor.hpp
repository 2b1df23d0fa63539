#pragma once
// Runs the command with the sockets, and again and again: when it exits (backing off after fast
// failures), on SIGHUP, and when a watched path changes. The sockets stay open throughout.
#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "options.hpp"

namespace grace_listen {

struct held_socket {
  int fd;
  std::string name;
  std::string shown;  // "tcp 127.0.0.1:8080"
};

class supervisor {
 public:
  supervisor(uv_loop_t* loop, const options& o, std::vector<held_socket> sockets);
  ~supervisor();
  // Runs until the command exits after SIGTERM/SIGINT; returns its exit status (128+N for a
  // signal), as a shell would.
  int run();

 private:
  void start(const std::string& reason);
  void on_exit(int64_t status, int signal);
  void restart(const std::string& reason);
  void stop(int signal);

  uv_loop_t* loop_;
  options options_;
  std::vector<held_socket> sockets_;
  void on_pidfd();
  pid_t child_ = 0;
  int pid_fd_ = -1;
  uv_poll_t* exit_poll_ = nullptr;  // watches pid_fd_; freed by its close callback
  bool running_ = false;
  bool stopping_ = false;
  int exit_status_ = 0;
  std::string restart_reason_;  // set while the command is being stopped to start again
  std::chrono::steady_clock::time_point started_at_;
  unsigned fast_failures_ = 0;
  std::string pending_reason_;  // for the backoff and debounce timers
  struct handles;
  std::unique_ptr<handles> handles_;
};

}  // namespace grace_listen
