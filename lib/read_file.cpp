#include "read_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace grace::detail {

std::optional<std::string> read_small_file(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string content;
  char buffer[4096];
  while (true) {
    const ssize_t n = read(fd, buffer, sizeof buffer);
    if (n > 0) {
      content.append(buffer, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    close(fd);
    if (n < 0) return std::nullopt;
    return content;
  }
}

bool process_has_exited(int pid) {
  if (pid <= 0) return true;
  const auto stat = read_small_file("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  const auto paren = stat->rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat->size()) return true;
  const char state = (*stat)[paren + 2];
  return state == 'Z' || state == 'X';
}

}  // namespace grace::detail
