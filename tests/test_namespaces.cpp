// grace in namespaces, with real ones (unshare, as root): a server that is PID 1 of its pid
// namespace refuses to upgrade itself and serves on; a taker in another pid namespace takes
// over; a hand-over socket reached through another path (a bind mount) is recognised. Skipped,
// loudly, where namespaces cannot be made.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/service.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {

constexpr const char* unshare_path = "/usr/bin/unshare";

// Whether this process may make pid and mount namespaces (root, and unshare present).
bool namespaces_available() {
  if (geteuid() != 0 || access(unshare_path, X_OK) != 0) return false;
  spawn_options options;
  options.argv = {unshare_path, "--pid", "--fork", "--mount-proc", "/bin/true"};
  child_process probe(options);
  const auto status = probe.wait(10s);
  return status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
}

bool skip_without_namespaces() {
  static const bool available = namespaces_available();
  if (!available) MESSAGE("SKIPPED: cannot make namespaces here (needs root and util-linux's unshare)");
  return !available;
}

// The first child of `pid`, as this pid namespace numbers it (0 until there is one).
pid_t child_of(pid_t pid, std::chrono::milliseconds timeout = 10s) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  do {
    std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
    pid_t child = 0;
    if (in >> child && child > 0) return child;
    struct timespec pause {0, 10 * 1000 * 1000};
    nanosleep(&pause, nullptr);
  } while (std::chrono::steady_clock::now() < until);
  return 0;
}

}  // namespace

TEST_CASE("PID 1 of a pid namespace refuses SIGUSR2, names the fix, and serves on") {
  if (skip_without_namespaces()) return;
  const int port = free_port();
  spawn_options options;
  options.argv = {unshare_path, "--pid", "--fork", "--kill-child", "--mount-proc", helper_path("GRACE_HTTP"),
                  "127.0.0.1:" + std::to_string(port)};
  child_process unshared(options);
  REQUIRE(unshared.wait_stderr("as pid 1"));
  const pid_t server = child_of(unshared.pid());
  REQUIRE(server > 0);
  REQUIRE(kill(server, SIGUSR2) == 0);
  REQUIRE(unshared.wait_stderr("upgrade refused: this process is PID 1 of its pid namespace"));
  CHECK(unshared.stderr_text().find("grace-listen --overlap") != std::string::npos);
  CHECK(unshared.stderr_text().find("started generation 2") == std::string::npos);
  // Still serving, as generation 1.
  const int c = connect_tcp("127.0.0.1", port);
  CHECK(http_body_of(c) == expected_body(1, 1));
  close(c);
  REQUIRE(kill(server, SIGTERM) == 0);
  const auto status = unshared.wait(15s);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
}

TEST_CASE("a hand-over socket reached through another path (a bind mount) is the same socket: the takeover completes") {
  if (skip_without_namespaces()) return;
  temp_dir dir;
  const std::string run = dir.file("run"), elsewhere = dir.file("elsewhere");
  REQUIRE(mkdir(run.c_str(), 0700) == 0);
  REQUIRE(mkdir(elsewhere.c_str(), 0700) == 0);
  const int port = free_port();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  service http(helper_path("GRACE_HTTP"),
               {address, "--handover-socket", run + "/handover.sock", "--pidfile", dir.file("http.pid")});
  REQUIRE(http.wait_for("as pid"));
  // The taker sees the directory only at another path, in a mount namespace of its own.
  spawn_options options;
  options.argv = {unshare_path, "--mount", "--propagation", "private", "/bin/sh", "-c",
                  "mount --bind \"$1\" \"$2\" && exec \"$3\" \"$4\" --handover-socket \"$2/handover.sock\" "
                  "--pidfile \"$5\"",
                  "sh", run, elsewhere, helper_path("GRACE_HTTP"), address, dir.file("http.pid")};
  child_process taker(options);  // unshare, then sh, exec into grace-http: one pid
  REQUIRE(http.wait_for("pid " + std::to_string(taker.pid()) + " is ready and in charge"));
  CHECK(taker.wait_stderr("hand-over socket " + elsewhere + "/handover.sock as pid " + std::to_string(taker.pid())));
  CHECK(taker.stderr_text().find("rollback") == std::string::npos);
  CHECK(wait_exited(http.first_pid(), 15s));
  const int c = connect_tcp("127.0.0.1", port);
  CHECK(http_body_of(c) == expected_body(taker.pid(), 2));
  close(c);
  CHECK(pidfile_names(dir.file("http.pid"), taker.pid()));
}

