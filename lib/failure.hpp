#pragma once
// Shorthands for returning a grace::error from inside the library.
#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

#include "grace/error.hpp"

namespace grace::detail {

inline tl::unexpected<error> fail(std::error_code code, std::string message) {
  return tl::unexpected(error(code, std::move(message)));
}

inline tl::unexpected<error> fail(errc code, std::string message) {
  return fail(make_error_code(code), std::move(message));
}

// "WHAT: strerror(err)" with err as a system_category code.
inline tl::unexpected<error> fail_errno(int err, const std::string& what) {
  return fail(std::error_code(err, std::system_category()), what + ": " + std::strerror(err));
}

}  // namespace grace::detail
