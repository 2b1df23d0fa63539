#pragma once
// Reading a small file (mostly under /proc) with plain system calls. iostreams are no good
// here: libstdc++ throws from a read that fails, and reading /proc/PID/stat of a process that
// exits meanwhile fails with ESRCH; no exception may leave grace, nor crash a server.
#include <optional>
#include <string>

namespace grace::detail {

// The whole file, or nullopt when it cannot be opened or read.
std::optional<std::string> read_small_file(const std::string& path);

}  // namespace grace::detail
