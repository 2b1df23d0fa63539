#include "drain.hpp"

namespace grace::uv::detail {

void drain::run_hook() {
  if (!hook_ || hook_ran_) return;
  hook_ran_ = true;
  hook_();
}

result<void> drain::start(std::chrono::milliseconds timeout) {
  auto progress = start_timer(
      progress_, loop_, this, [](uv_timer_t* t) { static_cast<drain*>(t->data)->hooks_.progress(); }, 1000, 1000,
      "drain progress timer");
  auto deadline = start_timer(
      deadline_, loop_, this, [](uv_timer_t* t) { static_cast<drain*>(t->data)->hooks_.deadline(); },
      static_cast<uint64_t>(timeout.count()), 0, "drain deadline timer: no deadline");
  if (!deadline) return deadline;
  return progress;
}

bool drain::extend(std::chrono::milliseconds more) {
  return static_cast<bool>(start_timer(
      deadline_, loop_, this, [](uv_timer_t* t) { static_cast<drain*>(t->data)->hooks_.deadline(); },
      static_cast<uint64_t>(more.count()), 0, "drain deadline timer"));
}

void drain::stop() {
  hook_ran_ = false;
  deadline_.reset();
  progress_.reset();
}

}  // namespace grace::uv::detail
