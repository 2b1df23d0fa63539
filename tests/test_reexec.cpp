// start_process for real: a program listens, re-executes itself, and the child serves the very
// same socket, including a connection that waited in the backlog while nobody accepted.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <thread>
#include <vector>
#include <string>

#include "grace/grace.hpp"
#include "support/process.hpp"

using namespace test_support;

namespace {

std::string field(const std::string& line, const std::string& key) {
  const auto at = line.find(" " + key + "=");
  if (at == std::string::npos) return {};
  const auto start = at + key.size() + 2;
  return line.substr(start, line.find(' ', start) - start);
}

std::string word(const std::string& line, int index) {
  std::string::size_type start = 0;
  for (int i = 0; i < index; ++i) start = line.find(' ', start) + 1;
  return line.substr(start, line.find(' ', start) - start);
}

std::string line_starting(const std::vector<std::string>& lines, const std::string& prefix) {
  for (const auto& line : lines)
    if (line.rfind(prefix, 0) == 0) return line;
  return {};
}

struct handover {
  std::string gen1, gen2, served;
};

// Runs both generations; `connect` opens a client while generation 1 listens but never accepts.
template <typename Connect>
handover run_handover(const std::string& network, const std::string& address, Connect connect,
                      const std::string& directory = {}) {
  spawn_options options;
  options.argv = {helper_path("GRACE_PROBE"), "reexec", network, address};
  options.directory = directory;
  child_process gen1(options);
  handover result;
  auto first = gen1.read_until("gen1 ");
  REQUIRE_MESSAGE(first, gen1.stderr_text());
  result.gen1 = *first;
  const int client = connect(result.gen1);
  REQUIRE(client >= 0);
  gen1.write_stdin("go\n");
  // Both generations write to the same stdout, in no fixed order; the child serves the waiting
  // client and exits before generation 1 reports child-exit.
  const auto lines = gen1.collect_until("child-exit ");
  REQUIRE_MESSAGE(!lines.empty(), gen1.stderr_text());
  CHECK(line_starting(lines, "child ") != "");
  result.gen2 = line_starting(lines, "gen2 ");
  REQUIRE(result.gen2 != "");
  result.served = read_line_from(client, 10s);
  close(client);
  CHECK(lines.back() == "child-exit 0");
  auto status = gen1.wait();
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  return result;
}

}  // namespace

TEST_CASE("TCP: the child gets the same socket and serves a connection queued in the backlog") {
  auto result = run_handover("tcp", "127.0.0.1:0", [](const std::string& gen1) {
    const std::string address = word(gen1, 3);
    return connect_tcp("127.0.0.1", std::stoi(address.substr(address.rfind(':') + 1)));
  });
  CHECK(field(result.gen1, "inherited") == "0");
  CHECK(field(result.gen2, "inherited") == "1");
  CHECK(word(result.gen2, 3) == word(result.gen1, 3));  // same address
  CHECK(field(result.gen2, "ino") == field(result.gen1, "ino"));
  CHECK(result.served == "served-by " + field(result.gen2, "pid"));
  // Only stdio and the listener crossed the exec, not the bait fd generation 1 left open.
  CHECK(field(result.gen2, "fds") == "0,1,2,3");
  CHECK(field(result.gen1, "bait") != "");
}

TEST_CASE("unix: same socket, relative path against the start-up directory, path kept") {
  temp_dir dir;
  auto result = run_handover(
      "unix", "grace.sock",
      [&](const std::string&) { return connect_unix(dir.file("grace.sock")); }, dir.path());
  CHECK(word(result.gen1, 3) == dir.file("grace.sock"));
  CHECK(field(result.gen2, "inherited") == "1");
  CHECK(field(result.gen2, "ino") == field(result.gen1, "ino"));
  CHECK(result.served == "served-by " + field(result.gen2, "pid"));
  CHECK(field(result.gen2, "fds") == "0,1,2,3");
  // Generation 1 closed its listener after the hand-over: the file the child serves must stay.
  struct stat st {};
  CHECK(stat(dir.file("grace.sock").c_str(), &st) == 0);
}

