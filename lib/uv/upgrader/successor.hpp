#pragma once
// The next generation, from the moment it exists to the moment this process lets go of it: a
// child this process started (SIGUSR2) or a process that took the listeners through the
// hand-over socket, watched until it is ready, exits or runs out of time; then, once it has taken
// over, watched while this process drains (a successor that dies without handing over or stopping
// on purpose is a rollback after takeover); and every process this one killed, reaped once its
// exit is known, never waited for on the loop.
#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <list>
#include <optional>
#include <string>

#include "../handle.hpp"
#include "grace/readiness.hpp"

namespace grace::uv::detail {

class successor_watch {
 public:
  struct hooks {
    // The pending process settled. `kill_reason` says why when this side killed it (empty when
    // it exited, or closed its readiness socket, on its own).
    std::function<void(upgrade_outcome, pending_child, const std::string& kill_reason)> settled;
    // The successor exited after it took over; `retired` when it said it stopped on purpose.
    std::function<void(pid_t pid, int status, bool retired)> successor_exited;
    // The successor watch's time has passed.
    std::function<void()> watch_over;
  };
  successor_watch(uv_loop_t* loop, std::chrono::milliseconds ready_timeout, std::chrono::milliseconds watch_time,
                  hooks h);
  // A process still pending is killed and reaped (blocking: the loop is over); a successor is
  // left running.
  ~successor_watch();
  successor_watch(const successor_watch&) = delete;
  successor_watch& operator=(const successor_watch&) = delete;

  // Watches `p` until it settles. It settles before this returns when it is ready or gone
  // already, or cannot be watched (no handle could be made: it is killed).
  void wait_for(pending_child p);
  bool has_pending() const noexcept { return pending_.has_value(); }
  // Its pid; 0 when none, or when it runs in a pid namespace this one cannot see.
  pid_t pending() const noexcept { return pending_ ? pending_->pid() : 0; }
  // Kills the pending process and settles it now (timed_out), for `reason`.
  void kill_pending(const std::string& reason);
  // Watches the process that took over while this one drains, and for the successor watch's
  // time at least.
  void watch(pending_child successor);
  bool watch_time_left() const noexcept { return static_cast<bool>(watch_timer_); }
  // This process is done: the successor is left running, unwatched.
  void let_go();
  // Reaps `p` once its exit is known, then runs `on_reaped`.
  void reap_later(pending_child p, std::function<void(const pending_child&)> on_reaped);

 private:
  struct reaping {
    successor_watch* owner;
    pending_child child;
    std::function<void(const pending_child&)> on_reaped;
    owned_handle<uv_poll_t> exit_poll;  // last: lets go of the pidfd before the child closes it
  };
  void on_pending_event();
  void settle(upgrade_outcome outcome);
  void on_successor_event();
  static void on_reapable(uv_poll_t* p, int status, int events);

  uv_loop_t* loop_;
  std::chrono::milliseconds ready_timeout_;
  std::chrono::milliseconds watch_time_;
  hooks hooks_;
  std::optional<pending_child> pending_;
  std::string kill_reason_;  // why the pending process was killed, if this side killed it
  std::optional<pending_child> successor_;
  std::list<reaping> reaping_;
  // Declared after what they watch: they let go of the fds first.
  owned_handle<uv_poll_t> ready_poll_, exit_poll_, successor_poll_;
  owned_handle<uv_timer_t> ready_timer_, watch_timer_;
};

}  // namespace grace::uv::detail
