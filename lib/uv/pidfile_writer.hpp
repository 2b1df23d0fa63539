#pragma once
// Pid file writes off the event loop, on libuv's thread pool: a hung file system stalls a worker
// thread, never the server. Writes happen one at a time in order; a pid asked for while one is
// being written is written next (only the newest waits).
#include <uv.h>

#include <functional>
#include <string>

namespace grace::uv::detail {

class pidfile_writer {
 public:
  // `on_result` runs on the loop after each write, with an empty message on success.
  pidfile_writer(uv_loop_t* loop, std::string path, std::function<void(pid_t, const std::string&)> on_result);
  ~pidfile_writer();  // a write in progress finishes on its thread; its result is dropped
  pidfile_writer(const pidfile_writer&) = delete;
  pidfile_writer& operator=(const pidfile_writer&) = delete;

  void write(pid_t pid);
  bool idle() const noexcept;

 private:
  struct job;
  void start(pid_t pid);
  uv_loop_t* loop_;
  std::string path_;
  std::function<void(pid_t, const std::string&)> on_result_;
  job* running_ = nullptr;
  pid_t next_ = 0;
};

}  // namespace grace::uv::detail
