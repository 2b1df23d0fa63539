#pragma once
// This process's fd table: how much of it is free.
#include <cstddef>
#include <cstdint>

namespace grace::detail {

// Free entries below RLIMIT_NOFILE's soft limit: the limit less the open fds below it, listed in
// /proc/thread-self/fd; without /proc, one poll() over the table (a closed entry answers POLLNVAL).
// SIZE_MAX for a table too large to be worth counting (over 65,536 entries) or without a limit.
std::size_t free_fd_count() noexcept;

}  // namespace grace::detail
