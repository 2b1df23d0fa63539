#include "reuseport_steering.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cstdio>

namespace grace::detail {
namespace {

#ifndef SO_DETACH_REUSEPORT_BPF
constexpr int SO_DETACH_REUSEPORT_BPF = 68;
#endif

std::string hex_byte(unsigned value) {
  char out[8];
  std::snprintf(out, sizeof out, "0x%02x", value & 0xffu);
  return out;
}

// Classic BPF with forward labels: conditional jumps reach at most 255 instructions ahead, an
// unconditional one (BPF_JA) anywhere ahead. finish() resolves the labels.
class assembler {
 public:
  using label = std::size_t;
  static constexpr label next = static_cast<label>(-1);  // the following instruction

  label make_label() {
    targets_.push_back(unbound);
    return targets_.size() - 1;
  }
  void bind(label l) { targets_[l] = code_.size(); }

  void stmt(std::uint16_t code, std::uint32_t k) { code_.push_back({{code, 0, 0, k}, next, next}); }
  // BPF_JMP|op|BPF_K against k: to `if_true` or `if_false`.
  void jump_if(std::uint16_t op, std::uint32_t k, label if_true, label if_false) {
    code_.push_back({{static_cast<std::uint16_t>(BPF_JMP | op | BPF_K), 0, 0, k}, if_true, if_false});
  }
  void jump(label to) {
    code_.push_back({{static_cast<std::uint16_t>(BPF_JMP | BPF_JA), 0, 0, 0}, to, next});
  }
  void ret(std::uint32_t k) { stmt(BPF_RET | BPF_K, k); }

  result<std::vector<sock_filter>> finish() const {
    if (code_.size() > BPF_MAXINSNS)
      return fail(errc::invalid_argument, "steering program: " + std::to_string(code_.size()) +
                                              " instructions, over the kernel's " + std::to_string(BPF_MAXINSNS));
    std::vector<sock_filter> out;
    out.reserve(code_.size());
    for (std::size_t i = 0; i < code_.size(); ++i) {
      sock_filter f = code_[i].filter;
      auto distance = [&](label l) -> std::optional<std::size_t> {
        if (l == next) return 0;
        if (targets_[l] == unbound || targets_[l] <= i) return std::nullopt;
        return targets_[l] - i - 1;
      };
      const auto first = distance(code_[i].first), second = distance(code_[i].second);
      if (!first || !second)
        return fail(errc::invalid_argument, "steering program: a jump backwards or to an unbound label");
      if (BPF_CLASS(f.code) == BPF_JMP && BPF_OP(f.code) == BPF_JA) {
        f.k = static_cast<std::uint32_t>(*first);
      } else if (BPF_CLASS(f.code) == BPF_JMP) {
        if (*first > 255 || *second > 255)
          return fail(errc::invalid_argument, "steering program: a conditional jump over 255 instructions");
        f.jt = static_cast<std::uint8_t>(*first);
        f.jf = static_cast<std::uint8_t>(*second);
      }
      out.push_back(f);
    }
    return out;
  }

 private:
  static constexpr std::size_t unbound = static_cast<std::size_t>(-1);
  struct insn {
    sock_filter filter;
    label first;   // jt, or the target of BPF_JA
    label second;  // jf
  };
  std::vector<insn> code_;
  std::vector<std::size_t> targets_;
};

using cookie_list = std::vector<std::pair<std::uint8_t, std::uint32_t>>;

// A = the lowercase hex digit at payload[at] as 0-15, or to `fail` when it is none.
void hex_digit(assembler& a, std::uint32_t at, assembler::label fail) {
  const auto alpha = a.make_label(), done = a.make_label();
  a.stmt(BPF_LD | BPF_B | BPF_ABS, at);
  a.jump_if(BPF_JGE, 'a', alpha, assembler::next);
  a.jump_if(BPF_JGE, '0', assembler::next, fail);
  a.jump_if(BPF_JGT, '9', fail, assembler::next);
  a.stmt(BPF_ALU | BPF_SUB | BPF_K, '0');
  a.jump(done);
  a.bind(alpha);
  a.jump_if(BPF_JGT, 'f', fail, assembler::next);
  a.stmt(BPF_ALU | BPF_SUB | BPF_K, 'a' - 10);
  a.bind(done);
}

// Returns the index of A among sorted[lo, hi), or `default_index`: a binary search down to runs of
// at most four cookies, compared one by one.
void search(assembler& a, const cookie_list& sorted, std::size_t lo, std::size_t hi, std::uint32_t default_index) {
  if (hi - lo <= 4) {
    for (std::size_t i = lo; i < hi; ++i) {
      const auto other = a.make_label();
      a.jump_if(BPF_JEQ, sorted[i].first, assembler::next, other);
      a.ret(sorted[i].second);
      a.bind(other);
    }
    a.ret(default_index);
    return;
  }
  const std::size_t mid = lo + (hi - lo) / 2;
  const auto below = a.make_label(), at_or_above = a.make_label();
  a.jump_if(BPF_JGE, sorted[mid].first, assembler::next, below);
  a.jump(at_or_above);
  a.bind(below);
  search(a, sorted, lo, mid, default_index);
  a.bind(at_or_above);
  search(a, sorted, mid, hi, default_index);
}

}  // namespace

result<std::vector<sock_filter>> steering_program(const cookie_format& format, const cookie_list& cookie_to_index,
                                                  std::uint32_t default_index) {
  const std::string what = "steering program: ";
  constexpr std::uint32_t max_index = 65535;  // a group's size is a u16
  if (cookie_to_index.size() > max_steering_cookies)
    return fail(errc::invalid_argument, what + std::to_string(cookie_to_index.size()) + " cookies, at most " +
                                            std::to_string(max_steering_cookies));
  const std::size_t width = format.encoding == cookie_format::encoding::hex2 ? 2 : 1;
  if (format.offset > max_cookie_end || format.offset + width > max_cookie_end)
    return fail(errc::invalid_argument, what + "the cookie at payload offset " + std::to_string(format.offset) +
                                            " ends past byte " + std::to_string(max_cookie_end));
  if (format.prefix.size() > max_cookie_prefix)
    return fail(errc::invalid_argument, what + "a prefix of " + std::to_string(format.prefix.size()) +
                                            " bytes, at most " + std::to_string(max_cookie_prefix));
  if (format.prefix.size() > format.offset)
    return fail(errc::invalid_argument, what + "the prefix (" + std::to_string(format.prefix.size()) +
                                            " bytes) reaches the cookie at offset " + std::to_string(format.offset));
  if (default_index > max_index)
    return fail(errc::invalid_argument,
                what + "default index " + std::to_string(default_index) + " is past a group's largest, 65535");
  cookie_list sorted = cookie_to_index;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    if (i > 0 && sorted[i].first == sorted[i - 1].first)
      return fail(errc::invalid_argument, what + "cookie " + hex_byte(sorted[i].first) + " is listed twice");
    if (sorted[i].second > max_index)
      return fail(errc::invalid_argument, what + "cookie " + hex_byte(sorted[i].first) + " goes to index " +
                                              std::to_string(sorted[i].second) + ", past a group's largest, 65535");
  }

