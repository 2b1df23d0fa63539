// charge_keeper in this process: the pid file names the newest pid given, failures come back
// through collect() with fd() readable, the service manager is told MAINPID (or not, with notify
// false), a full queue is retried, and a keeper destroyed with work pending neither blocks nor
// loses the newest pid.
//
// NOTIFY_SOCKET is read once, at start-up, so main() sets it to an abstract name of this process
// and runs this same program again (exec, same pid); each case that plays the service manager
// binds that name while it runs.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "grace/charge.hpp"
#include "support/process.hpp"

using namespace test_support;
using namespace std::chrono_literals;

namespace {

std::string manager_name() { return "@grace-test-charge-" + std::to_string(getpid()); }

// Plays the service manager: a unix datagram socket bound at NOTIFY_SOCKET's abstract name.
class manager {
 public:
  manager() {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    const std::string name = manager_name();
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::memcpy(un.sun_path, name.data(), name.size());
    un.sun_path[0] = '\0';
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    REQUIRE(bind(fd_, reinterpret_cast<const sockaddr*>(&un), len) == 0);
    address_ = un;
    length_ = len;
  }
  ~manager() { close(fd_); }
  manager(const manager&) = delete;
  manager& operator=(const manager&) = delete;

  // The next datagram, or nullopt when none comes in time.
  std::optional<std::string> receive(std::chrono::milliseconds timeout = 10s) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
    char buffer[4096];
    const ssize_t n = recv(fd_, buffer, sizeof buffer, 0);
    if (n < 0) return std::nullopt;
    return std::string(buffer, static_cast<std::size_t>(n));
  }
  // Fills its own queue, as a service manager that stopped reading would have it; returns how
  // many datagrams it took.
  int fill_queue() {
    const int sender = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int sent = 0;
    while (sent < 100000 && sendto(sender, "x", 1, MSG_DONTWAIT, reinterpret_cast<const sockaddr*>(&address_),
                                   length_) == 1)
      ++sent;
    const int err = errno;
    close(sender);
    CHECK(err == EAGAIN);
    return sent;
  }

 private:
  int fd_ = -1;
  sockaddr_un address_{};
  socklen_t length_ = 0;
};

// Waits (bounded) until the keeper is idle, collecting its failures at each wake of fd().
bool wait_idle(grace::charge_keeper& keeper, std::vector<std::string>& failures,
               std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto more = keeper.collect();
    failures.insert(failures.end(), more.begin(), more.end());
    if (keeper.idle()) return true;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{keeper.fd(), POLLIN, 0};
    poll(&p, 1, static_cast<int>(left.count()));
  }
}

bool readable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

std::size_t files_in(const std::string& directory) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(directory)) ++n;
  return n;
}

// SigBlk of each thread of this process but the main one, from /proc.
std::vector<unsigned long long> other_threads_blocked_signals() {
  std::vector<unsigned long long> out;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    if (task.path().filename() == std::to_string(getpid())) continue;
    std::ifstream status(task.path() / "status");
    std::string line;
    while (std::getline(status, line))
      if (line.rfind("SigBlk:", 0) == 0) out.push_back(std::strtoull(line.c_str() + 7, nullptr, 16));
  }
  return out;
}

}  // namespace

TEST_CASE("charge_notification: MAINPID, then READY=1") {
  CHECK(grace::charge_notification(4242) == "MAINPID=4242\nREADY=1");
}

TEST_CASE("after several quick give() calls the pid file names the newest pid; fd() wakes the caller") {
  temp_dir dir;
  const std::string pidfile = dir.file("app.pid");
  grace::charge_keeper keeper({pidfile, false});
  REQUIRE(keeper.fd() >= 0);
  CHECK(keeper.idle());
  CHECK_FALSE(readable(keeper.fd(), 0ms));
  for (pid_t pid = 100001; pid <= 100005; ++pid) keeper.give(pid);
  CHECK(readable(keeper.fd(), 10s));
  std::vector<std::string> failures;
  REQUIRE(wait_idle(keeper, failures));
  CHECK(failures.empty());
  CHECK(read_pidfile(pidfile) == 100005);
  CHECK(files_in(dir.path()) == 1);  // no temporary file left behind
  CHECK_FALSE(readable(keeper.fd(), 0ms));  // collect() cleared it

  // Later hand-overs go through the same thread, in order.
  keeper.give(getpid());
  REQUIRE(wait_idle(keeper, failures));
  CHECK(failures.empty());
  CHECK(read_pidfile(pidfile) == getpid());
}

TEST_CASE("the keeper's thread runs with every signal blocked") {
  temp_dir dir;
  grace::charge_keeper keeper({dir.file("app.pid"), false});
  keeper.start();
  keeper.start();  // idempotent
  const auto masks = other_threads_blocked_signals();
  REQUIRE_FALSE(masks.empty());
  for (unsigned long long mask : masks) {
    // Threads left by earlier cases' keepers, if any still run, were made the same way.
    for (int signal : {SIGUSR2, SIGTERM, SIGINT, SIGHUP, SIGCHLD}) {
      CAPTURE(signal);
      CHECK(((mask >> (signal - 1)) & 1ULL) == 1ULL);
    }
  }
}

