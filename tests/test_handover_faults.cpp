// The hand-over socket and connection migration under faults, end to end (real processes, real
// fd limits): a taker with too few fds, a silent peer, a peer flood, a server at its fd limit,
// a taker serving other addresses, a new generation whose fd table cannot hold every connection,
// and a connection with more state than a connection carries. Nothing is lost, and nothing
// blocks the service.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "grace/migration.hpp"
#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/service.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {

// `binary args...` started under `prlimit --nofile=N` (the pid is the server's: prlimit execs).
std::unique_ptr<child_process> start_limited(int nofile, const std::string& binary, const std::vector<std::string>& args) {
  spawn_options options;
  options.argv = {"/usr/bin/prlimit", "--nofile=" + std::to_string(nofile), binary};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  return std::make_unique<child_process>(options);
}

bool send_all(int fd, const std::string& text) {
  std::size_t sent = 0;
  while (sent < text.size()) {
    const ssize_t n = write(fd, text.data() + sent, text.size() - sent);
    if (n <= 0) return false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

int connect_seqpacket(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::size_t length = offsetof(sockaddr_un, sun_path) + path.size();
  std::memcpy(a.sun_path, path.data(), path.size());
  if (path[0] == '@') a.sun_path[0] = '\0';
  else ++length;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), static_cast<socklen_t>(length)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// CPU seconds the process has used (utime + stime), from /proc.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string field;
  unsigned long utime = 0, stime = 0;
  for (int i = 3; fields >> field; ++i) {
    if (i == 14) utime = std::stoul(field);
    if (i == 15) {
      stime = std::stoul(field);
      break;
    }
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// A keep-alive connection that has had one answer.
int kept_connection(int port) {
  const int c = connect_tcp("127.0.0.1", port);
  REQUIRE(c >= 0);
  REQUIRE(http_get(c));
  return c;
}

}  // namespace

TEST_CASE("a taker with too few fds says so, exits 1, and the serving generation serves on") {
  temp_dir dir;
  const int port = free_port();
  service http(helper_path("GRACE_HTTP"), http_with_handover(port, dir));
  REQUIRE(http.wait_for("as pid"));
  for (int nofile : {8, 21}) {
    auto taker = start_limited(nofile, helper_path("GRACE_HTTP"), http_with_handover(port, dir));
    const auto status = taker->wait(15s);
    REQUIRE(status);
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 1);
    const std::string err = taker->stderr_text();
    CHECK(err.find("fd(s) free of RLIMIT_NOFILE " + std::to_string(nofile)) != std::string::npos);
    CHECK(err.find("raise the limit") != std::string::npos);
  }
  const int c = connect_tcp("127.0.0.1", port);
  CHECK(http_body_of(c) == expected_body(http.first_pid(), 1));
  close(c);
  CHECK(pidfile_names(dir.file("http.pid"), http.first_pid()));
}

TEST_CASE("a peer that connects to the hand-over socket and says nothing blocks neither SIGUSR2 nor a taker") {
  temp_dir dir;
  const int port = free_port();
  service http(helper_path("GRACE_HTTP"), http_with_handover(port, dir));
  REQUIRE(http.wait_for("as pid"));
  const int silent = connect_seqpacket(dir.file("handover.sock"));
  REQUIRE(silent >= 0);
  // A real taker right behind it takes over at once.
  spawn_options options;
  options.argv = {helper_path("GRACE_HTTP")};
  for (const auto& a : http_with_handover(port, dir)) options.argv.push_back(a);
  child_process taker(options);
  REQUIRE(http.wait_for("pid " + std::to_string(taker.pid()) + " is ready and in charge"));
  CHECK(http.count("taking over through the hand-over socket") == 0);
  // The next SIGUSR2, to the taker, is not refused either while a silent peer is connected.
  const int silent_too = connect_seqpacket(dir.file("handover.sock"));
  REQUIRE(silent_too >= 0);
  REQUIRE(kill(taker.pid(), SIGUSR2) == 0);
  const std::string started = "started generation 3 as pid ";
  REQUIRE(taker.wait_stderr(started));
  const std::string log = taker.stderr_text();
  const pid_t third = static_cast<pid_t>(std::atol(log.c_str() + log.rfind(started) + started.size()));
  REQUIRE(taker.wait_stderr("pid " + std::to_string(third) + " is ready and in charge"));
  CHECK(taker.stderr_text().find("upgrade refused") == std::string::npos);
  // The third generation (its log on the same stderr) hangs up on a peer that says nothing.
  const int silent_three = connect_seqpacket(dir.file("handover.sock"));
  REQUIRE(silent_three >= 0);
  CHECK(taker.wait_stderr("said nothing within 2000 ms; hung up on it"));
  kill(third, SIGKILL);
  close(silent);
  close(silent_too);
  close(silent_three);
}

TEST_CASE("a flood of peers on an abstract hand-over socket writes a bounded log, and a taker still takes over") {
  temp_dir dir;
  const int port = free_port();
  const std::string name = "@grace-test-flood-" + std::to_string(getpid());
  service http(helper_path("GRACE_HTTP"),
               {"127.0.0.1:" + std::to_string(port), "--handover-socket", name, "--pidfile", dir.file("http.pid")});
  REQUIRE(http.wait_for("as pid"));
  // 1,000 connections that say nothing or something wrong, as fast as the backlog takes them
  // (at most 5 s).
  std::size_t connected = 0;
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (connected < 1000 && std::chrono::steady_clock::now() < until) {
    const int fd = connect_seqpacket(name);
    if (fd < 0) continue;
    if (connected++ % 2 == 0) (void)!write(fd, "garbage", 7);
    close(fd);
  }
  CHECK(connected > 0);
  spawn_options options;
  options.argv = {helper_path("GRACE_HTTP"), "127.0.0.1:" + std::to_string(port), "--handover-socket", name,
                  "--pidfile", dir.file("http.pid")};
  child_process taker(options);
  REQUIRE(http.wait_for("pid " + std::to_string(taker.pid()) + " is ready and in charge", 20s));
  REQUIRE(wait_exited(http.first_pid(), 15s));
  // At most a few lines per 10 s about peers, and a count of those not shown.
  const std::size_t warnings = http.count("warning: hand-over socket");
  MESSAGE("peers connected: " << connected << ", warning lines: " << warnings);
  CHECK(warnings <= 12);
}

TEST_CASE("a server at its fd limit does not spin on a connection to its hand-over socket") {
  temp_dir dir;
  const int port = free_port();
  auto server = start_limited(40, helper_path("GRACE_HTTP"), http_with_handover(port, dir));
  REQUIRE(server->wait_stderr("as pid"));
  std::vector<int> clients;
  for (int i = 0; i < 40; ++i) {
    const int c = connect_tcp("127.0.0.1", port);
    if (c >= 0) clients.push_back(c);
  }
  const int peer = connect_seqpacket(dir.file("handover.sock"));
  REQUIRE(peer >= 0);
  const double before = cpu_seconds(server->pid());
  // Three seconds in which the accept fails with EMFILE whenever it is tried.
  const auto until = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < until) (void)server->read_line(100ms);
  const double used = cpu_seconds(server->pid()) - before;
  const std::string err = server->stderr_text();
  const std::size_t lines = count_of(err, "hand-over socket");
  MESSAGE("CPU used in 3 s: " << used << " s; lines about the hand-over socket: " << lines);
  CHECK(used < 0.5);
  CHECK(lines <= 12);
  for (int c : clients) close(c);
  close(peer);
  // With fds free again, it serves.
  const int c = connect_tcp("127.0.0.1", port);
  CHECK(http_body_of(c) == expected_body(server->pid(), 1));
  close(c);
}

