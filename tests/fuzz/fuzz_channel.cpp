// libFuzzer target: the fd channel's message decoder (header, batch, refusal). Whatever it
// accepts must encode back to the same bytes; whatever it refuses is one clear line.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "channel_wire.hpp"
#include "fuzz_support.hpp"

using namespace grace::detail;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto h = decode_header(bytes);
  if (!h) {
    fuzz::require_line(h.error().message());
    return 0;
  }
  fuzz::require(h->payload_size <= message_limit - header_size, "payload within the message limit");
  if (bytes.size() - header_size < h->payload_size) return 0;
  const std::string_view payload = bytes.substr(header_size, h->payload_size);
  if (h->type == message_type::batch) {
    auto b = decode_batch(payload);
    if (!b) {
      fuzz::require_line(b.error().message());
      return 0;
    }
    fuzz::require(b->descriptions.size() <= max_fds_per_message, "at most 253 fds");
    std::vector<const grace::fd_description*> ds;
    for (const auto& d : b->descriptions) ds.push_back(&d);
    auto again = encode_batch(h->sequence, (h->flags & flag_last) != 0, b->note, ds);
    fuzz::require(again.has_value(), "a decoded batch encodes again");
    fuzz::require(*again == bytes.substr(0, header_size + h->payload_size), "encoding round-trips");
  } else if (h->type == message_type::nack) {
    auto r = decode_nack(payload);
    if (!r) fuzz::require_line(r.error().message());
  }
  return 0;
}
