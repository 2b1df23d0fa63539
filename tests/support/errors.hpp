#pragma once
// The message of a failed grace call, or "" for a success: safe inside REQUIRE_MESSAGE.
#include <string>

#include "grace/error.hpp"

namespace test_support {

template <typename T>
std::string error_text(const grace::result<T>& r) {
  return r ? std::string() : r.error().message();
}

}  // namespace test_support
