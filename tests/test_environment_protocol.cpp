// The environment protocol parsed from a map, in-process: every malformed value gives a named
// error or a safe default, and the child's environment is built from one place.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <sys/socket.h>

#include <string>
#include <vector>

#include "environment_protocol.hpp"

using grace::detail::environment;
using grace::detail::parse_inheritance;

namespace {

constexpr pid_t self = 4242;
constexpr long max_fds = 1024;

std::string listen_error(const environment& env) {
  auto parsed = parse_inheritance(env, self, max_fds);
  REQUIRE_FALSE(parsed.listen);
  CHECK(parsed.listen.error().code() == grace::errc::malformed_environment);
  return parsed.listen.error().message();
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("LISTEN_*: counts, pids and names") {
  auto none = parse_inheritance({}, self, max_fds);
  REQUIRE(none.listen);
  CHECK(none.listen->count == 0);
  CHECK(none.generation == 1);

  auto two = parse_inheritance({{"LISTEN_FDS", "2"}, {"LISTEN_PID", "4242"}, {"LISTEN_FDNAMES", "web:"}}, self, max_fds);
  REQUIRE(two.listen);
  CHECK(two.listen->count == 2);
  CHECK(two.listen->names == std::vector<std::string>{"web", "unknown"});

  auto other_pid = parse_inheritance({{"LISTEN_FDS", "2"}, {"LISTEN_PID", "1"}}, self, max_fds);
  REQUIRE(other_pid.listen);
  CHECK(other_pid.listen->count == 0);  // meant for another process

  auto gracenet = parse_inheritance({{"LISTEN_FDS", "1"}}, self, max_fds);  // no LISTEN_PID
  REQUIRE(gracenet.listen);
  CHECK(gracenet.listen->count == 1);

  auto zero = parse_inheritance({{"LISTEN_FDS", "0"}, {"LISTEN_FDNAMES", ""}}, self, max_fds);
  REQUIRE(zero.listen);
  CHECK(zero.listen->count == 0);
}

TEST_CASE("LISTEN_*: every malformed value is an error that names it") {
  CHECK(contains(listen_error({{"LISTEN_FDS", "abc"}}), "LISTEN_FDS=\"abc\" is not a non-negative number"));
  CHECK(contains(listen_error({{"LISTEN_FDS", "-1"}}), "LISTEN_FDS=\"-1\""));
  CHECK(contains(listen_error({{"LISTEN_FDS", "+1"}}), "LISTEN_FDS=\"+1\""));
  CHECK(contains(listen_error({{"LISTEN_FDS", " 1"}}), "LISTEN_FDS=\" 1\""));
  CHECK(contains(listen_error({{"LISTEN_FDS", "99999999999999999999999"}}), "not a non-negative number"));
  CHECK(contains(listen_error({{"LISTEN_FDS", "1022"}}), "more fds than this process may open (1024)"));
  CHECK(contains(listen_error({{"LISTEN_FDS", "1"}, {"LISTEN_PID", "abc"}}), "LISTEN_PID=\"abc\" is not a process id"));
  CHECK(contains(listen_error({{"LISTEN_FDS", "1"}, {"LISTEN_PID", "0"}}), "LISTEN_PID=\"0\""));
  CHECK(contains(listen_error({{"LISTEN_FDS", "1"}, {"LISTEN_PID", "99999999999"}}), "LISTEN_PID"));
  CHECK(contains(listen_error({{"LISTEN_FDS", "1"}, {"LISTEN_FDNAMES", "a:b"}}),
                 "LISTEN_FDNAMES=\"a:b\" names 2 fds but LISTEN_FDS=1"));
  // A value with a newline is quoted escaped: it cannot forge a log line.
  const std::string forged = listen_error({{"LISTEN_FDS", "1\ngrace: all good"}});
  CHECK(forged.find('\n') == std::string::npos);
  CHECK(contains(forged, "\\x0a"));
}

TEST_CASE("LISTEN_FDNAMES: a name LISTEN_FDNAMES cannot carry is served as \"unknown\", with a warning") {
  const std::string huge(100000, 'x');
  auto parsed = parse_inheritance({{"LISTEN_FDS", "3"}, {"LISTEN_FDNAMES", "ok:" + huge + ":bad\x01name"}}, self, max_fds);
  REQUIRE(parsed.listen);
  CHECK(parsed.listen->names == std::vector<std::string>{"ok", "unknown", "unknown"});
  REQUIRE(parsed.warnings.size() == 2);
  CHECK(parsed.warnings[0].size() < 400);  // a 100 KB name is not copied into the log
  CHECK(contains(parsed.warnings[1], "\\x01"));
}

TEST_CASE("GRACE_LISTEN_TYPES: taken from a grace parent only as one s, p or d per fd; otherwise a warning") {
  auto told = parse_inheritance({{"LISTEN_FDS", "3"}, {"LISTEN_PID", "4242"}, {"GRACE_LISTEN_TYPES", "sdp"}}, self, max_fds);
  REQUIRE(told.listen);
  CHECK(told.listen->types == "sdp");
  CHECK(told.warnings.empty());
  CHECK(grace::detail::socket_type_of_letter(told.listen->types[1]) == SOCK_DGRAM);
  CHECK(grace::detail::listen_type_letter(SOCK_SEQPACKET) == 'p');
  CHECK(grace::detail::listen_type_letter(SOCK_RAW) == 0);

  struct bad_case {
    environment env;
    const char* why;
  };
  const bad_case bad[] = {
      {{{"LISTEN_FDS", "2"}, {"LISTEN_PID", "4242"}, {"GRACE_LISTEN_TYPES", "s"}}, "has 1 letters for LISTEN_FDS=2"},
      {{{"LISTEN_FDS", "2"}, {"LISTEN_PID", "4242"}, {"GRACE_LISTEN_TYPES", "sx"}}, "has a letter other than s, p or d"},
      {{{"LISTEN_FDS", "1"}, {"GRACE_LISTEN_TYPES", "s"}}, "without LISTEN_PID"},
  };
  for (const auto& c : bad) {
    auto parsed = parse_inheritance(c.env, self, max_fds);
    REQUIRE(parsed.listen);  // the sockets are still taken, each looked at when claimed
    CHECK(parsed.listen->types.empty());
    REQUIRE(parsed.warnings.size() == 1);
    CHECK(contains(parsed.warnings[0], std::string("GRACE_LISTEN_TYPES ") + c.why));
  }
}

TEST_CASE("GRACE_READY_FD: after the listeners and below the fd limit") {
  CHECK(*parse_inheritance({}, self, max_fds).ready_fd == -1);
  CHECK(*parse_inheritance({{"GRACE_READY_FD", "3"}}, self, max_fds).ready_fd == 3);
  CHECK(*parse_inheritance({{"LISTEN_FDS", "2"}, {"GRACE_READY_FD", "5"}}, self, max_fds).ready_fd == 5);
  for (const char* bad : {"", "abc", "-1", "0", "2", "3x", "+4", "1024", "99999999999999"}) {
    CAPTURE(bad);
    auto parsed = parse_inheritance({{"GRACE_READY_FD", bad}}, self, max_fds);
    REQUIRE_FALSE(parsed.ready_fd);
    CHECK(parsed.ready_fd.error().code() == grace::errc::malformed_environment);
    CHECK(contains(parsed.ready_fd.error().message(), "GRACE_READY_FD="));
  }
  // Inside the listeners' range: it would be one of them.
  CHECK_FALSE(parse_inheritance({{"LISTEN_FDS", "2"}, {"GRACE_READY_FD", "4"}}, self, max_fds).ready_fd);
}

TEST_CASE("GRACE_GENERATION and GRACE_ANCESTORS: malformed means a warning and safe defaults, never a wrap") {
  auto good = parse_inheritance({{"GRACE_GENERATION", "7"}, {"GRACE_ANCESTORS", "10:5,11:6"}}, self, max_fds);
  CHECK(good.generation == 7);
  REQUIRE(good.ancestors.size() == 2);
  CHECK(good.ancestors[1].pid == 11);
  CHECK(good.ancestors[1].start_time == 6);
  CHECK(good.warnings.empty());

  for (const char* bad : {"0", "-1", "abc", "4294967296", "4294967295", "1000000001", " 3", "3 "}) {
    CAPTURE(bad);
    auto parsed = parse_inheritance({{"GRACE_GENERATION", bad}}, self, max_fds);
    CHECK(parsed.generation == 1);
    REQUIRE(parsed.warnings.size() == 1);
    CHECK(contains(parsed.warnings[0], "GRACE_GENERATION="));
  }
  auto mixed = parse_inheritance({{"GRACE_ANCESTORS", "10:5,junk,:3,12:,-1:4,0:9,13:7,99999999999:1"}}, self, max_fds);
  REQUIRE(mixed.ancestors.size() == 2);
  CHECK(mixed.ancestors[0].pid == 10);
  CHECK(mixed.ancestors[1].pid == 13);
  REQUIRE(mixed.warnings.size() == 1);
  CHECK(contains(mixed.warnings[0], "ignored 6 malformed entries"));

  std::string many;
  for (int i = 1; i <= 1000; ++i) many += (many.empty() ? "" : ",") + std::to_string(i) + ":1";
  auto bounded = parse_inheritance({{"GRACE_ANCESTORS", many}}, self, max_fds);
  REQUIRE(bounded.ancestors.size() == grace::detail::max_ancestors);
  CHECK(bounded.ancestors.back().pid == 1000);  // the newest are kept
  CHECK(bounded.warnings.size() == 1);
}

TEST_CASE("the child's environment: protocol variables replaced, NOTIFY_SOCKET kept, no LISTEN_* without listeners") {
  using grace::detail::lay_out_child;
  const std::vector<std::string> parent = {"PATH=/bin", "LISTEN_FDS=9", "LISTEN_PID=1", "LISTEN_FDNAMES=x",
                                           "GRACE_READY_FD=7", "GRACE_GENERATION=3", "GRACE_ANCESTORS=1:1",
                                           "NOTIFY_SOCKET=/run/notify", "APP=old"};
  grace::detail::child_request named;
  named.listeners = {{10, "web", 0}, {11, "admin", 0}};
  named.extra_env = {"APP=new"};
  const auto env = lay_out_child(parent, named);
  const std::vector<std::string> expected = {"PATH=/bin", "NOTIFY_SOCKET=/run/notify", "APP=new", "LISTEN_FDS=2",
                                             "LISTEN_FDNAMES=web:admin"};
  CHECK(env.environment == expected);
  CHECK(env.listen_pid);
  grace::detail::child_request typed;
  typed.listeners = {{10, "web", 's'}, {11, "dns", 'd'}};
  const std::vector<std::string> expected_typed = {"LISTEN_FDS=2", "LISTEN_FDNAMES=web:dns", "GRACE_LISTEN_TYPES=sd"};
  CHECK(lay_out_child({"GRACE_LISTEN_TYPES=ddd"}, typed).environment == expected_typed);
  // start_process() with no listener: nothing its own inherit() would reject.
  const auto bare = lay_out_child(parent, {});
  const std::vector<std::string> expected_bare = {"PATH=/bin", "NOTIFY_SOCKET=/run/notify", "APP=old"};
  CHECK(bare.environment == expected_bare);
  CHECK(bare.fds.empty());
  CHECK_FALSE(bare.listen_pid);
  CHECK(parse_inheritance({}, self, max_fds).listen);

  const auto generation = grace::detail::generation_entries(4, {{10, 5}, {11, 6}});
  CHECK(generation == std::vector<std::string>{"GRACE_GENERATION=4", "GRACE_ANCESTORS=10:5,11:6"});
  CHECK(grace::detail::check_entry("A=b"));
  CHECK_FALSE(grace::detail::check_entry("=b"));
  CHECK_FALSE(grace::detail::check_entry("NOT-AN-ASSIGNMENT"));
}

namespace {

// What the child reads from a layout's environment (with the LISTEN_PID the spawner writes).
grace::detail::inheritance as_child_reads(const grace::detail::child_layout& layout) {
  environment env;
  for (const auto& entry : layout.environment) {
    const auto equals = entry.find('=');
    env.emplace(entry.substr(0, equals), entry.substr(equals + 1));
  }
  if (layout.listen_pid) env.emplace("LISTEN_PID", std::to_string(self));
  return parse_inheritance(env, self, max_fds);
}

}  // namespace

TEST_CASE("a child's fds and the variables that name them are laid out together, and agree") {
  using grace::detail::lay_out_child;
  grace::detail::child_request next;
  next.listeners = {{20, "web", 's'}, {21, "dns", 'd'}};
  next.extra_fds = {30};
  next.successor = grace::detail::successor_place{40, 4, {{10, 5}, {11, 6}}};
  next.offer_connections = true;
  const auto layout = lay_out_child({"PATH=/bin"}, next);
  // Listeners at 3.., the extra fds after them, the readiness socket last.
  CHECK(layout.fds == std::vector<int>{20, 21, 30, 40});
  const std::vector<std::string> expected = {"PATH=/bin",           "LISTEN_FDS=2",       "LISTEN_FDNAMES=web:dns",
                                             "GRACE_LISTEN_TYPES=sd", "GRACE_READY_FD=6", "GRACE_GENERATION=4",
                                             "GRACE_ANCESTORS=10:5,11:6", "GRACE_CONNECTIONS=1"};
  CHECK(layout.environment == expected);
  CHECK(layout.listen_pid);

  // Read back as the child reads them, the variables name exactly the fds laid out, whatever
  // the number of listeners and extra fds.
  for (std::size_t listeners = 0; listeners < 4; ++listeners)
    for (std::size_t extra = 0; extra < 3; ++extra) {
      CAPTURE(listeners);
      CAPTURE(extra);
      grace::detail::child_request r;
      for (std::size_t i = 0; i < listeners; ++i)
        r.listeners.push_back({static_cast<int>(100 + i), "l" + std::to_string(i), 's'});
      for (std::size_t i = 0; i < extra; ++i) r.extra_fds.push_back(static_cast<int>(200 + i));
      r.successor = grace::detail::successor_place{300, 2, {}};
      const auto laid = lay_out_child({}, r);
      REQUIRE(laid.fds.size() == listeners + extra + 1);
      const auto read = as_child_reads(laid);
      REQUIRE(read.listen);
      CHECK(read.listen->count == static_cast<int>(listeners));
      for (std::size_t i = 0; i < listeners; ++i) {
        CHECK(laid.fds[i] == r.listeners[i].fd);
        CHECK(read.listen->names[i] == r.listeners[i].name);
      }
      CHECK(read.listen->types == std::string(listeners, 's'));
      REQUIRE(read.ready_fd);
      REQUIRE(*read.ready_fd >= 3);
      // The fd GRACE_READY_FD names in the child is this process's readiness socket.
      CHECK(laid.fds[static_cast<std::size_t>(*read.ready_fd - 3)] == 300);
      CHECK(read.generation == 2);
      CHECK(read.warnings.empty());
    }
}
