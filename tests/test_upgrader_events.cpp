// The upgrader in-process: every event reaches the application's log callback, in order.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <fcntl.h>
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

TEST_CASE("a connection's handle->data is the application's: set it, read, close, and nothing breaks") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    grace::net net;
    auto l = net.listen_tcp("tcp", "127.0.0.1:0");
    REQUIRE(l);
    grace::uv::upgrader_options options;
    options.handle_signals = false;
    options.log = [](const grace::uv::event&) {};
    grace::uv::upgrader upgrader(&loop, net, options);
    static int marker = 0;
    int closed = 0;
    auto server = upgrader.serve(*l, [&](grace::uv::connection& c) {
      c.stream()->data = &marker;  // the usual libuv idiom
      c.user_data = &closed;
      c.on_closed = [](grace::uv::connection& gone) { ++*static_cast<int*>(gone.user_data); };
      uv_read_start(
          c.stream(), [](uv_handle_t*, size_t, uv_buf_t* buf) { static char b[64]; *buf = uv_buf_init(b, sizeof b); },
          [](uv_stream_t* stream, ssize_t, const uv_buf_t*) {
            CHECK(stream->data == &marker);
            grace::uv::connection::from(stream).close();
          });
    });
    REQUIRE(server);
    REQUIRE(upgrader.ready());
    const int client = connect_tcp("127.0.0.1", (*l)->local_address().port());
    REQUIRE(client >= 0);
    REQUIRE(write(client, "x", 1) == 1);
    // Bounded: a timer ends the wait if the connection never closes.
    uv_timer_t deadline;
    uv_timer_init(&loop, &deadline);
    bool expired = false;
    deadline.data = &expired;
    uv_timer_start(&deadline, [](uv_timer_t* t) { *static_cast<bool*>(t->data) = true; }, 10000, 0);
    while (closed == 0 && !expired) uv_run(&loop, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&deadline), nullptr);
    CHECK(closed == 1);
    close(client);
    upgrader.shutdown();
    CHECK(upgrader.run() == 0);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("rollback reasons are the true ones: a full fd table names the socketpair and EMFILE") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    grace::net net;
    auto l = net.listen_tcp("tcp", "127.0.0.1:0");
    REQUIRE(l);
    std::vector<grace::uv::event> events;
    grace::uv::upgrader_options options;
    options.handle_signals = false;
    options.log = [&](const grace::uv::event& e) { events.push_back(e); };
    grace::uv::upgrader upgrader(&loop, net, options);
    REQUIRE(upgrader.serve(*l, [](grace::uv::connection& c) { c.close(); }));
    REQUIRE(upgrader.ready());
    std::vector<int> fillers;
    for (int fd; (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) fillers.push_back(fd);
    upgrader.upgrade();
    for (int fd : fillers) close(fd);
    REQUIRE(events.size() == 2);
    CHECK(events[1].kind == event_kind::rollback);
    CHECK(events[1].message.find("socketpair") != std::string::npos);
    CHECK(events[1].message.find("Too many open files") != std::string::npos);
    CHECK_FALSE(upgrader.draining());

    // SIGHUP: the reload hook when there is one, else a log line; never a stop.
    upgrader.reload();
    CHECK(events.back().kind == event_kind::reload);
    CHECK(events.back().message.find("ignored") != std::string::npos);
    int reloads = 0;
    upgrader.on_reload([&] { ++reloads; });
    upgrader.reload();
    CHECK(reloads == 1);
    CHECK_FALSE(upgrader.draining());
    upgrader.shutdown();
    CHECK(upgrader.run() == 0);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("out of fds while accepting: the connections wait in the queue and are served once fds are free") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    grace::net net;
    auto l = net.listen_tcp("tcp", "127.0.0.1:0");
    REQUIRE(l);
    grace::uv::upgrader_options options;
    options.handle_signals = false;
    options.log = [](const grace::uv::event&) {};
    grace::uv::upgrader upgrader(&loop, net, options);
    int accepted = 0;
    REQUIRE(upgrader.serve(*l, [&](grace::uv::connection& c) {
      ++accepted;
      uv_write_t* req = new uv_write_t;
      static char reply[] = "served\n";
      uv_buf_t buf = uv_buf_init(reply, sizeof reply - 1);
      uv_write(req, c.stream(), &buf, 1, [](uv_write_t* r, int) {
        grace::uv::connection::from(r->handle).close();
        delete r;
      });
    }));
    REQUIRE(upgrader.ready());
    // The clients connect first (the kernel queues them); then the table is full.
    std::vector<int> clients;
    for (int i = 0; i < 3; ++i) clients.push_back(connect_tcp("127.0.0.1", (*l)->local_address().port()));
    for (int c : clients) REQUIRE(c >= 0);
    std::vector<int> fillers;
    for (int fd; (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) fillers.push_back(fd);
    // Let the server meet EMFILE for a while (a fault window, not a timing check).
    uv_timer_t window;
    uv_timer_init(&loop, &window);
    bool over = false;
    window.data = &over;
    uv_timer_start(&window, [](uv_timer_t* t) { *static_cast<bool*>(t->data) = true; }, 200, 0);
    while (!over) uv_run(&loop, UV_RUN_ONCE);
    CHECK(accepted == 0);
    for (int fd : fillers) close(fd);
    over = false;
    uv_timer_start(&window, [](uv_timer_t* t) { *static_cast<bool*>(t->data) = true; }, 10000, 0);
    while (accepted < 3 && !over) uv_run(&loop, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&window), nullptr);
    CHECK(accepted == 3);
    for (int c : clients) {
      CHECK(read_line_from(c) == "served");
      close(c);
    }
    upgrader.shutdown();
    CHECK(upgrader.run() == 0);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}
