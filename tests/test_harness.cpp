// The referee refereed: restart-harness must PASS every sample through a few dozen restarts
// under load, and must FAIL (exit non-zero, losses counted) when restarts are not graceful.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "support/process.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {

struct harness_run {
  int exit_status = -1;
  std::string output;
  std::string verdict;  // the last line
  std::string json;
};

harness_run run_harness(const std::vector<std::string>& args, const temp_dir& dir) {
  spawn_options options;
  options.argv = {helper_path("GRACE_HARNESS"), "--json", dir.file("run.json"), "--plot", dir.file("run.svg"),
                  "--hard-cap", "90"};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  child_process harness(options);
  harness_run run;
  while (auto line = harness.read_line(120s)) {
    run.output += *line + "\n";
    run.verdict = *line;
  }
  auto status = harness.wait(30s);
  REQUIRE_MESSAGE(status, run.output);
  run.exit_status = WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
  std::ifstream json(dir.file("run.json"));
  run.json.assign(std::istreambuf_iterator<char>(json), std::istreambuf_iterator<char>());
  return run;
}

std::string free_address() {
  int port = 0;
  close(raw_tcp_listener("127.0.0.1", port));
  return "127.0.0.1:" + std::to_string(port);
}

void check_pass(const harness_run& run, int restarts) {
  INFO(run.output);
  CHECK(run.exit_status == 0);
  CHECK(run.verdict.rfind("PASS: 0 lost in ", 0) == 0);
  CHECK(run.verdict.find("across " + std::to_string(restarts) + " restarts") != std::string::npos);
  CHECK(run.json.find("\"verdict\": \"PASS\"") != std::string::npos);
}

}  // namespace

TEST_CASE("grace-http, keep-alive connections: PASS across 30 restarts") {
  temp_dir dir;
  const std::string address = free_address(), pidfile = dir.file("http.pid");
  auto run = run_harness({"--target", "tcp://" + address, "--mode", "http-keepalive", "--clients", "16",
                          "--restarts", "30", "--pidfile", pidfile, "--", helper_path("GRACE_HTTP"), address,
                          "--pidfile", pidfile},
                         dir);
  check_pass(run, 30);
  std::ifstream svg(dir.file("run.svg"));
  const std::string plot((std::istreambuf_iterator<char>(svg)), std::istreambuf_iterator<char>());
  CHECK(plot.rfind("<svg", 0) == 0);
  CHECK(plot.find("restart 30") != std::string::npos);
}

TEST_CASE("grace-http, a new connection per request: PASS across 30 restarts") {
  temp_dir dir;
  const std::string address = free_address(), pidfile = dir.file("http.pid");
  auto run = run_harness({"--target", "tcp://" + address, "--mode", "http-close", "--clients", "16", "--restarts",
                          "30", "--pidfile", pidfile, "--", helper_path("GRACE_HTTP"), address, "--pidfile", pidfile},
                         dir);
  check_pass(run, 30);
}

TEST_CASE("grace-echo, random payloads byte for byte: PASS across 30 restarts") {
  temp_dir dir;
  const std::string address = free_address(), pidfile = dir.file("echo.pid");
  // The old generation finishes each echo connection when its client moves on (every 100
  // payloads, the harness's default for echo), well before the drain deadline.
  auto run = run_harness({"--target", "tcp://" + address, "--mode", "echo", "--clients", "16", "--restarts", "30",
                          "--pidfile", pidfile, "--", helper_path("GRACE_ECHO"), address, "--pidfile", pidfile},
                         dir);
  check_pass(run, 30);
}

TEST_CASE("grace-unix, HTTP over a unix socket: PASS across 30 restarts") {
  temp_dir dir;
  const std::string path = dir.file("http.sock"), pidfile = dir.file("unix.pid");
  auto run = run_harness({"--target", "unix:" + path, "--clients", "16", "--restarts", "30", "--pidfile", pidfile,
                          "--", helper_path("GRACE_UNIX"), "unix:" + path, "--pidfile", pidfile},
                         dir);
  check_pass(run, 30);
}

TEST_CASE("grace-epoll and grace-asio, the core on other event loops: PASS across 30 restarts, keep-alive and close") {
  for (const char* server : {"GRACE_EPOLL", "GRACE_ASIO"})
    for (const char* mode : {"http-keepalive", "http-close"}) {
      CAPTURE(server);
      CAPTURE(mode);
      temp_dir dir;
      const std::string address = free_address(), pidfile = dir.file("server.pid");
      auto run = run_harness({"--target", "tcp://" + address, "--mode", mode, "--clients", "16", "--restarts", "30",
                              "--pidfile", pidfile, "--", helper_path(server), address, "--pidfile", pidfile},
                             dir);
      check_pass(run, 30);
    }
}

