// UDP flow affinity's parts in process (grace/flows.hpp): the key, the bounded table, and
// routers of two or three generations talking over real socket pairs, with no loop.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "grace/flows.hpp"

using namespace std::chrono_literals;
using grace::flow_key;
using grace::flow_router;
using grace::flow_table;
using grace::routed_datagram;

namespace {

flow_key key(const std::string& s) { return *flow_key::of_bytes(s); }

sockaddr_in client(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

routed_datagram datagram(const sockaddr_in& from, const flow_key& k, std::string_view payload, unsigned socket = 0) {
  routed_datagram d;
  d.socket = socket;
  d.from = reinterpret_cast<const sockaddr*>(&from);
  d.from_length = sizeof from;
  d.payload = payload;
  d.key = k;
  return d;
}

// Waits (bounded) until fd is readable.
bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 2000) == 1;
}

// The old generation hands its flows to a new one: the new one's router holds until the list
// has arrived.
void hand_over(flow_router& old_side, flow_router& new_side) {
  auto fd = old_side.open_successor_channel();
  REQUIRE(fd);
  new_side.attach_predecessor(*fd);
  CHECK(new_side.holding());
  const auto now = flow_router::clock::now();
  while (new_side.holding()) {
    REQUIRE(readable(new_side.predecessor_fd()));
    REQUIRE(new_side.on_predecessor_readable(now));
  }
}

}  // namespace

TEST_CASE("a flow key is 1 to 64 bytes, or an IP address and port") {
  CHECK_FALSE(flow_key::of_bytes(""));
  CHECK_FALSE(flow_key::of_bytes(std::string(65, 'x')));
  CHECK(flow_key::of_bytes(std::string(64, 'x')));
  CHECK(key("abc") == key("abc"));
  CHECK(key("abc") != key("abd"));
  const auto a = client(1000), b = client(1001);
  CHECK(flow_key::of_address(reinterpret_cast<const sockaddr*>(&a), sizeof a) ==
        flow_key::of_address(reinterpret_cast<const sockaddr*>(&a), sizeof a));
  CHECK(flow_key::of_address(reinterpret_cast<const sockaddr*>(&a), sizeof a) !=
        flow_key::of_address(reinterpret_cast<const sockaddr*>(&b), sizeof b));
  sockaddr_in6 six{};
  six.sin6_family = AF_INET6;
  six.sin6_addr = in6addr_loopback;
  six.sin6_port = htons(1000);
  CHECK(flow_key::of_address(reinterpret_cast<const sockaddr*>(&six), sizeof six).bytes().size() == 1 + 16 + 2 + 4);
  sockaddr unix_address{};
  unix_address.sa_family = AF_UNIX;
  CHECK(flow_key::of_address(&unix_address, sizeof unix_address).empty());
  CHECK(flow_key::of_address(reinterpret_cast<const sockaddr*>(&a), 4).empty());  // too short to be one
}

TEST_CASE("the table is bounded: the least recently seen flow makes room, and idle flows expire") {
  grace::flow_table_options o;
  o.max_flows = 3;
  o.idle = 100ms;
  flow_table t(o);
  const auto t0 = flow_table::clock::now();
  CHECK_FALSE(t.touch(key("a"), t0));
  CHECK_FALSE(t.touch(key("b"), t0 + 1ms));
  CHECK_FALSE(t.touch(key("c"), t0 + 2ms));
  CHECK_FALSE(t.touch(key("a"), t0 + 3ms));  // seen again: b is now the oldest
  auto evicted = t.touch(key("d"), t0 + 4ms);
  REQUIRE(evicted);
  CHECK(*evicted == key("b"));
  CHECK(t.size() == 3);
  // A flood of new keys never grows it.
  for (int i = 0; i < 10000; ++i) t.touch(key("flood" + std::to_string(i)), t0 + 5ms);
  CHECK(t.size() == 3);
  CHECK(t.contains(key("flood9999")));
  CHECK_FALSE(t.contains(key("a")));
  REQUIRE(t.next_expiry());
  CHECK(t.expire(t0 + 50ms).empty());
  CHECK(t.expire(t0 + 106ms).size() == 3);
  CHECK(t.size() == 0);
  CHECK_FALSE(t.next_expiry());
  CHECK(flow_table::bytes_per_flow() > sizeof(flow_key));
  CHECK(flow_table::bytes_per_flow() < 512);
}

