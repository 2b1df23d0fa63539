#include "grace/address.hpp"

#include <arpa/inet.h>
#include <netdb.h>

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <optional>

#include "canonical_address.hpp"
#include "failure.hpp"
#include "printable.hpp"

namespace grace {
namespace {

using detail::fail;
using detail::quoted;

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// A service name as /etc/services spells them ("http", "x11-ssh"): a letter first, then
// letters, digits, '-' or '_'. getaddrinfo would also take "+65616" and wrap it to port 80.
bool is_service_name(std::string_view text) {
  if (text.empty() || text.size() > 32) return false;
  const auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  if (!letter(text.front())) return false;
  return std::all_of(text.begin(), text.end(),
                     [&](char c) { return letter(c) || is_digit(c) || c == '-' || c == '_'; });
}

// Service names ("http") as Go accepts them.
bool lookup_service(const std::string& name, std::uint16_t& port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* result = nullptr;
  if (getaddrinfo(nullptr, name.c_str(), &hints, &result) != 0 || result == nullptr) return false;
  auto found = socket_address::from_sockaddr(result->ai_addr, result->ai_addrlen);
  freeaddrinfo(result);
  if (!found) return false;
  port = found->port();
  return true;
}

bool family_allowed(network n, int family) {
  if (n == network::tcp4 || n == network::udp4) return family == AF_INET;
  if (n == network::tcp6 || n == network::udp6) return family == AF_INET6;
  return true;
}

}  // namespace

result<network> parse_network(std::string_view name) {
  if (name == "tcp") return network::tcp;
  if (name == "tcp4") return network::tcp4;
  if (name == "tcp6") return network::tcp6;
  if (name == "unix") return network::unix_stream;
  if (name == "unixpacket") return network::unix_packet;
  if (name == "udp") return network::udp;
  if (name == "udp4") return network::udp4;
  if (name == "udp6") return network::udp6;
  return fail(errc::unknown_network, "unknown network " + quoted(name) +
                                        " (expected tcp, tcp4, tcp6, unix, unixpacket, udp, udp4 or udp6)");
}

std::string_view network_name(network n) noexcept {
  switch (n) {
    case network::tcp: return "tcp";
    case network::tcp4: return "tcp4";
    case network::tcp6: return "tcp6";
    case network::unix_stream: return "unix";
    case network::unix_packet: return "unixpacket";
    case network::udp4: return "udp4";
    case network::udp6: return "udp6";
    case network::unixgram: return "unixgram";
    case network::udp: return "udp";
  }
  return "?";
}

bool is_tcp(network n) noexcept {
  return n == network::tcp || n == network::tcp4 || n == network::tcp6;
}

bool is_udp(network n) noexcept { return n == network::udp || n == network::udp4 || n == network::udp6; }

int socket_type(network n) noexcept {
  switch (n) {
    case network::unix_packet: return SOCK_SEQPACKET;
    case network::udp:
    case network::udp4:
    case network::udp6:
    case network::unixgram: return SOCK_DGRAM;
    default: return SOCK_STREAM;
  }
}

result<socket_address> socket_address::from_sockaddr(const sockaddr* sa, socklen_t len) {
  if (sa == nullptr || len < static_cast<socklen_t>(sizeof(sa_family_t)) ||
      len > static_cast<socklen_t>(sizeof(sockaddr_storage)))
    return fail(errc::invalid_address, "socket address of " + std::to_string(len) + " bytes");
  const bool known = (sa->sa_family == AF_INET && len >= socklen_t(sizeof(sockaddr_in))) ||
                     (sa->sa_family == AF_INET6 && len >= socklen_t(sizeof(sockaddr_in6))) ||
                     sa->sa_family == AF_UNIX;
  if (!known)
    return fail(errc::invalid_address, "socket address of family " + std::to_string(sa->sa_family) +
                                           " and " + std::to_string(len) + " bytes");
  socket_address out;
  std::memcpy(&out.storage_, sa, len);
  out.size_ = len;
  return out;
}

socket_address socket_address::ipv4_any(std::uint16_t port) {
  socket_address out;
  auto* in = reinterpret_cast<sockaddr_in*>(&out.storage_);
  in->sin_family = AF_INET;
  in->sin_port = htons(port);
  in->sin_addr.s_addr = htonl(INADDR_ANY);
  out.size_ = sizeof(sockaddr_in);
  return out;
}

socket_address socket_address::ipv6_any(std::uint16_t port) {
  socket_address out;
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&out.storage_);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(port);
  in6->sin6_addr = in6addr_any;
  out.size_ = sizeof(sockaddr_in6);
  return out;
}

