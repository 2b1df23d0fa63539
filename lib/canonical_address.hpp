#pragma once
// How grace decides that an inherited socket is the one a listen call asks for.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "grace/address.hpp"

namespace grace::detail {

// What two listening sockets must share to be the same listener: socket type, family class
// (inet or unix) and address, with every wildcard (0.0.0.0, ::) as ":PORT" and a v4-mapped
// address as its IPv4 form.
std::string match_key(int type, const socket_address& address);

// The same rule without the socket type, in a form that costs no allocation for an inet address:
// what an inherited socket is filed under, and what a listen call looks for.
struct endpoint {
  bool is_unix = false;
  bool wildcard = false;
  std::uint16_t port = 0;
  std::uint32_t scope = 0;
  std::uint8_t ip[16] = {};  // IPv4 as its v4-mapped IPv6 form
  std::string path;          // unix: the path, or "\0name" for an abstract socket
  std::uint64_t hash() const noexcept;
  bool operator==(const endpoint& other) const noexcept;
};
endpoint endpoint_of(const socket_address& address);
// The address an endpoint was made from, for a socket of `family` (AF_INET, AF_INET6 or AF_UNIX).
socket_address address_of(const endpoint& where, int family);

struct host_port {
  std::string_view host;  // empty for ":port"; without the brackets of "[v6]:port"
  std::string_view port;  // not checked yet
};
// Splits "host:port", "[v6]:port" or ":port"; errors name what is malformed (a NUL byte,
// brackets, colons).
result<host_port> split_host_port(std::string_view address);
// 1 to 5 decimal digits, nothing else (no sign, no blank), at most 65535.
bool parse_port(std::string_view text, std::uint16_t& port);
// The one address resolve_tcp(n, address) gives for a numeric host and a decimal port, without
// its allocation; nullopt for anything else (a name, a service, ":port", a malformed address),
// which resolve_tcp then resolves or names in its error. Thousands of listen calls at a start-up
// that claims its inherited listeners go this way.
std::optional<socket_address> numeric_inet_address(network n, std::string_view address);

// Lexical normalisation of `path` made absolute against `base_dir`: no ".", "..", or repeated
// slashes.
std::string normalize_absolute_path(std::string_view base_dir, std::string_view path);

}  // namespace grace::detail
