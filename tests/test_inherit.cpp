// Inheritance as a real child sees it: sockets at fds 3.. and LISTEN_* variables set up by the
// test, exactly as systemd or a previous generation would, read back by grace-test-probe.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sched.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "support/process.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {

struct probe_report {
  std::vector<std::string> results;  // one "ok ..." or "error ..." per listen call
  std::string unused, env, fds;
  int exit_status = -1;
};

probe_report run_probe(const std::vector<int>& fds,
                       std::map<std::string, std::optional<std::string>> env,
                       const std::vector<std::string>& listens, bool listen_pid_is_child = true,
                       const std::string& directory = {}) {
  spawn_options options;
  options.argv = {helper_path("GRACE_PROBE"), "listen"};
  options.argv.insert(options.argv.end(), listens.begin(), listens.end());
  options.fds = fds;
  options.env = std::move(env);
  options.env.emplace("LISTEN_PID", std::nullopt);
  options.listen_pid_is_child = listen_pid_is_child;
  options.directory = directory;
  child_process probe(options);
  probe_report report;
  while (auto line = probe.read_line()) {
    if (*line == "end") break;
    if (line->rfind("unused ", 0) == 0) report.unused = *line;
    else if (line->rfind("env ", 0) == 0) report.env = *line;
    else if (line->rfind("fds ", 0) == 0) report.fds = *line;
    else report.results.push_back(*line);
  }
  auto status = probe.wait();
  REQUIRE_MESSAGE(status.has_value(), "probe did not exit; stderr: " << probe.stderr_text());
  report.exit_status = *status;
  return report;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

const std::string all_unset =
    "env LISTEN_FDS=<unset> LISTEN_PID=<unset> LISTEN_FDNAMES=<unset> GRACE_LISTEN_TYPES=<unset>";

}  // namespace

TEST_CASE("an inherited TCP listener is taken, with its name, and the variables are unset") {
  int port = 0;
  const int fd = raw_tcp_listener("127.0.0.1", port);
  const std::string address = "127.0.0.1:" + std::to_string(port);
  auto report = run_probe({fd}, {{"LISTEN_FDS", "1"}, {"LISTEN_FDNAMES", "web"}},
                          {"tcp", address});
  REQUIRE(report.results.size() == 1);
  CHECK(report.results[0] == "ok tcp " + address + " inherited=1 name=web ino=" +
                                 std::to_string(socket_inode(fd)) + " fd=3");
  CHECK(report.unused == "unused 0");
  CHECK(report.env == all_unset);
  CHECK(report.fds == "fds 0,1,2,3");
  close(fd);
}

TEST_CASE("v4-mapped and IPv6 listeners match their requested forms") {
  int mapped_port = 0, v6_port = 0;
  const int mapped = raw_tcp_listener("::ffff:127.0.0.1", mapped_port);
  const int v6 = raw_tcp_listener("::1", v6_port);
  const std::string mapped_v4 = "127.0.0.1:" + std::to_string(mapped_port);
  const std::string v6_text = "[::1]:" + std::to_string(v6_port);
  auto report = run_probe({mapped, v6}, {{"LISTEN_FDS", "2"}},
                          {"tcp4", mapped_v4, "tcp6", "[0:0::1]:" + std::to_string(v6_port)});
  REQUIRE(report.results.size() == 2);
  CHECK(report.results[0] == "ok tcp4 " + mapped_v4 + " inherited=1 name=unknown ino=" +
                                 std::to_string(socket_inode(mapped)) + " fd=3");
  CHECK(report.results[1] == "ok tcp6 " + v6_text + " inherited=1 name=unknown ino=" +
                                 std::to_string(socket_inode(v6)) + " fd=4");
  close(mapped);
  close(v6);
}

