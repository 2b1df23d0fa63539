#pragma once
// The readiness hand-shake between two generations. The old process starts the new one with a
// pipe (GRACE_READY_FD, after the listeners, not counted in LISTEN_FDS) and a pidfd on it; the
// new one opens its listeners, initialises, and calls notify_ready(). Only then may the old
// process stop accepting. If the new one exits first, or takes too long, the old one kills and
// reaps it and carries on serving exactly as before.
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <system_error>

#include <tl/expected.hpp>

#include "grace/net.hpp"

namespace grace {

// Child side. Writes to GRACE_READY_FD once, closes it and unsets the variable. Without
// GRACE_READY_FD (a first start, or a start by systemd) there is nobody to tell: success.
// A malformed GRACE_READY_FD is errc::malformed_environment.
tl::expected<void, std::error_code> notify_ready();

enum class upgrade_outcome {
  ready,      // the child called notify_ready()
  exited,     // the child exited (or closed the pipe) before it was ready; it has been reaped
  timed_out,  // the child was not ready in time; it has been killed and reaped
};

// Parent side: one started generation awaiting readiness. Blocking users call wait();
// event-loop users watch ready_fd() and pid_fd() for readability, call check() when either
// fires, and give_up() when their own timer expires.
class pending_child {
 public:
  static tl::expected<pending_child, std::error_code> start(net& n, process_options options = {});
  pending_child(pending_child&& other) noexcept;
  pending_child& operator=(pending_child&&) = delete;
  pending_child(const pending_child&) = delete;
  ~pending_child();  // a child still pending is killed and reaped: it never outlives a rollback

  pid_t pid() const noexcept { return pid_; }
  int ready_fd() const noexcept { return ready_fd_; }
  int pid_fd() const noexcept { return pid_fd_; }

  // Non-blocking: the outcome once there is one.
  std::optional<upgrade_outcome> check();
  // Blocks until the outcome; past `timeout` the child is killed and reaped (timed_out).
  upgrade_outcome wait(std::chrono::milliseconds timeout);
  // Kills and reaps a child that is still pending (timed_out); otherwise the outcome it had.
  upgrade_outcome give_up();
  // waitpid status of a child that exited or was killed; -1 while it runs or once it is ready.
  int exit_status() const noexcept { return status_; }

 private:
  pending_child(pid_t pid, int ready_fd, int pid_fd) : pid_(pid), ready_fd_(ready_fd), pid_fd_(pid_fd) {}
  void close_fds() noexcept;

  pid_t pid_ = -1;
  int ready_fd_ = -1;
  int pid_fd_ = -1;
  std::optional<upgrade_outcome> outcome_;
  int status_ = -1;
};

}  // namespace grace
