#pragma once
// The upgrader's default log: lines go to a bounded buffer that a background thread writes to
// stderr, so a stderr nobody reads (a full pipe, journald pushing back) never blocks the event
// loop. When the buffer is full, lines are dropped and counted; the count is written as soon as
// there is room again.
#include <cstddef>
#include <string>

namespace grace::uv::detail {

// Queues one line (without its '\n'). Never blocks on stderr.
void stderr_log(std::string line);
// Waits up to `timeout_ms` for the queued lines to be written (at exit); true when all were.
bool stderr_log_flush(int timeout_ms);
// Lines dropped so far because the buffer was full.
std::size_t stderr_log_dropped();

}  // namespace grace::uv::detail
