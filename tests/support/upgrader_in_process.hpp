#pragma once
// The upgrader in this process, for the tests that drive it without signals: a loop, a net with
// one listener on 127.0.0.1, and the events recorded.
#include <fcntl.h>
#include <unistd.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <doctest/doctest.h>

#include "grace/grace.hpp"
#include "grace/uv/upgrader.hpp"

namespace test_support {

// A loop, a net with one listener on 127.0.0.1, and an upgrader without signal handlers whose
// events are recorded. At the end every handle the upgrader made must be closed.
class in_process {
 public:
  explicit in_process(grace::uv::upgrader_options options = {}, grace::listen_options listen = {}) {
    REQUIRE(uv_loop_init(&loop_) == 0);
    net_ = std::make_unique<grace::net>();
    auto l = net_->listen_tcp("tcp", "127.0.0.1:0", listen);
    REQUIRE(l);
    listener_ = *l;
    options.handle_signals = false;
    options.on_event = [this](const grace::uv::event& e) { events.push_back(e); };
    upgrader_ = std::make_unique<grace::uv::upgrader>(&loop_, *net_, options);
  }
  ~in_process() {
    upgrader_.reset();
    net_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop_) == 0);
  }

  grace::uv::upgrader& upgrader() { return *upgrader_; }
  grace::listener* listener() { return listener_; }
  int port() const { return listener_->local_address().port(); }

  // Runs the loop until `done()` or `ms` have passed; true when done.
  bool run_until(const std::function<bool()>& done, std::uint64_t ms) {
    uv_timer_t deadline;
    uv_timer_init(&loop_, &deadline);
    bool expired = false;
    deadline.data = &expired;
    uv_timer_start(&deadline, [](uv_timer_t* t) { *static_cast<bool*>(t->data) = true; }, ms, 0);
    while (!done() && !expired) uv_run(&loop_, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&deadline), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    return done();
  }

  std::vector<grace::uv::event> events;

 private:
  uv_loop_t loop_{};
  std::unique_ptr<grace::net> net_;
  grace::listener* listener_ = nullptr;
  std::unique_ptr<grace::uv::upgrader> upgrader_;
};

// Opens /dev/null until the fd table is full; the fds, for release().
inline std::vector<int> fill_fd_table() {
  std::vector<int> fillers;
  for (int fd; (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) fillers.push_back(fd);
  return fillers;
}

inline void release(const std::vector<int>& fds) {
  for (int fd : fds) close(fd);
}

}  // namespace test_support
