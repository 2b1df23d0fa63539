// The fd channel's refusals that need no second process: connecting where nobody listens,
// options out of range, a description or note over its limit. Parcels between real processes
// are in test_fd_channel.cpp. And the room a new generation reports for connections.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "grace/fd_channel.hpp"
#include "grace/migration.hpp"
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

namespace {

// The reference count: every entry below the soft limit polled, a closed one answers POLLNVAL.
std::size_t free_entries_by_poll() {
  rlimit limit{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &limit) == 0);
  std::vector<pollfd> entries(limit.rlim_cur);
  for (std::size_t i = 0; i < entries.size(); ++i) entries[i] = pollfd{static_cast<int>(i), 0, 0};
  REQUIRE(poll(entries.data(), entries.size(), 0) >= 0);
  return static_cast<std::size_t>(
      std::count_if(entries.begin(), entries.end(), [](const pollfd& e) { return (e.revents & POLLNVAL) != 0; }));
}

std::size_t reserve_for(rlim_t limit) { return std::clamp<std::size_t>(static_cast<std::size_t>(limit) / 4, 16, 1024); }

}  // namespace

TEST_CASE("connection_capacity: the free fd entries below the limit, less a reserve; fds above it do not count") {
  rlimit saved{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &saved) == 0);
  REQUIRE(saved.rlim_cur >= 512);
  struct restore_limit {
    rlimit limit;
    ~restore_limit() { setrlimit(RLIMIT_NOFILE, &limit); }
  } restore{saved};
  rlimit lowered = saved;
  lowered.rlim_cur = 512;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &lowered) == 0);
  const std::size_t before = grace::connection_capacity();
  CHECK(before == free_entries_by_poll() - reserve_for(512));

  const int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
  REQUIRE(null >= 0);
  std::vector<int> opened;
  for (int i = 0; i < 40; ++i) opened.push_back(dup(null));
  for (int fd : opened) REQUIRE(fd >= 0);
  CHECK(grace::connection_capacity() == before - 41);

  // An fd at 400, then a limit of 300: it is open, but takes none of the 300 entries.
  const int high = fcntl(null, F_DUPFD_CLOEXEC, 400);
  REQUIRE(high >= 400);
  lowered.rlim_cur = 300;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &lowered) == 0);
  CHECK(grace::connection_capacity() == free_entries_by_poll() - reserve_for(300));

  // A full table: no room at all, and no fd was needed to find that out.
  std::vector<int> fillers;
  for (int fd; (fd = dup(null)) >= 0;) fillers.push_back(fd);
  CHECK(grace::connection_capacity() == 0);
  for (int fd : fillers) close(fd);
  close(high);
  for (int fd : opened) close(fd);
  close(null);
}
