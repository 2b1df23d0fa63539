// The readiness hand-shake: the old generation learns whether the new one is ready, died, or
// hangs, and in the last two cases is left exactly as it was, still serving.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "generations.hpp"
#include "grace/grace.hpp"
#include "support/errors.hpp"
#include "support/process.hpp"

using namespace test_support;

namespace {

std::size_t open_fd_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

grace::process_options probe_as(const std::string& mode, const grace::listener& l) {
  grace::process_options options;
  options.executable_path = helper_path("GRACE_PROBE");
  options.extra_env = {"GRACE_PROBE_MODE=" + mode, "GRACE_PROBE_ADDRESS=" + l.address()};
  return options;
}

// The old generation still accepts on its listener.
void check_still_serving(const grace::listener& l) {
  const int client = connect_tcp("127.0.0.1", l.local_address().port());
  REQUIRE(client >= 0);
  pollfd p{l.fd(), POLLIN, 0};
  REQUIRE(poll(&p, 1, 10000) == 1);
  const int conn = accept4(l.fd(), nullptr, nullptr, SOCK_CLOEXEC);
  CHECK(conn >= 0);
  close(conn);
  close(client);
}

}  // namespace

TEST_CASE("a child that calls notify_ready() is ready, and serves on the inherited socket") {
  grace::net net;
  auto l = net.listen("tcp", "127.0.0.1:0");
  REQUIRE(l);
  const auto fds_before = open_fd_count();
  {
    auto child = grace::pending_child::start(net, probe_as("ready", **l));
    REQUIRE(child);
    CHECK(child->wait(std::chrono::seconds(10)) == grace::upgrade_outcome::ready);
    CHECK(child->exit_status() == -1);
    const int client = connect_tcp("127.0.0.1", (*l)->local_address().port());
    // Nobody in this process accepts: the reply can only come from the child.
    CHECK(read_line_from(client) == "served-by " + std::to_string(child->pid()));
    close(client);
    int status = 0;
    REQUIRE(waitpid(child->pid(), &status, 0) == child->pid());
    CHECK(WEXITSTATUS(status) == 0);
  }
  CHECK(open_fd_count() == fds_before);
}

TEST_CASE("a child that exits before it is ready: reaped, reported, the parent keeps serving") {
  grace::net net;
  auto l = net.listen("tcp", "127.0.0.1:0");
  REQUIRE(l);
  const auto fds_before = open_fd_count();
  {
    auto child = grace::pending_child::start(net, probe_as("exit-before-ready", **l));
    REQUIRE(child);
    CHECK(child->wait(std::chrono::seconds(10)) == grace::upgrade_outcome::exited);
    CHECK(WIFEXITED(child->exit_status()));
    CHECK(WEXITSTATUS(child->exit_status()) == 3);
    CHECK(waitpid(-1, nullptr, WNOHANG) == -1);  // nothing left to reap
  }
  CHECK(open_fd_count() == fds_before);
  check_still_serving(**l);
}

TEST_CASE("a child that hangs is killed at the timeout and reaped; the parent keeps serving") {
  grace::net net;
  auto l = net.listen("tcp", "127.0.0.1:0");
  REQUIRE(l);
  const auto fds_before = open_fd_count();
  {
    auto child = grace::pending_child::start(net, probe_as("hang", **l));
    REQUIRE(child);
    CHECK_FALSE(child->check().has_value());
    CHECK(child->wait(std::chrono::milliseconds(300)) == grace::upgrade_outcome::timed_out);
    CHECK(WIFSIGNALED(child->exit_status()));
    CHECK(WTERMSIG(child->exit_status()) == SIGKILL);
    CHECK(waitpid(-1, nullptr, WNOHANG) == -1);
    // Asking again gives the same answer, and changes nothing.
    CHECK(child->give_up() == grace::upgrade_outcome::timed_out);
  }
  CHECK(open_fd_count() == fds_before);
  check_still_serving(**l);
}

TEST_CASE("a pending child dropped without an answer is killed and reaped") {
  grace::net net;
  auto l = net.listen("tcp", "127.0.0.1:0");
  REQUIRE(l);
  pid_t pid = -1;
  {
    auto child = grace::pending_child::start(net, probe_as("hang", **l));
    REQUIRE(child);
    pid = child->pid();
  }
  CHECK(has_exited(pid));
  CHECK(waitpid(-1, nullptr, WNOHANG) == -1);
}

TEST_CASE("an exec failure leaves no child and no fd behind") {
  grace::net net;
  auto l = net.listen("tcp", "127.0.0.1:0");
  REQUIRE(l);
  const auto fds_before = open_fd_count();
  grace::process_options options;
  options.executable_path = "/nonexistent/next-release";
  auto child = grace::pending_child::start(net, options);
  REQUIRE_FALSE(child);
  CHECK(child.error().code() == std::errc::no_such_file_or_directory);
  CHECK(open_fd_count() == fds_before);
  check_still_serving(**l);
}