TEST_CASE("a pid file in a directory that does not exist: collect() names it, fd() is readable") {
  temp_dir dir;
  const std::string pidfile = dir.file("no/such/dir/app.pid");
  grace::charge_keeper keeper({pidfile, false});
  keeper.give(getpid());
  REQUIRE(readable(keeper.fd(), 10s));
  std::vector<std::string> failures;
  REQUIRE(wait_idle(keeper, failures));
  REQUIRE(failures.size() == 1);
  CHECK(failures[0].rfind("pid file " + pidfile, 0) == 0);
  CHECK(failures[0].find("No such file or directory") != std::string::npos);
  CHECK(keeper.collect().empty());  // reported once
  CHECK_FALSE(readable(keeper.fd(), 0ms));
}

TEST_CASE("with NOTIFY_SOCKET, give() writes the pid file, then tells the service manager MAINPID and READY=1") {
  REQUIRE(std::getenv("NOTIFY_SOCKET") == manager_name());
  temp_dir dir;
  const std::string pidfile = dir.file("app.pid");
  manager systemd;
  grace::charge_keeper keeper({pidfile});  // notify defaults to true
  keeper.give(4242);
  const auto told = systemd.receive();
  REQUIRE(told);
  CHECK(*told == "MAINPID=4242\nREADY=1");
  CHECK(read_pidfile(pidfile) == 4242);  // already written when the manager was told
  std::vector<std::string> failures;
  REQUIRE(wait_idle(keeper, failures));
  CHECK(failures.empty());

  SUBCASE("without a pid file, the notification alone") {
    grace::charge_keeper notify_only({});
    notify_only.give(4343);
    CHECK(systemd.receive() == std::optional<std::string>("MAINPID=4343\nREADY=1"));
    REQUIRE(wait_idle(notify_only, failures));
    CHECK(failures.empty());
  }
}

TEST_CASE("with notify false nothing is sent: the caller tells the service manager its own way") {
  temp_dir dir;
  const std::string pidfile = dir.file("app.pid");
  manager systemd;
  grace::charge_keeper keeper({pidfile, false});
  keeper.give(4242);
  std::vector<std::string> failures;
  REQUIRE(wait_idle(keeper, failures));
  CHECK(failures.empty());
  CHECK(read_pidfile(pidfile) == 4242);
  CHECK_FALSE(systemd.receive(0ms));  // idle: had it been sent, it would be queued by now

  // Nothing to do at all (no pid file, no notification): no thread, nothing to wait for.
  grace::charge_keeper nothing({{}, false});
  nothing.give(4242);
  CHECK(nothing.idle());
  CHECK_FALSE(readable(nothing.fd(), 0ms));
  CHECK_FALSE(systemd.receive(0ms));
}

TEST_CASE("no service manager listening: the failed notification is reported, the pid file written") {
  temp_dir dir;
  const std::string pidfile = dir.file("app.pid");
  grace::charge_keeper keeper({pidfile});
  keeper.give(4242);
  std::vector<std::string> failures;
  REQUIRE(wait_idle(keeper, failures));
  REQUIRE(failures.size() == 1);
  CHECK(failures[0].find("notify the service manager at " + manager_name()) != std::string::npos);
  CHECK(failures[0].find("MAINPID=4242") != std::string::npos);
  CHECK(read_pidfile(pidfile) == 4242);
}

TEST_CASE("a service manager whose queue is full is told once it reads again; the keeper is busy until then") {
  manager systemd;
  const int queued = systemd.fill_queue();
  REQUIRE(queued > 0);
  grace::charge_keeper keeper({});
  keeper.give(4242);
  // It retries: not idle, nothing to report, while nobody reads.
  CHECK_FALSE(readable(keeper.fd(), 100ms));
  CHECK_FALSE(keeper.idle());
  for (int i = 0; i < queued; ++i) REQUIRE(systemd.receive() == std::optional<std::string>("x"));
  CHECK(systemd.receive() == std::optional<std::string>("MAINPID=4242\nREADY=1"));
  std::vector<std::string> failures;
  REQUIRE(wait_idle(keeper, failures));
  CHECK(failures.empty());
}

TEST_CASE("a keeper destroyed with work pending returns at once; what was asked last is still written") {
  temp_dir dir;
  const std::string pidfile = dir.file("app.pid");
  {
    manager systemd;
    systemd.fill_queue();  // its thread will be waiting on the service manager
    auto keeper = std::make_unique<grace::charge_keeper>(grace::charge_options{pidfile});
    keeper->give(4241);
    keeper->give(4242);
    const auto before = std::chrono::steady_clock::now();
    keeper.reset();
    CHECK(std::chrono::steady_clock::now() - before < 100ms);
    CHECK(pidfile_names(pidfile, 4242));
  }
  // The write under way and the newest pid, without a keeper to report to.
  {
    auto keeper = std::make_unique<grace::charge_keeper>(grace::charge_options{pidfile, false});
    for (pid_t pid = 5001; pid <= 5005; ++pid) keeper->give(pid);
    keeper.reset();
    CHECK(pidfile_names(pidfile, 5005));
  }
}

int main(int argc, char** argv) {
  const std::string name = manager_name();
  const char* current = std::getenv("NOTIFY_SOCKET");
  if (current == nullptr || name != current) {
    setenv("NOTIFY_SOCKET", name.c_str(), 1);
    execv("/proc/self/exe", argv);
    std::perror("test_charge: exec /proc/self/exe");
    return 1;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
