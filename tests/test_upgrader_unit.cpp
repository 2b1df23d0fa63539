// The upgrader in this process, no child started: the application owns its handles' data, a
// full fd table at an upgrade is a rollback naming the socketpair, out of fds while accepting the
// connections wait in the queue, listen_options::backlog is what the kernel keeps. The cases
// with a child are in test_upgrader_events.cpp.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <unistd.h>
#include <uv.h>

#include <string>
#include <vector>

#include "grace/grace.hpp"
#include "grace/uv/upgrader.hpp"
#include "support/process.hpp"
#include "support/sockets.hpp"
#include "support/upgrader_in_process.hpp"

using namespace test_support;
using grace::uv::event_kind;

TEST_CASE("a connection's handle->data is the application's: set it, read, close, and nothing breaks") {
  in_process p;
  static int marker = 0;
  int closed = 0;
  REQUIRE(p.upgrader().serve(p.listener(), [&](grace::uv::connection& c) {
    c.stream()->data = &marker;  // the usual libuv idiom
    c.user_data = &closed;
    c.on_closed = [](grace::uv::connection& gone) { ++*static_cast<int*>(gone.user_data); };
    uv_read_start(
        c.stream(), [](uv_handle_t*, size_t, uv_buf_t* buf) { static char b[64]; *buf = uv_buf_init(b, sizeof b); },
        [](uv_stream_t* stream, ssize_t, const uv_buf_t*) {
          CHECK(stream->data == &marker);
          grace::uv::connection::from(stream).close();
        });
  }));
  REQUIRE(p.upgrader().ready());
  const int client = connect_tcp("127.0.0.1", p.port());
  REQUIRE(client >= 0);
  REQUIRE(write(client, "x", 1) == 1);
  CHECK(p.run_until([&] { return closed > 0; }, 10000));
  CHECK(closed == 1);
  close(client);
  p.upgrader().shutdown();
  CHECK(p.upgrader().run() == 0);
}

TEST_CASE("rollback reasons are the true ones: a full fd table names the socketpair and EMFILE") {
  in_process p;
  auto& upgrader = p.upgrader();
  REQUIRE(upgrader.serve(p.listener(), [](grace::uv::connection& c) { c.close(); }));
  REQUIRE(upgrader.ready());
  const auto fillers = fill_fd_table();
  upgrader.upgrade();
  const bool settled = p.run_until([&] { return !upgrader.upgrading(); }, 10000);
  release(fillers);
  REQUIRE(settled);
  REQUIRE(p.events.size() == 2);
  CHECK(p.events[1].kind == event_kind::rollback);
  CHECK(p.events[1].message.find("socketpair") != std::string::npos);
  CHECK(p.events[1].message.find("Too many open files") != std::string::npos);
  CHECK_FALSE(upgrader.draining());

  // SIGHUP: the reload hook when there is one, else a log line; never a stop.
  upgrader.reload();
  CHECK(p.events.back().kind == event_kind::reload);
  CHECK(p.events.back().message.find("ignored") != std::string::npos);
  int reloads = 0;
  upgrader.on_reload([&] { ++reloads; });
  upgrader.reload();
  CHECK(reloads == 1);
  CHECK_FALSE(upgrader.draining());
  upgrader.shutdown();
  CHECK(upgrader.run() == 0);
}

TEST_CASE("out of fds while accepting: the connections wait in the queue and are served once fds are free") {
  in_process p;
  int accepted = 0;
  REQUIRE(p.upgrader().serve(p.listener(), [&](grace::uv::connection& c) {
    ++accepted;
    auto* req = new uv_write_t;
    static char reply[] = "served\n";
    uv_buf_t buf = uv_buf_init(reply, sizeof reply - 1);
    uv_write(req, c.stream(), &buf, 1, [](uv_write_t* r, int) {
      grace::uv::connection::from(r->handle).close();
      delete r;
    });
  }));
  REQUIRE(p.upgrader().ready());
  // The clients connect first (the kernel queues them); then the table is full.
  std::vector<int> clients;
  for (int i = 0; i < 3; ++i) clients.push_back(connect_tcp("127.0.0.1", p.port()));
  for (int c : clients) REQUIRE(c >= 0);
  const auto fillers = fill_fd_table();
  // Let the server meet EMFILE for a while (a fault window, not a timing check).
  p.run_until([] { return false; }, 200);
  CHECK(accepted == 0);
  release(fillers);
  CHECK(p.run_until([&] { return accepted == 3; }, 10000));
  for (int c : clients) {
    CHECK(read_line_from(c) == "served");
    close(c);
  }
  p.upgrader().shutdown();
  CHECK(p.upgrader().run() == 0);
}

TEST_CASE("listen_options::backlog is the accept queue the kernel keeps, also once the loop serves it") {
  grace::listen_options listen;
  listen.backlog = 7;
  in_process p({}, listen);
  CHECK(listen_backlog(p.port()) == 7);
  REQUIRE(p.upgrader().serve(p.listener(), [](grace::uv::connection& c) { c.close(); }));
  REQUIRE(p.upgrader().ready());
  p.run_until([] { return false; }, 10);
  CHECK(listen_backlog(p.port()) == 7);  // libuv's uv_listen would have made it SOMAXCONN
  p.upgrader().shutdown();
  CHECK(p.upgrader().run() == 0);
}