bool socket_address::is_wildcard() const noexcept {
  if (family() == AF_INET)
    return reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr.s_addr == htonl(INADDR_ANY);
  if (family() == AF_INET6)
    return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr);
  return false;
}

bool socket_address::is_v4_mapped() const noexcept {
  return family() == AF_INET6 &&
         IN6_IS_ADDR_V4MAPPED(&reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr);
}

bool socket_address::is_abstract() const noexcept {
  const auto* un = reinterpret_cast<const sockaddr_un*>(&storage_);
  return family() == AF_UNIX && size_ > offsetof(sockaddr_un, sun_path) && un->sun_path[0] == '\0';
}

std::uint16_t socket_address::port() const noexcept {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (family() == AF_INET6)
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  return 0;
}

std::string socket_address::unix_path() const {
  if (family() != AF_UNIX || size_ <= offsetof(sockaddr_un, sun_path)) return {};
  const auto* un = reinterpret_cast<const sockaddr_un*>(&storage_);
  const std::size_t len = size_ - offsetof(sockaddr_un, sun_path);
  if (un->sun_path[0] == '\0') return "@" + std::string(un->sun_path + 1, len - 1);
  return std::string(un->sun_path, strnlen(un->sun_path, len));
}

namespace {

// "a.b.c.d:port", as inet_ntop and std::to_string would spell it: glibc's inet_ntop formats
// with sprintf, a large part of claiming an inherited listener (which shows its address);
// formatting it here costs a fraction of that.
std::string ipv4_text(const std::uint8_t* octets, std::uint16_t port) {
  char text[sizeof "255.255.255.255:65535"];
  std::size_t length = 0;
  auto append = [&](unsigned value) {
    char digits[5];
    std::size_t n = 0;
    do {
      digits[n++] = static_cast<char>('0' + value % 10);
      value /= 10;
    } while (value != 0 && n < sizeof digits);
    while (n > 0 && length < sizeof text) text[length++] = digits[--n];
  };
  for (int i = 0; i < 4; ++i) {
    if (i > 0) text[length++] = '.';
    append(octets[i]);
  }
  text[length++] = ':';
  append(port);
  return std::string(text, length);  // mostly within the string's own buffer: no allocation
}

}  // namespace

std::string socket_address::text() const {
  if (family() == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr;
    return ipv4_text(reinterpret_cast<const std::uint8_t*>(&in.s_addr), port());
  }
  if (family() == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage_);
    if (is_v4_mapped()) return ipv4_text(&in6->sin6_addr.s6_addr[12], port());
    char host[INET6_ADDRSTRLEN] = {};
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    std::string zone;
    if (in6->sin6_scope_id != 0) zone = "%" + std::to_string(in6->sin6_scope_id);
    return "[" + std::string(host) + zone + "]:" + std::to_string(port());
  }
  return unix_path();
}

