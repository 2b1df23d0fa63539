// The upgrader in this process, no child started: the application owns its handles' data, a
// full fd table at an upgrade is a rollback naming the socketpair, out of fds while accepting the
// connections wait in the queue, listen_options::backlog is what the kernel keeps. The cases
// with a child are in test_upgrader_events.cpp. Once start-up is over, a thread waits to start
// the next generation.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <dirent.h>
#include <doctest/doctest.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <fstream>
#include <iterator>
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

namespace {

// This process's threads: their ids.
std::vector<std::string> threads() {
  std::vector<std::string> ids;
  if (DIR* dir = opendir("/proc/self/task")) {
    while (const dirent* e = readdir(dir))
      if (e->d_name[0] != '.') ids.emplace_back(e->d_name);
    closedir(dir);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

// The time thread `id` has spent on a CPU, in ns.
unsigned long long cpu_ns_of_thread(const std::string& id) {
  std::ifstream in("/proc/self/task/" + id + "/schedstat");
  unsigned long long ns = 0;
  in >> ns;
  return ns;
}

}  // namespace

TEST_CASE("once start-up is over, a thread waits to start the next generation, and is used again") {
  in_process p;
  auto& upgrader = p.upgrader();
  REQUIRE(upgrader.serve(p.listener(), [](grace::uv::connection& c) { c.close(); }));
  const auto before = threads();
  REQUIRE(upgrader.ready());
  // The start-up window is 10 ms; the thread is made when it ends.
  REQUIRE(p.run_until([&] { return threads().size() == before.size() + 1; }, 10000));
  const auto with_it = threads();
  std::vector<std::string> added;
  std::set_difference(with_it.begin(), with_it.end(), before.begin(), before.end(), std::back_inserter(added));
  REQUIRE(added.size() == 1);
  const std::string waiting = added.front();
  for (int upgrade = 0; upgrade < 2; ++upgrade) {
    CAPTURE(upgrade);
    const std::size_t events = p.events.size();
    const unsigned long long cpu_before = cpu_ns_of_thread(waiting);
    const auto fillers = fill_fd_table();
    upgrader.upgrade();
    const bool settled = p.run_until([&] { return !upgrader.upgrading(); }, 10000);
    release(fillers);
    REQUIRE(settled);
    // A full table: the socketpair fails on the thread that starts the child. The waiting one
    // did it (it ran), and waits again (it is still there); no other thread stayed.
    REQUIRE(p.events.size() == events + 1);
    CHECK(p.events.back().kind == event_kind::rollback);
    CHECK(p.events.back().message.find("socketpair") != std::string::npos);
    CHECK(cpu_ns_of_thread(waiting) > cpu_before);
    CHECK(p.run_until([&] { return threads() == with_it; }, 10000));
  }
  upgrader.shutdown();
  CHECK(upgrader.run() == 0);
}
