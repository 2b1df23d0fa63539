#include "child_starter.hpp"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>

#include "../helper_thread.hpp"

namespace grace::uv::detail {
namespace {

std::atomic<unsigned> forks{0};

// Counts fork()s into the child: a child of fork() has none of its parent's threads, and may
// even have its pid (pid 1 of a new pid namespace).
unsigned forks_so_far() {
  static const bool counted = pthread_atfork(nullptr, nullptr, [] { forks.fetch_add(1); }) == 0;
  (void)counted;  // not counted (no memory): the pid alone tells
  return forks.load();
}

}  // namespace

// Between the loop and the starting thread, which may outlive the starter.
struct child_starter::shared {
  std::mutex mutex;
  std::condition_variable finished_now;
  std::condition_variable job_given;  // the parked thread waits here
  bool running = false;         // a thread is starting a child: it uses the net until it is done
  uv_async_t* async = nullptr;  // null once the starter is gone: the result is dropped
  std::optional<result<pending_child>> started;
  // A thread of this process takes each job given here (it leaves once async is null).
  bool parked = false;
  pid_t parked_pid = 0;         // ... of this process, not its parent's before a fork()
  unsigned parked_forks = 0;
  std::function<void()> job;    // given to the parked thread

  bool has_parked_thread() const { return parked && parked_pid == getpid() && parked_forks == forks_so_far(); }
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
    shared_->job_given.notify_all();  // a parked thread leaves
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
    std::function<void()> job;
    try {
      job = [s = shared_, &n, options, max_generations]() mutable {
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
    } catch (const std::bad_alloc&) {
    }
    if (job) {
      {
        std::lock_guard<std::mutex> lock(shared_->mutex);
        shared_->running = true;
        if (shared_->has_parked_thread()) {
          shared_->job = std::move(job);
          shared_->job_given.notify_one();
          return;
        }
      }
      bool threaded = false;
      try {
        threaded = grace::detail::start_helper_thread(std::move(job));
      } catch (const std::bad_alloc&) {
      }
      if (threaded) return;
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

void child_starter::park() {
  {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    if (shared_->async == nullptr || shared_->has_parked_thread()) return;
    shared_->parked = true;
    shared_->parked_pid = getpid();
    shared_->parked_forks = forks_so_far();
  }
  bool threaded = false;
  try {
    threaded = grace::detail::start_helper_thread([s = shared_] {
      pthread_setname_np(pthread_self(), "grace-starter");
      // What admitting the next generation reads of this process, read now, off the loop.
      grace::prepare_next_generation();
      std::unique_lock<std::mutex> lock(s->mutex);
      while (true) {
        s->job_given.wait(lock, [&] { return s->job || s->async == nullptr; });
        if (s->async == nullptr) {
          if (s->job) {
            // Given as the starter went: nothing was started, nothing is run.
            s->job = nullptr;
            s->running = false;
            s->finished_now.notify_all();
          }
          break;
        }
        auto job = std::exchange(s->job, nullptr);
        lock.unlock();
        job();  // it says it is done (running = false) itself; `parked` stays: the next job is ours
        job = nullptr;
        lock.lock();
      }
      s->parked = false;
    });
  } catch (const std::bad_alloc&) {
  }
  if (threaded) return;
  std::lock_guard<std::mutex> lock(shared_->mutex);
  shared_->parked = false;  // start() makes a thread of its own, as before
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
