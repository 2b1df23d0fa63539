#pragma once
// Starts the next generation off the loop's thread: clone and exec stop the thread that calls
// them until the child has exec'd, and on the loop that is a pause every client in flight waits
// through (the CHANGELOG has the figures).
#include <uv.h>

#include <functional>
#include <memory>

#include "grace/net.hpp"
#include "grace/readiness.hpp"

namespace grace::uv::detail {

class child_starter {
 public:
  using done_fn = std::function<void(result<pending_child>)>;
  // `done` runs on `loop`'s thread with what each start() gave.
  child_starter(uv_loop_t* loop, done_fn done);
  // A start still under way is abandoned: its child, if one was started, is killed and reaped on
  // the thread that started it.
  ~child_starter();
  child_starter(const child_starter&) = delete;
  child_starter& operator=(const child_starter&) = delete;

  // pending_child::start(n, options, max_generations) on a helper thread (on this one when no
  // thread is to be had); `done` gets the result on a later turn of the loop. One at a time: the
  // caller asks busy() first.
  void start(grace::net& n, process_options options, unsigned max_generations);
  bool busy() const noexcept { return busy_; }

 private:
  struct shared;
  static void on_async(uv_async_t* async);
  void deliver();

  done_fn done_;
  bool busy_ = false;
  std::shared_ptr<shared> shared_;
};

}  // namespace grace::uv::detail
