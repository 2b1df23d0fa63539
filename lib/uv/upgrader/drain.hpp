#pragma once
// A generation's drain: the application's drain hook (run once), a progress line each second,
// and the deadline past which what is still open is closed. Whether the drain is over is the
// facade's question to the other parts (rules.hpp, drain_complete).
#include <uv.h>

#include <chrono>
#include <functional>

#include "../handle.hpp"

namespace grace::uv::detail {

class drain {
 public:
  struct hooks {
    std::function<void()> progress;  // each second while it drains
    std::function<void()> deadline;  // the drain deadline passed
  };
  drain(uv_loop_t* loop, hooks h) : loop_(loop), hooks_(std::move(h)) {}
  drain(const drain&) = delete;
  drain& operator=(const drain&) = delete;

  void set_hook(std::function<void()> hook) { hook_ = std::move(hook); }
  // The application's drain hook, once per drain.
  void run_hook();
  // Starts the deadline and the progress lines. Without a timer there is no deadline: an error
  // that names it, for the log.
  result<void> start(std::chrono::milliseconds timeout);
  // Moves the deadline `more` from now (once it has passed); false when no timer could be made.
  bool extend(std::chrono::milliseconds more);
  // The drain is over, or called off (this process serves again): the timers stop, and a later
  // drain runs the hook again.
  void stop();

 private:
  uv_loop_t* loop_;
  hooks hooks_;
  std::function<void()> hook_;
  bool hook_ran_ = false;
  owned_handle<uv_timer_t> deadline_, progress_;
};

}  // namespace grace::uv::detail
