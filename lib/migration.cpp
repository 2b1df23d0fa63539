#include "grace/migration.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "environment_protocol.hpp"
#include "failure.hpp"
#include "readiness_socket.hpp"
#include "scm_rights.hpp"

namespace grace {
namespace {

constexpr char offer_magic[] = "GRACE-CONNECTIONS 1";
constexpr std::string_view hello_note = "grace-connections 1";

}  // namespace

bool parent_offers_connections() noexcept { return detail::startup_inheritance().parent_offers_connections; }

int parent_connection_fd() noexcept { return detail::kept_readiness_fd(); }

result<std::optional<int>> receive_connection_channel() {
  const int fd = detail::kept_readiness_fd();
  if (fd < 0) return detail::fail(errc::channel_closed, "connection channel: no readiness connection to the parent");
  char buffer[64];
  iovec iov{buffer, sizeof buffer};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t got;
  do got = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (got < 0 && errno == EINTR);
  if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return std::nullopt;
  if (got < 0) return detail::fail_errno(errno, "connection channel: read the parent's offer");
  std::vector<int> fds;
  detail::collect_fds(msg, fds);
  const bool well_formed = got == static_cast<ssize_t>(sizeof offer_magic - 1) &&
                           std::memcmp(buffer, offer_magic, sizeof offer_magic - 1) == 0 && fds.size() == 1 &&
                           !(msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC));
  if (!well_formed) {
    for (int each : fds) ::close(each);
    if (got == 0) return detail::fail(errc::channel_closed, "connection channel: the parent hung up before offering");
    if (msg.msg_flags & MSG_CTRUNC)
      return detail::fail(std::make_error_code(std::errc::too_many_files_open),
                          "connection channel: the parent's offer arrived without its socket (fd table full)");
    return detail::fail(errc::protocol_error, "connection channel: the parent sent something that is not its offer");
  }
  return fds.front();
}

result<int> offer_connection_channel(int ready_fd) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) != 0)
    return detail::fail_errno(errno, "connection channel: socketpair");
  iovec iov{const_cast<char*>(offer_magic), sizeof offer_magic - 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  detail::attach_fds(msg, control, &pair[1], 1);
  ssize_t sent;
  do sent = sendmsg(ready_fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  const int err = errno;
  ::close(pair[1]);
  if (sent < 0) {
    ::close(pair[0]);
    return detail::fail_errno(err, "connection channel: offer it to the new generation");
  }
  return pair[0];
}

outgoing_parcel connection_hello() {
  outgoing_parcel p;
  p.note = std::string(hello_note);
  return p;
}

bool is_connection_hello(const parcel& p) noexcept { return p.note == hello_note && p.fds.empty(); }

}  // namespace grace
