// The upgrader in-process: every event reaches the application's log callback, in order; the
// application owns its handles' data; faults inside the process (a full fd table) are survived.
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

using namespace test_support;
using grace::uv::event_kind;

namespace {

// A loop, a net with one listener on 127.0.0.1, and an upgrader without signal handlers whose
// events are recorded. At the end every handle the upgrader made must be closed.
class in_process {
 public:
  explicit in_process(grace::uv::upgrader_options options = {}, grace::listen_options listen = {}) {
    REQUIRE(uv_loop_init(&loop_) == 0);
    net_ = std::make_unique<grace::net>();
    auto l = net_->listen_tcp("tcp", "127.0.0.1:0", listen);
    REQUIRE(l);
    listener_ = *l;
    options.handle_signals = false;
    options.on_event = [this](const grace::uv::event& e) { events.push_back(e); };
    upgrader_ = std::make_unique<grace::uv::upgrader>(&loop_, *net_, options);
  }
  ~in_process() {
    upgrader_.reset();
    net_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop_) == 0);
  }

  grace::uv::upgrader& upgrader() { return *upgrader_; }
  grace::listener* listener() { return listener_; }
  int port() const { return listener_->local_address().port(); }

  // Runs the loop until `done()` or `ms` have passed; true when done.
  bool run_until(const std::function<bool()>& done, std::uint64_t ms) {
    uv_timer_t deadline;
    uv_timer_init(&loop_, &deadline);
    bool expired = false;
    deadline.data = &expired;
    uv_timer_start(&deadline, [](uv_timer_t* t) { *static_cast<bool*>(t->data) = true; }, ms, 0);
    while (!done() && !expired) uv_run(&loop_, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&deadline), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    return done();
  }

  std::vector<grace::uv::event> events;

 private:
  uv_loop_t loop_{};
  std::unique_ptr<grace::net> net_;
  grace::listener* listener_ = nullptr;
  std::unique_ptr<grace::uv::upgrader> upgrader_;
};

std::vector<int> fill_fd_table() {
  std::vector<int> fillers;
  for (int fd; (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) fillers.push_back(fd);
  return fillers;
}

void release(const std::vector<int>& fds) {
  for (int fd : fds) close(fd);
}

}  // namespace

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
