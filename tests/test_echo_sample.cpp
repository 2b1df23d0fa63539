// grace-echo, the sample: SIGUSR2 re-executes it with the listening socket; the old
// process finishes its open connection, the new one answers new connections, nothing is refused.
// grace-epoll and grace-asio, restarted the way an operator does it: SIGUSR2 to the pid the pid
// file names, again and again.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "support/process.hpp"
#include "support/service.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {

bool echoes(int fd, const std::string& text) {
  const std::string line = text + "\n";
  return write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
         read_line_from(fd) == text;
}

}  // namespace

TEST_CASE("grace-echo survives SIGUSR2 restarts: old connections finish, new ones are served") {
  temp_dir dir;
  const std::string pidfile = dir.file("echo.pid");
  for (const std::string& address : {std::string("127.0.0.1:0"), "unix:" + dir.file("e.sock")}) {
    CAPTURE(address);
    std::string listen_address = address;
    int port = 0;
    if (address.rfind("unix:", 0) != 0) {
      close(raw_tcp_listener("127.0.0.1", port));  // a port that was free a moment ago
      listen_address = "127.0.0.1:" + std::to_string(port);
    }
    auto connect_it = [&] {
      return port != 0 ? connect_tcp("127.0.0.1", port) : connect_unix(dir.file("e.sock"));
    };
    spawn_options options;
    options.argv = {helper_path("GRACE_ECHO"), listen_address, "--pidfile", pidfile};
    child_process first(options);
    REQUIRE_MESSAGE(first.wait_stderr("(new socket)"), first.stderr_text());
    const pid_t first_pid = first.pid();
    REQUIRE(pidfile_names(pidfile, first_pid));

    const int before = connect_it();
    REQUIRE(before >= 0);
    CHECK(echoes(before, "before"));
    first.kill(SIGUSR2);
    // The new generation shares our stderr pipe and says when it serves.
    REQUIRE_MESSAGE(first.wait_stderr("(inherited, name unknown)"), first.stderr_text());
    CHECK(echoes(before, "still served by the old generation"));
    const int after = connect_it();
    REQUIRE(after >= 0);
    CHECK(echoes(after, "served by the new generation"));
    close(before);
    // With its last connection closed, the old generation exits 0.
    auto status = first.wait();
    REQUIRE(status);
    CHECK(WIFEXITED(*status));
    CHECK_MESSAGE(WEXITSTATUS(*status) == 0, first.stderr_text());

    const pid_t second = wait_pidfile(pidfile, [&](pid_t p) { return p != first_pid; });
    CHECK(second != first_pid);
    CHECK(echoes(after, "new generation keeps its connection"));
    close(after);
    REQUIRE(kill(second, SIGTERM) == 0);
    CHECK(wait_exited(second));  // an orphan now: pid 1 reaps it, a zombie counts as exited
  }
}

TEST_CASE("the samples' command line: numbers parse whole and in range, a missing value is named, --help on stdout") {
  struct bad_case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<bad_case> cases = {
      {{"127.0.0.1:0", "--drain-timeout", "nan"}, "--drain-timeout needs a number of seconds"},
      {{"127.0.0.1:0", "--drain-timeout", "inf"}, "--drain-timeout needs a number of seconds"},
      {{"127.0.0.1:0", "--drain-timeout", "5s"}, "--drain-timeout needs a number of seconds"},
      {{"127.0.0.1:0", "--ready-timeout", "0"}, "--ready-timeout needs a number of seconds above 0"},
      {{"127.0.0.1:0", "--ready-timeout", "-1"}, "--ready-timeout needs"},
      {{"127.0.0.1:0", "--max-generations", "1"}, "--max-generations needs a whole number from 2"},
      {{"127.0.0.1:0", "--max-generations", "4x"}, "--max-generations needs"},
      {{"127.0.0.1:0", "--max-generations", "-3"}, "--max-generations needs"},
      {{"127.0.0.1:0", "--pidfile"}, "--pidfile needs a value"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.message);
    spawn_options options;
    options.argv = {helper_path("GRACE_ECHO")};
    options.argv.insert(options.argv.end(), c.args.begin(), c.args.end());
    child_process echo(options);
    CHECK(echo.wait() == std::optional<int>(2 << 8));
    CHECK(echo.stderr_text().find(c.message) != std::string::npos);
  }
  spawn_options help;
  help.argv = {helper_path("GRACE_ECHO"), "--help"};
  child_process shown(help);
  const auto line = shown.read_line();
  REQUIRE(line);
  CHECK(line->rfind("usage: grace-echo ADDRESS", 0) == 0);
  CHECK(shown.wait() == std::optional<int>(0));
}

TEST_CASE("grace-epoll and grace-asio: SIGUSR2 sent to the pid file's pid, three times; it names the newest each time") {
  // Both sides of each hand-over write the pid file (charge_keeper): the new generation on a first
  // start, the old one for its child once it is ready, before it exits. Without the old side, the
  // second SIGUSR2 would go to a process that is gone.
  for (const std::string server : {"GRACE_EPOLL", "GRACE_ASIO"}) {
    CAPTURE(server);
    temp_dir dir;
    const std::string pidfile = dir.file("server.pid");
    const int port = free_port();
    service sample(helper_path(server.c_str()), {"127.0.0.1:" + std::to_string(port), "--pidfile", pidfile});
    REQUIRE(sample.wait_for("as pid " + std::to_string(sample.first_pid())));
    pid_t in_charge = sample.first_pid();
    REQUIRE(pidfile_names(pidfile, in_charge));
    for (unsigned next = 2; next <= 4; ++next) {
      CAPTURE(next);
      const pid_t named = read_pidfile(pidfile);
      REQUIRE(named == in_charge);
      const pid_t child = sample.upgrade(named, next);
      REQUIRE(child != in_charge);
      // The old generation, with no connection to drain, exits once the pid file names its child.
      REQUIRE(wait_exited(in_charge, 15s));
      CHECK(read_pidfile(pidfile) == child);
      const int fd = connect_tcp("127.0.0.1", port);
      REQUIRE(fd >= 0);
      CHECK(http_body_of(fd) == expected_body(child, next));
      close(fd);
      in_charge = child;
    }
    REQUIRE(kill(in_charge, SIGTERM) == 0);
    CHECK(wait_exited(in_charge));
  }
}
