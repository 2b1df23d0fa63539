// libFuzzer target: GRACE_GENERATION and GRACE_ANCESTORS. Malformed values give warnings and
// safe defaults, never a wrap-around or an unbounded list; what grace writes reads back the same.
#include <cstddef>
#include <cstdint>
#include <string>

#include "environment_protocol.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto fields = fuzz::split_fields(data, size, 2);
  grace::detail::environment env{{"GRACE_GENERATION", fields[0]}, {"GRACE_ANCESTORS", fields[1]}};
  const auto parsed = grace::detail::parse_inheritance(env, 4242, 1024);
  fuzz::require(parsed.generation >= 1 && parsed.generation <= grace::detail::max_generation, "generation in range");
  fuzz::require(parsed.ancestors.size() <= grace::detail::max_ancestors, "ancestors bounded");
  for (const auto& a : parsed.ancestors) fuzz::require(a.pid > 0 && a.start_time > 0, "ancestor fields positive");
  for (const auto& warning : parsed.warnings) fuzz::require_line(warning);

  // Round trip: the entries a parent writes for its child parse back to the same list.
  const auto entries = grace::detail::generation_entries(parsed.generation, parsed.ancestors);
  grace::detail::environment again;
  for (const auto& entry : entries) again[entry.substr(0, entry.find('='))] = entry.substr(entry.find('=') + 1);
  const auto reparsed = grace::detail::parse_inheritance(again, 4242, 1024);
  fuzz::require(reparsed.generation == parsed.generation, "generation round-trips");
  fuzz::require(reparsed.ancestors.size() == parsed.ancestors.size(), "ancestors round-trip");
  fuzz::require(reparsed.warnings.empty(), "what grace writes parses cleanly");
  return 0;
}
