#include "child_starter.hpp"

#include <condition_variable>
#include <mutex>
#include <optional>

#include "../helper_thread.hpp"

namespace grace::uv::detail {

// Between the loop and the starting thread, which may outlive the starter.
struct child_starter::shared {
  std::mutex mutex;
  std::condition_variable finished_now;
  bool running = false;         // a thread is starting a child: it uses the net until it is done
  uv_async_t* async = nullptr;  // null once the starter is gone: the result is dropped
  std::optional<result<pending_child>> started;
};

child_starter::child_starter(uv_loop_t* loop, done_fn done)
    : done_(std::move(done)), shared_(std::make_shared<shared>()) {
  auto* async = new uv_async_t{};
  if (uv_async_init(loop, async, on_async) != 0) {
    delete async;
    return;  // start() then runs on the loop and delivers at once
  }
  async->data = this;
  // An idle starter must not keep the loop alive.
  uv_unref(reinterpret_cast<uv_handle_t*>(async));
  shared_->async = async;
}

child_starter::~child_starter() {
  uv_async_t* async = nullptr;
  {
    // The net it starts from may go with us: a start under way (a few ms at most) ends first.
    std::unique_lock<std::mutex> lock(shared_->mutex);
    async = std::exchange(shared_->async, nullptr);
    shared_->finished_now.wait(lock, [&] { return !shared_->running; });
  }
  if (async != nullptr)
    uv_close(reinterpret_cast<uv_handle_t*>(async), [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
}

void child_starter::start(grace::net& n, process_options options, unsigned max_generations) {
  busy_ = true;
  if (shared_->async != nullptr) {
    // While it runs, the loop is kept alive for its result.
    uv_ref(reinterpret_cast<uv_handle_t*>(shared_->async));
    auto work = [s = shared_, &n, options, max_generations]() mutable {
      auto started = pending_child::start(n, std::move(options), max_generations);
      std::unique_lock<std::mutex> lock(s->mutex);
      if (s->async != nullptr) {
        s->started.emplace(std::move(started));
        uv_async_send(s->async);
      } else {
        // Abandoned: its child is killed and reaped here, before the starter may go.
        lock.unlock();
        { auto dropped = std::move(started); }
        lock.lock();
      }
      s->running = false;
      s->finished_now.notify_all();
    };
    {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      shared_->running = true;
    }
    bool threaded = false;
    try {
      threaded = grace::detail::start_helper_thread(work);
    } catch (const std::bad_alloc&) {
    }
    if (threaded) return;
    {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      shared_->running = false;
    }
    uv_unref(reinterpret_cast<uv_handle_t*>(shared_->async));
  }
  // One CPU, or no thread to be had: here, as before there was a helper.
  auto here = pending_child::start(n, std::move(options), max_generations);
  busy_ = false;
  done_(std::move(here));
}

void child_starter::on_async(uv_async_t* async) { static_cast<child_starter*>(async->data)->deliver(); }

void child_starter::deliver() {
  std::optional<result<pending_child>> got;
  {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    if (shared_->started) got.emplace(std::move(*shared_->started));
    shared_->started.reset();
  }
  if (!got) return;
  uv_unref(reinterpret_cast<uv_handle_t*>(shared_->async));
  busy_ = false;
  done_(std::move(*got));
}

}  // namespace grace::uv::detail
