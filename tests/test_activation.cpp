// Handing sockets to a program this process starts itself: an inheritable duplicate that a
// child started by other means finds, and run_with_sockets(), systemd's socket activation for
// any program, with real processes.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "grace/activation.hpp"
#include "grace/net.hpp"
#include "support/process.hpp"
#include "support/service.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {

bool close_on_exec(int fd) { return (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }

// What a shell started with popen() (fork + exec, nothing of grace's) sees at fd `fd`.
std::string seen_by_a_child(int fd) {
  const std::string command = "readlink /proc/self/fd/" + std::to_string(fd) + " 2>/dev/null || echo closed";
  FILE* p = popen(command.c_str(), "r");
  char line[256] = {};
  if (p == nullptr || std::fgets(line, sizeof line, p) == nullptr) line[0] = '\0';
  if (p != nullptr) pclose(p);
  std::string out = line;
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

int wait_status(pid_t pid) {
  REQUIRE(wait_exited(pid, 10s));
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return status;
}

}  // namespace

TEST_CASE("an inheritable duplicate reaches a child started by other means; the original does not") {
  int port = 0;
  const int listener = raw_tcp_listener("127.0.0.1", port);
  REQUIRE(listener >= 0);
  REQUIRE(close_on_exec(listener));
  const std::string socket_name = "socket:[" + std::to_string(socket_inode(listener)) + "]";
  CHECK(seen_by_a_child(listener) == "closed");
  {
    auto copy = grace::duplicate_inheritable(listener);
    REQUIRE(copy);
    CHECK_FALSE(close_on_exec(copy->get()));
    CHECK(close_on_exec(listener));  // the original keeps its flags
    CHECK(seen_by_a_child(copy->get()) == socket_name);
  }
  // Closed with its owner: no later child inherits it.
  auto bad = grace::duplicate_inheritable(9999);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message().find("fd 9999") != std::string::npos);
  close(listener);
}

TEST_CASE("run_with_sockets: a socket-activated program takes the listener and answers on it") {
  const int port = free_port();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  grace::net net;  // bound here, by this process
  auto l = net.listen_tcp("tcp", address);
  REQUIRE(l);
  grace::activation_options options;
  options.argv = {helper_path("GRACE_PROBE"), "serve-http", address, "1"};
  options.sockets = {{(*l)->fd(), "web"}};
  auto pid = grace::run_with_sockets(options);
  REQUIRE(pid);
  const int c = connect_tcp("127.0.0.1", port);
  REQUIRE(c >= 0);
  CHECK(http_body_of(c) == "pid=" + std::to_string(*pid) + "\n");
  close(c);
  const int status = wait_status(*pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);  // it found the socket in LISTEN_FDS, for its own pid
  // Nothing of this process was made inheritable.
  CHECK(close_on_exec((*l)->fd()));
}

TEST_CASE("run_with_sockets refuses bad input with the reason") {
  grace::activation_options none;
  auto empty = grace::run_with_sockets(none);
  REQUIRE_FALSE(empty);
  CHECK(empty.error().code() == grace::errc::invalid_argument);

  grace::activation_options missing;
  missing.argv = {"/nonexistent/program"};
  auto not_found = grace::run_with_sockets(missing);
  REQUIRE_FALSE(not_found);
  CHECK(not_found.error().message().find("/nonexistent/program") != std::string::npos);

  grace::activation_options bad_name;
  bad_name.argv = {"/bin/true"};
  bad_name.sockets = {{0, "a:b"}};
  auto named = grace::run_with_sockets(bad_name);
  REQUIRE_FALSE(named);
  CHECK(named.error().code() == grace::errc::invalid_listener_name);

  grace::activation_options closed;
  closed.argv = {"/bin/true"};
  closed.sockets = {{9999, "x"}};
  auto gone = grace::run_with_sockets(closed);
  REQUIRE_FALSE(gone);
  CHECK(gone.error().message().find("socket fd 9999") != std::string::npos);
}
