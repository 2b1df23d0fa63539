#include "fd_table.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <vector>

namespace grace::detail {
namespace {

// Open fds below `table`, from the entries of /proc/thread-self/fd (the calling thread's fd table,
// which /proc/self/fd is not once the main thread has exited or after unshare(CLONE_FILES)): the
// cost follows the open fds, not the limit. -1 without /proc, with no fd free to read it with, or
// when the listing is not of this table (the directory's own fd is not in it).
long open_fd_count_from_proc(std::size_t table) noexcept {
  int dir = ::open("/proc/thread-self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0 && errno == ENOENT) dir = ::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);  // before 3.17
  if (dir < 0) return -1;
  alignas(8) char buffer[8192];
  long entries = 0;
  bool saw_own_fd = false;  // the directory's own fd was listed
  while (true) {
    const long got = ::syscall(SYS_getdents64, dir, buffer, sizeof buffer);
    if (got < 0) {
      ::close(dir);
      return -1;
    }
    if (got == 0) break;
    for (long at = 0; at < got;) {
      unsigned short length;
      std::memcpy(&length, buffer + at + offsetof(struct dirent64, d_reclen), sizeof length);
      const char* name = buffer + at + offsetof(struct dirent64, d_name);
      at += length;
      if (name[0] < '0' || name[0] > '9') continue;  // "." and ".."
      // An fd at or above the limit (opened before the limit was lowered) takes no entry below it.
      std::size_t fd = 0;
      for (const char* d = name; *d >= '0' && *d <= '9' && fd < table; ++d) fd = fd * 10 + static_cast<std::size_t>(*d - '0');
      if (fd >= table) continue;
      ++entries;
      if (fd == static_cast<std::size_t>(dir)) saw_own_fd = true;
    }
  }
  ::close(dir);
  if (!saw_own_fd) return -1;  // not the table this fd was opened in
  return entries - 1;         // the directory's own fd is not one of ours
}

// Closed entries answer POLLNVAL: one poll() over the whole table.
std::size_t free_fd_count_by_poll(std::size_t table) noexcept {
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

}  // namespace

std::size_t free_fd_count() noexcept {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return SIZE_MAX;
  // Counting a table of millions costs more than it tells: room is not what such a table lacks.
  constexpr rlim_t counted_at_most = 65536;
  if (limit.rlim_cur > counted_at_most) return SIZE_MAX;
  const auto table = static_cast<std::size_t>(limit.rlim_cur);
  const long open = open_fd_count_from_proc(table);
  if (open >= 0) return table - static_cast<std::size_t>(open);
  return free_fd_count_by_poll(table);  // no /proc, or not one fd free to open it with
}

}  // namespace grace::detail