namespace {

// An IPv4 or IPv6 literal in its plain form (no zone, none of inet_aton's short forms, which go
// to getaddrinfo as before) that network `n` allows.
std::optional<socket_address> numeric_address(network n, std::string_view host, std::uint16_t port) {
  char text[INET6_ADDRSTRLEN] = {};
  if (host.size() >= sizeof text) return std::nullopt;
  std::memcpy(text, host.data(), host.size());
  sockaddr_in in{};
  sockaddr_in6 in6{};
  result<socket_address> address;
  if (family_allowed(n, AF_INET) && inet_pton(AF_INET, text, &in.sin_addr) == 1) {
    in.sin_family = AF_INET;
    in.sin_port = htons(port);
    address = socket_address::from_sockaddr(reinterpret_cast<sockaddr*>(&in), sizeof in);
  } else if (family_allowed(n, AF_INET6) && inet_pton(AF_INET6, text, &in6.sin6_addr) == 1) {
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(port);
    address = socket_address::from_sockaddr(reinterpret_cast<sockaddr*>(&in6), sizeof in6);
  } else {
    return std::nullopt;
  }
  if (!address) return std::nullopt;
  return *address;
}

}  // namespace

result<std::vector<socket_address>> resolve_tcp(network n, std::string_view address) {
  if (!is_tcp(n) && !is_udp(n))
    return fail(errc::unknown_network, "network " + quoted(network_name(n)) + " is not a TCP or UDP network");
  // Hosts and ports read the same for UDP.
  if (n == network::udp) n = network::tcp;
  if (n == network::udp4) n = network::tcp4;
  if (n == network::udp6) n = network::tcp6;
  auto parts = detail::split_host_port(address);
  if (!parts) return tl::unexpected(parts.error());
  const std::string_view host = parts->host;
  const std::string_view port_text = parts->port;
  std::uint16_t port = 0;
  if (!detail::parse_port(port_text, port) &&
      (!is_service_name(port_text) || !lookup_service(std::string(port_text), port)))
    return fail(errc::invalid_address,
                "address " + quoted(address) + ": invalid port " + quoted(port_text));

  std::vector<socket_address> found;
  if (host.empty()) {
    if (n != network::tcp4) found.push_back(socket_address::ipv6_any(port));
    if (n != network::tcp6) found.push_back(socket_address::ipv4_any(port));
    return found;
  }
  // A numeric address needs no resolver: getaddrinfo would give the same one address.
  if (auto numeric = numeric_address(n, host, port)) return std::vector<socket_address>{*numeric};
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_family = n == network::tcp4 ? AF_INET : n == network::tcp6 ? AF_INET6 : AF_UNSPEC;
  addrinfo* result = nullptr;
  const std::string host_string(host);
  const int rc = getaddrinfo(host_string.c_str(), nullptr, &hints, &result);
  if (rc != 0)
    return fail(errc::invalid_address,
                "address " + quoted(address) + ": cannot resolve " + quoted(host) + " for " +
                    std::string(network_name(n)) + ": " + gai_strerror(rc));
  for (const addrinfo* ai = result; ai != nullptr; ai = ai->ai_next) {
    auto one = socket_address::from_sockaddr(ai->ai_addr, ai->ai_addrlen);
    if (!one || !family_allowed(n, one->family())) continue;
    auto* raw = const_cast<sockaddr*>(one->data());
    if (one->family() == AF_INET) reinterpret_cast<sockaddr_in*>(raw)->sin_port = htons(port);
    if (one->family() == AF_INET6) reinterpret_cast<sockaddr_in6*>(raw)->sin6_port = htons(port);
    const bool duplicate = std::any_of(found.begin(), found.end(), [&](const socket_address& a) {
      return a.text() == one->text();
    });
    if (!duplicate) found.push_back(*one);
  }
  freeaddrinfo(result);
  if (found.empty())
    return fail(errc::invalid_address,
                "address " + quoted(address) + ": no " + std::string(network_name(n)) +
                    " address for " + quoted(host));
  // Go's "tcp" prefers IPv4 when a name has both.
  std::stable_partition(found.begin(), found.end(),
                        [](const socket_address& a) { return a.family() == AF_INET; });
  return found;
}

