#pragma once
#include <sys/types.h>

#include <string>

#include "failure.hpp"

namespace grace::detail {

// Writes "PID\n" to a temporary file beside `path` and renames it over `path`, so that a reader
// sees the old pid or the new one, never a torn or empty file.
result<void> write_pidfile(const std::string& path, pid_t pid);

}  // namespace grace::detail
