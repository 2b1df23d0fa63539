// Parsing and normalisation tables: what counts as the same listening address.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <arpa/inet.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "canonical_address.hpp"
#include "grace/grace.hpp"

namespace {

// The address part of the match key ("1|inet|:80" is ":80").
std::string key_of(grace::network n, const std::string& address) {
  auto resolved = grace::resolve_tcp(n, address);
  REQUIRE_MESSAGE(resolved.has_value(), address);
  const std::string key = grace::detail::match_key(SOCK_STREAM, resolved->front());
  REQUIRE(key.rfind("1|inet|", 0) == 0);
  return key.substr(7);
}

std::string error_of(grace::network n, const std::string& address) {
  auto resolved = grace::resolve_tcp(n, address);
  REQUIRE_FALSE_MESSAGE(resolved.has_value(), address);
  CHECK(resolved.error().code() == grace::errc::invalid_address);
  return resolved.error().message();
}

}  // namespace

TEST_CASE("network names are Go's stream networks and udp; anything else is unknown") {
  CHECK(*grace::parse_network("tcp") == grace::network::tcp);
  CHECK(*grace::parse_network("tcp4") == grace::network::tcp4);
  CHECK(*grace::parse_network("tcp6") == grace::network::tcp6);
  CHECK(*grace::parse_network("unix") == grace::network::unix_stream);
  CHECK(*grace::parse_network("unixpacket") == grace::network::unix_packet);
  CHECK(*grace::parse_network("udp") == grace::network::udp);
  CHECK(*grace::parse_network("udp4") == grace::network::udp4);
  for (const char* bad : {"", "udp5", "TCP", "tcp5", "unixgram", "ip"}) {
    auto n = grace::parse_network(bad);
    REQUIRE_FALSE(n.has_value());
    CHECK(n.error().code() == grace::errc::unknown_network);
    CHECK(n.error().message().find("unknown network \"" + std::string(bad) + "\"") == 0);
  }
}

TEST_CASE("wildcards match each other, as gracenet's isSameAddr") {
  // gracenet strips "[::]" and "0.0.0.0" before comparing: ":80", "[::]:80", "0.0.0.0:80" agree.
  const std::string any = ":80";
  CHECK(key_of(grace::network::tcp, ":80") == any);
  CHECK(key_of(grace::network::tcp, "[::]:80") == any);
  CHECK(key_of(grace::network::tcp, "0.0.0.0:80") == any);
  CHECK(key_of(grace::network::tcp4, ":80") == any);
  CHECK(key_of(grace::network::tcp6, ":80") == any);
  CHECK(key_of(grace::network::tcp, "[::]:81") != any);
}

TEST_CASE("specific addresses are canonical text; v4-mapped is its IPv4 form") {
  CHECK(key_of(grace::network::tcp, "127.0.0.1:8080") == "127.0.0.1:8080");
  CHECK(key_of(grace::network::tcp, "[::1]:8080") == "[::1]:8080");
  CHECK(key_of(grace::network::tcp, "[0:0:0:0:0:0:0:1]:8080") == "[::1]:8080");
  CHECK(key_of(grace::network::tcp, "[::ffff:127.0.0.1]:8080") == "127.0.0.1:8080");
  CHECK(key_of(grace::network::tcp6, "[::ffff:10.1.2.3]:9") == "10.1.2.3:9");
  CHECK(key_of(grace::network::tcp, "127.0.0.1:0080") == "127.0.0.1:80");
  CHECK(key_of(grace::network::tcp, "127.0.0.1:8080") != key_of(grace::network::tcp, "[::1]:8080"));
}

