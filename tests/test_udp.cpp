// UDP sockets in grace::net: bound fresh or inherited by address, and carried through every
// hand-over, so that grace-udp-echo loses no datagram across SIGUSR2 upgrades and takeovers.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "grace/activation.hpp"
#include "grace/net.hpp"
#include "support/harness_run.hpp"
#include "support/process.hpp"
#include "support/service.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {

// A client that sends numbered datagrams and checks each echo.
class udp_client {
 public:
  explicit udp_client(int port) : fd_(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
    timeval bound{2, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound);
    to_.sin_family = AF_INET;
    to_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    to_.sin_port = htons(static_cast<std::uint16_t>(port));
  }
  ~udp_client() { close(fd_); }
  // True when the echo came back whole within 2 s.
  bool round_trip() {
    ++sent_;
    const std::string payload = "datagram " + std::to_string(sent_) + std::string(sent_ % 300, 'x');
    if (sendto(fd_, payload.data(), payload.size(), 0, reinterpret_cast<const sockaddr*>(&to_), sizeof to_) < 0)
      return false;
    char in[2048];
    const ssize_t n = recv(fd_, in, sizeof in, 0);
    return n == static_cast<ssize_t>(payload.size()) && std::string(in, static_cast<std::size_t>(n)) == payload;
  }

 private:
  int fd_;
  sockaddr_in to_{};
  unsigned sent_ = 0;
};

int free_udp_port() {
  int port = 0;
  close(raw_udp_socket(port));
  return port;
}

}  // namespace

TEST_CASE("grace-udp-echo loses no datagram across SIGUSR2 upgrades and takeovers") {
  temp_dir dir;
  const int port = free_udp_port();
  const std::vector<std::string> args = {"127.0.0.1:" + std::to_string(port), "--pidfile", dir.file("udp.pid"),
                                         "--handover-socket", dir.file("handover.sock")};
  service udp(helper_path("GRACE_UDP_ECHO"), args);
  REQUIRE(udp.wait_for("(new socket)"));
  udp_client client(port);
  std::vector<std::unique_ptr<child_process>> takers;
  unsigned answered = 0, lost = 0;
  pid_t current = udp.first_pid();
  for (unsigned generation = 2; generation <= 7; ++generation) {
    for (int i = 0; i < 200; ++i) (client.round_trip() ? answered : lost) += 1;
    if (generation % 2 == 0) {
      REQUIRE(kill(current, SIGUSR2) == 0);
    } else {
      spawn_options o;
      o.argv = {helper_path("GRACE_UDP_ECHO")};
      o.argv.insert(o.argv.end(), args.begin(), args.end());
      takers.push_back(std::make_unique<child_process>(o));
    }
    // Datagrams go on while the generations change hands.
    const pid_t old = current;
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (((current = read_pidfile(dir.file("udp.pid"))) == old || current == 0) &&
           std::chrono::steady_clock::now() < deadline)
      (client.round_trip() ? answered : lost) += 1;
    REQUIRE(current != old);
    CHECK(wait_exited(old));
  }
  for (int i = 0; i < 200; ++i) (client.round_trip() ? answered : lost) += 1;
  CHECK(lost == 0);
  CHECK(answered > 1200);
  kill(current, SIGTERM);
  CHECK(wait_exited(current));
}

TEST_CASE("a UDP socket passed in LISTEN_FDS is taken by address") {
  // Bound without SO_REUSEADDR: a server that bound its own socket instead would fail.
  int port = 0;
  const int socket_fd = raw_udp_socket(port);
  REQUIRE(socket_fd >= 0);
  grace::activation_options o;
  o.argv = {helper_path("GRACE_UDP_ECHO"), "127.0.0.1:" + std::to_string(port)};
  o.sockets = {{socket_fd, "dns"}};
  auto pid = grace::run_with_sockets(o);
  REQUIRE(pid);
  udp_client client(port);
  bool answered = false;
  for (int i = 0; i < 50 && !answered; ++i) answered = client.round_trip();
  CHECK(answered);
  kill(*pid, SIGTERM);
  int status = 0;
  REQUIRE(waitpid(*pid, &status, 0) == *pid);
  close(socket_fd);
}

TEST_CASE("the referee: grace-udp-echo alone, and on 2 workers in both strategies: PASS across 20 restarts") {
  for (const char* workers : {"", "--workers 2", "--workers 2 --reuse-port"}) {
    CAPTURE(workers);
    temp_dir dir;
    const std::string address = free_address(), pidfile = dir.file("udp.pid");
    auto run = run_harness({"--target", "udp://" + address, "--mode", "udp-echo", "--clients", "16", "--restarts", "20",
                            "--pidfile", pidfile, "--", "/bin/sh", "-c",
                            "exec " + helper_path("GRACE_UDP_ECHO") + " " + address + " --pidfile " + pidfile + " " +
                                workers},
                           dir);
    check_pass(run, 20);
  }
}

TEST_CASE("the referee: a reuseport UDP group whose size changes at every takeover (2, 1, 3, ...) loses nothing") {
  temp_dir dir;
  const std::string address = free_address();
  const std::string common = address + " --pidfile " + dir.file("server.pid") + " --handover-socket " +
                             dir.file("handover.sock") + " --reuse-port";
  const std::string script = dir.file("next.sh");
  std::ofstream(script) << "c=$(cat " << dir.file("count") << " 2>/dev/null || echo 0); c=$((c + 1)); echo $c > "
                        << dir.file("count") << "\n"
                        << "case $((c % 3)) in 1) n=1;; 2) n=3;; *) n=2;; esac\n"
                        << helper_path("GRACE_UDP_ECHO") << " " << common << " --workers $n 2>>" << dir.file("takers.log")
                        << " &\n";
  auto run = run_harness({"--target", "udp://" + address, "--mode", "udp-echo", "--clients", "16", "--restarts", "9",
                          "--pidfile", dir.file("server.pid"), "--restart-cmd", "/bin/sh " + script, "--", "/bin/sh",
                          "-c", "exec " + helper_path("GRACE_UDP_ECHO") + " " + common + " --workers 2"},
                         dir);
  check_pass(run, 9);
  std::ifstream in(dir.file("takers.log"));
  const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  INFO(log);
  // After a three-socket generation, a one-worker one still reads all three (inherited).
  CHECK(log.find("3 socket(s) (inherited), 1 loop(s)") != std::string::npos);
}

TEST_CASE("the referee refuses a UDP target without udp-echo, and udp-echo without a UDP target") {
  auto usage_error = [](const std::vector<std::string>& args) {
    spawn_options o;
    o.argv = {helper_path("GRACE_HARNESS")};
    o.argv.insert(o.argv.end(), args.begin(), args.end());
    child_process harness(o);
    auto status = harness.wait(10s);
    REQUIRE(status);
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 2);
    return harness.stderr_text();
  };
  CHECK(usage_error({"--target", "udp://127.0.0.1:9", "--mode", "echo", "--", "true"}).find("needs --mode udp-echo") !=
        std::string::npos);
  CHECK(usage_error({"--target", "tcp://127.0.0.1:9", "--mode", "udp-echo", "--", "true"})
            .find("needs a udp://HOST:PORT target") != std::string::npos);
}