TEST_CASE("argv[0] is looked up in PATH at restart, so a swapped symlink runs the new binary") {
  temp_dir dir;
  const std::string link = dir.file("grace-app");
  REQUIRE(symlink(helper_path("GRACE_PROBE").c_str(), link.c_str()) == 0);
  const std::string script = dir.file("next-release");
  {
    std::ofstream out(script);
    out << "#!/bin/sh\necho \"next-release pid=$$ LISTEN_PID=$LISTEN_PID LISTEN_FDS=$LISTEN_FDS"
           " LISTEN_FDNAMES=$LISTEN_FDNAMES\"\n";
  }
  REQUIRE(chmod(script.c_str(), 0755) == 0);

  spawn_options options;
  options.argv = {"grace-app", "reexec", "tcp", "127.0.0.1:0"};
  options.executable = link;
  options.env["PATH"] = dir.path() + ":/usr/bin:/bin";
  child_process gen1(options);
  REQUIRE(gen1.read_until("gen1 "));
  // The deploy: the name now points at the next release.
  REQUIRE(unlink(link.c_str()) == 0);
  REQUIRE(symlink(script.c_str(), link.c_str()) == 0);
  gen1.write_stdin("go\n");
  const auto lines = gen1.collect_until("child-exit ");
  REQUIRE(!lines.empty());
  const std::string pid = line_starting(lines, "child ").substr(6);
  CHECK(line_starting(lines, "next-release ") ==
        "next-release pid=" + pid + " LISTEN_PID=" + pid + " LISTEN_FDS=1 LISTEN_FDNAMES=unknown");
  CHECK(lines.back() == "child-exit 0");
  CHECK(gen1.wait());
}

TEST_CASE("an exec failure is an error from start_process, and no child is left") {
  grace::net net;
  auto l = net.listen("tcp", "127.0.0.1:0");
  REQUIRE(l);
  grace::process_options options;
  options.executable_path = "/nonexistent/grace-next";
  auto pid = net.start_process(options);
  REQUIRE_FALSE(pid);
  CHECK(pid.error().code() == std::errc::no_such_file_or_directory);
  CHECK(pid.error().message().find("/nonexistent/grace-next") != std::string::npos);
  CHECK(waitpid(-1, nullptr, WNOHANG) == -1);  // the failed child was reaped already
  CHECK(errno == ECHILD);

  temp_dir dir;
  options.executable_path = dir.file("not-executable");
  std::ofstream(options.executable_path) << "data\n";
  chmod(options.executable_path.c_str(), 0644);
  pid = net.start_process(options);
  REQUIRE_FALSE(pid);
  CHECK(pid.error().code() == std::errc::permission_denied);

  options.executable_path.clear();
  options.extra_env = {"NOT-AN-ASSIGNMENT"};
  pid = net.start_process(options);
  REQUIRE_FALSE(pid);
  CHECK(pid.error().message().find("NOT-AN-ASSIGNMENT") != std::string::npos);
}

TEST_CASE("extra fds follow the listeners and are not counted in LISTEN_FDS") {
  grace::net net;
  REQUIRE(net.listen("tcp", "127.0.0.1:0"));
  REQUIRE(net.listen("tcp", "127.0.0.1:0", {SOMAXCONN, "second"}));
  int report[2];
  REQUIRE(pipe2(report, O_CLOEXEC) == 0);
  grace::process_options options;
  options.executable_path = helper_path("GRACE_PROBE");
  options.extra_fds = {report[1]};
  options.extra_env = {"GRACE_PROBE_MODE=describe"};
  auto pid = net.start_process(options);
  REQUIRE(pid);
  close(report[1]);
  const std::string line = read_line_from(report[0], 10s);
  close(report[0]);
  int status = 0;
  REQUIRE(waitpid(*pid, &status, 0) == *pid);
  CHECK(line == "describe LISTEN_FDS=2 LISTEN_FDNAMES=unknown:second pid_matches=1 "
                "fds=0,1,2,3,4,5 fd3=listening fd4=listening fd5=pipe");
}

TEST_CASE("start_process from a multi-threaded program: no lock is taken between fork and exec") {
  grace::net net;
  REQUIRE(net.listen("tcp", "127.0.0.1:0"));
  std::atomic<bool> stop{false};
  std::vector<std::thread> churn;
  // Threads that hold malloc's and stdio's locks as often as they can while we fork.
  for (int t = 0; t < 3; ++t)
    churn.emplace_back([&stop] {
      while (!stop.load()) {
        std::vector<std::string> garbage(64, std::string(100, 'x'));
        std::snprintf(garbage[0].data(), 50, "%d", static_cast<int>(garbage.size()));
      }
    });
  grace::process_options options;
  options.executable_path = "/bin/true";
  int started = 0;
  for (int i = 0; i < 100; ++i) {
    auto child = net.start_process(options);
    if (!child) break;
    int status = 0;
    waitpid(*child, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ++started;
  }
  stop = true;
  for (auto& t : churn) t.join();
  CHECK(started == 100);
}
