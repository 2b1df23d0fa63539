#include "grace/notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <string>

#include "environment_protocol.hpp"
#include "notify_socket.hpp"
#include "printable.hpp"
#include "scm_rights.hpp"

namespace grace {

result<void> notify_service_manager(std::string_view state) { return notify_service_manager(state, {}); }

result<void> notify_service_manager(std::string_view state, const std::vector<int>& fds) {
  return detail::notify_socket_send(detail::startup_inheritance().notify_socket, state, fds);
}

namespace detail {

result<void> notify_socket_send(const std::string& path, std::string_view state, const std::vector<int>& fds) {
  if (path.empty()) return {};
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  if (path.size() >= sizeof un.sun_path || (path[0] != '/' && path[0] != '@'))
    return detail::fail(std::make_error_code(std::errc::invalid_argument),
                        "NOTIFY_SOCKET=" + detail::quoted(path) + " is not an absolute path or @name");
  std::memcpy(un.sun_path, path.data(), path.size());
  if (path[0] == '@') un.sun_path[0] = '\0';
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return detail::fail_errno(errno, "notify the service manager: socket");
  iovec iov{const_cast<char*>(state.data()), state.size()};
  msghdr msg{};
  msg.msg_name = &un;
  msg.msg_namelen = len;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  if (!fds.empty()) detail::attach_fds(msg, control.data(), fds.data(), fds.size());
  ssize_t sent;
  do sent = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (sent < 0 && errno == EINTR);
  const int err = errno;
  close(fd);
  if (sent < 0) return detail::fail_errno(err, "notify the service manager at " + path);
  return {};
}

}  // namespace detail

unsigned long long monotonic_usec() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<unsigned long long>(ts.tv_sec) * 1000000ULL +
         static_cast<unsigned long long>(ts.tv_nsec) / 1000ULL;
}

}  // namespace grace