TEST_CASE("a new generation forwards the old one's flows to it, and owns a flow once it ended there") {
  flow_router old_side({}), new_side({});
  const auto now = flow_router::clock::now();
  const auto a = client(2000), b = client(2001);
  // The old generation served flow "a" before the hand-over.
  CHECK_FALSE(old_side.forward_if_not_ours(datagram(a, key("a"), "hello"), now));
  CHECK(old_side.owned_flows() == 1);
  hand_over(old_side, new_side);
  CHECK(new_side.predecessor_flows() == 1);

  // "a" goes back to the old generation with its source address and socket; "b" is new: ours.
  CHECK(new_side.forward_if_not_ours(datagram(a, key("a"), "DATA a 2", 1), now));
  CHECK_FALSE(new_side.forward_if_not_ours(datagram(b, key("b"), "DATA b 1"), now));
  CHECK(new_side.owned_flows() == 1);
  REQUIRE(readable(old_side.successor_fd()));
  std::vector<std::string> delivered;
  REQUIRE(old_side.on_successor_readable(now, [&](const routed_datagram& d) {
    delivered.push_back(std::string(d.payload));
    CHECK(d.socket == 1);
    CHECK(d.key == key("a"));
    REQUIRE(d.from_length == sizeof(sockaddr_in));
    CHECK(reinterpret_cast<const sockaddr_in*>(d.from)->sin_port == a.sin_port);
  }));
  CHECK(delivered == std::vector<std::string>{"DATA a 2"});
  CHECK(old_side.counters().received_forwarded == 1);
  CHECK(new_side.counters().forwarded == 1);

  // The old generation's flow ends: the new one owns the key from then on, and the old one is done.
  CHECK_FALSE(old_side.finished());
  old_side.ended(key("a"));
  CHECK(old_side.finished());
  REQUIRE(readable(new_side.predecessor_fd()));
  REQUIRE(new_side.on_predecessor_readable(now));
  CHECK(new_side.predecessor_flows() == 0);
  CHECK_FALSE(new_side.forward_if_not_ours(datagram(a, key("a"), "DATA a 3"), now));
  // A late datagram of a flow the old generation no longer has is answered there, not adopted:
  // it still exits when its own flows are done.
  CHECK_FALSE(old_side.forward_if_not_ours(datagram(b, key("late"), "DATA late 9"), now));
  CHECK(old_side.owned_flows() == 0);
  CHECK(old_side.finished());
}

TEST_CASE("a generation that hands over while its predecessor drains passes it a channel to that one's flows") {
  flow_router first({}), second({}), third({});
  const auto now = flow_router::clock::now();
  const auto a = client(3000), b = client(3001);
  first.forward_if_not_ours(datagram(a, key("a"), "x"), now);
  hand_over(first, second);
  second.forward_if_not_ours(datagram(b, key("b"), "x"), now);
  hand_over(second, third);
  CHECK(third.predecessor_flows() == 2);  // its own and the first's
  // A datagram of the first generation's flow goes straight from the third to the first, on a
  // copy of the second's channel to it; the second one sees nothing of it.
  CHECK(third.forward_if_not_ours(datagram(a, key("a"), "for the first"), now));
  pollfd quiet{second.successor_fd(), POLLIN, 0};
  CHECK(poll(&quiet, 1, 0) == 0);
  REQUIRE(readable(first.successor_fd()));
  std::string got;
  REQUIRE(first.on_successor_readable(now, [&](const routed_datagram& d) { got = std::string(d.payload); }));
  CHECK(got == "for the first");
  // The first one's flow ends: the word travels to the third, through the second.
  first.ended(key("a"));
  REQUIRE(readable(second.predecessor_fd()));
  REQUIRE(second.on_predecessor_readable(now));
  REQUIRE(readable(third.predecessor_fd()));
  REQUIRE(third.on_predecessor_readable(now));
  CHECK(third.predecessor_flows() == 1);
  CHECK_FALSE(second.finished());  // its own flow "b" goes on
  second.ended(key("b"));
  CHECK(second.finished());
}

