#include "event_log.hpp"

#include <unistd.h>

#include "grace/log.hpp"
#include "rules.hpp"

namespace grace::uv::detail {
namespace {

constexpr int exit_log_flush_ms = 1000;
// How long after ready() the start-up's deferred work waits: the log's and the pid file's threads
// would otherwise start ahead of the first answers this generation owes the connections queued
// while it started (grace-bench-restart measures what they cost there).
constexpr uint64_t start_up_quiet_ms = 10;
// Log lines held meanwhile, at most; past that they all go out, in order, and holding ends.
constexpr std::size_t held_limit = 256;

}  // namespace

event_log::event_log(uv_loop_t* loop, std::function<void(const event&)> on_event, unsigned generation)
    : loop_(loop), on_event_(std::move(on_event)), generation_(generation) {}

event_log::~event_log() {
  quiet_timer_.reset();
  // Destroyed before its start-up was over (ready() failed, say): what it held says why.
  const bool held_lines = !held_.empty();
  end_start_up();
  if (held_lines) flush_stderr_log(exit_log_flush_ms);
}

void event_log::write(event_kind kind, std::string message, pid_t child, std::size_t count) {
  const event e{kind, std::move(message), child, count};
  if (on_event_) return on_event_(e);
  std::string line = log_line(e, getpid(), generation_);
  if (holding_ && held_.size() >= held_limit) end_start_up();
  if (holding_) held_.push_back(std::move(line));
  else log_to_stderr(std::move(line));
}

void event_log::end_start_up() {
  holding_ = false;
  std::vector<std::string> lines;
  lines.swap(held_);
  for (auto& line : lines) log_to_stderr(std::move(line));
}

void event_log::end_start_up_soon(std::function<void()> after) {
  if (quiet_timer_) return;
  after_start_up_ = std::move(after);
  if (!start_timer(quiet_timer_, loop_, this, on_quiet, start_up_quiet_ms, 0, "log timer")) {
    end_start_up();
    if (auto then = std::exchange(after_start_up_, nullptr)) then();
    return;
  }
  // run() releases the log at its end: the timer keeps no loop alive.
  uv_unref(reinterpret_cast<uv_handle_t*>(quiet_timer_.get()));
}

void event_log::on_quiet(uv_timer_t* t) {
  auto* self = static_cast<event_log*>(t->data);
  self->quiet_timer_.reset();
  self->end_start_up();
  if (auto then = std::exchange(self->after_start_up_, nullptr)) then();
}

void event_log::flush() {
  end_start_up();
  if (!on_event_) flush_stderr_log(exit_log_flush_ms);
}

}  // namespace grace::uv::detail
