#pragma once
// One owner for a libuv handle: allocated here, closed and freed through uv_close when the
// owner lets go, so no code keeps a hand-written list of handles to close.
#include <uv.h>

#include <utility>

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
  int init(Init&& initialise, void* data) {
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

}  // namespace grace::uv::detail
