#include "grace/log.hpp"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace grace {
namespace {

constexpr std::size_t buffer_limit = 256 * 1024;

struct writer {
  std::mutex mutex;
  std::condition_variable wake;     // lines to write
  std::condition_variable written;  // the buffer emptied
  std::deque<std::string> lines;
  std::size_t bytes = 0;
  std::size_t dropped = 0;          // not yet reported
  std::size_t dropped_total = 0;
  bool writing = false;
  bool started = false;

  void run() {
    std::unique_lock<std::mutex> lock(mutex);
    while (true) {
      wake.wait(lock, [&] { return !lines.empty() || dropped > 0; });
      std::string text;
      if (dropped > 0) {
        text = "grace: " + std::to_string(dropped) + " log line(s) dropped: stderr was not being read\n";
        dropped = 0;
      }
      while (!lines.empty()) {
        text += lines.front();
        text += '\n';
        bytes -= lines.front().size();
        lines.pop_front();
      }
      writing = true;
      lock.unlock();
      write_all(text);
      lock.lock();
      writing = false;
      if (lines.empty()) written.notify_all();
    }
  }

  static void write_all(const std::string& text) {
    std::size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = ::write(STDERR_FILENO, text.data() + done, text.size() - done);
      if (n > 0) done += static_cast<std::size_t>(n);
      else if (n < 0 && errno == EINTR) continue;
      else return;  // stderr closed or broken: nothing more to do with these lines
    }
  }
};

// Never destroyed: the thread may still be blocked in write() when the process exits.
writer& the_writer() {
  static writer* w = new writer;
  return *w;
}

}  // namespace

void log_to_stderr(std::string line) {
  writer& w = the_writer();
  std::lock_guard<std::mutex> lock(w.mutex);
  if (!w.started) {
    w.started = true;
    std::thread([&w] { w.run(); }).detach();
  }
  if (w.bytes + line.size() > buffer_limit) {
    ++w.dropped;
    ++w.dropped_total;
    return;
  }
  w.bytes += line.size();
  w.lines.push_back(std::move(line));
  w.wake.notify_one();
}

bool flush_stderr_log(int timeout_ms) {
  writer& w = the_writer();
  std::unique_lock<std::mutex> lock(w.mutex);
  return w.written.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                            [&] { return w.lines.empty() && !w.writing && w.dropped == 0; });
}

std::size_t stderr_log_dropped() {
  writer& w = the_writer();
  std::lock_guard<std::mutex> lock(w.mutex);
  return w.dropped_total;
}

}  // namespace grace