namespace detail {

std::optional<socket_address> numeric_inet_address(network n, std::string_view address) {
  if (!is_tcp(n) && !is_udp(n)) return std::nullopt;
  auto parts = split_host_port(address);
  std::uint16_t port = 0;
  if (!parts || parts->host.empty() || !parse_port(parts->port, port)) return std::nullopt;
  return numeric_address(n, parts->host, port);
}

result<host_port> split_host_port(std::string_view address) {
  if (address.find('\0') != std::string_view::npos)
    return fail(errc::invalid_address, "address " + quoted(address) + ": contains a NUL byte");
  if (!address.empty() && address.front() == '[') {
    const auto close = address.find(']');
    if (close == std::string_view::npos || close + 1 >= address.size() || address[close + 1] != ':')
      return fail(errc::invalid_address, "address " + quoted(address) + ": expected \"[host]:port\"");
    return host_port{address.substr(1, close - 1), address.substr(close + 2)};
  }
  const auto colon = address.rfind(':');
  if (colon == std::string_view::npos) return fail(errc::invalid_address, "address " + quoted(address) + ": missing port");
  const std::string_view host = address.substr(0, colon);
  if (host.find(':') != std::string_view::npos)
    return fail(errc::invalid_address, "address " + quoted(address) + ": too many colons (IPv6 goes in brackets)");
  return host_port{host, address.substr(colon + 1)};
}

bool parse_port(std::string_view text, std::uint16_t& port) {
  if (text.empty() || text.size() > 5 || !std::all_of(text.begin(), text.end(), is_digit)) return false;
  unsigned value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  if (value > 65535) return false;
  port = static_cast<std::uint16_t>(value);
  return true;
}

std::string normalize_absolute_path(std::string_view base_dir, std::string_view path) {
  std::string joined = (!path.empty() && path.front() == '/')
                           ? std::string(path)
                           : std::string(base_dir) + "/" + std::string(path);
  std::vector<std::string_view> parts;
  std::string_view rest(joined);
  while (!rest.empty()) {
    const auto slash = rest.find('/');
    const std::string_view part = rest.substr(0, slash);
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  std::string out;
  for (const auto part : parts) out += "/" + std::string(part);
  return out.empty() ? "/" : out;
}

endpoint endpoint_of(const socket_address& address) {
  endpoint e;
  if (address.family() == AF_UNIX) {
    e.is_unix = true;
    const auto* un = reinterpret_cast<const sockaddr_un*>(address.data());
    const std::size_t len = address.size() > offsetof(sockaddr_un, sun_path) ? address.size() - offsetof(sockaddr_un, sun_path) : 0;
    e.path.assign(un->sun_path, len > 0 && un->sun_path[0] == '\0' ? len : strnlen(un->sun_path, len));
    return e;
  }
  e.port = address.port();
  if (address.is_wildcard()) {
    e.wildcard = true;
    return e;
  }
  if (address.family() == AF_INET) {
    e.ip[10] = e.ip[11] = 0xff;
    std::memcpy(e.ip + 12, &reinterpret_cast<const sockaddr_in*>(address.data())->sin_addr, 4);
    return e;
  }
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(address.data());
  std::memcpy(e.ip, &in6->sin6_addr, 16);
  if (!address.is_v4_mapped()) e.scope = in6->sin6_scope_id;
  return e;
}

socket_address address_of(const endpoint& where, int family) {
  sockaddr_storage storage{};
  socklen_t len = 0;
  if (family == AF_UNIX) {
    auto* un = reinterpret_cast<sockaddr_un*>(&storage);
    un->sun_family = AF_UNIX;
    const std::size_t n = std::min(where.path.size(), sizeof un->sun_path - 1);
    std::memcpy(un->sun_path, where.path.data(), n);
    // A path's length counts its terminating NUL, as getsockname gives it; an abstract name's does not.
    const bool path = n > 0 && where.path.front() != '\0';
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + n + (path ? 1 : 0));
  } else if (family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&storage);
    in->sin_family = AF_INET;
    in->sin_port = htons(where.port);
    if (!where.wildcard) std::memcpy(&in->sin_addr, where.ip + 12, 4);
    len = sizeof *in;
  } else {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(where.port);
    if (!where.wildcard) std::memcpy(&in6->sin6_addr, where.ip, 16);
    in6->sin6_scope_id = where.scope;
    len = sizeof *in6;
  }
  auto address = socket_address::from_sockaddr(reinterpret_cast<const sockaddr*>(&storage), len);
  return address ? *address : socket_address{};
}