TEST_CASE("unix, abstract, seqpacket and datagram sockets: each network takes its own") {
  temp_dir dir;
  int tcp_port = 0, udp_port = 0;
  const int stream = raw_unix_listener(dir.file("app.sock"), SOCK_STREAM);
  const int tcp = raw_tcp_listener("127.0.0.1", tcp_port);
  const std::string abstract = "@grace-test-" + std::to_string(getpid());
  const int packet = raw_unix_listener(abstract, SOCK_SEQPACKET);
  const int udp = raw_udp_socket(udp_port);
  // The relative path is resolved against the probe's start-up directory.
  auto report = run_probe({stream, tcp, packet, udp},
                          {{"LISTEN_FDS", "4"}, {"LISTEN_FDNAMES", "a:b:c:d"}},
                          {"unixpacket", abstract, "unix", "./sub/../app.sock", "tcp",
                           "localhost:" + std::to_string(tcp_port)},
                          true, dir.path());
  REQUIRE(report.results.size() == 3);
  CHECK(report.results[0] == "ok unixpacket " + abstract + " inherited=1 name=c ino=" +
                                 std::to_string(socket_inode(packet)) + " fd=5");
  CHECK(report.results[1] == "ok unix " + dir.file("app.sock") + " inherited=1 name=a ino=" +
                                 std::to_string(socket_inode(stream)) + " fd=3");
  CHECK(report.results[2] == "ok tcp 127.0.0.1:" + std::to_string(tcp_port) +
                                 " inherited=1 name=b ino=" + std::to_string(socket_inode(tcp)) +
                                 " fd=4");
  CHECK(report.unused == "unused 1 udp4:127.0.0.1:" + std::to_string(udp_port));
  for (int fd : {stream, tcp, packet, udp}) close(fd);
}

TEST_CASE("a socket bound with a relative path matches against the start-up directory") {
  temp_dir dir;
  const std::string here = std::filesystem::current_path();
  std::filesystem::current_path(dir.path());
  const int relative = raw_unix_listener("rel.sock", SOCK_STREAM);  // getsockname says "rel.sock"
  std::filesystem::current_path(here);
  auto report = run_probe({relative}, {{"LISTEN_FDS", "1"}}, {"unix", dir.file("rel.sock")}, true,
                          dir.path());
  REQUIRE(report.results.size() == 1);
  CHECK(report.results[0] == "ok unix " + dir.file("rel.sock") + " inherited=1 name=unknown ino=" +
                                 std::to_string(socket_inode(relative)) + " fd=3");
  close(relative);
}

TEST_CASE("a different network or port 0 never takes an inherited listener") {
  temp_dir dir;
  int port = 0;
  const int stream = raw_unix_listener(dir.file("s.sock"), SOCK_STREAM);
  const int tcp = raw_tcp_listener("127.0.0.1", port);
  auto report = run_probe({stream, tcp}, {{"LISTEN_FDS", "2"}},
                          {"unixpacket", dir.file("s.sock"), "tcp", "127.0.0.1:0"});
  REQUIRE(report.results.size() == 2);
  // Not the inherited stream socket; and a live socket file is not replaced.
  CHECK(contains(report.results[0], "error system:" + std::to_string(EADDRINUSE)));
  CHECK(contains(report.results[0], "another process is listening"));
  CHECK(contains(report.results[1], "inherited=0"));
  CHECK(contains(report.unused, "unused 2"));
  close(stream);
  close(tcp);
}

TEST_CASE("by name: an ephemeral port, and two sockets on one address, are claimed by the names they were given") {
  // An ephemeral port (":0") bound by the previous generation under the name "admin".
  int ephemeral = 0;
  const int admin = raw_tcp_listener("127.0.0.1", ephemeral);
  // Two SO_REUSEPORT sockets on one port, "a" and "b".
  auto reuse_port_listener = [](int port) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(listen(fd, 16) == 0);
    return fd;
  };
  int shared_port = 0;
  close(raw_tcp_listener("127.0.0.1", shared_port));
  const int a = reuse_port_listener(shared_port);
  const int b = reuse_port_listener(shared_port);
  const std::string shared = "127.0.0.1:" + std::to_string(shared_port);
  auto report = run_probe({admin, a, b}, {{"LISTEN_FDS", "3"}, {"LISTEN_FDNAMES", "admin:a:b"}},
                          {"tcp@admin", "127.0.0.1:0", "tcp@b", shared, "tcp@a", shared});
  REQUIRE(report.results.size() == 3);
  CHECK(report.results[0] == "ok tcp 127.0.0.1:" + std::to_string(ephemeral) + " inherited=1 name=admin ino=" +
                                 std::to_string(socket_inode(admin)) + " fd=3");
  CHECK(report.results[1] == "ok tcp " + shared + " inherited=1 name=b ino=" + std::to_string(socket_inode(b)) + " fd=5");
  CHECK(report.results[2] == "ok tcp " + shared + " inherited=1 name=a ino=" + std::to_string(socket_inode(a)) + " fd=4");
  CHECK(report.unused == "unused 0");
  // Asked for under another name, an ephemeral port is a new socket; an address is claimed by
  // address when no socket there has the name asked for.
  auto other = run_probe({admin, a}, {{"LISTEN_FDS", "2"}, {"LISTEN_FDNAMES", "admin:a"}},
                         {"tcp@metrics", "127.0.0.1:0", "tcp@renamed", shared});
  REQUIRE(other.results.size() == 2);
  CHECK(contains(other.results[0], "inherited=0"));
  CHECK(contains(other.results[1], "inherited=1 name=renamed ino=" + std::to_string(socket_inode(a))));
  close(admin);
  close(a);
  close(b);
}

