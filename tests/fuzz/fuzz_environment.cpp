// libFuzzer target: LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES and GRACE_READY_FD as a parent or a
// service manager might set them. Whatever they hold: no crash, a consistent result, and
// messages that are one bounded line.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "environment_protocol.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto fields = fuzz::split_fields(data, size, 5);
  grace::detail::environment env;
  const char* names[] = {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "GRACE_READY_FD"};
  // The first field says which variables are set at all.
  const unsigned present = fields[0].empty() ? 0xf : static_cast<unsigned char>(fields[0][0]);
  for (int i = 0; i < 4; ++i)
    if (present & (1U << i)) env[names[i]] = fields[static_cast<std::size_t>(i) + 1];
  constexpr long max_fds = 1024;
  const auto parsed = grace::detail::parse_inheritance(env, 4242, max_fds);
  if (parsed.listen) {
    fuzz::require(parsed.listen->count >= 0 && parsed.listen->count <= max_fds - 3, "count in range");
    fuzz::require(parsed.listen->names.size() == static_cast<std::size_t>(parsed.listen->count), "one name per fd");
    for (const auto& name : parsed.listen->names)
      fuzz::require(name == "unknown" || grace::detail::valid_fd_name(name), "names are valid");
  } else {
    fuzz::require_line(parsed.listen.error().message());
  }
  if (parsed.ready_fd) {
    const int first_free = 3 + (parsed.listen ? parsed.listen->count : 0);
    fuzz::require(*parsed.ready_fd == -1 || (*parsed.ready_fd >= first_free && *parsed.ready_fd < max_fds),
                  "readiness fd after the listeners");
  } else {
    fuzz::require_line(parsed.ready_fd.error().message());
  }
  for (const auto& warning : parsed.warnings) fuzz::require_line(warning);
  return 0;
}
