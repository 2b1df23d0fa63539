#pragma once
// A log for servers that must never block on stderr: lines go to a bounded buffer (256 KiB)
// that a background thread writes to stderr. A stderr nobody reads (a full pipe, journald
// pushing back) drops lines, counts them, and says how many once it can write again; the
// caller never waits. grace::uv::upgrader's default log uses it.
#include <cstddef>
#include <string>

#include "grace/export.hpp"

namespace grace {

// Queues one line (without its '\n').
GRACE_API void log_to_stderr(std::string line);
// Waits up to `timeout_ms` for the queued lines to be written (at exit); true when all were.
GRACE_API bool flush_stderr_log(int timeout_ms);
// Lines dropped so far because the buffer was full.
GRACE_API std::size_t stderr_log_dropped();

}  // namespace grace
