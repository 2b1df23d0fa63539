#include "fd_table.hpp"

#include <poll.h>
#include <sys/resource.h>

#include <vector>

namespace grace::detail {

std::size_t free_fd_count() noexcept {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return SIZE_MAX;
  // Counting a table of millions costs more than it tells: room is not what such a table lacks.
  constexpr rlim_t counted_at_most = 65536;
  if (limit.rlim_cur > counted_at_most) return SIZE_MAX;
  const auto table = static_cast<std::size_t>(limit.rlim_cur);
  try {
    std::vector<pollfd> entries(table);
    for (std::size_t i = 0; i < table; ++i) entries[i] = pollfd{static_cast<int>(i), 0, 0};
    if (poll(entries.data(), entries.size(), 0) < 0) return 0;
    std::size_t free_entries = 0;
    for (const auto& e : entries)
      if (e.revents & POLLNVAL) ++free_entries;
    return free_entries;
  } catch (...) {
    return 0;  // no memory to count with: no room either
  }
}

}  // namespace grace::detail
