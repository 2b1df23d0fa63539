// The fd channel's refusals that need no second process: connecting where nobody listens,
// options out of range, a description or note over its limit. Parcels between real processes
// are in test_fd_channel.cpp.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "grace/fd_channel.hpp"
#include "support/process.hpp"

using namespace test_support;
using namespace std::chrono_literals;

namespace {

grace::fd_description described(const std::string& name, const std::string& app) {
  grace::fd_description d;
  d.kind = grace::fd_kind::other;
  d.network = grace::network::unix_stream;
  d.address = "/nowhere/" + name;
  d.name = name;
  d.application = app;
  return d;
}

}  // namespace

TEST_CASE("connecting where nobody listens names the path; options out of range are refused") {
  temp_dir dir;
  auto c = grace::fd_channel::connect(dir.file("nobody.sock"));
  REQUIRE_FALSE(c);
  CHECK(c.error().message().find("nobody.sock") != std::string::npos);
  grace::channel_options options;
  options.max_fds_per_message = 254;
  auto ends = grace::fd_channel::pair(SOCK_SEQPACKET, options);
  REQUIRE_FALSE(ends);
  CHECK(ends.error().code() == grace::errc::invalid_argument);
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  auto not_socket = grace::fd_channel::adopt(fds[0]);
  CHECK_FALSE(not_socket);
  close(fds[1]);
}

TEST_CASE("a description or note over its limit is refused before anything is sent") {
  auto ends = grace::fd_channel::pair(SOCK_SEQPACKET);
  REQUIRE(ends);
  grace::outgoing_parcel p;
  p.note = std::string(grace::note_limit + 1, 'n');
  auto sent = ends->first.send(p, 5s);
  REQUIRE_FALSE(sent);
  CHECK(sent.error().code() == grace::errc::invalid_argument);
  grace::outgoing_parcel q;
  q.fds.push_back({0, described("big", std::string(grace::description_limit, 'a'))});
  auto sent2 = ends->first.send(q, 5s);
  REQUIRE_FALSE(sent2);
  CHECK(sent2.error().message().find("at most") != std::string::npos);
}