TEST_CASE("a taker in a nested pid namespace takes over, names itself in the pid file, and nothing is lost") {
  if (skip_without_namespaces()) return;
  temp_dir dir;
  const int port = free_port();
  const std::vector<std::string> args = http_with_handover(port, dir);
  service http(helper_path("GRACE_HTTP"), args);
  REQUIRE(http.wait_for("as pid"));
  const int kept = connect_tcp("127.0.0.1", port);
  REQUIRE(http_get(kept));
  spawn_options options;
  options.argv = {unshare_path, "--pid", "--fork", "--kill-child", "--mount-proc", helper_path("GRACE_HTTP")};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  child_process unshared(options);
  REQUIRE(http.wait_for("through the hand-over socket from another pid namespace"));
  REQUIRE(http.wait_for("in another pid namespace is ready and in charge"));
  CHECK(unshared.wait_stderr("names itself in the pid file and to the service manager"));
  CHECK(wait_exited(http.first_pid(), 15s));
  // The idle connection moved; new clients are answered by the taker (PID 1 where it runs).
  auto moved = http_get(kept);
  REQUIRE(moved);
  CHECK(moved->body == expected_body(1, 2));
  close(kept);
  const int c = connect_tcp("127.0.0.1", port);
  CHECK(http_body_of(c) == expected_body(1, 2));
  close(c);
  CHECK(pidfile_names(dir.file("http.pid"), 1));  // its own pid, as its namespace numbers it
  // Killing unshare would leave its child running: the namespace goes with its PID 1.
  if (const pid_t inner = child_of(unshared.pid()); inner > 0) kill(inner, SIGKILL);
}

TEST_CASE("a server in a nested pid namespace hands over to a taker it cannot see") {
  if (skip_without_namespaces()) return;
  temp_dir dir;
  const int port = free_port();
  const std::vector<std::string> args = http_with_handover(port, dir);
  spawn_options options;
  options.argv = {unshare_path, "--pid", "--fork", "--kill-child", "--mount-proc", helper_path("GRACE_HTTP")};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  child_process unshared(options);
  REQUIRE(unshared.wait_stderr("as pid 1"));
  const int kept = connect_tcp("127.0.0.1", port);
  REQUIRE(http_get(kept));
  spawn_options taking;
  taking.argv = {helper_path("GRACE_HTTP")};
  taking.argv.insert(taking.argv.end(), args.begin(), args.end());
  child_process taker(taking);
  REQUIRE(unshared.wait_stderr("a process in another pid namespace, started independently, took the listeners"));
  REQUIRE_MESSAGE(unshared.wait_stderr("in another pid namespace is ready and in charge"),
                  (unshared.stderr_text() + "\n--- the taker:\n" + taker.stderr_text()));
  CHECK(taker.wait_stderr("took 2 listener(s) over from a process in another pid namespace"));
  CHECK(taker.wait_stderr("names itself in the pid file"));
  // The old generation (PID 1 of its namespace) drains and exits; only it dies with it.
  const auto status = unshared.wait(15s);
  REQUIRE(status);
  auto moved = http_get(kept);
  REQUIRE(moved);
  CHECK(moved->body == expected_body(taker.pid(), 2));
  close(kept);
  CHECK(pidfile_names(dir.file("http.pid"), taker.pid()));
}

TEST_CASE("a taker in another network namespace serves the listeners it received, and says so") {
  if (skip_without_namespaces()) return;
  temp_dir dir;
  const int port = free_port();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  const std::vector<std::string> args = {address, "--handover-socket", dir.file("handover.sock")};
  service http(helper_path("GRACE_HTTP"), args);
  REQUIRE(http.wait_for("as pid"));
  spawn_options options;
  options.argv = {unshare_path, "--net", helper_path("GRACE_HTTP")};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  child_process taker(options);  // unshare execs: one pid
  REQUIRE(taker.wait_stderr("the listeners belong to another network namespace: they serve there"));
  REQUIRE(http.wait_for("pid " + std::to_string(taker.pid()) + " is ready and in charge"));
  CHECK(wait_exited(http.first_pid(), 15s));
  const int c = connect_tcp("127.0.0.1", port);  // this namespace's loopback: the listener's own
  CHECK(http_body_of(c) == expected_body(taker.pid(), 2));
  close(c);
}

TEST_CASE("split brain: a fresh start never joins the SO_REUSEPORT group another server of this user serves") {
  // No namespace needed: the hand-over socket's directory was cleaned away, and a second
  // instance starts fresh on the same address.
  temp_dir dir;
  const int port = free_port();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  service http(helper_path("GRACE_HTTP"), {address, "--workers", "2", "--reuse-port"});
  REQUIRE(http.wait_for("as pid"));
  spawn_options options;
  options.argv = {helper_path("GRACE_HTTP"), address, "--workers", "2", "--reuse-port"};
  child_process second(options);
  const auto status = second.wait(15s);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) != 0);
  const std::string err = second.stderr_text();
  CHECK(err.find("pid " + std::to_string(http.first_pid()) + " of this user already serves it") != std::string::npos);
  CHECK(err.find("split its traffic") != std::string::npos);
  // The first one serves every client alone.
  for (int i = 0; i < 10; ++i) {
    const int c = connect_tcp("127.0.0.1", port);
    CHECK(http_body_of(c).find("pid=" + std::to_string(http.first_pid()) + " ") == 0);
    close(c);
  }
}
