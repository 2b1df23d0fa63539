#include "grace/uv/worker_group.hpp"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "../failure.hpp"

namespace grace::uv {
namespace {

thread_local int current_worker = -1;
constexpr unsigned max_workers = 256;

}  // namespace

struct worker_group::worker {
  unsigned index = 0;
  uv_loop_t loop{};
  uv_async_t wake{};
  std::mutex mutex;
  std::deque<std::function<void()>> tasks;
  bool stopping = false;
  std::thread thread;

  // On the worker's thread: everything posted so far, in order.
  void drain_tasks() {
    for (;;) {
      std::deque<std::function<void()>> batch;
      bool stop = false;
      {
        std::lock_guard<std::mutex> lock(mutex);
        batch.swap(tasks);
        stop = stopping;
      }
      for (auto& task : batch) task();
      if (batch.empty()) {
        if (stop) close_everything();
        return;
      }
    }
  }

  void close_everything() {
    uv_walk(&loop, [](uv_handle_t* h, void*) {
      if (!uv_is_closing(h)) uv_close(h, nullptr);
    }, nullptr);
  }

  void main() {
    current_worker = static_cast<int>(index);
    uv_run(&loop, UV_RUN_DEFAULT);
    // Close callbacks of handles freed by their owners' last tasks.
    uv_run(&loop, UV_RUN_NOWAIT);
  }
};

worker_group::worker_group() = default;

result<std::unique_ptr<worker_group>> worker_group::start(unsigned count) {
  if (count == 0 || count > max_workers)
    return grace::detail::fail(errc::invalid_argument, "worker_group: " + std::to_string(count) +
                                                           " workers asked for (expected 1 to 256)");
  std::unique_ptr<worker_group> group(new worker_group());
  group->workers_.reset(new worker[count]);
  for (unsigned k = 0; k < count; ++k) {
    worker& w = group->workers_[k];
    w.index = k;
    if (const int rc = uv_loop_init(&w.loop); rc != 0)
      return grace::detail::fail(std::error_code(-rc, std::system_category()),
                                 "worker_group: loop " + std::to_string(k) + ": " + uv_strerror(rc));
    if (const int rc = uv_async_init(&w.loop, &w.wake, [](uv_async_t* a) { static_cast<worker*>(a->data)->drain_tasks(); });
        rc != 0) {
      uv_loop_close(&w.loop);
      return grace::detail::fail(std::error_code(-rc, std::system_category()),
                                 "worker_group: loop " + std::to_string(k) + ": wake-up handle: " + uv_strerror(rc));
    }
    w.wake.data = &w;
    try {
      w.thread = std::thread([&w] { w.main(); });
    } catch (const std::system_error& e) {
      uv_close(reinterpret_cast<uv_handle_t*>(&w.wake), nullptr);
      uv_run(&w.loop, UV_RUN_NOWAIT);
      uv_loop_close(&w.loop);
      group->count_ = k;  // the destructor stops those already running
      return grace::detail::fail(e.code(), "worker_group: thread " + std::to_string(k) + ": " + e.what());
    }
    group->count_ = k + 1;
  }
  return group;
}

worker_group::~worker_group() {
  for (unsigned k = 0; k < count_; ++k) {
    worker& w = workers_[k];
    {
      std::lock_guard<std::mutex> lock(w.mutex);
      w.stopping = true;
    }
    uv_async_send(&w.wake);
  }
  for (unsigned k = 0; k < count_; ++k) {
    worker& w = workers_[k];
    if (w.thread.joinable()) w.thread.join();
    uv_loop_close(&w.loop);
  }
}

unsigned worker_group::size() const noexcept { return count_; }

uv_loop_t* worker_group::loop(unsigned k) const noexcept { return k < count_ ? &workers_[k].loop : nullptr; }

bool worker_group::post(unsigned k, std::function<void()> fn) {
  if (k >= count_) return false;
  worker& w = workers_[k];
  {
    std::lock_guard<std::mutex> lock(w.mutex);
    if (w.stopping) return false;
    w.tasks.push_back(std::move(fn));
  }
  uv_async_send(&w.wake);
  return true;
}

bool worker_group::run(unsigned k, const std::function<void()>& fn) {
  if (k >= count_) return false;
  if (current_worker == static_cast<int>(k)) {
    fn();
    return true;
  }
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  const bool posted = post(k, [&] {
    fn();
    std::lock_guard<std::mutex> lock(m);
    done = true;
    cv.notify_one();
  });
  if (!posted) return false;
  std::unique_lock<std::mutex> lock(m);
  cv.wait(lock, [&] { return done; });
  return true;
}

int worker_group::current() noexcept { return current_worker; }

std::vector<std::pair<grace::listener*, unsigned>> place_group(const listener_group& group, unsigned workers) {
  std::vector<std::pair<grace::listener*, unsigned>> out;
  if (group.members.empty() || group.steered == 0 || workers == 0) return out;
  const auto steered = static_cast<unsigned>(group.steered);
  for (unsigned k = 0; k < workers; ++k) out.emplace_back(group.members[k % steered], k);
  for (std::size_t j = 0; j < group.members.size(); ++j)
    if (j >= workers || j >= steered) out.emplace_back(group.members[j], static_cast<unsigned>(j % workers));
  return out;
}

}  // namespace grace::uv