TEST_CASE("fds meant for another process (LISTEN_PID) are left alone") {
  int port = 0;
  const int fd = raw_tcp_listener("127.0.0.1", port);
  auto report = run_probe({fd}, {{"LISTEN_FDS", "1"}, {"LISTEN_PID", "1"}}, {"tcp", "127.0.0.1:0"},
                          false);
  REQUIRE(report.results.size() == 1);
  CHECK(contains(report.results[0], "ok tcp 127.0.0.1:"));
  CHECK(contains(report.results[0], "inherited=0"));
  CHECK(report.unused == "unused 0");
  CHECK(report.env == all_unset);
  close(fd);
}

TEST_CASE("LISTEN_FDS without LISTEN_PID is accepted, as gracenet sets it") {
  int port = 0;
  const int fd = raw_tcp_listener("127.0.0.1", port);
  auto report = run_probe({fd}, {{"LISTEN_FDS", "1"}}, {"tcp", "127.0.0.1:" + std::to_string(port)},
                          false);
  REQUIRE(report.results.size() == 1);
  CHECK(contains(report.results[0], "inherited=1"));
  close(fd);
}

TEST_CASE("every malformed environment is a clear error naming the variable and value") {
  int port = 0;
  const int listening = raw_tcp_listener("127.0.0.1", port);
  int idle_port = 0;
  const int not_listening = raw_tcp_unlistening(idle_port);
  int pipe_fds[2];
  REQUIRE(pipe2(pipe_fds, O_CLOEXEC) == 0);
  const int netlink = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0);
  REQUIRE(netlink >= 0);

  struct malformed_case {
    std::map<std::string, std::optional<std::string>> env;
    std::vector<int> fds;
    std::string error;    // "grace:<errc value>"
    std::string message;  // part of last_error()
  };
  const std::string malformed = "error grace:3 ";  // errc::malformed_environment
  const std::string bad_fd = "error grace:4 ";     // errc::invalid_inherited_fd
  const std::vector<malformed_case> cases = {
      {{{"LISTEN_FDS", "abc"}}, {}, malformed, "LISTEN_FDS=\"abc\" is not a non-negative number"},
      {{{"LISTEN_FDS", "-1"}}, {}, malformed, "LISTEN_FDS=\"-1\""},
      {{{"LISTEN_FDS", "1x"}}, {listening}, malformed, "LISTEN_FDS=\"1x\""},
      {{{"LISTEN_FDS", " 1"}}, {listening}, malformed, "LISTEN_FDS=\" 1\""},
      {{{"LISTEN_FDS", "99999999999999999999999"}}, {}, malformed, "LISTEN_FDS=\"99999999999999999999999\""},
      {{{"LISTEN_FDS", "1000000"}}, {}, malformed, "LISTEN_FDS=1000000 is more fds than this process may open"},
      {{{"LISTEN_FDS", "2"}}, {listening}, bad_fd, "LISTEN_FDS=2: fd 4 is not open"},
      {{{"LISTEN_FDS", "1"}}, {pipe_fds[0]}, bad_fd, "LISTEN_FDS=1: fd 3 is not a socket"},
      {{{"LISTEN_FDS", "1"}}, {netlink}, bad_fd, "fd 3 is a socket of address family 16"},
      {{{"LISTEN_FDS", "1"}, {"LISTEN_PID", "abc"}}, {listening}, malformed, "LISTEN_PID=\"abc\" is not a process id"},
      {{{"LISTEN_FDS", "1"}, {"LISTEN_PID", "-5"}}, {listening}, malformed, "LISTEN_PID=\"-5\""},
      {{{"LISTEN_FDS", "1"}, {"LISTEN_FDNAMES", "a:b"}}, {listening}, malformed, "LISTEN_FDNAMES=\"a:b\" names 2 fds but LISTEN_FDS=1"},
  };
  for (const auto& c : cases) {
    const bool has_pid = c.env.count("LISTEN_PID") != 0;
    CAPTURE(c.message);
    auto report = run_probe(c.fds, c.env, {"tcp", "127.0.0.1:0"}, !has_pid);
    CHECK(report.exit_status == 0);  // an error, never a crash
    REQUIRE(report.results.size() == 1);
    CHECK(report.results[0].rfind(c.error, 0) == 0);
    CHECK(contains(report.results[0], c.message));
    CHECK(report.env == all_unset);
  }
  for (int fd : {listening, not_listening, pipe_fds[0], pipe_fds[1], netlink}) close(fd);
}

