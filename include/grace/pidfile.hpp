#pragma once
// The pid file operators and service managers (PIDFile=) read to find the main process.
#include <sys/types.h>

#include <string>

#include "grace/error.hpp"
#include "grace/export.hpp"

namespace grace {

// Writes "PID\n" to a new file of an unpredictable name in the pid file's directory (created
// with O_EXCL | O_NOFOLLOW, so a planted symlink is never followed) and renames it over `path`:
// a reader sees the old pid or the new one, never a torn or empty file. Blocks on the file
// system: an event loop runs it on a worker thread (grace::uv::upgrader does).
[[nodiscard]] GRACE_API result<void> write_pidfile(const std::string& path, pid_t pid);

}  // namespace grace
