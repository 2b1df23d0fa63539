// grace::net in one process, no child started: fresh TCP, UDP and unix listeners, SO_REUSEPORT
// groups, unix socket files, names, closing. The cases with child processes are in test_net.cpp,
// test_udp.cpp and test_workers.cpp.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "grace/grace.hpp"
#include "support/errors.hpp"
#include "support/process.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {

bool exists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}

bool reuse_port_on(int fd) {
  int on = 0;
  socklen_t len = sizeof on;
  return getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, &len) == 0 && on != 0;
}

int free_udp_port() {
  int port = 0;
  close(raw_udp_socket(port));
  return port;
}

}  // namespace

TEST_CASE("a fresh TCP listener is non-blocking, close-on-exec, and reports its real port") {
  grace::net net;
  auto l = net.listen_tcp("tcp", "127.0.0.1:0");
  REQUIRE(l);
  CHECK_FALSE((*l)->inherited());
  CHECK((*l)->local_address().port() != 0);
  CHECK((*l)->address() == "127.0.0.1:" + std::to_string((*l)->local_address().port()));
  CHECK((*l)->name() == "unknown");
  CHECK((fcntl((*l)->fd(), F_GETFL) & O_NONBLOCK) != 0);
  CHECK((fcntl((*l)->fd(), F_GETFD) & FD_CLOEXEC) != 0);
  int reuse = 0;
  socklen_t len = sizeof reuse;
  getsockopt((*l)->fd(), SOL_SOCKET, SO_REUSEADDR, &reuse, &len);
  CHECK(reuse == 1);
  CHECK(net.active_listeners().size() == 1);

  // The same port again is EADDRINUSE with the address in the message.
  auto again = net.listen_tcp("tcp4", (*l)->address());
  REQUIRE_FALSE(again);
  CHECK(again.error().code() == std::errc::address_in_use);
  CHECK(again.error().message().find((*l)->address()) != std::string::npos);
}

TEST_CASE("tcp6 is IPv6-only; tcp takes an IPv6 literal too") {
  grace::net net;
  auto v6 = net.listen_tcp("tcp6", "[::1]:0");
  REQUIRE(v6);
  int only = 0;
  socklen_t len = sizeof only;
  getsockopt((*v6)->fd(), IPPROTO_IPV6, IPV6_V6ONLY, &only, &len);
  CHECK(only == 1);
  // (The kernel marks any socket bound to a specific IPv6 address v6-only; dual stack only
  // shows on a wildcard, which these loopback-only tests do not bind.)
  auto dual = net.listen_tcp("tcp", "[::1]:0");
  REQUIRE(dual);
  CHECK((*dual)->address().rfind("[::1]:", 0) == 0);
}

TEST_CASE("unknown networks and bad names are errors, like Go's UnknownNetworkError") {
  grace::net net;
  auto bad = net.listen("udp5", "127.0.0.1:0");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code() == grace::errc::unknown_network);
  CHECK(bad.error().message().find("\"udp5\"") != std::string::npos);
  CHECK_FALSE(net.listen_tcp("unix", "127.0.0.1:0"));
  CHECK_FALSE(net.listen_unix("tcp", "/tmp/x"));
  auto named = net.listen_tcp("tcp", "127.0.0.1:0", {SOMAXCONN, "has:colon"});
  REQUIRE_FALSE(named);
  CHECK(named.error().code() == grace::errc::invalid_listener_name);
  CHECK(named.error().message().find("has:colon") != std::string::npos);
  CHECK(net.listen_tcp("tcp", "127.0.0.1:0", {SOMAXCONN, "web"}).value()->name() == "web");
}

TEST_CASE("unix: a stale socket file is replaced, a live one or a regular file is not") {
  temp_dir dir;
  const std::string stale = dir.file("stale.sock");
  close(raw_unix_listener(stale, SOCK_STREAM));  // the file stays, nobody listens
  REQUIRE(exists(stale));
  grace::net net;
  auto replaced = net.listen_unix("unix", stale);
  REQUIRE_MESSAGE(replaced, error_text(replaced));
  CHECK((*replaced)->address() == stale);

  const std::string live = dir.file("live.sock");
  const int other = raw_unix_listener(live, SOCK_STREAM);
  auto refused = net.listen_unix("unix", live);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code() == std::errc::address_in_use);
  CHECK(refused.error().message().find("another process is listening") != std::string::npos);
  close(other);

  const std::string regular = dir.file("data.txt");
  std::ofstream(regular) << "keep me";
  auto not_socket = net.listen_unix("unix", regular);
  REQUIRE_FALSE(not_socket);
  CHECK(not_socket.error().message().find("not a socket") != std::string::npos);
  CHECK(exists(regular));
}

