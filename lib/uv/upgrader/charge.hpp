#pragma once
// Who is in charge of the service, as the world outside sees it: the pid file and the service
// manager (MAINPID, READY=1, RELOADING=1, STOPPING=1, the fd store). Charge changes hands at both
// ends of a hand-over: a first start takes it; the old generation gives it to a ready child; a
// generation whose successor died after taking over takes it back. Nothing here blocks the loop:
// the pid file is written by the core's charge_keeper (grace/charge.hpp) on a thread of its own,
// started when the start-up is over or at the first write; notifications are sent without
// waiting, merged and retried (service_notifier).
#include <sys/types.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <string>

#include "../handle.hpp"
#include "grace/charge.hpp"
#include "grace/net.hpp"

namespace grace::uv::detail {

class service_notifier;

class service_charge {
 public:
  struct hooks {
    std::function<void(const std::string&)> warn;
    std::function<void()> written;  // a pid file write finished (the process may wait for it to exit)
  };
  service_charge(uv_loop_t* loop, const std::string& pidfile, hooks h);
  ~service_charge();
  service_charge(const service_charge&) = delete;
  service_charge& operator=(const service_charge&) = delete;

  // This process is in charge from its start (or its parent died before it was ready).
  void take();
  // `pid` is in charge from now: the generation this one handed over to, or this one again.
  void hand_to(pid_t pid);
  void notify(const std::string& message);
  // The start-up is over: the pid file's thread may start.
  void start_up_over();
  // No pid file write is under way or waiting.
  bool idle();
  // Keeps the listeners of `net` in the service manager's fd store: those this generation bound
  // go in; those it was given and does not use come out, and are closed.
  void keep_listeners_in_store(grace::net& net);
  // At exit: whatever is still unsent is reported and forgotten.
  void abandon();

 private:
  void give(pid_t pid);
  void on_written();

  std::function<void(const std::string&)> warn_;
  std::function<void()> written_;
  std::unique_ptr<service_notifier> notifier_;
  std::unique_ptr<grace::charge_keeper> pidfile_;  // null without a pid file
  owned_handle<uv_poll_t> written_poll_;           // the keeper's fd: a write finished
};

}  // namespace grace::uv::detail