TEST_CASE("a server started elsewhere, followed through its pid file: refereed, and left running") {
  temp_dir dir;
  const std::string address = free_address(), pidfile = dir.file("http.pid");
  spawn_options options;
  options.argv = {helper_path("GRACE_HTTP"), address, "--pidfile", pidfile};
  child_process server(options);
  REQUIRE(server.wait_stderr("(new socket) as pid"));
  auto run = run_harness({"--target", "tcp://[::ffff:" + address.substr(0, address.find(':')) + "]" +
                              address.substr(address.find(':')),
                          "--clients", "8", "--restarts", "5", "--pidfile", pidfile},
                         dir);
  check_pass(run, 5);
  // Not ours to stop: the newest generation still serves.
  std::ifstream in(pidfile);
  pid_t newest = 0;
  in >> newest;
  REQUIRE(newest > 0);
  CHECK_FALSE(has_exited(newest));
  kill(newest, SIGTERM);
  CHECK(wait_exited(newest));
}

TEST_CASE("a restart that is not graceful (kill and start again) is caught: FAIL, losses counted") {
  temp_dir dir;
  const std::string address = free_address(), pidfile = dir.file("http.pid");
  const std::string restart =
      "kill -KILL $MAINPID; "
      "until ! kill -0 $MAINPID 2>/dev/null || grep -q ') Z' /proc/$MAINPID/stat; do :; done; "
      "setsid " + helper_path("GRACE_HTTP") + " " + address + " --pidfile " + pidfile + " </dev/null >/dev/null 2>&1 &";
  auto run = run_harness({"--target", "tcp://" + address, "--mode", "http-keepalive", "--clients", "16",
                          "--restarts", "5", "--pidfile", pidfile, "--restart-cmd", restart, "--",
                          helper_path("GRACE_HTTP"), address, "--pidfile", pidfile},
                         dir);
  INFO(run.output);
  CHECK(run.exit_status == 1);
  CHECK(run.verdict.rfind("FAIL: ", 0) == 0);
  CHECK(run.verdict.rfind("FAIL: 0 lost", 0) != 0);
  CHECK(run.json.find("\"verdict\": \"FAIL\"") != std::string::npos);
}

TEST_CASE("a server that never accepts: FAIL within the start-up timeout, and it is stopped") {
  temp_dir dir;
  auto run = run_harness({"--target", "tcp://" + free_address(), "--startup-timeout", "0.5", "--restarts", "1",
                          "--", "/bin/sleep", "60"},
                         dir);
  INFO(run.output);
  CHECK(run.exit_status == 1);
  CHECK(run.output.find("did not accept a connection within") != std::string::npos);
}

TEST_CASE("echo connections cut at the drain deadline under a payload are counted as lost") {
  temp_dir dir;
  const std::string address = free_address(), pidfile = dir.file("echo.pid");
  // Clients that never let go of their connection, and a deadline that cuts them off.
  auto run = run_harness({"--target", "tcp://" + address, "--mode", "echo", "--clients", "8", "--restarts", "3",
                          "--requests-per-connection", "0", "--pidfile", pidfile, "--", helper_path("GRACE_ECHO"),
                          address, "--pidfile", pidfile, "--drain-timeout", "0.2"},
                         dir);
  INFO(run.output);
  CHECK(run.exit_status == 1);
  CHECK(run.verdict.find(" reset") != std::string::npos);
}

TEST_CASE("bad command lines are refused with a reason; --help explains") {
  temp_dir dir;
  auto no_target = run_harness({"--", "/bin/true"}, dir);
  CHECK(no_target.exit_status == 2);
  // NaN would pass a "< 0" check and disable every deadline, --hard-cap included.
  for (const char* bad : {"nan", "inf", "-1", "5s"}) {
    spawn_options refused_options;
    refused_options.argv = {helper_path("GRACE_HARNESS"), "--target", "tcp://127.0.0.1:1", "--timeout", bad, "--",
                            "/bin/true"};
    child_process refused(refused_options);
    CHECK_MESSAGE(refused.wait_stderr("--timeout needs a non-negative number"), bad);
    CHECK_MESSAGE(refused.wait() == std::optional<int>(2 << 8), bad);
  }
  spawn_options options;
  options.argv = {helper_path("GRACE_HARNESS"), "--help"};
  child_process help(options);
  std::string text;
  while (auto line = help.read_line()) text += *line + "\n";
  CHECK(help.wait() == std::optional<int>(0));
  for (const char* option : {"--target", "--mode", "--clients", "--restarts", "--interval", "--signal", "--restart-cmd",
                             "--pidfile", "--attach-pid", "--duration", "--json", "--plot", "Example"})
    CHECK_MESSAGE(text.find(option) != std::string::npos, option);
}
