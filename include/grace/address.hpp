#pragma once
// Networks and socket addresses in the canonical form grace uses to match an inherited listener
// with a requested one: "0.0.0.0:80", "[::]:80" and ":80" are one wildcard, a v4-mapped IPv6
// address is its IPv4 form, a relative unix path is absolute against the start-up directory.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "grace/error.hpp"
#include "grace/export.hpp"

namespace grace {

// The stream networks of Go's net package (`unix` is a predefined macro under GNU C++, hence
// unix_stream), and the datagram ones an inherited socket may be. grace listens on stream
// networks; an inherited datagram socket is kept, unclaimed, among the unused inherited ones.
// `udp` comes last: the fd channel carries these values on the wire.
enum class network { tcp, tcp4, tcp6, unix_stream, unix_packet, udp4, udp6, unixgram, udp };

// "tcp", "tcp4", "tcp6", "unix", "unixpacket", "udp", "udp4", "udp6"; anything else is
// errc::unknown_network.
[[nodiscard]] GRACE_API result<network> parse_network(std::string_view name);
GRACE_API std::string_view network_name(network n) noexcept;
GRACE_API bool is_tcp(network n) noexcept;
GRACE_API bool is_udp(network n) noexcept;  // udp, udp4, udp6
GRACE_API int socket_type(network n) noexcept;  // SOCK_STREAM, SOCK_SEQPACKET or SOCK_DGRAM

class GRACE_API socket_address {
 public:
  socket_address() = default;
  // Copies a kernel address (getsockname); families other than AF_INET, AF_INET6 and AF_UNIX
  // are errc::invalid_address.
  [[nodiscard]] static result<socket_address> from_sockaddr(const sockaddr* sa, socklen_t len);
  static socket_address ipv4_any(std::uint16_t port);
  static socket_address ipv6_any(std::uint16_t port);

  int family() const noexcept { return storage_.ss_family; }
  const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
  socklen_t size() const noexcept { return size_; }

  bool is_wildcard() const noexcept;     // 0.0.0.0 or ::
  bool is_v4_mapped() const noexcept;    // ::ffff:a.b.c.d
  bool is_abstract() const noexcept;     // unix socket in the abstract namespace
  std::uint16_t port() const noexcept;   // 0 for unix sockets
  std::string unix_path() const;         // path, or "@name" for an abstract socket

  // "127.0.0.1:80", "[::1]:80", "[::]:80", "/run/app.sock", "@name"; v4-mapped shown as IPv4.
  std::string text() const;

 private:
  sockaddr_storage storage_{};
  socklen_t size_ = 0;
};

// Parses "host:port", "[v6]:port" or ":port" for a TCP (or UDP) network and resolves host names.
// The port is 1 to 5 decimal digits up to 65535, or a service name ("http"). Returns the
// addresses to try, best first (for "tcp", IPv4 before IPv6 as Go does; for a wildcard, the
// dual-stack [::] before 0.0.0.0). May block: a host name is resolved with getaddrinfo.
[[nodiscard]] GRACE_API result<std::vector<socket_address>> resolve_tcp(network n,
                                                                        std::string_view address);

// A unix socket path: "@name" is abstract, a relative path is made absolute against `base_dir`
// and normalised lexically ("a/./b/../c" is "a/c").
[[nodiscard]] GRACE_API result<socket_address> resolve_unix(std::string_view path,
                                                            std::string_view base_dir);

}  // namespace grace
