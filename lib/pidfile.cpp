#include "pidfile.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

namespace grace::detail {

result<void> write_pidfile(const std::string& path, pid_t pid) {
  const std::string temp = path + ".tmp." + std::to_string(getpid());
  const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fail_errno(errno, "pid file " + temp);
  const std::string text = std::to_string(pid) + "\n";
  const bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const int err = errno;
  close(fd);
  if (!written) {
    unlink(temp.c_str());
    return fail_errno(err, "pid file " + temp);
  }
  if (rename(temp.c_str(), path.c_str()) != 0) {
    const int rename_err = errno;
    unlink(temp.c_str());
    return fail_errno(rename_err, "pid file " + path);
  }
  return {};
}

}  // namespace grace::detail
