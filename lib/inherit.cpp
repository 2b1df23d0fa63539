#include "inherit.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <thread>

#include "environment_protocol.hpp"

namespace grace::detail {
namespace {

tl::unexpected<error> bad_fd(const std::string& source, int fd, const std::string& what) {
  return fail(errc::invalid_inherited_fd, source + ": fd " + std::to_string(fd) + " " + what);
}

std::atomic<bool> taken{false};

}  // namespace

// Three system calls: for a socket handed over by a takeover, which are few.
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
  out.where = endpoint_of(*address);
  return out;
}

namespace {

// Reads the local address of slots[i] (fd first_listen_fd + i) for i in [first, last): the one
// system call per fd. The error of the lowest fd that has one, if any.
std::optional<error> read_addresses(inherited_slot* slots, std::size_t first, std::size_t last,
                                    const listen_fds& listen, const std::string& source) {
  for (std::size_t i = first; i < last; ++i) {
    inherited_slot& slot = slots[i];
    inherited_socket& s = slot.socket;
    s.fd = first_listen_fd + static_cast<int>(i);
    sockaddr_storage storage{};
    socklen_t len = sizeof storage;
    if (getsockname(s.fd, reinterpret_cast<sockaddr*>(&storage), &len) != 0)
      return bad_fd(source, s.fd, errno == EBADF      ? "is not open"
                                  : errno == ENOTSOCK ? "is not a socket"
                                                      : std::string("has no local address: ") + std::strerror(errno))
          .value();
    s.family = storage.ss_family;
    if (s.family != AF_INET && s.family != AF_INET6 && s.family != AF_UNIX)
      return bad_fd(source, s.fd,
                    "is a socket of address family " + std::to_string(s.family) + ", not AF_INET, AF_INET6 or AF_UNIX")
          .value();
    auto address = socket_address::from_sockaddr(reinterpret_cast<sockaddr*>(&storage), len);
    if (!address) return bad_fd(source, s.fd, "has a local address grace cannot read").value();
    s.where = endpoint_of(*address);
    s.name = listen.names[i];
    if (!listen.types.empty()) s.type = socket_type_of_letter(listen.types[i]);
    slot.hash = s.where.hash();
  }
  return std::nullopt;
}

// Below this many, a second thread costs more than it saves.
constexpr std::size_t parallel_from = 1024;

}  // namespace

result<void> take_inherited_sockets(std::vector<inherited_slot>& slots) {
  if (taken.exchange(true)) return {};
  const auto& listen = startup_inheritance().listen;
  if (!listen) return tl::unexpected(listen.error());
  const std::string source = "LISTEN_FDS=" + std::to_string(listen->count);
  const auto count = static_cast<std::size_t>(listen->count);
  const std::size_t base = slots.size();
  slots.resize(base + count);
  inherited_slot* read = slots.data() + base;
  // Each look at a socket is a cache-missing walk through kernel memory (about 0.5 us on a small
  // VM): thousands of them go faster on two cores.
  std::optional<error> second_half;
  std::size_t split = count;
  std::thread helper;
  if (count >= parallel_from && std::thread::hardware_concurrency() > 1) {
    split = count / 2;
    try {
      helper = std::thread([&] { second_half = read_addresses(read, split, count, *listen, source); });
    } catch (const std::system_error&) {
      split = count;  // no thread: all on this one
    }
  }
  auto first_half = read_addresses(read, 0, split, *listen, source);
  if (helper.joinable()) helper.join();
  if (first_half || second_half) {
    // A malformed inheritance is not adopted: its fds stay as they are, closed by nobody here.
    for (std::size_t i = 0; i < count; ++i) read[i].socket.fd = -1;
    slots.resize(base);
    return tl::unexpected(first_half ? *first_half : *second_half);
  }
  return {};
}

result<bool> claimable_as(inherited_socket& s, network n, const std::string& source) {
  const int want = socket_type(n);
  if (s.type != 0) return s.type == want;  // checked when it arrived, here or by the grace parent
  if (is_tcp(n)) {
    // One call says both "TCP" and "listening".
    tcp_info info{};
    socklen_t len = sizeof info;
    if (getsockopt(s.fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) {
      if (errno == EOPNOTSUPP || errno == ENOPROTOOPT) return false;
      return bad_fd(source, s.fd, std::strerror(errno));
    }
    if (info.tcpi_state != TCP_LISTEN) return bad_fd(source, s.fd, "is a TCP socket that is not listening");
  } else if (is_udp(n)) {
    int protocol = 0;
    socklen_t len = sizeof protocol;
    if (getsockopt(s.fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) != 0) return bad_fd(source, s.fd, std::strerror(errno));
    if (protocol != IPPROTO_UDP) return false;
  } else {
    if (socket_type_of(s.fd) != want) return false;
    int listening = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(s.fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening == 0)
      return bad_fd(source, s.fd, "is a connection-oriented socket that is not listening");
  }
  s.type = want;
  return true;
}

int socket_type_of(int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 ? type : 0;
}

inherited_slot::inherited_slot(inherited_slot&& other) noexcept
    : socket(std::move(other.socket)), hash(other.hash), shown(std::move(other.shown)) {
  other.socket.fd = -1;
}

inherited_slot::~inherited_slot() {
  if (socket.fd >= 0 && !shown) ::close(socket.fd);
}

}  // namespace grace::detail