TEST_CASE("host names resolve; tcp prefers IPv4, tcp6 takes only IPv6") {
  CHECK(key_of(grace::network::tcp4, "localhost:80") == "127.0.0.1:80");
  auto v6 = grace::resolve_tcp(grace::network::tcp6, "[::1]:80");
  REQUIRE(v6);
  CHECK(v6->front().family() == AF_INET6);
  auto any = grace::resolve_tcp(grace::network::tcp, ":80");
  REQUIRE(any);
  REQUIRE(any->size() == 2);
  CHECK(any->at(0).family() == AF_INET6);  // dual stack first
  CHECK(any->at(1).family() == AF_INET);
  auto any4 = grace::resolve_tcp(grace::network::tcp4, ":80");
  REQUIRE(any4);
  CHECK(any4->size() == 1);
  CHECK(any4->front().text() == "0.0.0.0:80");
  auto any6 = grace::resolve_tcp(grace::network::tcp6, ":80");
  REQUIRE(any6);
  CHECK(any6->size() == 1);
  CHECK(any6->front().text() == "[::]:80");
}

TEST_CASE("a numeric host gives what getaddrinfo gives, without asking it") {
  struct literal {
    grace::network n;
    std::string address, text;
  };
  const std::vector<literal> literals = {
      {grace::network::tcp, "127.0.0.1:80", "127.0.0.1:80"},
      {grace::network::tcp4, "10.1.2.3:9", "10.1.2.3:9"},
      {grace::network::tcp, "[::1]:80", "[::1]:80"},
      {grace::network::tcp6, "[2001:db8::7]:443", "[2001:db8::7]:443"},
      {grace::network::tcp, "[::ffff:127.0.0.1]:80", "127.0.0.1:80"},
      {grace::network::tcp, "127.1:80", "127.0.0.1:80"},      // inet_aton's short form: getaddrinfo's path
      {grace::network::tcp, "[fe80::1%1]:80", "[fe80::1%1]:80"},  // a zone: getaddrinfo's path
  };
  for (const auto& l : literals) {
    CAPTURE(l.address);
    auto resolved = grace::resolve_tcp(l.n, l.address);
    REQUIRE(resolved);
    REQUIRE(resolved->size() == 1);
    CHECK(resolved->front().text() == l.text);
  }
  // A literal of the other family is not the network's, as getaddrinfo says.
  CHECK(error_of(grace::network::tcp4, "[::1]:80").find("cannot resolve") != std::string::npos);
  CHECK(error_of(grace::network::tcp6, "127.0.0.1:80").find("cannot resolve") != std::string::npos);
}

TEST_CASE("listen calls skip resolve_tcp for a numeric address only, and get the same address") {
  using grace::network;
  struct literal {
    network n;
    std::string address;
  };
  // Where the shortcut answers, resolve_tcp gives that one address.
  const std::vector<literal> numeric = {
      {network::tcp, "127.0.0.1:80"},       {network::tcp4, "10.1.2.3:9"},     {network::udp, "127.0.0.1:53"},
      {network::udp4, "127.0.0.1:53"},      {network::tcp, "[::1]:80"},        {network::tcp6, "[2001:db8::7]:443"},
      {network::udp6, "[::1]:53"},          {network::tcp, "[::ffff:127.0.0.1]:80"}, {network::tcp, "0.0.0.0:8080"},
      {network::tcp, "[::]:0"},
  };
  for (const auto& l : numeric) {
    CAPTURE(l.address);
    const auto fast = grace::detail::numeric_inet_address(l.n, l.address);
    REQUIRE(fast);
    auto resolved = grace::resolve_tcp(l.n, l.address);
    REQUIRE(resolved);
    REQUIRE(resolved->size() == 1);
    CHECK(fast->text() == resolved->front().text());
    CHECK(fast->size() == resolved->front().size());
    CHECK(std::memcmp(fast->data(), resolved->front().data(), fast->size()) == 0);
  }
  // Everything else goes to resolve_tcp, which resolves it or says what is wrong: names, short
  // forms, zones, services, both wildcards, another family, malformed text, a unix network.
  const std::vector<literal> declined = {
      {network::tcp, "localhost:80"}, {network::tcp, "127.1:80"},  {network::tcp, "[fe80::1%1]:80"},
      {network::tcp, "127.0.0.1:http"}, {network::tcp, ":80"},     {network::tcp4, "[::1]:80"},
      {network::tcp6, "127.0.0.1:80"}, {network::tcp, "127.0.0.1"}, {network::tcp, "127.0.0.1:+80"},
      {network::tcp, "127.0.0.1:65536"}, {network::tcp, "::1:80"},  {network::tcp, std::string("127.0.0.1\0:80", 13)},
      {network::unix_stream, "127.0.0.1:80"},
  };
  for (const auto& l : declined) {
    CAPTURE(l.address);
    CHECK_FALSE(grace::detail::numeric_inet_address(l.n, l.address));
  }
}

