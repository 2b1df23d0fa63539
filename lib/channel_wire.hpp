#pragma once
// The fd channel's messages on the wire. Every message is a 16-byte header and a payload:
//
//   magic "GRFD" | version 1 | type | flags | 0 | sequence (u32) | payload length (u32)
//
// all integers little-endian. A batch carries a parcel's fds (SCM_RIGHTS, in the same sendmsg)
// and their descriptions; the batch flagged `last` ends the parcel and carries its note. The
// receiver answers every batch with an ack, or a nack when its fds did not all arrive.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "grace/error.hpp"
#include "grace/fd_channel.hpp"

namespace grace::detail {

inline constexpr std::uint8_t wire_version = 1;
inline constexpr std::size_t header_size = 16;
inline constexpr std::size_t message_limit = 64 * 1024;
inline constexpr std::size_t max_fds_per_message = 253;  // SCM_MAX_FD
inline constexpr std::size_t address_limit = 4096;
inline constexpr std::size_t name_limit = 255;

enum class message_type : std::uint8_t { batch = 1, ack = 2, nack = 3 };
inline constexpr std::uint8_t flag_last = 1;

struct header {
  message_type type = message_type::batch;
  std::uint8_t flags = 0;
  std::uint32_t sequence = 0;
  std::uint32_t payload_size = 0;
};

struct batch {
  std::string note;
  std::vector<fd_description> descriptions;
};

struct refusal {  // a nack's payload
  std::uint32_t error = 0;  // errno, e.g. EMFILE
  std::uint16_t fds_arrived = 0;
  std::string reason;
};

// Encoding. A description or note over its limit is errc::invalid_argument naming it.
[[nodiscard]] result<std::string> encode_batch(std::uint32_t sequence, bool last, std::string_view note,
                                               const std::vector<const fd_description*>& descriptions);
std::string encode_ack(std::uint32_t sequence);
std::string encode_nack(std::uint32_t sequence, const refusal& r);
// The encoded size of one description inside a batch.
std::size_t encoded_size(const fd_description& d) noexcept;

// Decoding: errc::protocol_error naming what was wrong.
[[nodiscard]] result<header> decode_header(std::string_view bytes);  // at least header_size bytes
[[nodiscard]] result<batch> decode_batch(std::string_view payload);
[[nodiscard]] result<refusal> decode_nack(std::string_view payload);

}  // namespace grace::detail