TEST_CASE("closing removes only a socket file this process made and never shared") {
  temp_dir dir;
  grace::net net;
  const std::string path = dir.file("own.sock");
  auto own = net.listen_unix("unix", path);
  REQUIRE(own);
  REQUIRE(net.close(*own));
  CHECK_FALSE(exists(path));
  CHECK(net.active_listeners().empty());
  CHECK(net.close(*own).error().code() == grace::errc::not_an_active_listener);

  // Somebody else re-bound the path meanwhile: not ours to remove.
  const std::string moved = dir.file("moved.sock");
  auto first = net.listen_unix("unix", moved);
  REQUIRE(first);
  REQUIRE(unlink(moved.c_str()) == 0);
  const int other = raw_unix_listener(moved, SOCK_STREAM);
  REQUIRE(net.close(*first));
  CHECK(exists(moved));
  close(other);

  // Abstract sockets have no file at all.
  auto abstract = net.listen_unix("unix", "@grace-net-test-" + std::to_string(getpid()));
  REQUIRE(abstract);
  CHECK((*abstract)->local_address().is_abstract());
  REQUIRE(net.close(*abstract));
}

TEST_CASE("with nothing inherited, inherit() succeeds and nothing is unused") {
  grace::net net;
  CHECK(net.inherit());
  CHECK(net.unused_inherited().empty());
  CHECK(net.close_unused_inherited() == 0);
}

TEST_CASE("listen_tcp from a sockaddr the application already holds") {
  grace::net net;
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  in.sin_port = 0;
  auto l = net.listen_tcp("tcp4", reinterpret_cast<const sockaddr*>(&in), sizeof in);
  REQUIRE_MESSAGE(l, error_text(l));
  CHECK((*l)->address().rfind("127.0.0.1:", 0) == 0);
  CHECK((*l)->local_address().port() != 0);
  auto wrong_family = net.listen_tcp("tcp6", reinterpret_cast<const sockaddr*>(&in), sizeof in);
  REQUIRE_FALSE(wrong_family);
  CHECK(wrong_family.error().code() == grace::errc::invalid_address);
  CHECK(wrong_family.error().message().find("not a tcp6 address") != std::string::npos);
  auto truncated = net.listen_tcp("tcp", reinterpret_cast<const sockaddr*>(&in), 1);
  REQUIRE_FALSE(truncated);
  CHECK(truncated.error().code() == grace::errc::invalid_address);
}

TEST_CASE("listen_udp binds fresh, says what it bound, and refuses what is not UDP") {
  grace::net net;
  auto any = net.listen_udp("udp4", "127.0.0.1:0");
  REQUIRE(any);
  CHECK((*any)->network() == grace::network::udp4);
  CHECK((*any)->address().rfind("127.0.0.1:", 0) == 0);
  CHECK_FALSE((*any)->inherited());
  const int port = free_udp_port();
  auto via_listen = net.listen("udp", "127.0.0.1:" + std::to_string(port));
  REQUIRE(via_listen);
  CHECK((*via_listen)->address() == "127.0.0.1:" + std::to_string(port));
  auto tcp = net.listen_udp("tcp", "127.0.0.1:0");
  REQUIRE_FALSE(tcp);
  CHECK(tcp.error().message().find("unknown UDP network \"tcp\"") != std::string::npos);
  auto bad = net.listen_udp("udp", "127.0.0.1:+1");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code() == grace::errc::invalid_address);
  CHECK(grace::parse_network("udp6").value() == grace::network::udp6);
}

TEST_CASE("listen_group: an SO_REUSEPORT group on one port, one shared socket, and bad input named") {
  grace::net net;
  grace::listen_options options;
  options.reuse_port = true;
  auto group = net.listen_group("tcp", "127.0.0.1:0", 3, options);
  REQUIRE_MESSAGE(group, error_text(group));
  REQUIRE(group->members.size() == 3);
  CHECK(group->steered == 3);
  for (auto* l : group->members) {
    CHECK(l->address() == group->members.front()->address());
    CHECK(reuse_port_on(l->fd()));
    CHECK_FALSE(l->inherited());
  }
  auto shared = net.listen_group("tcp", "127.0.0.1:0", 1);
  REQUIRE_MESSAGE(shared, error_text(shared));
  CHECK(shared->members.size() == 1);
  CHECK(shared->steered == 1);
  CHECK_FALSE(reuse_port_on(shared->members.front()->fd()));
  auto none = net.listen_group("tcp", "127.0.0.1:0", 0);
  REQUIRE_FALSE(none);
  CHECK(none.error().message().find("0 sockets") != std::string::npos);
  auto unix_group = net.listen_group("unix", "/tmp/x.sock", 2);
  REQUIRE_FALSE(unix_group);
  CHECK(unix_group.error().message().find("unknown network \"unix\"") != std::string::npos);
  auto bad_address = net.listen_group("tcp", "127.0.0.1:notaport", 2, options);
  REQUIRE_FALSE(bad_address);
  CHECK(bad_address.error().message().find("notaport") != std::string::npos);
}
