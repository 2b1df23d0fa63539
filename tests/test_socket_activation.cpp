// systemd's own launcher hands grace-echo its socket (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES);
// the sample must serve on it. systemd-socket-activate binds the socket, waits for the first
// connection, then execs the sample: a fresh bind by the sample would fail with EADDRINUSE.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "support/process.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {

const char* const launcher = "/usr/bin/systemd-socket-activate";

void check_echo(int client) {
  const std::string hello = "hello through an inherited socket\n";
  REQUIRE(write(client, hello.data(), hello.size()) == static_cast<ssize_t>(hello.size()));
  CHECK(read_line_from(client) + "\n" == hello);
}

}  // namespace

TEST_CASE("systemd-socket-activate: unix socket with a name") {
  REQUIRE_MESSAGE(access(launcher, X_OK) == 0, "install Debian's systemd package");
  temp_dir dir;
  const std::string path = dir.file("echo.sock");
  spawn_options options;
  options.argv = {launcher, "-l", path, "--fdname=web", helper_path("GRACE_ECHO"), "unix:" + path};
  child_process activator(options);
  REQUIRE_MESSAGE(activator.wait_stderr("Listening on"), activator.stderr_text());
  const int client = connect_unix(path);
  REQUIRE(client >= 0);
  check_echo(client);
  CHECK(activator.wait_stderr("serving " + path + " (inherited, name web)"));
  close(client);
  activator.kill(SIGTERM);
  auto status = activator.wait();
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
}

TEST_CASE("systemd-socket-activate: TCP on 127.0.0.1") {
  REQUIRE_MESSAGE(access(launcher, X_OK) == 0, "install Debian's systemd package");
  int port = 0;
  close(raw_tcp_listener("127.0.0.1", port));  // a port that was free a moment ago
  const std::string address = "127.0.0.1:" + std::to_string(port);
  spawn_options options;
  options.argv = {launcher, "-l", address, helper_path("GRACE_ECHO"), address};
  child_process activator(options);
  REQUIRE_MESSAGE(activator.wait_stderr("Listening on"), activator.stderr_text());
  const int client = connect_tcp("127.0.0.1", port);
  REQUIRE(client >= 0);
  check_echo(client);
  CHECK(activator.wait_stderr("serving " + address + " (inherited, name unknown)"));
  close(client);
  activator.kill(SIGTERM);
  CHECK(activator.wait());
}
