// Faults that used to freeze or kill the service, reproduced for real: a notification socket
// nobody reads, a stderr pipe nobody reads, the old generation killed while the new one starts.
// Each time the service must keep answering.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "grace/pidfile.hpp"
#include "support/service.hpp"

using namespace test_support;

TEST_CASE("a service manager that never reads its notification socket freezes nothing") {
  temp_dir dir;
  const std::string path = dir.file("notify");
  const int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  std::memcpy(un.sun_path, path.data(), path.size());
  REQUIRE(bind(sock, reinterpret_cast<sockaddr*>(&un), sizeof un) == 0);
  // Nobody reads `sock`: its queue (max_dgram_qlen, 10 here) fills after a few upgrades, and a
  // blocking sendto() would then freeze the server for good.
  const int port = free_port();
  service http(helper_path("GRACE_HTTP"), {"127.0.0.1:" + std::to_string(port)}, {{"NOTIFY_SOCKET", path}});
  REQUIRE(http.wait_for("(new socket) as pid"));
  pid_t current = http.first_pid();
  for (unsigned generation = 2; generation <= 16; ++generation) {
    current = http.upgrade(current, generation);
    const int c = connect_tcp("127.0.0.1", port);
    CHECK(http_body_of(c) == expected_body(current, generation));
    close(c);
  }
  CHECK(http.wait_for("the service manager is not reading notifications; retrying"));
  close(sock);
}

TEST_CASE("a stderr pipe nobody reads: the log drops lines, the server keeps answering") {
  const int port = free_port();
  service http(helper_path("GRACE_HTTP"), {"127.0.0.1:" + std::to_string(port)});
  REQUIRE(http.wait_for("(new socket) as pid"));
  const pid_t server = http.first_pid();
  const int c = connect_tcp("127.0.0.1", port);
  REQUIRE(c >= 0);
  // Each SIGHUP logs a line; the test reads none of them until the end, so the pipe (64 KiB)
  // fills after about 800, and the log's own buffer after a few thousand more.
  int answered = 0;
  for (int i = 0; i < 5000; ++i) {
    REQUIRE(kill(server, SIGHUP) == 0);
    auto r = http_get(c, std::chrono::seconds(10));
    if (!r) break;
    ++answered;
  }
  CHECK(answered == 5000);
  close(c);
  CHECK(http.wait_for("log line(s) dropped: stderr was not being read"));
  CHECK(http.wait_for("SIGHUP ignored", 10s, 2000));  // the buffered ones arrive once read
}

TEST_CASE("the old generation is killed while the new one starts: the new one takes charge") {
  temp_dir dir;
  const std::string pidfile = dir.file("http.pid");
  const std::string link = dir.file("grace-http");
  const std::string go = dir.file("go");
  point_link(link, helper_path("GRACE_HTTP"));
  const int port = free_port();
  service http(link, {"127.0.0.1:" + std::to_string(port), "--pidfile", pidfile}, {}, link);
  REQUIRE(http.wait_for("(new socket) as pid"));
  const pid_t first = http.first_pid();
  // The next release waits (bounded) for the test's word before it starts serving.
  write_script(dir.file("slow-start"), "for i in $(seq 1000); do [ -e '" + go + "' ] && break; sleep 0.01; done\n"
                                       "exec '" + helper_path("GRACE_HTTP") + "' \"$@\"");
  point_link(link, dir.file("slow-start"));
  REQUIRE(kill(first, SIGUSR2) == 0);
  REQUIRE(http.wait_for("started generation 2 as pid "));
  const pid_t second = http.number_after("started generation 2 as pid ");
  REQUIRE(kill(first, SIGKILL) == 0);
  REQUIRE(http.first().wait());
  std::ofstream(go) << "go\n";
  REQUIRE(http.wait_for("took charge: the generation that started this one is gone; pid " +
                        std::to_string(second) + " is in charge"));
  CHECK(pidfile_names(pidfile, second));
  const int c = connect_tcp("127.0.0.1", port);
  CHECK(http_body_of(c) == expected_body(second, 2));
  close(c);
  kill(second, SIGTERM);
  CHECK(wait_exited(second));
}