TEST_CASE("a taker serving other addresses closes the inherited listener nobody claimed: its clients are refused") {
  temp_dir dir;
  const int old_port = free_port();
  const int new_port = free_port();
  service http(helper_path("GRACE_HTTP"), http_with_handover(old_port, dir));
  REQUIRE(http.wait_for("as pid"));
  spawn_options options;
  options.argv = {helper_path("GRACE_HTTP")};
  for (const auto& a : http_with_handover(new_port, dir)) options.argv.push_back(a);
  child_process taker(options);
  REQUIRE(taker.wait_stderr("the inherited listener 127.0.0.1:" + std::to_string(old_port)));
  CHECK(taker.wait_stderr("is not claimed by this generation: closed, its clients are refused"));
  REQUIRE(http.wait_for("pid " + std::to_string(taker.pid()) + " is ready and in charge"));
  REQUIRE(wait_exited(http.first_pid(), 15s));
  CHECK(connect_tcp("127.0.0.1", old_port) < 0);  // refused, not left waiting
  const int c = connect_tcp("127.0.0.1", new_port);
  CHECK(http_body_of(c) == expected_body(taker.pid(), 2));
  close(c);
}

TEST_CASE("migration into a generation whose fd table is small: every connection is answered, new clients too") {
  temp_dir dir;
  const int port = free_port();
  service http(helper_path("GRACE_HTTP"), http_with_handover(port, dir, {"--drain-timeout", "20"}));
  REQUIRE(http.wait_for("as pid"));
  std::vector<int> idle, partial;
  for (int i = 0; i < 100; ++i) idle.push_back(kept_connection(port));
  for (int i = 0; i < 30; ++i) {
    partial.push_back(kept_connection(port));
    REQUIRE(send_all(partial.back(), "GET / HTTP/1.1\r\nHo"));
  }
  // The taker's table holds 64: it takes what fits while keeping room to accept.
  auto taker = start_limited(64, helper_path("GRACE_HTTP"), http_with_handover(port, dir));
  REQUIRE(http.wait_for("pid " + std::to_string(taker->pid()) + " is ready and in charge"));
  REQUIRE(http.wait_for("has room for no more connections in its fd table"));
  // New clients reach the new generation at once.
  for (int i = 0; i < 5; ++i) {
    const int c = connect_tcp("127.0.0.1", port);
    auto answer = http_get(c, 3s);
    REQUIRE(answer);
    CHECK(answer->body == expected_body(taker->pid(), 2));
    close(c);
  }
  // Every old connection is answered, by whichever generation holds it; none is lost.
  std::size_t moved = 0, stayed = 0;
  for (int c : partial) REQUIRE(send_all(c, "st: x\r\n\r\n"));
  for (int c : partial) {
    auto answer = http_read_response(c, 10s);
    REQUIRE(answer);
    (answer->body == expected_body(taker->pid(), 2) ? moved : stayed) += 1;
    close(c);
  }
  for (int c : idle) {
    auto answer = http_get(c, 10s);
    REQUIRE(answer);
    (answer->body == expected_body(taker->pid(), 2) ? moved : stayed) += 1;
    close(c);
  }
  MESSAGE("moved " << moved << ", stayed and finished in the old generation " << stayed);
  CHECK(moved > 0);
  CHECK(stayed > 0);
  CHECK(moved + stayed == 130);
  CHECK(wait_exited(http.first_pid(), 15s));
  CHECK(http.count("by force") == 0);
}

