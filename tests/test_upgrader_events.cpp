// The upgrader in-process: every event reaches the application's log callback, in order.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <unistd.h>
#include <uv.h>

#include <fstream>
#include <string>
#include <vector>

#include "grace/grace.hpp"
#include "grace/uv/upgrader.hpp"
#include "support/process.hpp"

using namespace test_support;
using grace::uv::event_kind;

TEST_CASE("events: refused before ready, serving, rollback of a child that cannot start, drain, exit") {
  temp_dir dir;
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    grace::net net;
    auto l = net.listen_tcp("tcp", "127.0.0.1:0");
    REQUIRE(l);
    std::vector<grace::uv::event> events;
    grace::uv::upgrader_options options;
    options.handle_signals = false;
    options.pidfile = dir.file("events.pid");
    options.process.executable_path = dir.file("no-such-release");
    options.log = [&](const grace::uv::event& e) { events.push_back(e); };
    grace::uv::upgrader upgrader(&loop, net, options);
    REQUIRE(upgrader.serve(*l, [](grace::uv::connection& c) { c.close(); }));
    bool drained = false;
    upgrader.on_drain([&] { drained = true; });

    upgrader.upgrade();  // not ready yet
    REQUIRE(upgrader.ready());
    upgrader.upgrade();  // the release is missing: rollback, still serving
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
    for (const auto& e : events) kinds.push_back(e.kind);
    const std::vector<event_kind> expected = {event_kind::upgrade_refused, event_kind::serving, event_kind::rollback,
                                              event_kind::draining, event_kind::exiting};
    CHECK(kinds == expected);
    REQUIRE(events.size() == expected.size());
    CHECK(events[0].message == "not serving yet");
    CHECK(events[1].message.find("(new socket) as pid " + std::to_string(getpid())) != std::string::npos);
    CHECK(events[2].message.find("no-such-release") != std::string::npos);
    CHECK(events[2].message.find("still serving") != std::string::npos);
    CHECK(events[3].message.find("shutting down") != std::string::npos);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);  // every handle the upgrader made was closed
}