  // The kernel runs the program with the skb pulled past the UDP header (run_bpf_filter() in
  // net/core/sock_reuseport.c, hdr_len = sizeof(struct udphdr)): BPF_ABS 0 is the payload's first
  // byte and BPF_LEN the payload's length. A load past the end would end the program with 0, so
  // the length is checked first and a short datagram gets the default index.
  assembler a;
  const auto no_cookie = a.make_label(), found = a.make_label();
  const auto need = static_cast<std::uint32_t>(std::max(format.prefix.size(), format.offset + width));
  a.stmt(BPF_LD | BPF_W | BPF_LEN, 0);
  a.jump_if(BPF_JGE, need, assembler::next, no_cookie);
  for (std::size_t i = 0; i < format.prefix.size(); ++i) {
    a.stmt(BPF_LD | BPF_B | BPF_ABS, static_cast<std::uint32_t>(i));
    a.jump_if(BPF_JEQ, static_cast<unsigned char>(format.prefix[i]), assembler::next, no_cookie);
  }
  const auto at = static_cast<std::uint32_t>(format.offset);
  if (format.encoding == cookie_format::encoding::hex2) {
    hex_digit(a, at, no_cookie);
    a.stmt(BPF_ALU | BPF_LSH | BPF_K, 4);
    a.stmt(BPF_MISC | BPF_TAX, 0);
    hex_digit(a, at + 1, no_cookie);
    a.stmt(BPF_ALU | BPF_OR | BPF_X, 0);
  } else {
    a.stmt(BPF_LD | BPF_B | BPF_ABS, at);
  }
  a.jump(found);
  a.bind(no_cookie);
  a.ret(default_index);
  a.bind(found);
  search(a, sorted, 0, sorted.size(), default_index);
  return a.finish();
}

result<void> attach_steering(int fd, const std::vector<sock_filter>& program) {
  if (program.empty() || program.size() > BPF_MAXINSNS)
    return fail(errc::invalid_argument, "SO_ATTACH_REUSEPORT_CBPF: a program of " + std::to_string(program.size()) +
                                            " instructions (1 to " + std::to_string(BPF_MAXINSNS) + ")");
  // The kernel copies the program; it is not written through this pointer.
  sock_fprog fprog{static_cast<unsigned short>(program.size()), const_cast<sock_filter*>(program.data())};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &fprog, sizeof fprog) != 0)
    return fail_errno(errno, "SO_ATTACH_REUSEPORT_CBPF on fd " + std::to_string(fd));
  return {};
}

result<void> detach_steering(int fd) {
  const int unused = 0;
  if (setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &unused, sizeof unused) != 0)
    return fail_errno(errno, "SO_DETACH_REUSEPORT_BPF on fd " + std::to_string(fd));
  return {};
}

result<std::uint32_t> reuseport_layout::join(std::uint64_t id) {
  if (index_of(id))
    return fail(errc::invalid_argument, "reuseport layout: socket " + std::to_string(id) + " has already joined");
  members_.push_back(id);
  return static_cast<std::uint32_t>(members_.size() - 1);
}

result<void> reuseport_layout::leave(std::uint64_t id) {
  const auto i = std::find(members_.begin(), members_.end(), id);
  if (i == members_.end())
    return fail(errc::invalid_argument, "reuseport layout: socket " + std::to_string(id) + " is not in the group");
  // reuseport_detach_sock(): socks[i] = socks[num_socks - 1]; num_socks--.
  *i = members_.back();
  members_.pop_back();
  return {};
}

std::optional<std::uint32_t> reuseport_layout::index_of(std::uint64_t id) const {
  const auto i = std::find(members_.begin(), members_.end(), id);
  if (i == members_.end()) return std::nullopt;
  return static_cast<std::uint32_t>(i - members_.begin());
}

}  // namespace grace::detail
