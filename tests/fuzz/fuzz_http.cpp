// libFuzzer target: grace-http's request parser, fed in chunks as a socket would. Every answer
// is a whole HTTP/1.1 response; the buffer never holds more than was fed; a refusal ends the
// connection.
#include <cstddef>
#include <cstdint>
#include <string>

#include "../../samples/http/protocol.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t chunk = 1 + data[0] % 64;
  const bool draining = (data[0] & 0x80) != 0;
  std::string input, output;
  bool close = false;
  for (std::size_t at = 1; at < size && !close; at += chunk) {
    const std::size_t n = size - at < chunk ? size - at : chunk;
    input.append(reinterpret_cast<const char*>(data + at), n);
    while (!close) {
      const std::size_t before = output.size(), buffered = input.size();
      if (!http_protocol::answer_one(input, output, close, draining, "pid=1 generation=1\n")) break;
      fuzz::require(output.size() > before, "an answer was written");
      fuzz::require(output.compare(before, 9, "HTTP/1.1 ") == 0, "a whole response");
      fuzz::require(input.size() < buffered || close, "a request was consumed");
    }
    fuzz::require(input.size() <= http_protocol::max_head + http_protocol::max_body + 64, "bounded buffer");
  }
  return 0;
}
