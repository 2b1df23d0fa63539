#pragma once
// Who is in charge of the service: the pid file names it, and the service manager tracks it as
// MAINPID. Every hand-over moves the charge twice over, and both of its sides must say so, or the
// next SIGUSR2 sent to the pid file's pid finds a process that is gone.
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "grace/export.hpp"

namespace grace {

// "MAINPID=<pid>\nREADY=1", what the service manager is told when `pid` takes charge.
GRACE_API std::string charge_notification(pid_t pid);

struct charge_options {
  std::string pidfile;  // empty: no pid file
  // true: give() also tells the service manager (NOTIFY_SOCKET) charge_notification(pid), from the
  // keeper's thread after the pid file is written, retrying while the manager's queue is full
  // (for 10 s at most; a newer give() ends the retries). false: the caller sends
  // charge_notification(pid) its own way (grace::uv::upgrader merges it with its other
  // notifications).
  bool notify = true;
};

// Whoever is in charge of the service. Both sides of every hand-over go through give():
//   - a new generation whose notify_ready() says first_start or parent_gone is in charge alone:
//     give(getpid());
//   - an old generation whose child is ready (upgrade_outcome::ready) hands over: give(child),
//     then stops accepting and drains; it exits only once idle(), or the pid file would go on
//     naming it after it is gone;
//   - an old generation that serves again because its successor died (a rollback after takeover,
//     pending_child::successor_exit() says it did not retire on purpose): give(getpid()).
// A generation that told its parent (told_parent) writes nothing: its parent does, for it.
//
// give() never blocks the calling thread: the writes happen on a thread of the keeper's own, so a
// hung file system stalls that thread, never the server. Writes happen one at a time, in order; a
// pid asked for while one is being written is written next (only the newest waits). The thread
// starts at start() or the first give(), whichever comes first, so that a new generation can
// start it once it serves rather than ahead of its first answers. A keeper with nothing to do (no
// pid file, and notify false or no NOTIFY_SOCKET) starts no thread.
class GRACE_API charge_keeper {
 public:
  explicit charge_keeper(charge_options options);
  // A write under way finishes on its thread, as does the one asked for last; their results are
  // dropped. Never blocks on the file system.
  ~charge_keeper();
  charge_keeper(const charge_keeper&) = delete;
  charge_keeper& operator=(const charge_keeper&) = delete;

  void start();  // starts the thread now; idempotent
  void give(pid_t pid);
  // Readable (an eventfd) when a hand-over has been written or failures wait: watch it in your
  // loop and call collect(). -1 when no eventfd could be made (collect() says why).
  int fd() const noexcept;
  // Failures since the last call, one line each ("pid file /run/x.pid: ..."), empty when all went
  // well. Clears fd()'s readiness.
  std::vector<std::string> collect();
  // Nothing being written, nothing waiting to be written, no failure waiting for collect(): a
  // process that gave charge away may exit.
  bool idle() const noexcept;

 private:
  struct shared;  // between the caller and the keeper's thread, which may outlive the keeper
  std::shared_ptr<shared> shared_;
};

}  // namespace grace