TEST_CASE("an inherited socket is checked in full when it is claimed: a TCP socket that does not listen") {
  int port = 0;
  const int not_listening = raw_tcp_unlistening(port);
  const std::string address = "127.0.0.1:" + std::to_string(port);
  // Claimed by its address: the error names the fd and what is wrong with it.
  auto claimed = run_probe({not_listening}, {{"LISTEN_FDS", "1"}}, {"tcp", address}, true);
  REQUIRE(claimed.results.size() == 1);
  CHECK(claimed.results[0].rfind("error grace:4 ", 0) == 0);
  CHECK(contains(claimed.results[0], "LISTEN_FDS=1: fd 3 is a TCP socket that is not listening"));
  // Not claimed: start-up does not pay for checking it, and it is left unused.
  auto unclaimed = run_probe({not_listening}, {{"LISTEN_FDS", "1"}}, {"tcp", "127.0.0.1:0"}, true);
  REQUIRE(unclaimed.results.size() == 1);
  CHECK(contains(unclaimed.results[0], "inherited=0"));
  CHECK(unclaimed.unused == "unused 1 tcp:" + address);
  close(not_listening);
}

TEST_CASE("GRACE_LISTEN_TYPES from a grace parent: each claim takes the type it was told, TCP and UDP on one port") {
  // A UDP socket on a TCP listener's port: one endpoint, two sockets told apart by type only.
  // (Ports are taken TCP first: a free UDP port may still be held by a TCP socket in TIME_WAIT.)
  int port = 0, tcp = -1, udp = -1;
  for (int attempt = 0; attempt < 20 && udp < 0; ++attempt) {
    if (tcp >= 0) close(tcp);
    tcp = raw_tcp_listener("127.0.0.1", port);
    udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in where{};
    where.sin_family = AF_INET;
    where.sin_port = htons(static_cast<std::uint16_t>(port));
    where.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(udp, reinterpret_cast<sockaddr*>(&where), sizeof where) != 0) {
      close(udp);
      udp = -1;
    }
  }
  REQUIRE(udp >= 0);
  const std::string address = "127.0.0.1:" + std::to_string(port);
  for (const char* types : {"ds", "dx"}) {  // told, then malformed (each socket looked at instead)
    CAPTURE(types);
    auto report = run_probe({udp, tcp}, {{"LISTEN_FDS", "2"}, {"GRACE_LISTEN_TYPES", types}}, {"tcp", address, "udp", address});
    REQUIRE(report.results.size() == 2);
    CHECK(report.results[0] == "ok tcp " + address + " inherited=1 name=unknown ino=" + std::to_string(socket_inode(tcp)) + " fd=4");
    CHECK(contains(report.results[1], "ok udp " + address + " inherited=1"));
    CHECK(contains(report.results[1], "fd=3"));
    CHECK(contains(report.env, "GRACE_LISTEN_TYPES=<unset>"));
  }
  close(udp);
  close(tcp);
}