TEST_CASE("service names are ports where /etc/services knows them, else a clear error") {
  auto http = grace::resolve_tcp(grace::network::tcp, "127.0.0.1:http");
  if (http) CHECK(http->front().port() == 80);
  else CHECK(http.error().message().find("invalid port \"http\"") != std::string::npos);
  auto unknown = grace::resolve_tcp(grace::network::tcp, "127.0.0.1:no-such-service-name");
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().message().find("no-such-service-name") != std::string::npos);
}

TEST_CASE("malformed TCP addresses say what is wrong") {
  CHECK(error_of(grace::network::tcp, "127.0.0.1").find("missing port") != std::string::npos);
  CHECK(error_of(grace::network::tcp, "::1:80").find("too many colons") != std::string::npos);
  CHECK(error_of(grace::network::tcp, "[::1]80").find("[host]:port") != std::string::npos);
  CHECK(error_of(grace::network::tcp, "[::1").find("[host]:port") != std::string::npos);
  CHECK(error_of(grace::network::tcp, "127.0.0.1:65536").find("invalid port") != std::string::npos);
  CHECK(error_of(grace::network::tcp, "127.0.0.1:-1").find("invalid port") != std::string::npos);
  CHECK(error_of(grace::network::tcp, "127.0.0.1:").find("invalid port") != std::string::npos);
  CHECK(error_of(grace::network::tcp, "no-such-host.invalid:80").find("cannot resolve") != std::string::npos);
  CHECK(error_of(grace::network::tcp4, "[::1]:80").find("::1") != std::string::npos);
  CHECK(error_of(grace::network::tcp6, "127.0.0.1:80").find("127.0.0.1") != std::string::npos);
  auto not_tcp = grace::resolve_tcp(grace::network::unix_stream, "/x");
  REQUIRE_FALSE(not_tcp);
  CHECK(not_tcp.error().code() == grace::errc::unknown_network);
}

TEST_CASE("unix paths are absolute against the start-up directory, abstract names keep '@'") {
  auto rel = grace::resolve_unix("run/../app.sock", "/srv/app");
  REQUIRE(rel);
  CHECK(rel->text() == "/srv/app/app.sock");
  CHECK(grace::detail::match_key(SOCK_STREAM, *rel) == "1|unix|/srv/app/app.sock");
  auto abs = grace::resolve_unix("//tmp/./x.sock", "/elsewhere");
  REQUIRE(abs);
  CHECK(abs->text() == "/tmp/x.sock");
  auto abstract = grace::resolve_unix("@grace-test", "/srv");
  REQUIRE(abstract);
  CHECK(abstract->is_abstract());
  CHECK(abstract->text() == "@grace-test");
  CHECK(grace::detail::normalize_absolute_path("/a/b", "../../../c") == "/c");
  CHECK(grace::detail::normalize_absolute_path("/", ".") == "/");

  auto message_of = [](const grace::result<grace::socket_address>& r) { return r ? "" : r.error().message(); };
  CHECK(message_of(grace::resolve_unix("", "/")).find("empty") != std::string::npos);
  CHECK(message_of(grace::resolve_unix("/" + std::string(200, 'x'), "/")).find("longer than") != std::string::npos);
  CHECK(message_of(grace::resolve_unix("@" + std::string(200, 'x'), "/")).find("abstract") != std::string::npos);
  CHECK(message_of(grace::resolve_unix(std::string("/tmp/a\0b", 8), "/")).find("NUL") != std::string::npos);
}

