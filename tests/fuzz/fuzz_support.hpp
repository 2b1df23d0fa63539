#pragma once
// What the fuzz targets share: splitting an input into fields, and invariant checks that abort
// (libFuzzer then saves the input as a crash).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace fuzz {

// `count` fields separated by NUL bytes; missing ones are empty.
inline std::vector<std::string> split_fields(const std::uint8_t* data, std::size_t size, std::size_t count) {
  std::vector<std::string> fields(count);
  std::size_t field = 0;
  for (std::size_t i = 0; i < size && field < count; ++i) {
    if (data[i] == 0) ++field;
    else fields[field] += static_cast<char>(data[i]);
  }
  return fields;
}

inline void require(bool condition, const char* what) {
  if (condition) return;
  std::fprintf(stderr, "invariant broken: %s\n", what);
  std::abort();
}

// An error or warning is one line a log can carry: no control byte, not megabytes.
inline void require_line(const std::string& message) {
  require(!message.empty() && message.size() < 4096, "a message of bounded length");
  for (const char c : message) require(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f, "no control byte in a message");
}

}  // namespace fuzz
