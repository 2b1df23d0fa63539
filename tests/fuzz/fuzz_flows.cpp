// libFuzzer target: the flow channel's messages (grace/flows.hpp), as a previous generation and a
// next one could send them: after a first byte (its low bit: the role), the input is messages of
// a length byte and that many bytes (binary: forwarded datagrams carry addresses), each sent on a real
// SOCK_SEQPACKET pair to a router in either role. Whatever it accepts leaves the router
// consistent; whatever it refuses is one clear line, and the channel is closed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "grace/flows.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool from_predecessor = (data[0] & 1) != 0;
  std::vector<std::string> messages;
  for (std::size_t at = 1; at < size && messages.size() < 8;) {
    const std::size_t n = data[at++];
    const std::size_t take = std::min(n, size - at);
    messages.emplace_back(reinterpret_cast<const char*>(data + at), take);
    at += take;
  }
  const auto now = grace::flow_router::clock::now();
  grace::flow_table_options o;
  o.max_flows = 16;
  grace::flow_router router(o);
  int peer = -1;
  if (from_predecessor) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0) return 0;
    router.attach_predecessor(pair[0]);
    peer = pair[1];
  } else {
    auto fd = router.open_successor_channel();
    if (!fd) return 0;
    peer = *fd;
  }
  for (const auto& m : messages)
    if (!m.empty()) (void)send(peer, m.data(), m.size(), MSG_DONTWAIT);
  std::size_t delivered = 0;
  auto read = from_predecessor
                  ? router.on_predecessor_readable(now)
                  : router.on_successor_readable(now, [&](const grace::routed_datagram& d) {
                      ++delivered;
                      fuzz::require(d.from != nullptr && d.from_length >= sizeof(sa_family_t), "an address");
                      fuzz::require(!d.key.empty() && d.key.bytes().size() <= grace::flow_key::max_size, "a key");
                    });
  if (!read) {
    fuzz::require_line(read.error().message());
    fuzz::require(from_predecessor ? router.predecessor_fd() < 0 : router.successor_fd() < 0,
                  "a refused channel is closed");
  }
  if (from_predecessor) {
    fuzz::require(!read || router.predecessor_fd() >= 0 || !router.holding(), "not holding once the channel closed");
    // Routing still works whatever arrived.
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(1);
    grace::routed_datagram d;
    d.from = reinterpret_cast<const sockaddr*>(&a);
    d.from_length = sizeof a;
    d.key = grace::flow_key::of_address(d.from, d.from_length);
    d.payload = "x";
    (void)router.forward_if_not_ours(d, now);
  } else {
    fuzz::require(delivered <= messages.size(), "no more datagrams than messages");
  }
  fuzz::require(router.owned_flows() <= 16, "the table's bound");
  close(peer);
  return 0;
}
