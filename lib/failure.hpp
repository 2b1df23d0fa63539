#pragma once
// Inside the library an error carries its explanation; grace::net keeps the text for
// last_error() and hands the code across the API.
#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

#include <tl/expected.hpp>

namespace grace::detail {

struct failure {
  std::error_code code;
  std::string why;
};

inline tl::unexpected<failure> fail(std::error_code code, std::string why) {
  return tl::unexpected(failure{code, std::move(why)});
}

inline tl::unexpected<failure> fail_errno(int err, const std::string& what) {
  return fail(std::error_code(err, std::system_category()), what + ": " + std::strerror(err));
}

template <typename T>
using result = tl::expected<T, failure>;

}  // namespace grace::detail
