// libFuzzer target: the address parsers (no name resolution: split_host_port and parse_port,
// resolve_unix, socket_address::from_sockaddr).
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "canonical_address.hpp"
#include "fuzz_support.hpp"
#include "grace/address.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto parts = grace::detail::split_host_port(text)) {
    fuzz::require(parts->host.size() + parts->port.size() < text.size(), "parts within the address");
    std::uint16_t port = 0;
    if (grace::detail::parse_port(parts->port, port))
      fuzz::require(parts->port.size() >= 1 && parts->port.size() <= 5, "1 to 5 digits");
  } else {
    fuzz::require_line(parts.error().message());
  }
  if (auto unix_address = grace::resolve_unix(text, "/base/dir")) {
    const std::string shown = unix_address->text();
    fuzz::require(!shown.empty() && (shown.front() == '/' || shown.front() == '@'), "absolute or abstract");
    if (shown.front() == '/') {
      auto again = grace::resolve_unix(shown, "/elsewhere");
      fuzz::require(again && again->text() == shown, "a canonical path is its own canonical form");
    }
  } else {
    fuzz::require_line(unix_address.error().message());
  }
  sockaddr_storage storage{};
  const std::size_t copied = size < sizeof storage ? size : sizeof storage;
  std::memcpy(&storage, data, copied);
  if (auto raw = grace::socket_address::from_sockaddr(reinterpret_cast<const sockaddr*>(&storage),
                                                      static_cast<socklen_t>(size > 255 ? 255 : size))) {
    (void)raw->text();
    (void)raw->port();
  }
  return 0;
}
