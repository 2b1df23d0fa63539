#pragma once
// Error codes of grace. Operating-system failures travel as std::system_category codes (errno);
// failures that are grace's own judgement use this category.
#include <system_error>

namespace grace {

enum class errc {
  unknown_network = 1,     // a network name grace does not know ("tcp5")
  invalid_address,         // an address that cannot be parsed or resolved for the network
  malformed_environment,   // LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES hold a malformed value
  invalid_inherited_fd,    // an fd named by LISTEN_FDS is not a usable socket
  invalid_listener_name,   // a name that LISTEN_FDNAMES cannot carry
  not_an_active_listener,  // close() of a listener this net does not hold
};

const std::error_category& error_category() noexcept;
std::error_code make_error_code(errc e) noexcept;

}  // namespace grace

namespace std {
template <>
struct is_error_code_enum<grace::errc> : true_type {};
}  // namespace std