TEST_CASE("listeners opened and closed on another thread while children start cannot shift GRACE_READY_FD") {
  grace::net net;
  REQUIRE(net.listen("tcp", "127.0.0.1:0"));
  std::atomic<bool> stop{false};
  std::atomic<int> opened{0};
  // Up to 100 more listeners, then none, again and again; each change at a moment of its own.
  std::thread churn([&] {
    std::vector<grace::listener*> held;
    bool opening = true;
    for (unsigned pause = 1; !stop; pause = pause * 7 % 101) {
      if (opening) {
        if (auto l = net.listen("tcp", "127.0.0.1:0")) {
          held.push_back(*l);
          ++opened;
        }
        opening = held.size() < 100;
      } else {
        (void)net.close(held.back());
        held.pop_back();
        opening = held.empty();
      }
      usleep(pause);
    }
  });
  grace::process_options options;
  options.executable_path = helper_path("GRACE_PROBE");
  options.extra_env = {"GRACE_PROBE_MODE=notify-ready"};
  int ready = 0;
  std::string failure;
  while (failure.empty() && ready < 50) {
    auto child = grace::pending_child::start(net, options);
    if (!child) {
      failure = child.error().message();
      break;
    }
    // The child checks GRACE_READY_FD at start-up: had a listener opened or closed meanwhile
    // moved its socket, the number would name a listener or nothing, and notify_ready() fails.
    if (child->wait(std::chrono::seconds(10)) != grace::upgrade_outcome::ready) {
      failure = "child " + std::to_string(ready + 1) + " was not ready";
      break;
    }
    ++ready;
    waitpid(child->pid(), nullptr, 0);
  }
  stop = true;
  churn.join();
  CAPTURE(opened.load());
  CHECK(failure == "");
  CHECK(ready == 50);
}

TEST_CASE("notify_ready: a first start has nobody to tell; a bad GRACE_READY_FD is a named error") {
  CHECK(grace::notify_ready() == grace::ready_outcome::first_start);
  CHECK(std::getenv("GRACE_READY_FD") == nullptr);
  // In real processes: the value is checked at start-up, before any event loop could own that
  // fd. 4 is open here (an inherited pipe, the kind libuv uses itself), but not the socket.
  int pipe_fds[2];
  REQUIRE(pipe2(pipe_fds, O_CLOEXEC) == 0);
  for (const char* bad : {"abc", "-1", "1", "999999", "3x", "4", "5"}) {
    CAPTURE(bad);
    spawn_options options;
    options.argv = {helper_path("GRACE_PROBE")};
    options.env = {{"GRACE_PROBE_MODE", "notify-ready"}, {"GRACE_READY_FD", bad}};
    options.fds = {pipe_fds[0], pipe_fds[1]};
    child_process probe(options);
    const auto line = probe.read_line();
    REQUIRE(line);
    CHECK(line->rfind("error grace:3 GRACE_READY_FD=", 0) == 0);  // errc::malformed_environment
    CHECK(probe.wait() == 0);
  }
  close(pipe_fds[0]);
  close(pipe_fds[1]);
}

TEST_CASE("the generation cap: one rule counts the older generations still running, this one and the next") {
  const pid_t draining = fork();
  if (draining == 0) {
    pause();
    _exit(0);
  }
  const pid_t gone = fork();
  if (gone == 0) _exit(0);
  const auto gone_identity = grace::detail::identify(gone);
  REQUIRE(waitpid(gone, nullptr, 0) == gone);
  const std::vector<grace::detail::process_identity> recorded = {gone_identity, grace::detail::identify(draining)};
  CHECK(grace::detail::still_running(recorded).size() == 1);

  // The draining one, this one and the next: three.
  auto admitted = grace::detail::admit_next_generation(recorded, 3);
  REQUIRE_MESSAGE(admitted, error_text(admitted));
  REQUIRE(admitted->size() == 2);
  CHECK(admitted->front().pid == draining);
  CHECK(admitted->back().pid == getpid());  // newest last: what GRACE_ANCESTORS carries
  CHECK(admitted->back().start_time == grace::detail::identify(getpid()).start_time);

  auto refused = grace::detail::admit_next_generation(recorded, 2);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code() == grace::errc::too_many_generations);
  CHECK(refused.error().message() == "2 generations alive (older ones still draining: " + std::to_string(draining) +
                                         "); at most 2 at once");
  kill(draining, SIGKILL);
  REQUIRE(waitpid(draining, nullptr, 0) == draining);
  CHECK(grace::detail::admit_next_generation(recorded, 2));
}

TEST_CASE("this process's identity is read once, and a child of fork() names itself, not its parent") {
  const auto self = grace::detail::self_identity();
  CHECK(self.pid == getpid());
  CHECK(self.start_time == grace::detail::identify(getpid()).start_time);
  CHECK(self.start_time != 0);
  // The child reports through its exit status: 0 when its admission names it with its own start
  // time (the parent's was kept before the fork).
  const pid_t child = fork();
  if (child == 0) {
    auto admitted = grace::detail::admit_next_generation({}, 2);
    const bool right = admitted && admitted->size() == 1 && admitted->front().pid == getpid() &&
                       admitted->front().start_time == grace::detail::identify(getpid()).start_time &&
                       grace::detail::self_identity().pid == getpid();
    _exit(right ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
