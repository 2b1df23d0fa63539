// The upgrader in this process with a child of its own: every event reaches the application's
// event callback, in order, through a release that cannot start and SIGTERM while the next
// generation starts. The cases without a child are in test_upgrader_unit.cpp.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "grace/grace.hpp"
#include "grace/uv/upgrader.hpp"
#include "support/process.hpp"
#include "support/sockets.hpp"
#include "support/upgrader_in_process.hpp"

using namespace test_support;
using grace::uv::event_kind;

TEST_CASE("events: refused before ready, serving, rollback of a child that cannot start, drain, exit") {
  temp_dir dir;
  grace::uv::upgrader_options options;
  options.pidfile = dir.file("events.pid");
  options.process.executable_path = dir.file("no-such-release");
  in_process p(options);
  auto& upgrader = p.upgrader();
  REQUIRE(upgrader.serve(p.listener(), [](grace::uv::connection& c) { c.close(); }));
  bool drained = false;
  upgrader.on_drain([&] { drained = true; });

  upgrader.upgrade();  // not ready yet
  REQUIRE(upgrader.ready());
  upgrader.upgrade();  // the release is missing: rollback, still serving
  // Started off the loop: the outcome comes on a later turn of it.
  CHECK(upgrader.upgrading());
  REQUIRE(p.run_until([&] { return !upgrader.upgrading(); }, 10000));
  CHECK_FALSE(upgrader.draining());
  upgrader.shutdown();
  CHECK(upgrader.run() == 0);
  CHECK(drained);
  // Written on the thread pool; run() returns only once it is there.
  std::ifstream pid(options.pidfile);
  pid_t written = 0;
  pid >> written;
  CHECK(written == getpid());

  std::vector<event_kind> kinds;
  for (const auto& e : p.events) kinds.push_back(e.kind);
  const std::vector<event_kind> expected = {event_kind::upgrade_refused, event_kind::serving, event_kind::rollback,
                                            event_kind::draining, event_kind::exiting};
  CHECK(kinds == expected);
  REQUIRE(p.events.size() == expected.size());
  CHECK(p.events[0].message == "not serving yet");
  CHECK(p.events[1].message.find("(new socket) as pid " + std::to_string(getpid())) != std::string::npos);
  CHECK(p.events[2].message.find("no-such-release") != std::string::npos);
  CHECK(p.events[2].message.find("still serving") != std::string::npos);
  CHECK(p.events[3].message.find("shutting down") != std::string::npos);
}

TEST_CASE("SIGTERM while the next generation starts: it is killed and reaped, then this one drains") {
  grace::uv::upgrader_options options;
  options.process.executable_path = helper_path("GRACE_PROBE");  // a real program, which would run on
  pid_t child = 0;
  {
    in_process p(options);
    auto& upgrader = p.upgrader();
    REQUIRE(upgrader.serve(p.listener(), [](grace::uv::connection& c) { c.close(); }));
    REQUIRE(upgrader.ready());
    upgrader.upgrade();
    upgrader.shutdown();  // before the start's outcome reaches the loop
    CHECK(upgrader.run() == 0);

    std::vector<event_kind> kinds;
    for (const auto& e : p.events) kinds.push_back(e.kind);
    const std::vector<event_kind> expected = {event_kind::serving, event_kind::rollback, event_kind::draining,
                                              event_kind::exiting};
    CHECK(kinds == expected);
    REQUIRE(p.events.size() == expected.size());
    CHECK(p.events[1].message.find("killed before it was ready: this process got SIGTERM; shutting down") !=
          std::string::npos);
    child = p.events[1].child;
  }
  REQUIRE(child > 0);
  // Reaped by the upgrader, at the latest when it was destroyed: no zombie of ours is left.
  errno = 0;
  CHECK(waitpid(child, nullptr, WNOHANG) == -1);
  CHECK(errno == ECHILD);
}