TEST_CASE("the new generation dies right after it took over: the old one serves again, nothing refused") {
  temp_dir dir;
  const std::string pidfile = dir.file("http.pid");
  const std::string link = dir.file("grace-http");
  point_link(link, helper_path("GRACE_HTTP"));
  const int port = free_port();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  // The referee keeps up the load (no restarts of its own) while the test upgrades.
  spawn_options options;
  options.argv = {helper_path("GRACE_HARNESS"), "--target", "tcp://" + address, "--mode", "http-close",
                  "--clients", "16", "--restarts", "0", "--duration", "4", "--hard-cap", "60",
                  "--json", dir.file("run.json"), "--pidfile", pidfile, "--", link, address, "--pidfile", pidfile,
                  "--successor-watch", "3"};
  child_process harness(options);
  const pid_t first = wait_pidfile(pidfile, [](pid_t p) { return p > 0; });
  REQUIRE(first > 0);
  // The next release is killed 200 ms after its parent has handed over to it (the pid file
  // names it), while the parent still drains.
  write_script(dir.file("crashes"),
               "( i=0; while [ $i -lt 1000 ] && [ \"$(cat '" + pidfile + "' 2>/dev/null)\" != \"$$\" ]; do\n"
               "    i=$((i+1)); sleep 0.01; done; sleep 0.2; kill -KILL $$ ) </dev/null >/dev/null 2>&1 &\n"
               "exec '" + helper_path("GRACE_HTTP") + "' \"$@\"");
  point_link(link, dir.file("crashes"));
  REQUIRE(kill(first, SIGUSR2) == 0);
  const pid_t second = wait_pidfile(pidfile, [&](pid_t p) { return p != first; });
  REQUIRE(second > 0);
  CHECK(pidfile_names(pidfile, first));  // back in charge
  CHECK(wait_exited(second));
  CHECK(has_exited(second));
  CHECK_FALSE(has_exited(first));
  const int c = connect_tcp("127.0.0.1", port);
  CHECK(http_body_of(c) == expected_body(first, 1));
  close(c);

  std::string output;
  while (auto line = harness.read_line(60s)) output += *line + "\n";
  INFO(output);
  REQUIRE(harness.wait(30s));
  std::ifstream json_file(dir.file("run.json"));
  const auto json = nlohmann::json::parse(json_file);
  // Requests in flight on the release that was killed are lost with it; no connection is refused.
  CHECK(json["steady"]["refused"] == 0);
  CHECK(json["restart_windows"]["refused"] == 0);
  CHECK(json["steady"]["ok"].get<std::uint64_t>() > 1000);
}

TEST_CASE("a pid file that cannot be written: a warning names it, and the hand-over completes anyway") {
  temp_dir dir;
  const std::string run_dir = dir.file("run");
  std::filesystem::create_directory(run_dir);
  const std::string pidfile = run_dir + "/http.pid";
  const int port = free_port();
  service http(helper_path("GRACE_HTTP"), {"127.0.0.1:" + std::to_string(port), "--pidfile", pidfile});
  REQUIRE(http.wait_for("(new socket) as pid"));
  const pid_t first = http.first_pid();
  REQUIRE(wait_pidfile(pidfile, [&](pid_t p) { return p == first; }) == first);
  // The directory is gone by the time the old generation writes its successor's pid.
  std::filesystem::remove_all(run_dir);
  REQUIRE(kill(first, SIGUSR2) == 0);
  REQUIRE(http.wait_for("started generation 2 as pid "));
  const pid_t second = http.number_after("started generation 2 as pid ");
  CHECK(http.wait_for("pid file " + pidfile));  // the write's error, on the loop, in the log
  // The old generation does not wait for a write that failed: it exits, and the new one serves.
  CHECK(wait_exited(first));
  const int c = connect_tcp("127.0.0.1", port);
  CHECK(http_body_of(c) == expected_body(second, 2));
  close(c);
  kill(second, SIGTERM);
  CHECK(wait_exited(second));
}

TEST_CASE("a generation that cannot become ready still writes what it logged while starting") {
  // Until shortly after ready() the default log holds its lines (so that starting the log's
  // thread does not delay the first answers); a start that fails must not take them along.
  temp_dir dir;
  spawn_options options;
  // Nobody to take over from there, and the directory to open it in cannot be made: ready() fails.
  options.argv = {helper_path("GRACE_HTTP"), "127.0.0.1:" + std::to_string(free_port()), "--handover-socket",
                  dir.file("missing/deeper/handover.sock")};
  options.env = {{"LISTEN_FDS", "0"}, {"GRACE_LISTEN_TYPES", "zz"}};  // a warning at start-up
  options.listen_pid_is_child = true;
  child_process server(options);
  const auto status = server.wait();
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 1);
  const std::string err = server.stderr_text();
  // A set-up error of the hand-over socket says so first (not "cannot report readiness").
  CHECK(err.find("grace-http: hand-over socket") != std::string::npos);
  CHECK(err.find("cannot report readiness") == std::string::npos);
  CHECK(err.find("warning: GRACE_LISTEN_TYPES has 2 letters for LISTEN_FDS=0") != std::string::npos);
}
