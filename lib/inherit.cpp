#include "inherit.hpp"

#include <sys/socket.h>

#include <atomic>

#include "environment_protocol.hpp"

namespace grace::detail {
namespace {

tl::unexpected<error> bad_fd(const std::string& source, int fd, const std::string& what) {
  return fail(errc::invalid_inherited_fd, source + ": fd " + std::to_string(fd) + " " + what);
}

std::atomic<bool> taken{false};

}  // namespace

// Four system calls per fd: this runs for every inherited listener at every start.
result<inherited_socket> check_inherited_socket(const std::string& source, int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
    if (errno == EBADF) return bad_fd(source, fd, "is not open");
    return bad_fd(source, fd, errno == ENOTSOCK ? "is not a socket" : std::strerror(errno));
  }
  sockaddr_storage storage{};
  socklen_t address_len = sizeof storage;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &address_len) != 0)
    return bad_fd(source, fd, std::string("has no local address: ") + std::strerror(errno));
  const int family = storage.ss_family;
  if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
    return bad_fd(source, fd,
                  "is a socket of address family " + std::to_string(family) +
                      ", not AF_INET, AF_INET6 or AF_UNIX");
  if (type != SOCK_STREAM && type != SOCK_SEQPACKET && type != SOCK_DGRAM)
    return bad_fd(source, fd,
                  "is a socket of type " + std::to_string(type) +
                      ", not SOCK_STREAM, SOCK_SEQPACKET or SOCK_DGRAM");
  if (type != SOCK_DGRAM) {
    int listening = 0;
    len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening == 0)
      return bad_fd(source, fd, "is a connection-oriented socket that is not listening");
  }
  auto address = socket_address::from_sockaddr(reinterpret_cast<sockaddr*>(&storage), address_len);
  if (!address) return bad_fd(source, fd, "has a local address grace cannot read");
  inherited_socket out;
  out.fd = fd;
  out.type = type;
  out.family = family;
  out.address = *address;
  return out;
}

result<std::vector<inherited_socket>> take_inherited_sockets() {
  if (taken.exchange(true)) return std::vector<inherited_socket>{};
  const auto& listen = startup_inheritance().listen;
  if (!listen) return tl::unexpected(listen.error());
  std::vector<inherited_socket> sockets;
  sockets.reserve(static_cast<std::size_t>(listen->count));
  for (int i = 0; i < listen->count; ++i) {
    auto socket = check_inherited_socket("LISTEN_FDS=" + std::to_string(listen->count), first_listen_fd + i);
    if (!socket) return tl::unexpected(socket.error());
    socket->name = listen->names[static_cast<std::size_t>(i)];
    sockets.push_back(std::move(*socket));
  }
  return sockets;
}

}  // namespace grace::detail
