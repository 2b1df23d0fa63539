#include "sockets.hpp"

#include <linux/inet_diag.h>

#include "sock_diag.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <stdexcept>

namespace test_support {
namespace {

int bound_inet(const std::string& host, int type, int& port) {
  const bool v6 = host.find(':') != std::string::npos;
  const int fd = socket(v6 ? AF_INET6 : AF_INET, type | SOCK_CLOEXEC, 0);
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (v6) {
    const int off = 0;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    in6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr);
    len = sizeof *in6;
  } else {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    in->sin_family = AF_INET;
    inet_pton(AF_INET, host.c_str(), &in->sin_addr);
    len = sizeof *in;
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0)
    throw std::runtime_error("bind " + host + ": " + std::strerror(errno));
  len = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  port = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                  : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return fd;
}

}  // namespace

int raw_tcp_listener(const std::string& host, int& port) {
  const int fd = bound_inet(host, SOCK_STREAM, port);
  listen(fd, 16);
  return fd;
}

int raw_tcp_unlistening(int& port) { return bound_inet("127.0.0.1", SOCK_STREAM, port); }

int raw_udp_socket(int& port) { return bound_inet("127.0.0.1", SOCK_DGRAM, port); }

int raw_unix_listener(const std::string& path, int type) {
  const int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  socklen_t len = 0;
  if (!path.empty() && path[0] == '@') {
    std::memcpy(un.sun_path + 1, path.data() + 1, path.size() - 1);
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  } else {
    std::strncpy(un.sun_path, path.c_str(), sizeof un.sun_path - 1);
    len = sizeof un;
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&un), len) != 0 || listen(fd, 16) != 0)
    throw std::runtime_error("unix listener " + path + ": " + std::strerror(errno));
  return fd;
}

}  // namespace test_support

namespace test_support {

int listen_backlog(int port) {
  inet_diag_req_v2 request{};
  request.sdiag_family = AF_INET;
  request.sdiag_protocol = IPPROTO_TCP;
  request.idiag_states = 1U << 10;  // TCP_LISTEN
  int backlog = -1;
  grace::detail::sock_diag_dump(&request, sizeof request, [&](const nlmsghdr& h) {
    const auto* msg = static_cast<const inet_diag_msg*>(NLMSG_DATA(&h));
    if (ntohs(msg->id.idiag_sport) == port) backlog = static_cast<int>(msg->idiag_wqueue);
  });
  return backlog;
}

}  // namespace test_support
