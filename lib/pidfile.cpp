#include "grace/pidfile.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <sys/random.h>
#include <unistd.h>

#include "failure.hpp"

namespace grace {
namespace {

std::string random_suffix() {
  unsigned char bytes[8] = {};
  if (getrandom(bytes, sizeof bytes, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof bytes)) {
    // No entropy yet (early boot): O_EXCL still refuses a planted file; the name is only less
    // surprising to an attacker.
    const auto mix = static_cast<unsigned long long>(getpid()) * 0x9e3779b97f4a7c15ULL ^
                     reinterpret_cast<std::uintptr_t>(&bytes);
    for (unsigned i = 0; i < sizeof bytes; ++i) bytes[i] = static_cast<unsigned char>(mix >> (8 * i));
  }
  static const char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

}  // namespace

result<void> write_pidfile(const std::string& path, pid_t pid) {
  if (path.empty()) return detail::fail(errc::invalid_argument, "pid file: empty path");
  int fd = -1;
  std::string temp;
  for (int attempt = 0; attempt < 8 && fd < 0; ++attempt) {
    temp = path + ".tmp-" + random_suffix();
    fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) return detail::fail_errno(errno, "pid file " + temp);
  const std::string text = std::to_string(pid) + "\n";
  ssize_t written;
  do written = write(fd, text.data(), text.size());
  while (written < 0 && errno == EINTR);
  const int err = written < 0 ? errno : EIO;
  close(fd);
  if (written != static_cast<ssize_t>(text.size())) {
    unlink(temp.c_str());
    return detail::fail_errno(err, "pid file " + temp);
  }
  // rename() replaces a symlink at `path` itself; it never writes through one.
  if (rename(temp.c_str(), path.c_str()) != 0) {
    const int rename_err = errno;
    unlink(temp.c_str());
    return detail::fail_errno(rename_err, "pid file " + path);
  }
  return {};
}

}  // namespace grace
