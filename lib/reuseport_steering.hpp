#pragma once
// The kernel "cookie path" for UDP flow affinity (issue 29): a classic BPF program on a SO_REUSEPORT
// group reads a one-byte cookie from each datagram and returns the index, in the group, of the
// socket that owns the flow. Internal; not exported.
//
// What it relies on, checked on Linux 6.18.44 (tests/test_reuseport_steering.cpp checks each on
// the running kernel, on 127.0.0.1 and ::1) and read in net/core/sock_reuseport.c, where it has
// not changed for UDP since SO_ATTACH_REUSEPORT_CBPF came (4.5):
// - SO_ATTACH_REUSEPORT_CBPF needs no privilege (no capability check on a classic program): a
//   task running as nobody, with no capabilities, attaches one to its own group.
// - The program runs on the UDP payload: udp4/udp6 lookups call reuseport_select_sock() with
//   hdr_len = sizeof(struct udphdr), and run_bpf_filter() pulls the skb by that much before running
//   the program, so BPF_LD|BPF_ABS k reads payload byte k and BPF_LD|BPF_LEN is the payload length.
// - A classic load past the end of the packet ends the program with 0 (index 0). The program
//   below compares the length first, so a short datagram goes to the default index instead.
// - A returned index >= the group's size is not index 0: the kernel falls back to its hash over
//   all members. The default index must therefore name a live member (the shared socket at 0).
// - The group's socket array: a socket that binds (SO_REUSEPORT, same address, same uid) is
//   appended; a socket that leaves the group, when it is closed (its last fd closed, in every
//   process holding one: an inherited shared socket stays while any generation holds it), is
//   replaced in its slot by the group's last socket, and the group shrinks by one
//   (reuseport_detach_sock(): socks[i] = socks[num_socks - 1]). No other member moves, whichever
//   one leaves, index 0 included. reuseport_layout models exactly this.
// - The program belongs to the group, not to the socket it was attached through: it keeps
//   steering after that socket closes, and goes only with the group (its last member closing),
//   a new SO_ATTACH_REUSEPORT_CBPF (which replaces it) or SO_DETACH_REUSEPORT_BPF through any
//   member.
// - A socket of another uid cannot join the group (bind fails with EADDRINUSE).
#include <linux/filter.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "failure.hpp"

namespace grace::detail {

// Where a datagram carries its cookie.
struct cookie_format {
  // Payload offset of the cookie's first byte (offset 0 = the first byte after the UDP header).
  std::size_t offset = 0;
  // byte: the raw byte at `offset` (0-255), as a QUIC connection ID would carry it.
  // hex2: two lowercase ASCII hex digits at offset, offset+1 ("3f" = 0x3f); anything else
  //       (uppercase, non-hex, a datagram too short to hold both) is no cookie.
  enum class encoding { byte, hex2 } encoding = encoding::byte;
  // The payload must start with these bytes for the cookie to count ("DATA " for the sample);
  // empty: any payload. It must end before `offset` and hold at most max_cookie_prefix bytes.
  std::string prefix;
};

// Bounds that keep the program far below the kernel's 4096 instructions (BPF_MAXINSNS).
inline constexpr std::size_t max_steering_cookies = 200;
inline constexpr std::size_t max_cookie_prefix = 64;
// offset + the cookie's width (1 or 2) may not exceed this (a UDP payload is under 64 KiB).
inline constexpr std::size_t max_cookie_end = 65535;

// The classic BPF program for SO_ATTACH_REUSEPORT_CBPF: a datagram whose cookie is in
// `cookie_to_index` goes to that group index; one with no valid cookie (too short, wrong prefix,
// not two lowercase hex digits) or a cookie not listed goes to `default_index`. The cookies are
// found by binary search: with the sample's format and 200 cookies the program has 623
// instructions, of which a datagram runs about 50. Fails with
// errc::invalid_argument, saying why, for more than max_steering_cookies cookies, a cookie listed
// twice, an index above 65535 (a group holds fewer sockets), a cookie past max_cookie_end, or a
// prefix too long or reaching the cookie.
result<std::vector<sock_filter>> steering_program(
    const cookie_format& format, const std::vector<std::pair<std::uint8_t, std::uint32_t>>& cookie_to_index,
    std::uint32_t default_index);

// Attaches `program` to the SO_REUSEPORT group of `fd` (any member; it replaces the group's
// program). `fd` must have SO_REUSEPORT and be bound (else EINVAL) or not yet bound.
result<void> attach_steering(int fd, const std::vector<sock_filter>& program);

// Removes the program of `fd`'s group, which goes back to the kernel's hash. ENOENT when the
// group has none.
result<void> detach_steering(int fd);

// The kernel's socket array of one SO_REUSEPORT group, kept in step by its user: join() when a
// socket has bound to the group, leave() when one has closed. Ids are the caller's.
class reuseport_layout {
 public:
  // The index the kernel gave the socket that just joined: the end. Fails if `id` is already in.
  result<std::uint32_t> join(std::uint64_t id);
  // The socket `id` left the group: the last member takes its index. Fails if `id` is not in.
  result<void> leave(std::uint64_t id);
  std::optional<std::uint32_t> index_of(std::uint64_t id) const;
  std::size_t size() const { return members_.size(); }
  // The ids by index.
  const std::vector<std::uint64_t>& members() const { return members_; }

 private:
  std::vector<std::uint64_t> members_;
};

}  // namespace grace::detail
