#pragma once
// The readiness hand-shake between two generations, for any event loop. The old process starts
// the new one with a connected unix socket (GRACE_READY_FD, after the listeners and any
// process_options::extra_fds, not counted in LISTEN_FDS) and a pidfd on it; the new one opens
// its listeners, initialises, and calls notify_ready(). Only then may the old process stop
// accepting. If the new one exits first, or takes too long, the old one kills and reaps it and
// carries on serving exactly as before.
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <vector>

#include "grace/error.hpp"
#include "grace/export.hpp"
#include "grace/net.hpp"

namespace grace {

// This process's generation: 1 on a first start, n+1 in a process that generation n started.
GRACE_API unsigned generation() noexcept;
// Older generations of this service that still run (draining), from GRACE_ANCESTORS: at most 64,
// each checked against /proc (pid and start time), so a reused pid is never counted.
GRACE_API std::vector<pid_t> older_generations_alive();
// What the parent (or service manager) passed that was malformed and replaced by a safe
// default: GRACE_GENERATION, GRACE_ANCESTORS, LISTEN_FDNAMES. One line each, to be logged.
GRACE_API std::vector<std::string> inheritance_warnings();

enum class ready_outcome {
  told_parent,  // the generation that started this process now hands over to it
  first_start,  // nobody started this process as an upgrade: it is in charge from the start
  parent_gone,  // the parent died before it could be told: this process is in charge alone
};

// Child side: tells the parent once. Never blocks and never raises SIGPIPE. A GRACE_READY_FD
// that did not name the readiness socket at start-up is errc::malformed_environment. The socket
// stays open for notify_retiring().
[[nodiscard]] GRACE_API result<ready_outcome> notify_ready();
// Child side, later: this generation stops serving on purpose (it handed over to the next one,
// or was told to stop). Without this word, its parent, if still draining when this process
// exits, takes the exit for a crash and serves again. Never blocks; nothing to do without a
// parent.
GRACE_API void notify_retiring() noexcept;
// After net::take_over() from a process in another pid namespace: that process cannot name this
// one (its pid means nothing there), so this generation, once ready, writes the pid file and
// tells the service manager itself (grace::uv::upgrader does).
GRACE_API bool predecessor_out_of_sight() noexcept;

enum class upgrade_outcome {
  ready,      // the child called notify_ready()
  exited,     // the child exited (or closed its socket) before it was ready; it has been reaped
  timed_out,  // the child was not ready in time; it has been killed and reaped
};

// Parent side: one started generation awaiting readiness. Blocking users call wait();
// event-loop users watch ready_fd() and pid_fd() for readability, call check() when either
// fires, and give_up() when their own timer expires.
class GRACE_API pending_child {
 public:
  // Starts generation generation()+1 with every active listener of `n`. Refused
  // (errc::too_many_generations, naming the pids) when `max_generations` processes of this
  // service would then run at once, this one and the new one included.
  [[nodiscard]] static result<pending_child> start(net& n, process_options options = {},
                                                   unsigned max_generations = 4);
  // A process that was not started by this one (it connected to the hand-over socket and took
  // the listeners: net::take_over) and will say on `ready_fd` when it is ready. It is watched
  // through a pidfd and signalled through it, never reaped here (it is not a child), and its
  // exit status is not known (exit_status() stays -1). Takes `ready_fd`, even on failure.
  [[nodiscard]] static result<pending_child> adopt(pid_t pid, int ready_fd);
  pending_child(pending_child&& other) noexcept;
  pending_child& operator=(pending_child&&) = delete;
  pending_child(const pending_child&) = delete;
  ~pending_child();  // a child still pending is killed and reaped: it never outlives a rollback

  pid_t pid() const noexcept { return pid_; }
  int ready_fd() const noexcept { return ready_fd_; }
  int pid_fd() const noexcept { return pid_fd_; }

  // Non-blocking: the outcome once there is one. A child that exited is reaped here, never
  // waited for: its exit is already known.
  std::optional<upgrade_outcome> check();
  // Blocks until the outcome; past `timeout` the child is killed and reaped (timed_out).
  upgrade_outcome wait(std::chrono::milliseconds timeout);
  // Kills a child that is still pending (timed_out); otherwise the outcome it had. Blocks until
  // the killed child is reaped, which can take a while for a large one: event-loop users call
  // kill_pending() and then check() when pid_fd() is readable.
  upgrade_outcome give_up();
  // Sends SIGKILL to a child that is still pending and decides the outcome (timed_out); its
  // exit status arrives later through check(). Non-blocking.
  void kill_pending();
  // waitpid status of a child that exited or was killed; -1 while it runs or once it is ready.
  int exit_status() const noexcept { return status_; }
  // True once the child has been reaped (or never needs to be: it became ready).
  bool reaped() const noexcept { return reaped_; }
  // True when this object sent the child SIGKILL (a timeout, give_up(), or a child that closed
  // its readiness socket while it still ran).
  bool killed() const noexcept { return killed_; }

  // After `ready`, non-blocking, when pid_fd() is readable: nullopt while the new generation
  // runs; once it has exited (reaped here), whether it had said it was retiring on purpose
  // (notify_retiring()) before it went. A successor still running when this object is destroyed
  // is left running.
  std::optional<bool> successor_exit();

 private:
  struct GRACE_LOCAL impl;  // the library's helpers: reaping, signalling, closing
  GRACE_LOCAL pending_child(pid_t pid, int ready_fd, int pid_fd) noexcept
      : pid_(pid), ready_fd_(ready_fd), pid_fd_(pid_fd) {}

  pid_t pid_ = -1;
  int ready_fd_ = -1;
  int pid_fd_ = -1;
  std::optional<upgrade_outcome> outcome_;
  int status_ = -1;
  bool reaped_ = false;
  bool killed_ = false;
  bool own_child_ = true;  // false for an adopted process: watched through its pidfd only
};

}  // namespace grace
