#pragma once
// The upgrader's events: to the application's on_event, or by default one line each on stderr.
// The default log holds its lines from start-up until shortly after ready(): a new generation's
// first job is to answer the connections queued while it started, and the log's writing thread
// would start ahead of them. Held lines go out in order, together, when the window ends, when too
// many are held, or when the process ends first.
#include <sys/types.h>
#include <uv.h>

#include <functional>
#include <string>
#include <vector>

#include "../handle.hpp"
#include "grace/uv/upgrader_options.hpp"

namespace grace::uv::detail {

class event_log {
 public:
  event_log(uv_loop_t* loop, std::function<void(const event&)> on_event, unsigned generation);
  ~event_log();  // what is still held goes out, and the process waits (bounded) for stderr
  event_log(const event_log&) = delete;
  event_log& operator=(const event_log&) = delete;

  void write(event_kind kind, std::string message, pid_t child = 0, std::size_t count = 0);
  // Ends the start-up window shortly from now, then runs `after` (the start-up's deferred work).
  // When no timer can be made the window ends now, and `after` runs now.
  void end_start_up_soon(std::function<void()> after);
  // Ends it now: held lines go out.
  void end_start_up();
  bool ending_soon() const noexcept { return static_cast<bool>(quiet_timer_); }
  // At the end of run(): what is held goes out, and the default log reaches stderr (bounded).
  void flush();

 private:
  static void on_quiet(uv_timer_t* t);
  uv_loop_t* loop_;
  std::function<void(const event&)> on_event_;
  unsigned generation_;
  bool holding_ = true;
  std::vector<std::string> held_;
  std::function<void()> after_start_up_;
  owned_handle<uv_timer_t> quiet_timer_;
};

}  // namespace grace::uv::detail