TEST_CASE("a connection with more state than a connection carries stays, and the others move") {
  temp_dir dir;
  const int port = free_port();
  service http(helper_path("GRACE_HTTP"), http_with_handover(port, dir));
  REQUIRE(http.wait_for("as pid"));
  std::vector<int> idle;
  for (int i = 0; i < 50; ++i) idle.push_back(kept_connection(port));
  // A POST whose body is still arriving: more than a connection's state can carry is read.
  const int big = kept_connection(port);
  const std::size_t body = grace::connection_state_limit + 10000;
  const std::string head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body) + "\r\n\r\n";
  REQUIRE(send_all(big, head + std::string(body - 100, 'a')));
  const pid_t second = http.upgrade(http.first_pid(), 2);
  REQUIRE(http.wait_for("handing 50 idle connection(s) to pid " + std::to_string(second)));
  CHECK(http.wait_for("more state than a connection carries"));
  for (int c : idle) {
    auto answer = http_get(c);
    REQUIRE(answer);
    CHECK(answer->body == expected_body(second, 2));
    CHECK_FALSE(answer->connection_close);
    close(c);
  }
  REQUIRE(send_all(big, std::string(100, 'a')));
  // Answered where it was (grace-http answers a POST with 404), after which the old generation,
  // its last connection done, exits.
  auto answer = http_read_response(big);
  REQUIRE(answer);
  close(big);
  CHECK(wait_exited(http.first_pid(), 15s));
  CHECK(http.count("by force") == 0);
}
