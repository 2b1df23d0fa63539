#include "channel_wire.hpp"

#include <cstring>

#include "environment_protocol.hpp"
#include "failure.hpp"
#include "printable.hpp"

namespace grace::detail {
namespace {

constexpr char magic[4] = {'G', 'R', 'F', 'D'};
constexpr std::size_t description_fixed = 1 + 1 + 1 + 1 + 2 + 4;  // kind, network, name, 0, address, app
constexpr std::size_t batch_fixed = 2 + 4;                        // fd count, note length
constexpr std::uint8_t network_count = 9;

void put8(std::string& out, std::uint8_t v) { out.push_back(static_cast<char>(v)); }
void put16(std::string& out, std::uint16_t v) {
  for (int i = 0; i < 2; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::string encode_header(message_type type, std::uint8_t flags, std::uint32_t sequence, std::size_t payload) {
  std::string out(magic, sizeof magic);
  put8(out, wire_version);
  put8(out, static_cast<std::uint8_t>(type));
  put8(out, flags);
  put8(out, 0);
  put32(out, sequence);
  put32(out, static_cast<std::uint32_t>(payload));
  return out;
}

// Reads integers and byte strings from a payload, remembering the first overrun.
class reader {
 public:
  explicit reader(std::string_view bytes) : bytes_(bytes) {}
  bool take(std::size_t n, std::string_view& out) {
    if (bytes_.size() - at_ < n) return false;
    out = bytes_.substr(at_, n);
    at_ += n;
    return true;
  }
  template <typename T>
  bool number(T& out) {
    std::string_view raw;
    if (!take(sizeof(T), raw)) return false;
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) v |= std::uint64_t(static_cast<unsigned char>(raw[i])) << (8 * i);
    out = static_cast<T>(v);
    return true;
  }
  std::size_t left() const { return bytes_.size() - at_; }

 private:
  std::string_view bytes_;
  std::size_t at_ = 0;
};

tl::unexpected<error> garbled(const std::string& what) { return fail(errc::protocol_error, "fd channel: " + what); }

}  // namespace

std::size_t encoded_size(const fd_description& d) noexcept {
  return description_fixed + d.address.size() + d.name.size() + d.application.size();
}

result<std::string> encode_batch(std::uint32_t sequence, bool last, std::string_view note,
                                 const std::vector<const fd_description*>& descriptions) {
  if (note.size() > note_limit)
    return fail(errc::invalid_argument, "fd channel: a note of " + std::to_string(note.size()) +
                                            " bytes (at most " + std::to_string(note_limit) + ")");
  if (descriptions.size() > max_fds_per_message)
    return fail(errc::invalid_argument, "fd channel: " + std::to_string(descriptions.size()) + " fds in one message");
  std::size_t payload = batch_fixed + note.size();
  for (const auto* d : descriptions) {
    if (d->address.size() > address_limit)
      return fail(errc::invalid_argument, "fd channel: address " + quoted(d->address) + " is longer than " +
                                              std::to_string(address_limit) + " bytes");
    if (d->name.size() > name_limit)
      return fail(errc::invalid_argument, "fd channel: name " + quoted(d->name) + " is longer than 255 bytes");
    if (encoded_size(*d) > description_limit)
      return fail(errc::invalid_argument, "fd channel: the description of the fd for " + quoted(d->address) +
                                              " takes " + std::to_string(encoded_size(*d)) + " bytes (at most " +
                                              std::to_string(description_limit) + ")");
    payload += encoded_size(*d);
  }
  if (header_size + payload > message_limit)
    return fail(errc::invalid_argument, "fd channel: a message of " + std::to_string(header_size + payload) +
                                            " bytes (at most " + std::to_string(message_limit) + ")");
  std::string out = encode_header(message_type::batch, last ? flag_last : 0, sequence, payload);
  out.reserve(header_size + payload);
  put16(out, static_cast<std::uint16_t>(descriptions.size()));
  put32(out, static_cast<std::uint32_t>(note.size()));
  out.append(note);
  for (const auto* d : descriptions) {
    put8(out, static_cast<std::uint8_t>(d->kind));
    put8(out, static_cast<std::uint8_t>(d->network));
    put8(out, static_cast<std::uint8_t>(d->name.size()));
    put8(out, 0);
    put16(out, static_cast<std::uint16_t>(d->address.size()));
    put32(out, static_cast<std::uint32_t>(d->application.size()));
    out.append(d->address).append(d->name).append(d->application);
  }
  return out;
}

std::string encode_ack(std::uint32_t sequence) { return encode_header(message_type::ack, 0, sequence, 0); }

std::string encode_nack(std::uint32_t sequence, const refusal& r) {
  const std::string reason = r.reason.substr(0, 1024);
  std::string out = encode_header(message_type::nack, 0, sequence, 4 + 2 + reason.size());
  put32(out, r.error);
  put16(out, r.fds_arrived);
  out.append(reason);
  return out;
}

result<header> decode_header(std::string_view bytes) {
  if (bytes.size() < header_size)
    return garbled("a message of " + std::to_string(bytes.size()) + " bytes is shorter than its header");
  if (std::memcmp(bytes.data(), magic, sizeof magic) != 0)
    return garbled("a message that does not start with \"GRFD\" (" + quoted(bytes.substr(0, 4)) + ")");
  reader r(bytes.substr(4, header_size - 4));
  std::uint8_t version = 0, type = 0, flags = 0, zero = 0;
  header h;
  r.number(version);
  r.number(type);
  r.number(flags);
  r.number(zero);
  r.number(h.sequence);
  r.number(h.payload_size);
  if (version != wire_version)
    return garbled("a message of protocol version " + std::to_string(version) + "; this side speaks version " +
                   std::to_string(wire_version));
  if (type < 1 || type > 3) return garbled("a message of unknown type " + std::to_string(type));
  if ((flags & ~flag_last) != 0 || zero != 0) return garbled("a message with unknown flags");
  if (h.payload_size > message_limit - header_size)
    return garbled("a message announcing " + std::to_string(h.payload_size) + " bytes (at most " +
                   std::to_string(message_limit - header_size) + ")");
  h.type = static_cast<message_type>(type);
  h.flags = flags;
  return h;
}

result<batch> decode_batch(std::string_view payload) {
  reader r(payload);
  std::uint16_t count = 0;
  std::uint32_t note_size = 0;
  if (!r.number(count) || !r.number(note_size)) return garbled("a batch shorter than its counts");
  if (count > max_fds_per_message) return garbled("a batch announcing " + std::to_string(count) + " fds");
  batch b;
  std::string_view note;
  if (note_size > note_limit) return garbled("a note of " + std::to_string(note_size) + " bytes");
  if (!r.take(note_size, note)) return garbled("a batch whose note runs past its end");
  b.note.assign(note);
  b.descriptions.reserve(count);
  for (std::uint16_t i = 0; i < count; ++i) {
    std::uint8_t kind = 0, net = 0, name_size = 0, zero = 0;
    std::uint16_t address_size = 0;
    std::uint32_t app_size = 0;
    const std::string which = "fd " + std::to_string(i + 1) + " of " + std::to_string(count);
    if (!r.number(kind) || !r.number(net) || !r.number(name_size) || !r.number(zero) || !r.number(address_size) ||
        !r.number(app_size))
      return garbled("the description of " + which + " is cut short");
    if (kind < 1 || kind > 3) return garbled(which + " of unknown kind " + std::to_string(kind));
    if (net >= network_count) return garbled(which + " of unknown network " + std::to_string(net));
    if (zero != 0) return garbled(which + " with a nonzero reserved byte");
    if (address_size > address_limit) return garbled(which + " with an address of " + std::to_string(address_size) + " bytes");
    std::string_view address, name, app;
    if (!r.take(address_size, address) || !r.take(name_size, name) || !r.take(app_size, app))
      return garbled("the description of " + which + " runs past the end of the batch");
    fd_description d;
    d.kind = static_cast<fd_kind>(kind);
    d.network = static_cast<grace::network>(net);
    d.address.assign(address);
    d.name.assign(name);
    if (!d.name.empty() && !valid_fd_name(d.name)) return garbled(which + " named " + quoted(d.name));
    d.application.assign(app);
    if (encoded_size(d) > description_limit)
      return garbled(which + " described in " + std::to_string(encoded_size(d)) + " bytes");
    b.descriptions.push_back(std::move(d));
  }
  if (r.left() != 0) return garbled("a batch with " + std::to_string(r.left()) + " bytes after its last fd");
  return b;
}

result<refusal> decode_nack(std::string_view payload) {
  reader r(payload);
  refusal out;
  if (!r.number(out.error) || !r.number(out.fds_arrived)) return garbled("a refusal shorter than its fields");
  std::string_view reason;
  r.take(r.left(), reason);
  out.reason.assign(reason);
  return out;
}

}  // namespace grace::detail
