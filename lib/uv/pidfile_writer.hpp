#pragma once
// Pid file writes off the event loop, on a thread of the writer's own: a hung file system stalls
// that thread, never the server. It is not libuv's thread pool because that pool starts four
// threads at its first use, which for a generation is the moment it hands over: the one moment a
// restart must cost nothing. The thread starts at start() or the first write, whichever comes
// first, so that a new generation can start it once it has taken over (a thread costs 50-100 us
// of CPU here, ahead of its first answers otherwise). Writes happen one at a time in order; a pid
// asked for while one is being written is written next (only the newest waits).
#include <uv.h>

#include <functional>
#include <memory>
#include <string>

#include "handle.hpp"

namespace grace::uv::detail {

class pidfile_writer {
 public:
  // `on_result` runs on the loop after each write, with an empty message on success.
  pidfile_writer(uv_loop_t* loop, std::string path, std::function<void(pid_t, const std::string&)> on_result);
  ~pidfile_writer();  // a write in progress finishes on its thread; its result is dropped
  pidfile_writer(const pidfile_writer&) = delete;
  pidfile_writer& operator=(const pidfile_writer&) = delete;

  void start();  // idempotent
  void write(pid_t pid);
  bool idle() const noexcept;

 private:
  struct shared;  // between the loop and the writing thread, which may outlive this writer
  void deliver();
  std::shared_ptr<shared> shared_;
  owned_handle<uv_async_t> done_;
  std::function<void(pid_t, const std::string&)> on_result_;
  bool started_ = false;
  std::string no_thread_;  // why writes cannot happen, when the thread could not start
};

}  // namespace grace::uv::detail