TEST_CASE("the previous generation going away gives its flows to the new one, counted") {
  flow_router old_side({}), new_side({});
  const auto now = flow_router::clock::now();
  const auto a = client(4000);
  old_side.forward_if_not_ours(datagram(a, key("a"), "x"), now);
  hand_over(old_side, new_side);
  CHECK(old_side.abandon() == 1);  // it exits
  REQUIRE(readable(new_side.predecessor_fd()));
  auto read = new_side.on_predecessor_readable(now);
  REQUIRE_FALSE(read);
  CHECK(read.error().code() == grace::errc::channel_closed);
  CHECK(new_side.counters().predecessor_flows_lost == 1);
  CHECK(new_side.predecessor_fd() < 0);
  CHECK_FALSE(new_side.forward_if_not_ours(datagram(a, key("a"), "x"), now));
}

TEST_CASE("malformed messages on the channel are refused with an error that names them") {
  const auto now = flow_router::clock::now();
  SUBCASE("from the previous generation") {
    int pair[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) == 0);
    flow_router r({});
    r.attach_predecessor(pair[0]);
    const std::string bad_key = std::string("K") + static_cast<char>(70) + "short";
    REQUIRE(send(pair[1], bad_key.data(), bad_key.size(), 0) > 0);
    auto read = r.on_predecessor_readable(now);
    REQUIRE_FALSE(read);
    CHECK(read.error().message().find("malformed flow key") != std::string::npos);
    CHECK_FALSE(r.holding());  // it reads the sockets itself now
    close(pair[1]);
  }
  SUBCASE("from the next generation") {
    flow_router r({});
    auto fd = r.open_successor_channel();
    REQUIRE(fd);
    const std::string not_forward = "Xjunk";
    REQUIRE(send(*fd, not_forward.data(), not_forward.size(), 0) > 0);
    REQUIRE(readable(r.successor_fd()));
    int delivered = 0;
    auto read = r.on_successor_readable(now, [&](const routed_datagram&) { ++delivered; });
    REQUIRE_FALSE(read);
    CHECK(read.error().message().find("not a forwarded datagram") != std::string::npos);
    CHECK(delivered == 0);
    close(*fd);
  }
  SUBCASE("a forwarded datagram from an address that is not IP") {
    flow_router r({});
    auto fd = r.open_successor_channel();
    REQUIRE(fd);
    std::string m = "F";
    m += '\0';
    m += '\0';
    m += static_cast<char>(sizeof(sa_family_t));
    sa_family_t family = AF_UNIX;
    m.append(reinterpret_cast<const char*>(&family), sizeof family);
    m += static_cast<char>(1);
    m += 'k';
    m += "payload";
    REQUIRE(send(*fd, m.data(), m.size(), 0) > 0);
    REQUIRE(readable(r.successor_fd()));
    auto read = r.on_successor_readable(now, [](const routed_datagram&) {});
    REQUIRE_FALSE(read);
    CHECK(read.error().message().find("not IP") != std::string::npos);
    close(*fd);
  }
}

TEST_CASE("without affinity every datagram is this generation's, and flows are still bounded") {
  grace::flow_table_options o;
  o.max_flows = 2;
  flow_router r(o, false);
  const auto now = flow_router::clock::now();
  const auto a = client(5000);
  for (int i = 0; i < 5; ++i) CHECK_FALSE(r.forward_if_not_ours(datagram(a, key("k" + std::to_string(i)), "x"), now));
  CHECK(r.owned_flows() == 2);
  // Datagrams naming new keys in a full table evict nothing: they are answered, not tracked.
  CHECK(r.counters().untracked == 3);
  CHECK(r.counters().evicted == 0);
  // The application beginning flows does evict the least recently seen ones, and it hears of each.
  for (int i = 0; i < 3; ++i) r.began(key("begun" + std::to_string(i)), now);
  std::vector<flow_key> ended;
  r.expire(now, [&](const flow_key& k) { ended.push_back(k); });
  CHECK(ended.size() == 3);
  CHECK(r.counters().evicted == 3);
  CHECK(r.owned_flows() == 2);
}