std::uint64_t endpoint::hash() const noexcept {
  // A word at a time (splitmix64's steps): thousands of endpoints are hashed at a start-up that
  // claims its inherited listeners, twice each, and a byte-wise hash cost 40 ns of it apiece.
  // Only this process's index uses it: nothing stored or sent depends on its values.
  auto mix = [](std::uint64_t h, std::uint64_t word) {
    h = (h ^ word) * 0xbf58476d1ce4e5b9ULL;
    return h ^ (h >> 31);
  };
  const std::uint64_t flags = (is_unix ? 1U : 0U) | (wildcard ? 2U : 0U);
  std::uint64_t h = mix(0x9e3779b97f4a7c15ULL, flags | std::uint64_t{port} << 8 | std::uint64_t{scope} << 32);
  std::uint64_t words[2];
  std::memcpy(words, ip, sizeof ip);
  h = mix(mix(mix(h, words[0]), words[1]), path.size());
  std::size_t at = 0;
  for (; at + 8 <= path.size(); at += 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, path.data() + at, 8);
    h = mix(h, word);
  }
  if (at < path.size()) {
    std::uint64_t word = 0;
    std::memcpy(&word, path.data() + at, path.size() - at);
    h = mix(h, word);
  }
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
  return h ^ (h >> 31);
}

bool endpoint::operator==(const endpoint& o) const noexcept {
  return is_unix == o.is_unix && wildcard == o.wildcard && port == o.port && scope == o.scope &&
         std::memcmp(ip, o.ip, sizeof ip) == 0 && path == o.path;
}

std::string match_key(int type, const socket_address& address) {
  const std::string where = address.is_wildcard() ? ":" + std::to_string(address.port()) : address.text();
  return std::to_string(type) + (address.family() == AF_UNIX ? "|unix|" : "|inet|") + where;
}

}  // namespace detail

result<socket_address> resolve_unix(std::string_view path, std::string_view base_dir) {
  if (path.empty()) return fail(errc::invalid_address, "unix socket path is empty");
  if (path.find('\0') != std::string_view::npos)
    return fail(errc::invalid_address, "unix socket path " + quoted(path) + " contains a NUL byte");
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  socklen_t len = 0;
  if (path.front() == '@') {
    const auto name = path.substr(1);
    if (name.size() + 1 > sizeof un.sun_path)
      return fail(errc::invalid_address,
                  "abstract unix socket name " + quoted(path) + " is longer than " +
                      std::to_string(sizeof un.sun_path - 1) + " bytes");
    std::memcpy(un.sun_path + 1, name.data(), name.size());
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  } else {
    const std::string absolute = detail::normalize_absolute_path(base_dir, path);
    if (absolute.size() + 1 > sizeof un.sun_path)
      return fail(errc::invalid_address,
                  "unix socket path " + quoted(absolute) + " is longer than " +
                      std::to_string(sizeof un.sun_path - 1) + " bytes");
    std::memcpy(un.sun_path, absolute.data(), absolute.size());
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + absolute.size() + 1);
  }
  return socket_address::from_sockaddr(reinterpret_cast<const sockaddr*>(&un), len);
}

}  // namespace grace
