#pragma once
// One owner for a libuv handle: allocated here, closed and freed through uv_close when the
// owner lets go, so no code keeps a hand-written list of handles to close.
#include <uv.h>

#include <cstdint>
#include <string>
#include <system_error>
#include <utility>

#include "grace/error.hpp"

namespace grace::uv::detail {

template <typename Handle>
class owned_handle {
 public:
  owned_handle() = default;
  ~owned_handle() { reset(); }
  owned_handle(const owned_handle&) = delete;
  owned_handle& operator=(const owned_handle&) = delete;
  owned_handle(owned_handle&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  owned_handle& operator=(owned_handle&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }

  // Allocates the handle and runs `init` (uv_timer_init, uv_poll_init, ...) on it; a libuv
  // error code when that fails, and then nothing is held.
  template <typename Init>
  [[nodiscard]] int init(Init&& initialise, void* data) {
    reset();
    auto* h = new Handle{};
    if (const int rc = initialise(h); rc != 0) {
      delete h;
      return rc;
    }
    reinterpret_cast<uv_handle_t*>(h)->data = data;
    handle_ = h;
    return 0;
  }

  // Closes the handle; libuv frees it on its next turn.
  void reset() noexcept {
    if (handle_ == nullptr) return;
    auto* h = reinterpret_cast<uv_handle_t*>(std::exchange(handle_, nullptr));
    if (!uv_is_closing(h)) uv_close(h, [](uv_handle_t* closed) { delete reinterpret_cast<Handle*>(closed); });
  }

  Handle* get() const noexcept { return handle_; }
  explicit operator bool() const noexcept { return handle_ != nullptr; }

 private:
  Handle* handle_ = nullptr;
};

// A libuv error as a grace error: "WHAT: <libuv's words>".
inline result<void> uv_result(int rc, const std::string& what) {
  if (rc == 0) return {};
  return tl::unexpected(error(std::error_code(-rc, std::system_category()), what + ": " + uv_strerror(rc)));
}

// A one-shot (repeat 0) or repeating timer on `loop`, `data` in its handle; nothing is held when
// it could not be made. The error names `what`.
inline result<void> start_timer(owned_handle<uv_timer_t>& h, uv_loop_t* loop, void* data, uv_timer_cb cb,
                                std::uint64_t timeout_ms, std::uint64_t repeat_ms, const std::string& what) {
  if (auto made = uv_result(h.init([&](uv_timer_t* t) { return uv_timer_init(loop, t); }, data), what); !made)
    return made;
  if (auto started = uv_result(uv_timer_start(h.get(), cb, timeout_ms, repeat_ms), what); !started) {
    h.reset();
    return started;
  }
  return {};
}

// A poll of `fd` for `events` on `loop`; nothing is held when it could not be made.
inline result<void> start_poll(owned_handle<uv_poll_t>& h, uv_loop_t* loop, int fd, void* data, int events,
                               uv_poll_cb cb, const std::string& what) {
  if (auto made = uv_result(h.init([&](uv_poll_t* p) { return uv_poll_init(loop, p, fd); }, data), what); !made)
    return made;
  if (auto started = uv_result(uv_poll_start(h.get(), events, cb), what); !started) {
    h.reset();
    return started;
  }
  return {};
}

}  // namespace grace::uv::detail
