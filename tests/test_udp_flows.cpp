// UDP flows that survive a restart, with real processes: grace-udp-session's sessions stay with
// the generation that opened them across SIGUSR2, a takeover and grace-listen --overlap; the old
// generation exits once they have ended (a goodbye, or idle); a flood of hellos cannot grow the
// table; and without affinity every session in progress breaks, which is what it saves.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "support/process.hpp"
#include "support/service.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {

int free_udp_port() {
  int port = 0;
  close(raw_udp_socket(port));
  return port;
}

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// One client session on a socket of its own.
class session {
 public:
  explicit session(int port) : fd_(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
    timeval bound{3, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    to.sin_port = htons(static_cast<std::uint16_t>(port));
    connect(fd_, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  }
  ~session() { close(fd_); }
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  // The answer's words; empty when none came within 3 s.
  std::vector<std::string> ask(const std::string& request) {
    if (send(fd_, request.data(), request.size(), 0) < 0) return {};
    char in[2048];
    const ssize_t n = recv(fd_, in, sizeof in, 0);
    return n > 0 ? words(std::string(in, static_cast<std::size_t>(n))) : std::vector<std::string>{};
  }
  // Opens the session; the pid that answered.
  std::string open() {
    auto a = ask("HELLO t");
    REQUIRE(a.size() == 4);
    REQUIRE(a[0] == "SESSION");
    sid_ = a[1];
    return a[3];
  }
  // The next datagram of the session: "OK <pid>", or what came instead.
  std::string data() {
    auto a = ask("DATA " + sid_ + " " + std::to_string(++counter_));
    if (a.size() == 4 && a[0] == "OK" && a[1] == sid_ && a[2] == std::to_string(counter_)) return "OK " + a[3];
    std::string all;
    for (const auto& w : a) all += w + " ";
    return all.empty() ? "no answer" : all;
  }
  std::string bye() {
    auto a = ask("BYE " + sid_);
    return a.size() == 3 && a[0] == "BYE" ? "BYE " + a[2] : "not ended";
  }
  const std::string& sid() const { return sid_; }

 private:
  int fd_;
  std::string sid_;
  std::uint64_t counter_ = 0;
};

std::vector<std::string> session_args(int port, const temp_dir& dir, std::vector<std::string> more = {}) {
  std::vector<std::string> args = {"127.0.0.1:" + std::to_string(port), "--pidfile", dir.file("udp.pid"),
                                   "--handover-socket", dir.file("handover.sock"), "--drain-timeout", "60"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// Sessions opened on `old_pid` go on there after the hand-over, new ones open on `new_pid`, and
// once the old ones said goodbye the old generation exits (long before its 60 s drain deadline).
void check_sessions_stay(std::vector<std::unique_ptr<session>>& old_sessions, int port, const std::string& old_pid,
                         const std::string& new_pid) {
  for (int round = 0; round < 5; ++round)
    for (auto& s : old_sessions) CHECK(s->data() == "OK " + old_pid);
  session fresh(port);
  CHECK(fresh.open() == new_pid);
  CHECK(fresh.data() == "OK " + new_pid);
  for (auto& s : old_sessions) CHECK(s->bye() == "BYE " + old_pid);
  CHECK(wait_exited(static_cast<pid_t>(std::stol(old_pid)), 20s));
  // The old generation's sessions are gone with it: the new one says so, and serves its own.
  CHECK(old_sessions.front()->data().rfind("UNKNOWN " + old_sessions.front()->sid(), 0) == 0);
  CHECK(fresh.data() == "OK " + new_pid);
}

}  // namespace

TEST_CASE("sessions stay with the generation that opened them across SIGUSR2; it exits once they end") {
  temp_dir dir;
  const int port = free_udp_port();
  service udp(helper_path("GRACE_UDP_SESSION"), session_args(port, dir));
  REQUIRE(udp.wait_for("(new socket)"));
  const std::string first = std::to_string(udp.first_pid());
  std::vector<std::unique_ptr<session>> sessions;
  for (int i = 0; i < 8; ++i) {
    sessions.push_back(std::make_unique<session>(port));
    CHECK(sessions.back()->open() == first);
    CHECK(sessions.back()->data() == "OK " + first);
  }
  const pid_t second = udp.upgrade(udp.first_pid(), 2);
  REQUIRE(udp.wait_for("handed the list of 8 flow(s) to the new generation"));
  check_sessions_stay(sessions, port, first, std::to_string(second));
  CHECK(udp.count("end here unfinished") == 0);
  kill(second, SIGTERM);
  CHECK(wait_exited(second));
}

TEST_CASE("the kernel path (--affinity cookie): a session's datagrams go straight to its generation") {
  temp_dir dir;
  const int port = free_udp_port();
  service udp(helper_path("GRACE_UDP_SESSION"), session_args(port, dir, {"--affinity", "cookie"}));
  REQUIRE(udp.wait_for("cookie 1 is this generation's"));
  const std::string first = std::to_string(udp.first_pid());
  std::vector<std::unique_ptr<session>> sessions;
  for (int i = 0; i < 4; ++i) {
    sessions.push_back(std::make_unique<session>(port));
    CHECK(sessions.back()->open() == first);
    CHECK(sessions.back()->sid().rfind("01", 0) == 0);  // the cookie: generation 1's socket
  }
  const pid_t second = udp.upgrade(udp.first_pid(), 2);
  REQUIRE(udp.wait_for("cookie 2 is this generation's"));
  check_sessions_stay(sessions, port, first, std::to_string(second));
  // 20 datagrams and 4 goodbyes for the old generation: only the goodbyes, which carry no
  // cookie where the program looks ("DATA "), went through the new one.
  REQUIRE(udp.wait_for("grace-udp-session[" + first + "]: exiting"));
  CHECK(udp.first().stderr_text().find("0 datagram(s) forwarded to the previous generation (0 dropped), 4 answered "
                                        "for the next one") != std::string::npos);
  kill(second, SIGTERM);
  CHECK(wait_exited(second));
}

TEST_CASE("six upgrades in a row, sessions spanning two of them: none breaks, forward and cookie alike") {
  for (const char* affinity : {"forward", "cookie"}) {
    CAPTURE(affinity);
    temp_dir dir;
    const int port = free_udp_port();
    service udp(helper_path("GRACE_UDP_SESSION"), session_args(port, dir, {"--affinity", affinity}));
    REQUIRE(udp.wait_for("(new socket)"));
    std::vector<std::unique_ptr<session>> open;  // oldest first
    std::vector<std::string> owners;
    pid_t current = udp.first_pid();
    for (unsigned next = 2; next <= 7; ++next) {
      open.push_back(std::make_unique<session>(port));
      owners.push_back(open.back()->open());
      CHECK(owners.back() == std::to_string(current));
      current = udp.upgrade(current, next);
      REQUIRE(udp.wait_for("took the previous generation's", 15s, next - 1));
      for (std::size_t i = 0; i < open.size(); ++i) CHECK(open[i]->data() == "OK " + owners[i]);
      if (open.size() == 2) {  // the oldest has lived through two upgrades: it ends
        CHECK(open.front()->bye() == "BYE " + owners.front());
        open.erase(open.begin());
        owners.erase(owners.begin());
      }
    }
    for (std::size_t i = 0; i < open.size(); ++i) CHECK(open[i]->bye() == "BYE " + owners[i]);
    kill(current, SIGTERM);
    CHECK(wait_exited(current));
  }
}

TEST_CASE("the new generation dies after it took over: the old one serves its sessions and new ones again") {
  for (const char* affinity : {"forward", "cookie"}) {
    CAPTURE(affinity);
    temp_dir dir;
    const int port = free_udp_port();
    service udp(helper_path("GRACE_UDP_SESSION"), session_args(port, dir, {"--affinity", affinity}));
    REQUIRE(udp.wait_for("(new socket)"));
    const std::string first = std::to_string(udp.first_pid());
    session s(port);
    CHECK(s.open() == first);
    const pid_t second = udp.upgrade(udp.first_pid(), 2);
    REQUIRE(udp.wait_for("took the previous generation's 1 flow(s)"));
    CHECK(s.data() == "OK " + first);
    REQUIRE(kill(second, SIGKILL) == 0);
    REQUIRE(udp.wait_for("serves again"));
    for (int i = 0; i < 5; ++i) CHECK(s.data() == "OK " + first);
    session fresh(port);
    CHECK(fresh.open() == first);
    CHECK(fresh.data() == "OK " + first);
    CHECK(s.bye() == "BYE " + first);
  }
}

TEST_CASE("sessions stay with the serving process when another takes over through the hand-over socket") {
  temp_dir dir;
  const int port = free_udp_port();
  service udp(helper_path("GRACE_UDP_SESSION"), session_args(port, dir));
  REQUIRE(udp.wait_for("(new socket)"));
  const std::string first = std::to_string(udp.first_pid());
  std::vector<std::unique_ptr<session>> sessions;
  for (int i = 0; i < 4; ++i) {
    sessions.push_back(std::make_unique<session>(port));
    CHECK(sessions.back()->open() == first);
  }
  auto taker = start_program(helper_path("GRACE_UDP_SESSION"), session_args(port, dir));
  REQUIRE(taker->wait_stderr("took the previous generation's 4 flow(s)", 15s));
  check_sessions_stay(sessions, port, first, std::to_string(taker->pid()));
  taker->kill(SIGTERM);
  CHECK(taker->wait(15s));
}

TEST_CASE("sessions stay with their generation across grace-listen --overlap upgrades") {
  const int port = free_udp_port();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  spawn_options options;
  options.argv = {helper_path("GRACE_LISTEN"), "--overlap", "-s", "udp:" + address, "--",
                  helper_path("GRACE_UDP_SESSION"), address, "--drain-timeout", "60"};
  child_process listen(options);
  REQUIRE(listen.wait_stderr("(generation 1) is ready", 15s));
  session s(port);
  const std::string first = s.open();
  CHECK(s.data() == "OK " + first);
  listen.kill(SIGHUP);
  REQUIRE(listen.wait_stderr("(generation 2) is ready", 15s));
  REQUIRE(listen.wait_stderr("took the previous generation's 1 flow(s)", 15s));
  session fresh(port);
  const std::string second = fresh.open();
  CHECK(second != first);
  for (int i = 0; i < 5; ++i) CHECK(s.data() == "OK " + first);
  CHECK(s.bye() == "BYE " + first);
  CHECK(wait_exited(static_cast<pid_t>(std::stol(first)), 20s));
  CHECK(fresh.data() == "OK " + second);
  listen.kill(SIGTERM);
  CHECK(listen.wait(20s));
}

TEST_CASE("the old generation exits when its sessions go idle, and a flood of hellos stays within the table") {
  temp_dir dir;
  const int port = free_udp_port();
  service udp(helper_path("GRACE_UDP_SESSION"),
              session_args(port, dir, {"--session-idle-ms", "500", "--max-sessions", "50"}));
  REQUIRE(udp.wait_for("(new socket)"));
  session kept(port);
  kept.open();
  // 2,000 hellos from one client: each opens a session; the table keeps the 50 seen last.
  session flood(port);
  for (int i = 0; i < 2000; ++i) REQUIRE(flood.ask("HELLO f" + std::to_string(i)).size() == 4);
  const pid_t second = udp.upgrade(udp.first_pid(), 2);
  REQUIRE(udp.wait_for("handed the list of 50 flow(s) to the new generation"));
  // Nobody speaks on them: idle past 0.5 s they end, and the old generation exits (its drain
  // deadline is 60 s away).
  CHECK(wait_exited(udp.first_pid(), 20s));
  CHECK(kept.data().rfind("UNKNOWN", 0) == 0);
  kill(second, SIGTERM);
  CHECK(wait_exited(second));
}

TEST_CASE("without affinity (--affinity off) every session in progress breaks at a restart") {
  temp_dir dir;
  const int port = free_udp_port();
  service udp(helper_path("GRACE_UDP_SESSION"), session_args(port, dir, {"--affinity", "off"}));
  REQUIRE(udp.wait_for("(new socket)"));
  session s(port);
  const std::string first = s.open();
  CHECK(s.data() == "OK " + first);
  const pid_t second = udp.upgrade(udp.first_pid(), 2);
  CHECK(wait_exited(udp.first_pid(), 20s));
  CHECK(s.data().rfind("UNKNOWN " + s.sid(), 0) == 0);
  CHECK(udp.wait_for("1 UDP flow(s) end here unfinished: flow affinity is off"));
  kill(second, SIGTERM);
  CHECK(wait_exited(second));
}

TEST_CASE("the sample refuses bad values of its own options, naming them") {
  for (const auto& one : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"127.0.0.1:1", "--affinity", "sideways"}, "--affinity is off, forward or cookie"},
           {{"127.0.0.1:1", "--session-idle-ms", "0"}, "--session-idle-ms is a whole number"},
           {{"127.0.0.1:1", "--max-sessions", "x"}, "--max-sessions is a whole number"},
           {{"127.0.0.1:1", "--max-sessions"}, "--max-sessions needs a value"}}) {
    const std::string& expected = one.second;
    CAPTURE(expected);
    auto p = start_program(helper_path("GRACE_UDP_SESSION"), one.first);
    auto status = p->wait(10s);
    REQUIRE(status);
    CHECK(WEXITSTATUS(*status) == 2);
    CHECK(p->stderr_text().find(expected) != std::string::npos);
  }
}
