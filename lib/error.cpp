#include "grace/error.hpp"

#include <string>

namespace grace {
namespace {

class grace_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "grace"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::unknown_network: return "unknown network";
      case errc::invalid_address: return "invalid address";
      case errc::malformed_environment: return "malformed environment variable";
      case errc::invalid_inherited_fd: return "inherited fd is not a usable socket";
      case errc::invalid_listener_name: return "invalid listener name";
      case errc::not_an_active_listener: return "not an active listener of this net";
      case errc::too_many_generations: return "too many generations alive";
      case errc::invalid_argument: return "invalid argument";
      case errc::protocol_error: return "protocol error on an fd channel";
      case errc::peer_not_allowed: return "peer process not allowed";
      case errc::channel_closed: return "fd channel closed";
      case errc::takeover_refused: return "takeover refused";
    }
    return "unknown grace error";
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const grace_category category;
  return category;
}

std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), error_category()}; }

}  // namespace grace
