// grace::net in one process: fresh listeners, unix socket files, names, closing.
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

TEST_CASE("a fresh TCP listener is non-blocking, close-on-exec, and reports its real port") {
  grace::net net;
  auto l = net.listen_tcp("tcp", "127.0.0.1:0");
  REQUIRE(l);
  CHECK_FALSE((*l)->inherited());
  CHECK((*l)->local_address().port() != 0);
  CHECK((*l)->address() == "127.0.0.1:" + std::to_string((*l)->local_address().port()));
  CHECK((*l)->name() == "unknown");
  CHECK((fcntl((*l)->fd(), F_GETFL) & O_NONBLOCK) != 0);
  CHECK((fcntl((*l)->fd(), F_GETFD) & FD_CLOEXEC) != 0);
  int reuse = 0;
  socklen_t len = sizeof reuse;
  getsockopt((*l)->fd(), SOL_SOCKET, SO_REUSEADDR, &reuse, &len);
  CHECK(reuse == 1);
  CHECK(net.active_listeners().size() == 1);

  // The same port again is EADDRINUSE with the address in the message.
  auto again = net.listen_tcp("tcp4", (*l)->address());
  REQUIRE_FALSE(again);
  CHECK(again.error().code() == std::errc::address_in_use);
  CHECK(again.error().message().find((*l)->address()) != std::string::npos);
}

TEST_CASE("tcp6 is IPv6-only; tcp takes an IPv6 literal too") {
  grace::net net;
  auto v6 = net.listen_tcp("tcp6", "[::1]:0");
  REQUIRE(v6);
  int only = 0;
  socklen_t len = sizeof only;
  getsockopt((*v6)->fd(), IPPROTO_IPV6, IPV6_V6ONLY, &only, &len);
  CHECK(only == 1);
  // (The kernel marks any socket bound to a specific IPv6 address v6-only; dual stack only
  // shows on a wildcard, which these loopback-only tests do not bind.)
  auto dual = net.listen_tcp("tcp", "[::1]:0");
  REQUIRE(dual);
  CHECK((*dual)->address().rfind("[::1]:", 0) == 0);
}

TEST_CASE("unknown networks and bad names are errors, like Go's UnknownNetworkError") {
  grace::net net;
  auto bad = net.listen("udp5", "127.0.0.1:0");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code() == grace::errc::unknown_network);
  CHECK(bad.error().message().find("\"udp5\"") != std::string::npos);
  CHECK_FALSE(net.listen_tcp("unix", "127.0.0.1:0"));
  CHECK_FALSE(net.listen_unix("tcp", "/tmp/x"));
  auto named = net.listen_tcp("tcp", "127.0.0.1:0", {SOMAXCONN, "has:colon"});
  REQUIRE_FALSE(named);
  CHECK(named.error().code() == grace::errc::invalid_listener_name);
  CHECK(named.error().message().find("has:colon") != std::string::npos);
  CHECK(net.listen_tcp("tcp", "127.0.0.1:0", {SOMAXCONN, "web"}).value()->name() == "web");
}

TEST_CASE("unix: a stale socket file is replaced, a live one or a regular file is not") {
  temp_dir dir;
  const std::string stale = dir.file("stale.sock");
  close(raw_unix_listener(stale, SOCK_STREAM));  // the file stays, nobody listens
  REQUIRE(exists(stale));
  grace::net net;
  auto replaced = net.listen_unix("unix", stale);
  REQUIRE_MESSAGE(replaced, error_text(replaced));
  CHECK((*replaced)->address() == stale);

  const std::string live = dir.file("live.sock");
  const int other = raw_unix_listener(live, SOCK_STREAM);
  auto refused = net.listen_unix("unix", live);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code() == std::errc::address_in_use);
  CHECK(refused.error().message().find("another process is listening") != std::string::npos);
  close(other);

  const std::string regular = dir.file("data.txt");
  std::ofstream(regular) << "keep me";
  auto not_socket = net.listen_unix("unix", regular);
  REQUIRE_FALSE(not_socket);
  CHECK(not_socket.error().message().find("not a socket") != std::string::npos);
  CHECK(exists(regular));
}

TEST_CASE("closing removes only a socket file this process made and never shared") {
  temp_dir dir;
  grace::net net;
  const std::string path = dir.file("own.sock");
  auto own = net.listen_unix("unix", path);
  REQUIRE(own);
  REQUIRE(net.close(*own));
  CHECK_FALSE(exists(path));
  CHECK(net.active_listeners().empty());
  CHECK(net.close(*own).error().code() == grace::errc::not_an_active_listener);

  // Somebody else re-bound the path meanwhile: not ours to remove.
  const std::string moved = dir.file("moved.sock");
  auto first = net.listen_unix("unix", moved);
  REQUIRE(first);
  REQUIRE(unlink(moved.c_str()) == 0);
  const int other = raw_unix_listener(moved, SOCK_STREAM);
  REQUIRE(net.close(*first));
  CHECK(exists(moved));
  close(other);

  // Abstract sockets have no file at all.
  auto abstract = net.listen_unix("unix", "@grace-net-test-" + std::to_string(getpid()));
  REQUIRE(abstract);
  CHECK((*abstract)->local_address().is_abstract());
  REQUIRE(net.close(*abstract));
}

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

TEST_CASE("with nothing inherited, inherit() succeeds and nothing is unused") {
  grace::net net;
  CHECK(net.inherit());
  CHECK(net.unused_inherited().empty());
  CHECK(net.close_unused_inherited() == 0);
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

TEST_CASE("listen_tcp from a sockaddr the application already holds") {
  grace::net net;
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  in.sin_port = 0;
  auto l = net.listen_tcp("tcp4", reinterpret_cast<const sockaddr*>(&in), sizeof in);
  REQUIRE_MESSAGE(l, error_text(l));
  CHECK((*l)->address().rfind("127.0.0.1:", 0) == 0);
  CHECK((*l)->local_address().port() != 0);
  auto wrong_family = net.listen_tcp("tcp6", reinterpret_cast<const sockaddr*>(&in), sizeof in);
  REQUIRE_FALSE(wrong_family);
  CHECK(wrong_family.error().code() == grace::errc::invalid_address);
  CHECK(wrong_family.error().message().find("not a tcp6 address") != std::string::npos);
  auto truncated = net.listen_tcp("tcp", reinterpret_cast<const sockaddr*>(&in), 1);
  REQUIRE_FALSE(truncated);
  CHECK(truncated.error().code() == grace::errc::invalid_address);
}