TEST_CASE("an empty LISTEN_FDS means nothing is inherited") {
  auto report = run_probe({}, {{"LISTEN_FDS", ""}}, {"tcp", "127.0.0.1:0"});
  REQUIRE(report.results.size() == 1);
  CHECK(contains(report.results[0], "inherited=0"));
}

TEST_CASE("thousands of inherited fds are read on two threads: all taken, or the lowest bad fd named and none adopted") {
  // 1100 fds: past the count where a second thread helps, nine chunks of 128 shared between the
  // two. The child stages them above 1200 before placing them at 3.., so it needs about 2400.
  constexpr int count = 1100;
  rlimit limit{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &limit) == 0);
  if (limit.rlim_cur < 2600 && (limit.rlim_max == RLIM_INFINITY || limit.rlim_max >= 2600)) {
    limit.rlim_cur = 2600;
    REQUIRE(setrlimit(RLIMIT_NOFILE, &limit) == 0);
  }
  REQUIRE_MESSAGE(limit.rlim_cur >= 2600, "RLIMIT_NOFILE " << limit.rlim_cur << " is below the 2600 this test needs");
  int port = 0;
  const int listening = raw_tcp_listener("127.0.0.1", port);
  const std::string address = "127.0.0.1:" + std::to_string(port);
  int pipe_fds[2];
  REQUIRE(pipe2(pipe_fds, O_CLOEXEC) == 0);
  const int netlink = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0);
  REQUIRE(netlink >= 0);
  const std::string env_count = std::to_string(count);

  std::vector<int> all_sockets(count, listening);
  auto taken = run_probe(all_sockets, {{"LISTEN_FDS", env_count}}, {"tcp", address});
  REQUIRE(taken.results.size() == 1);
  CHECK(contains(taken.results[0], "ok tcp " + address + " inherited=1"));
  CHECK(contains(taken.results[0], "fd=3"));
  CHECK(taken.unused.rfind("unused " + std::to_string(count - 1) + " tcp:" + address, 0) == 0);

  {
    // A child that may use one CPU starts no helper: it reads them all itself.
    cpu_set_t allowed, one;
    REQUIRE(sched_getaffinity(0, sizeof allowed, &allowed) == 0);
    CPU_ZERO(&one);
    for (int cpu = 0; cpu < CPU_SETSIZE && CPU_COUNT(&one) == 0; ++cpu)
      if (CPU_ISSET(cpu, &allowed)) CPU_SET(cpu, &one);
    REQUIRE(sched_setaffinity(0, sizeof one, &one) == 0);
    auto alone = run_probe(all_sockets, {{"LISTEN_FDS", env_count}}, {"tcp", address});
    REQUIRE(sched_setaffinity(0, sizeof allowed, &allowed) == 0);
    REQUIRE(alone.results.size() == 1);
    CHECK(contains(alone.results[0], "ok tcp " + address + " inherited=1"));
    CHECK(alone.unused.rfind("unused " + std::to_string(count - 1) + " tcp:" + address, 0) == 0);
  }

  struct bad_case {
    std::vector<std::pair<int, int>> placed;  // index, fd
    std::string message;
  };
  const std::vector<bad_case> cases = {
      {{{1000, netlink}, {700, pipe_fds[0]}}, "LISTEN_FDS=1100: fd 703 is not a socket"},  // two chunks: the lower
      {{{count - 1, pipe_fds[0]}}, "LISTEN_FDS=1100: fd 1102 is not a socket"},          // the last chunk
      {{{0, netlink}, {5, pipe_fds[0]}}, "LISTEN_FDS=1100: fd 3 is a socket of address family 16"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.message);
    std::vector<int> fds(count, listening);
    for (const auto& [index, fd] : c.placed) fds[static_cast<std::size_t>(index)] = fd;
    auto report = run_probe(fds, {{"LISTEN_FDS", env_count}}, {"tcp", address});
    CHECK(report.exit_status == 0);
    REQUIRE(report.results.size() == 1);
    CHECK(report.results[0].rfind("error grace:4 ", 0) == 0);
    CHECK(contains(report.results[0], c.message));
    CHECK(report.unused == "unused 0");  // a malformed inheritance is not adopted
  }
  for (int fd : {listening, pipe_fds[0], pipe_fds[1], netlink}) close(fd);
}
