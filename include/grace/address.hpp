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
#include <system_error>
#include <vector>

#include <tl/expected.hpp>

namespace grace {

// The stream networks of Go's net package (`unix` is a predefined macro under GNU C++, hence
// unix_stream), and the datagram ones an inherited socket may be. grace listens on stream
// networks; an inherited datagram socket is kept, unclaimed, among the unused inherited ones.
enum class network { tcp, tcp4, tcp6, unix_stream, unix_packet, udp4, udp6, unixgram };

// "tcp", "tcp4", "tcp6", "unix", "unixpacket"; anything else is errc::unknown_network.
tl::expected<network, std::error_code> parse_network(std::string_view name);
std::string_view network_name(network n) noexcept;
bool is_tcp(network n) noexcept;
int socket_type(network n) noexcept;  // SOCK_STREAM or SOCK_SEQPACKET

class socket_address {
 public:
  socket_address() = default;
  // Copies a kernel address (getsockname); families other than AF_INET, AF_INET6 and AF_UNIX
  // are errc::invalid_address.
  static tl::expected<socket_address, std::error_code> from_sockaddr(const sockaddr* sa,
                                                                     socklen_t len);
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
  // What two addresses must share to be the same listening address: text(), except that
  // every wildcard is ":PORT".
  std::string match_key() const;

 private:
  sockaddr_storage storage_{};
  socklen_t size_ = 0;
};

// Parses "host:port", "[v6]:port" or ":port" for a TCP network and resolves host names.
// Returns the addresses to try, best first (for "tcp", IPv4 before IPv6 as Go does; for a
// wildcard, the dual-stack [::] before 0.0.0.0). On failure `why` (if given) says what was wrong.
tl::expected<std::vector<socket_address>, std::error_code> resolve_tcp(network n,
                                                                       std::string_view address,
                                                                       std::string* why = nullptr);

// A unix socket path: "@name" is abstract, a relative path is made absolute against `base_dir`
// and normalised lexically ("a/./b/../c" is "a/c").
tl::expected<socket_address, std::error_code> resolve_unix(std::string_view path,
                                                           std::string_view base_dir,
                                                           std::string* why = nullptr);

// Lexical normalisation of an absolute path: no ".", "..", or repeated slashes.
std::string normalize_absolute_path(std::string_view base_dir, std::string_view path);

}  // namespace grace