TEST_CASE("kernel addresses round-trip through socket_address") {
  auto v4 = grace::resolve_tcp(grace::network::tcp4, "10.0.0.1:443");
  REQUIRE(v4);
  auto copy = grace::socket_address::from_sockaddr(v4->front().data(), v4->front().size());
  REQUIRE(copy);
  CHECK(copy->text() == "10.0.0.1:443");
  CHECK(copy->port() == 443);
  CHECK_FALSE(copy->is_wildcard());
  sockaddr bogus{};
  bogus.sa_family = AF_PACKET;
  CHECK_FALSE(grace::socket_address::from_sockaddr(&bogus, sizeof bogus));
  CHECK_FALSE(grace::socket_address::from_sockaddr(nullptr, 0));
}

TEST_CASE("an IPv4 address's text is what inet_ntop and to_string spell, plain or v4-mapped") {
  // Edge octets and ports, then a spread of others (a fixed LCG: the same run every time).
  std::vector<std::uint32_t> hosts = {0x00000000, 0xffffffff, 0x7f000001, 0x0a000001, 0x09630a64, 0xc0a80000};
  std::vector<std::uint16_t> ports = {1, 9, 10, 99, 100, 999, 1000, 9999, 10000, 65535};
  std::uint32_t state = 12345;
  for (int i = 0; i < 2000; ++i) {
    state = state * 1664525U + 1013904223U;
    hosts.push_back(state);
    ports.push_back(static_cast<std::uint16_t>(state >> 7));
  }
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    const std::uint16_t port = ports[i % ports.size()];
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(port);
    in.sin_addr.s_addr = htonl(hosts[i]);
    char host[INET_ADDRSTRLEN] = {};
    REQUIRE(inet_ntop(AF_INET, &in.sin_addr, host, sizeof host) != nullptr);
    const std::string expected = std::string(host) + ":" + std::to_string(port);
    auto plain = grace::socket_address::from_sockaddr(reinterpret_cast<const sockaddr*>(&in), sizeof in);
    REQUIRE(plain);
    CHECK(plain->text() == expected);
    sockaddr_in6 mapped{};
    mapped.sin6_family = AF_INET6;
    mapped.sin6_port = in.sin_port;
    mapped.sin6_addr.s6_addr[10] = 0xff;
    mapped.sin6_addr.s6_addr[11] = 0xff;
    std::memcpy(&mapped.sin6_addr.s6_addr[12], &in.sin_addr, 4);
    auto as_v6 = grace::socket_address::from_sockaddr(reinterpret_cast<const sockaddr*>(&mapped), sizeof mapped);
    REQUIRE(as_v6);
    CHECK(as_v6->text() == expected);
  }
}

TEST_CASE("a port is 1 to 5 decimal digits up to 65535: no sign, blank, or wrap-around") {
  // getaddrinfo would read "+65616" as 65616 and wrap it to port 80.
  for (const char* bad : {"127.0.0.1:+65616", "127.0.0.1:+80", "127.0.0.1: 80", "127.0.0.1:80 ",
                          "127.0.0.1:000080", "127.0.0.1:99999", "127.0.0.1:0x50", "127.0.0.1:1e3",
                          "127.0.0.1:8O", "127.0.0.1:-0"})
    CHECK_MESSAGE(error_of(grace::network::tcp, bad).find("invalid port") != std::string::npos, bad);
  CHECK(key_of(grace::network::tcp, "127.0.0.1:65535") == "127.0.0.1:65535");
  CHECK(key_of(grace::network::tcp, "127.0.0.1:0") == "127.0.0.1:0");
  CHECK(error_of(grace::network::tcp, std::string("127.0.0.1\0:80", 13)).find("NUL") != std::string::npos);
  // A quoted outside value never carries a raw control byte into a message (a forged log line).
  const std::string forged = error_of(grace::network::tcp, "x\ngrace: evil:80");
  CHECK(forged.find('\n') == std::string::npos);
  CHECK(forged.find("\\x0a") != std::string::npos);
}
