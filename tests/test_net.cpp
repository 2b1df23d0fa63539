// grace::net with child processes: a socket file shared with a child, start_process with a full
// fd table, process state read from /proc. The cases that stay in one process are in
// test_net_unit.cpp.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>
#include <string>

#include "grace/grace.hpp"
#include "generations.hpp"
#include "read_file.hpp"
#include "support/errors.hpp"
#include "support/process.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {
bool exists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}
}  // namespace

TEST_CASE("a socket handed to a child keeps its file when the parent closes it") {
  temp_dir dir;
  const std::string path = dir.file("shared.sock");
  grace::net net;
  auto l = net.listen_unix("unix", path);
  REQUIRE(l);
  grace::process_options options;
  options.executable_path = "/bin/true";
  auto child = net.start_process(options);
  REQUIRE(child);
  int status = 0;
  REQUIRE(waitpid(*child, &status, 0) == *child);
  REQUIRE(net.close(*l));
  CHECK(exists(path));
}

TEST_CASE("a full fd table: start_process still works; what cannot open fails cleanly") {
  grace::net net;
  auto l = net.listen_tcp("tcp", "127.0.0.1:0");
  REQUIRE(l);
  rlimit saved{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &saved) == 0);
  rlimit tight = saved;
  tight.rlim_cur = 64;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &tight) == 0);
  std::vector<int> fillers;
  for (int fd; (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) fillers.push_back(fd);
  grace::process_options options;
  options.executable_path = "/bin/true";
  // Placing the listeners needs no spare slot, so the child starts even now.
  auto child = net.start_process(options);
  // The readiness pipe needs two fds: a clear EMFILE, and nothing changed.
  auto pending = grace::pending_child::start(net, options);
  for (int fd : fillers) close(fd);
  REQUIRE(setrlimit(RLIMIT_NOFILE, &saved) == 0);
  REQUIRE_MESSAGE(child, error_text(child));
  int status = 0;
  REQUIRE(waitpid(*child, &status, 0) == *child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  REQUIRE_FALSE(pending);
  CHECK(pending.error().code() == std::errc::too_many_files_open);

  // The listener is untouched: it still accepts.
  REQUIRE(net.active_listeners().size() == 1);
  const int client = connect_tcp("127.0.0.1", (*l)->local_address().port());
  REQUIRE(client >= 0);
  close(client);
}

TEST_CASE("process state from /proc: running, zombie, gone; unreadable files are no exception") {
  const pid_t child = fork();
  if (child == 0) {
    pause();
    _exit(0);
  }
  CHECK_FALSE(grace::detail::process_has_exited(child));
  kill(child, SIGKILL);
  // Not reaped yet: a zombie counts as exited.
  siginfo_t info{};
  REQUIRE(waitid(P_PID, static_cast<id_t>(child), &info, WEXITED | WNOWAIT) == 0);
  CHECK(grace::detail::process_has_exited(child));
  REQUIRE(waitpid(child, nullptr, 0) == child);
  CHECK(grace::detail::process_has_exited(child));
  CHECK_FALSE(grace::detail::read_small_file("/proc/" + std::to_string(child) + "/stat"));
  CHECK_FALSE(grace::detail::read_small_file("/nonexistent/file"));
  CHECK(grace::detail::read_small_file("/proc/self/stat").value_or("").find(std::to_string(getpid())) == 0);
}

TEST_CASE("a process's start time is field 22 of /proc/PID/stat, whatever its name holds") {
  // The name sits in parentheses and may hold spaces and ") ": fields count from the last ')'.
  const pid_t child = fork();
  if (child == 0) {
    prctl(PR_SET_NAME, "odd) (name 1 2");
    pause();
    _exit(0);
  }
  std::string stat;
  for (int i = 0; i < 2000 && stat.find("odd) (name") == std::string::npos; ++i) {
    stat = grace::detail::read_small_file("/proc/" + std::to_string(child) + "/stat").value_or("");
    if (stat.find("odd) (name") == std::string::npos) usleep(1000);
  }
  REQUIRE(stat.find("odd) (name 1 2)") != std::string::npos);
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string field;
  for (int i = 3; i <= 22; ++i) fields >> field;
  const auto identity = grace::detail::identify(child);
  CHECK(identity.pid == child);
  CHECK(identity.start_time == std::stoull(field));
  CHECK(identity.start_time != 0);
  CHECK(grace::detail::still_running(identity));
  kill(child, SIGKILL);
  REQUIRE(waitpid(child, nullptr, 0) == child);
  CHECK_FALSE(grace::detail::still_running(identity));
  CHECK(grace::detail::identify(child).start_time == 0);
}

