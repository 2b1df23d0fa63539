#pragma once
// How grace reports failure: every fallible call returns tl::expected<T, grace::error>, an error
// that carries its code and its own message (naming the values involved), so nothing has to be
// fetched afterwards from shared state. Operating-system failures carry std::system_category
// codes (errno); grace's own judgements carry grace::errc.
#include <string>
#include <system_error>
#include <utility>

#include <tl/expected.hpp>

#include "grace/export.hpp"

namespace grace {

enum class errc {
  unknown_network = 1,     // a network name grace does not know ("tcp5")
  invalid_address,         // an address that cannot be parsed or resolved for the network
  malformed_environment,   // a LISTEN_* or GRACE_* variable holds a malformed value
  invalid_inherited_fd,    // an fd named by LISTEN_FDS is not a usable socket
  invalid_listener_name,   // a name that LISTEN_FDNAMES cannot carry
  not_an_active_listener,  // close() of a listener this net does not hold
  too_many_generations,    // an upgrade would exceed the cap on generations alive at once
  invalid_argument,        // an option or argument out of its range
  protocol_error,          // a garbled, truncated, oversized or wrong-version message on a channel
  peer_not_allowed,        // the process at the other end of a channel runs as a user not allowed
  channel_closed,          // the other end of a channel hung up (or the channel failed earlier)
  takeover_refused,        // the serving process would not hand its sockets over (why in message)
};

GRACE_API const std::error_category& error_category() noexcept;
GRACE_API std::error_code make_error_code(errc e) noexcept;

class GRACE_API error {
 public:
  error() = default;
  error(std::error_code code, std::string message) : code_(code), message_(std::move(message)) {}

  // Compare with a grace::errc or a std::errc: `e.code() == std::errc::address_in_use`.
  const std::error_code& code() const noexcept { return code_; }
  // One line that says what failed and why, e.g.
  // "listen on 127.0.0.1:8080: bind: Address already in use".
  const std::string& message() const noexcept { return message_; }

 private:
  std::error_code code_;
  std::string message_;
};

template <typename T>
using result = tl::expected<T, error>;

}  // namespace grace

namespace std {
template <>
struct is_error_code_enum<grace::errc> : true_type {};
}  // namespace std
