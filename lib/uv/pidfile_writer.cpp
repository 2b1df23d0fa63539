#include "pidfile_writer.hpp"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>

#include "grace/pidfile.hpp"

namespace grace::uv::detail {

struct pidfile_writer::shared {
  std::mutex mutex;
  std::condition_variable asked;
  std::string path;
  pid_t next = 0;        // to write next; 0: nothing
  bool writing = false;
  bool abandoned = false;  // the writer is gone: finish what is under way and stop
  std::deque<std::pair<pid_t, std::string>> results;  // not yet delivered on the loop
  uv_async_t* done = nullptr;  // null once abandoned

  void run() {
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      asked.wait(lock, [&] { return next != 0 || abandoned; });
      if (next == 0) return;  // abandoned, nothing left
      const pid_t pid = std::exchange(next, 0);
      writing = true;
      lock.unlock();
      auto written = write_pidfile(path, pid);
      lock.lock();
      writing = false;
      if (abandoned) continue;
      results.emplace_back(pid, written ? std::string() : written.error().message());
      uv_async_send(done);
    }
  }
};

pidfile_writer::pidfile_writer(uv_loop_t* loop, std::string path,
                               std::function<void(pid_t, const std::string&)> on_result)
    : shared_(std::make_shared<shared>()), on_result_(std::move(on_result)) {
  shared_->path = std::move(path);
  const int rc = done_.init([&](uv_async_t* a) {
    return uv_async_init(loop, a, [](uv_async_t* woken) { static_cast<pidfile_writer*>(woken->data)->deliver(); });
  }, this);
  if (rc != 0) {
    // Nothing could tell the loop a write finished: every write reports why instead.
    started_ = true;
    no_thread_ = "pid file " + shared_->path + ": cannot watch its writing thread: " + uv_strerror(rc);
    return;
  }
  // It keeps the loop alive only while a write is under way (as a queued work request did).
  uv_unref(reinterpret_cast<uv_handle_t*>(done_.get()));
  shared_->done = done_.get();
}

void pidfile_writer::start() {
  if (std::exchange(started_, true)) return;
  try {
    std::thread([state = shared_] { state->run(); }).detach();
  } catch (const std::system_error& e) {
    // No thread: every write reports why, and nothing waits for one.
    shared_->abandoned = true;
    shared_->done = nullptr;
    no_thread_ = "pid file " + shared_->path + ": cannot start its writing thread: " + e.what();
  }
}

pidfile_writer::~pidfile_writer() {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  shared_->abandoned = true;
  shared_->done = nullptr;
  shared_->asked.notify_one();
}

bool pidfile_writer::idle() const noexcept {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  return shared_->next == 0 && !shared_->writing && shared_->results.empty();
}

void pidfile_writer::write(pid_t pid) {
  start();
  if (!no_thread_.empty()) {
    if (on_result_) on_result_(pid, no_thread_);
    return;
  }
  uv_ref(reinterpret_cast<uv_handle_t*>(done_.get()));
  std::lock_guard<std::mutex> lock(shared_->mutex);
  shared_->next = pid;
  shared_->asked.notify_one();
}

void pidfile_writer::deliver() {
  std::deque<std::pair<pid_t, std::string>> results;
  {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    results.swap(shared_->results);
    if (shared_->next == 0 && !shared_->writing) uv_unref(reinterpret_cast<uv_handle_t*>(done_.get()));
  }
  // The callback may destroy this writer: nothing of it is touched once the first one runs.
  const auto callback = on_result_;
  if (!callback) return;
  for (const auto& [pid, failure] : results) callback(pid, failure);
}

}  // namespace grace::uv::detail
