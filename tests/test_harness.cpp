// The referee refereed: restart-harness must PASS every sample through a few dozen restarts
// under load, and must FAIL (exit non-zero, losses counted) when restarts are not graceful.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "grace/version.hpp"
#include "support/harness_run.hpp"
#include "support/process.hpp"
#include "support/service.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {


}  // namespace

TEST_CASE("grace-http, keep-alive connections: PASS across 30 restarts") {
  temp_dir dir;
  const std::string address = free_address(), pidfile = dir.file("http.pid");
  auto run = run_harness({"--target", "tcp://" + address, "--mode", "http-keepalive", "--clients", "16",
                          "--restarts", "30", "--pidfile", pidfile, "--", helper_path("GRACE_HTTP"), address,
                          "--pidfile", pidfile},
                         dir);
  check_pass(run, 30);
  std::ifstream svg(dir.file("run.svg"));
  const std::string plot((std::istreambuf_iterator<char>(svg)), std::istreambuf_iterator<char>());
  CHECK(plot.rfind("<svg", 0) == 0);
  CHECK(plot.find("restart 30") != std::string::npos);
}

TEST_CASE("grace-http, a new connection per request: PASS across 30 restarts") {
  temp_dir dir;
  const std::string address = free_address(), pidfile = dir.file("http.pid");
  auto run = run_harness({"--target", "tcp://" + address, "--mode", "http-close", "--clients", "16", "--restarts",
                          "30", "--pidfile", pidfile, "--", helper_path("GRACE_HTTP"), address, "--pidfile", pidfile},
                         dir);
  check_pass(run, 30);
}

TEST_CASE("grace-echo, random payloads byte for byte: PASS across 30 restarts") {
  temp_dir dir;
  const std::string address = free_address(), pidfile = dir.file("echo.pid");
  // The old generation finishes each echo connection when its client moves on (every 100
  // payloads, the harness's default for echo), well before the drain deadline.
  auto run = run_harness({"--target", "tcp://" + address, "--mode", "echo", "--clients", "16", "--restarts", "30",
                          "--pidfile", pidfile, "--", helper_path("GRACE_ECHO"), address, "--pidfile", pidfile},
                         dir);
  check_pass(run, 30);
}

TEST_CASE("grace-unix, HTTP over a unix socket: PASS across 30 restarts; names are escaped in the timeline") {
  temp_dir dir;
  const std::string path = dir.file("a&b<c>.sock"), pidfile = dir.file("unix.pid");
  auto run = run_harness({"--target", "unix:" + path, "--clients", "16", "--restarts", "30", "--pidfile", pidfile,
                          "--", helper_path("GRACE_UNIX"), "unix:" + path, "--pidfile", pidfile},
                         dir);
  check_pass(run, 30);
  std::ifstream svg_file(dir.file("run.svg"));
  const std::string svg((std::istreambuf_iterator<char>(svg_file)), std::istreambuf_iterator<char>());
  CHECK(svg.find("a&amp;b&lt;c&gt;.sock") != std::string::npos);
  CHECK(svg.find("a&b") == std::string::npos);
  CHECK(svg.find(" s</text>") != std::string::npos);  // time-axis ticks
  CHECK(svg.find(" ms</text>") != std::string::npos);  // the latency panel's scale
  CHECK(count_of(svg, "stroke-dasharray") == 2 * 30);  // every restart, in both panels
}

TEST_CASE("grace-epoll and grace-asio, the core on other event loops: PASS across 30 restarts, keep-alive and close") {
  for (const char* server : {"GRACE_EPOLL", "GRACE_ASIO"})
    for (const char* mode : {"http-keepalive", "http-close"}) {
      CAPTURE(server);
      CAPTURE(mode);
      temp_dir dir;
      const std::string address = free_address(), pidfile = dir.file("server.pid");
      auto run = run_harness({"--target", "tcp://" + address, "--mode", mode, "--clients", "16", "--restarts", "30",
                              "--pidfile", pidfile, "--", helper_path(server), address, "--pidfile", pidfile},
                             dir);
      check_pass(run, 30);
    }
}

TEST_CASE("a server started elsewhere, followed through its pid file: refereed, and left running") {
  temp_dir dir;
  const std::string address = free_address(), pidfile = dir.file("http.pid");
  spawn_options options;
  options.argv = {helper_path("GRACE_HTTP"), address, "--pidfile", pidfile};
  child_process server(options);
  REQUIRE(server.wait_stderr("(new socket) as pid"));
  auto run = run_harness({"--target", "tcp://[::ffff:" + address.substr(0, address.find(':')) + "]" +
                              address.substr(address.find(':')),
                          "--clients", "8", "--restarts", "5", "--pidfile", pidfile},
                         dir);
  check_pass(run, 5);
  // Not ours to stop: the newest generation still serves.
  std::ifstream in(pidfile);
  pid_t newest = 0;
  in >> newest;
  REQUIRE(newest > 0);
  CHECK_FALSE(has_exited(newest));
  kill(newest, SIGTERM);
  CHECK(wait_exited(newest));
}

TEST_CASE("a restart that is not graceful (kill and start again) is caught: FAIL, losses counted") {
  temp_dir dir;
  const std::string address = free_address(), pidfile = dir.file("http.pid");
  const std::string restart =
      "kill -KILL $MAINPID; "
      "until ! kill -0 $MAINPID 2>/dev/null || grep -q ') Z' /proc/$MAINPID/stat; do :; done; "
      "setsid " + helper_path("GRACE_HTTP") + " " + address + " --pidfile " + pidfile + " </dev/null >/dev/null 2>&1 &";
  auto run = run_harness({"--target", "tcp://" + address, "--mode", "http-keepalive", "--clients", "16",
                          "--restarts", "5", "--pidfile", pidfile, "--restart-cmd", restart, "--",
                          helper_path("GRACE_HTTP"), address, "--pidfile", pidfile},
                         dir);
  INFO(run.output);
  CHECK(run.exit_status == 1);
  CHECK(run.verdict.rfind("FAIL: ", 0) == 0);
  CHECK(run.verdict.rfind("FAIL: 0 lost", 0) != 0);
  CHECK(run.json.find("\"verdict\": \"FAIL\"") != std::string::npos);
}

TEST_CASE("a server that never accepts: FAIL within the start-up timeout, and it is stopped") {
  temp_dir dir;
  auto run = run_harness({"--target", "tcp://" + free_address(), "--startup-timeout", "0.5", "--restarts", "1",
                          "--", "/bin/sleep", "60"},
                         dir);
  INFO(run.output);
  CHECK(run.exit_status == 1);
  CHECK(run.output.find("did not accept a connection within") != std::string::npos);
}

TEST_CASE("echo connections cut at the drain deadline under a payload are counted as lost") {
  temp_dir dir;
  const std::string address = free_address(), pidfile = dir.file("echo.pid");
  // Clients that never let go of their connection, and a deadline that cuts them off.
  auto run = run_harness({"--target", "tcp://" + address, "--mode", "echo", "--clients", "8", "--restarts", "3",
                          "--requests-per-connection", "0", "--pidfile", pidfile, "--", helper_path("GRACE_ECHO"),
                          address, "--pidfile", pidfile, "--drain-timeout", "0.2", "--no-migrate"},
                         dir);
  INFO(run.output);
  CHECK(run.exit_status == 1);
  CHECK(run.verdict.find("on a reused connection") != std::string::npos);
  CHECK(run.verdict.find("left for a client that retries") == std::string::npos);  // echo is not HTTP
}

TEST_CASE("bad command lines are refused with a reason; --help explains") {
  temp_dir dir;
  auto no_target = run_harness({"--", "/bin/true"}, dir);
  CHECK(no_target.exit_status == 2);
  // NaN would pass a "< 0" check and disable every deadline, --hard-cap included.
  for (const char* bad : {"nan", "inf", "-1", "5s"}) {
    spawn_options refused_options;
    refused_options.argv = {helper_path("GRACE_HARNESS"), "--target", "tcp://127.0.0.1:1", "--timeout", bad, "--",
                            "/bin/true"};
    child_process refused(refused_options);
    CHECK_MESSAGE(refused.wait_stderr("--timeout needs a non-negative number"), bad);
    CHECK_MESSAGE(refused.wait() == std::optional<int>(2 << 8), bad);
  }
  spawn_options options;
  options.argv = {helper_path("GRACE_HARNESS"), "--help"};
  child_process help(options);
  std::string text;
  while (auto line = help.read_line()) text += *line + "\n";
  CHECK(help.wait() == std::optional<int>(0));
  for (const char* option : {"--target", "--mode", "--clients", "--restarts", "--interval", "--signal", "--restart-cmd",
                             "--pidfile", "--attach-pid", "--duration", "--json", "--plot", "Example"})
    CHECK_MESSAGE(text.find(option) != std::string::npos, option);
}

namespace {

// An HTTP server that answers one request per connection with "keep-alive", then closes the
// connection anyway: every reused connection meets the idle-close race.
class closes_after_each_answer {
 public:
  closes_after_each_answer() : listener_(raw_tcp_listener("127.0.0.1", port_)) {
    thread_ = std::thread([this] { serve(); });
  }
  ~closes_after_each_answer() {
    stop_ = true;
    thread_.join();
    close(listener_);
  }
  int port() const { return port_; }

 private:
  void serve() {
    std::map<int, std::string> clients;
    while (!stop_) {
      std::vector<pollfd> fds{{listener_, POLLIN, 0}};
      for (const auto& [fd, input] : clients) fds.push_back({fd, POLLIN, 0});
      if (poll(fds.data(), fds.size(), 50) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        const int fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) clients[fd];
      }
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        const int fd = fds[i].fd;
        char buffer[4096];
        const ssize_t n = read(fd, buffer, sizeof buffer);
        std::string& input = clients[fd];
        if (n > 0) input.append(buffer, static_cast<std::size_t>(n));
        if (n > 0 && input.find("\r\n\r\n") == std::string::npos) continue;
        if (n > 0) {
          static const std::string answer =
              "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n";
          ssize_t ignored = write(fd, answer.data(), answer.size());
          (void)ignored;
        }
        close(fd);
        clients.erase(fd);
      }
    }
    for (const auto& [fd, input] : clients) close(fd);
  }

  int port_ = 0;
  int listener_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace

TEST_CASE("losses in operators' terms: the idle-close race on a reused connection is its own, retryable, category") {
  closes_after_each_answer server;
  temp_dir dir;
  // Without think time the next request races the server's close: lost, but retryable.
  auto racing = run_harness({"--target", "tcp://127.0.0.1:" + std::to_string(server.port()), "--clients", "4",
                             "--restarts", "0", "--duration", "1", "--attach-pid", std::to_string(getpid())},
                            dir);
  INFO(racing.output);
  CHECK(racing.exit_status == 1);
  // The server's FIN is a close, not a reset; every loss was on a reused connection.
  CHECK(racing.verdict.find("closed (FIN) on a reused connection") != std::string::npos);
  CHECK(racing.verdict.find("(0 left for a client that retries idempotent requests)") != std::string::npos);
  const auto json = nlohmann::json::parse(racing.json);
  CHECK(json["steady"]["reused_closed"].get<std::uint64_t>() > 0);
  CHECK(json["steady"]["new_reset"] == 0);
  CHECK(json["steady"]["lost_to_retrying_client"] == 0);
  // The examples listed are reused connections: mostly closed, a few reset (a request written
  // after the server's FIN but before the client read it meets a closed socket).
  REQUIRE(json["failures"].size() > 0);
  bool closed_listed = false;
  for (const auto& failure : json["failures"]) {
    CHECK((failure["category"] == "reused_closed" || failure["category"] == "reused_reset"));
    closed_listed = closed_listed || failure["category"] == "reused_closed";
  }
  CHECK(closed_listed);

  // With think time the close arrives while the client is idle: it reconnects, nothing is lost.
  auto thinking = run_harness({"--target", "tcp://127.0.0.1:" + std::to_string(server.port()), "--clients", "4",
                               "--restarts", "0", "--duration", "1", "--think-ms", "20-40", "--attach-pid",
                               std::to_string(getpid())},
                              dir);
  INFO(thinking.output);
  CHECK(thinking.exit_status == 0);
  CHECK(thinking.verdict.rfind("PASS: 0 lost", 0) == 0);
}

TEST_CASE("the JSON: per-restart losses, failures with their time, generations; the server log is kept") {
  temp_dir dir;
  const std::string address = free_address(), pidfile = dir.file("http.pid");
  auto run = run_harness({"--target", "tcp://" + address, "--clients", "8", "--restarts", "3", "--pidfile", pidfile,
                          "--server-log", dir.file("server.log"),
                          "--method", "HEAD", "--path", "/", "--header", "X-Test: \"quoted\"", "--", helper_path("GRACE_HTTP"),
                          address, "--pidfile", pidfile},
                         dir);
  check_pass(run, 3);
  const auto json = nlohmann::json::parse(run.json);
  REQUIRE(json["restarts"].size() == 3);
  for (const auto& restart : json["restarts"]) {
    CHECK(restart["completed"] == true);
    CHECK(restart["losses"].empty());
  }
  CHECK(json["failures"].empty());
  CHECK(json["summary"].get<std::string>().rfind("PASS", 0) == 0);
  // Where the restart windows' tail came from: every answer slower than the steady p99.9 there,
  // counted once by who answered and once by when it was sent, the slowest listed first.
  const auto& tail = json["restart_window_tail"];
  CHECK(tail["threshold_ms"].get<double>() == doctest::Approx(json["steady"]["latency_ms"]["p999"].get<double>()));
  std::uint64_t by_server = 0, by_phase = 0;
  for (const auto& [who, n] : tail["by_server"].items()) {
    CHECK((who == "old" || who == "new" || who == "other" || who == "unknown"));
    by_server += n.get<std::uint64_t>();
  }
  for (const auto& [when, n] : tail["by_phase"].items()) {
    CHECK((when == "before_new_answers" || when == "until_old_gone" || when == "after_old_gone"));
    by_phase += n.get<std::uint64_t>();
  }
  CHECK(by_server == tail["above"].get<std::uint64_t>());
  CHECK(by_phase == tail["above"].get<std::uint64_t>());
  const auto& slowest = tail["slowest"];
  CHECK(slowest.size() == std::min<std::uint64_t>(20, tail["above"].get<std::uint64_t>()));
  double previous = 1e9;
  for (const auto& one : slowest) {
    const double latency = one["latency_ms"].get<double>();
    CHECK(latency > tail["threshold_ms"].get<double>());
    CHECK(latency <= previous);
    previous = latency;
    CHECK(one["restart"].get<unsigned>() >= 1);
    CHECK(one["restart"].get<unsigned>() <= 3);
  }
  const auto log_at = run.output.find("server log: ");
  REQUIRE(log_at != std::string::npos);
  const std::string log_path = run.output.substr(log_at + 12, run.output.find('\n', log_at) - log_at - 12);
  CHECK(log_path == dir.file("server.log"));
  std::ifstream log(log_path);
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  CHECK(text.find("is ready and in charge") != std::string::npos);
}

TEST_CASE("with a request body, the answers still check out") {
  temp_dir dir;
  const std::string address = free_address(), pidfile = dir.file("http.pid");
  auto run = run_harness({"--target", "tcp://" + address, "--clients", "4", "--restarts", "2", "--pidfile", pidfile,
                          "--body-bytes", "1000", "--", helper_path("GRACE_HTTP"), address,
                          "--pidfile", pidfile},
                         dir);
  check_pass(run, 2);
}

TEST_CASE("a server that names no pid and writes no pid file is followed through its sockets; nothing is left running") {
  for (const bool unix_socket : {false, true}) {
    CAPTURE(unix_socket);
    temp_dir dir;
    const std::string address = unix_socket ? "unix:" + dir.file("echo.sock") : free_address();
    const std::string target = unix_socket ? address : "tcp://" + address;
    // Echo answers name no pid and there is no pid file: the referee learns which process holds
    // the server side of each connection (sock_diag: TCP by port, unix by the peer's inode). The
    // newest generation, reparented to the harness (a subreaper) when the first one exits, is
    // stopped at the end.
    auto run = run_harness({"--target", target, "--mode", "echo", "--clients", "8", "--restarts", "5", "--",
                            helper_path("GRACE_ECHO"), address},
                           dir);
    INFO(run.output);
    check_pass(run, 5);
    const auto json = nlohmann::json::parse(run.json);
    std::set<pid_t> generations;
    for (const auto& restart : json["restarts"]) {
      const pid_t old_pid = restart["old_generation"][0]["pid"].get<pid_t>();
      const pid_t new_pid = restart["new_pid"].get<pid_t>();
      CHECK(new_pid != old_pid);
      CHECK_FALSE(restart["old_generation"][0]["gone_ms"].is_null());
      generations.insert(old_pid);
      generations.insert(new_pid);
    }
    CHECK(generations.size() == 6);
    // The answers are attributed to the processes seen holding their connections.
    CHECK(json["generations"].size() >= 2);
    std::vector<pid_t> left;
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
      const pid_t pid = static_cast<pid_t>(std::atol(entry.path().filename().c_str()));
      if (pid <= 0) continue;
      std::ifstream cmdline(entry.path() / "cmdline");
      std::string text((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
      if (text.find(address) != std::string::npos && !has_exited(pid)) left.push_back(pid);
    }
    CHECK(left.empty());
    for (pid_t pid : left) kill(pid, SIGKILL);
  }
}

TEST_CASE("options that make no sense are refused with the reason") {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--attach-pid", "999999999"}, "no such process"},
      {{"--attach-pid", std::to_string(getpid()), "--mode", "http-close", "--think-ms", "10"}, "--think-ms is for http-keepalive"},
      {{"--attach-pid", std::to_string(getpid()), "--think-ms", "50-10"}, "the range must go up"},
      {{"--attach-pid", std::to_string(getpid()), "--header", "no colon"}, "--header must be"},
      {{"--attach-pid", std::to_string(getpid()), "--path", "no-slash"}, "--path must start with '/'"},
      {{"--attach-pid", std::to_string(getpid()), "--method", "GE T"}, "is not an HTTP token"},
      {{"--attach-pid", std::to_string(getpid()), "--hard-cap", "0"}, "--hard-cap must be positive"},
  };
  for (const auto& c : cases) {
    const std::string& message = c.second;
    CAPTURE(message);
    spawn_options options;
    options.argv = {helper_path("GRACE_HARNESS"), "--target", "tcp://127.0.0.1:1"};
    options.argv.insert(options.argv.end(), c.first.begin(), c.first.end());
    child_process refused(options);
    CHECK(refused.wait_stderr(message));
    CHECK(refused.wait() == std::optional<int>(2 << 8));
  }
}

namespace {

// The server logs restart-harness keeps in `directory` (its TMPDIR, which run_harness sets).
std::set<std::string> kept_logs(const std::string& directory) {
  std::set<std::string> out;
  for (const auto& entry : std::filesystem::directory_iterator(directory))
    if (entry.path().filename().string().rfind("restart-harness-", 0) == 0) out.insert(entry.path().string());
  return out;
}

}  // namespace

TEST_CASE("attached by pid to a server started elsewhere: 10 restarts, each found wherever its processes are") {
  // The test starts grace-http, not the harness: every new generation is reparented away from
  // the process the harness attached to, so it is no descendant of anything the harness knows.
  temp_dir dir;
  const std::string address = free_address();
  spawn_options options;
  options.argv = {helper_path("GRACE_HTTP"), address};
  child_process server(options);
  REQUIRE(server.wait_stderr("(new socket) as pid"));
  auto run = run_harness({"--target", "tcp://" + address, "--clients", "8", "--restarts", "10", "--attach-pid",
                          std::to_string(server.pid())},
                         dir);
  check_pass(run, 10);
  CHECK(run.output.find("no look found a process serving") == std::string::npos);
  const auto json = nlohmann::json::parse(run.json);
  REQUIRE(json["restarts"].size() == 10);
  std::set<pid_t> generations;
  for (const auto& restart : json["restarts"]) {
    CHECK(restart["completed"] == true);
    generations.insert(restart["new_pid"].get<pid_t>());
  }
  CHECK(generations.size() == 10);  // a new process each time, found by its connections
  // The newest generation is left running, as an attached server should be.
  const pid_t newest = json["restarts"].back()["new_pid"].get<pid_t>();
  CHECK_FALSE(has_exited(newest));
  kill(newest, SIGTERM);
  CHECK(wait_exited(newest));
}

TEST_CASE("UDP behind a socket holder (grace-listen): 5 restarts told apart by the new process, not the socket") {
  temp_dir dir;
  int port = 0;
  close(raw_udp_socket(port));
  const std::string address = "127.0.0.1:" + std::to_string(port);
  auto run = run_harness({"--target", "udp://" + address, "--mode", "udp-echo", "--clients", "8", "--restarts", "5",
                          "--signal", "HUP", "--", helper_path("GRACE_LISTEN"), "-s", "udp:" + address, "--",
                          helper_path("GRACE_UDP_ECHO"), address},
                         dir);
  check_pass(run, 5);
  const auto json = nlohmann::json::parse(run.json);
  REQUIRE(json["restarts"].size() == 5);
  std::set<pid_t> generations;
  for (const auto& restart : json["restarts"]) {
    CHECK(restart["completed"] == true);
    const pid_t holder = restart["old_pid"].get<pid_t>();  // grace-listen, signalled every time
    const pid_t new_pid = restart["new_pid"].get<pid_t>();
    CHECK(new_pid != holder);
    CHECK_FALSE(restart["old_generation"].empty());
    for (const auto& old : restart["old_generation"]) CHECK(old["pid"].get<pid_t>() != new_pid);
    generations.insert(new_pid);
  }
  CHECK(generations.size() == 5);
}

TEST_CASE("a tiny --timeout is refused by name; a busy run still ends at the hard cap, with a reason") {
  temp_dir dir;
  spawn_options refused_options;
  refused_options.argv = {helper_path("GRACE_HARNESS"), "--target", "tcp://127.0.0.1:1", "--timeout", "1e-9",
                          "--hard-cap", "5", "--", "/bin/true"};
  child_process refused(refused_options);
  CHECK(refused.wait_stderr("--timeout must be at least"));
  CHECK(refused.wait() == std::optional<int>(2 << 8));
  // The smallest timeout allowed, endless restarts back to back: the loop is as busy as it gets.
  const std::string address = free_address();
  const auto started = std::chrono::steady_clock::now();
  auto run = run_harness({"--target", "tcp://" + address, "--timeout", "0.01", "--hard-cap", "5", "--restarts",
                          "100000", "--", helper_path("GRACE_HTTP"), address},
                         dir);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  INFO(run.output);
  CHECK(run.exit_status == 1);
  CHECK(run.output.find("hard cap of 5 s reached") != std::string::npos);
  CHECK(took < 5 + 10);  // the cap, and the slack a busy machine needs to start and reap
}

TEST_CASE("the hard cap wins even over a loop that is stuck: a watchdog ends the run, with a reason") {
  // A unix listener whose backlog is full and that never accepts: the harness's check that the
  // target accepts blocks in connect(), and its loop with it. Only the watchdog can end the run.
  temp_dir dir;
  const std::string path = dir.file("full.sock");
  const int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
  REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(listen(listener, 0) == 0);
  std::vector<int> waiting;
  for (int i = 0; i < 8; ++i) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    waiting.push_back(fd);
    if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 && errno == EAGAIN) break;
  }
  const auto started = std::chrono::steady_clock::now();
  auto run = run_harness({"--target", "unix:" + path, "--hard-cap", "3", "--startup-timeout", "60", "--attach-pid",
                          std::to_string(getpid())},
                         dir);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  INFO(run.output);
  CHECK(run.exit_status == 1);
  CHECK(run.verdict.rfind("FAIL: hard cap of 3 s reached before the referee could finish", 0) == 0);
  CHECK(took < 3 + 10);
  for (const int fd : waiting) close(fd);
  close(listener);
}

TEST_CASE("the server log: removed when the run passes, kept and named when it fails, or kept where asked") {
  temp_dir dir;
  const auto before = kept_logs(dir.path());
  const std::string address = free_address();
  auto passing = run_harness({"--target", "tcp://" + address, "--clients", "4", "--restarts", "1", "--",
                              helper_path("GRACE_HTTP"), address},
                             dir);
  check_pass(passing, 1);
  CHECK(passing.output.find("server log") == std::string::npos);
  CHECK(before.empty());
  CHECK(kept_logs(dir.path()) == before);
  // A server that exits at once: the run fails, and its log is kept and named.
  auto failing = run_harness({"--target", "tcp://" + free_address(), "--restarts", "1", "--", "/bin/sh", "-c",
                              "echo the-server-said-this >&2; exit 3"},
                             dir);
  INFO(failing.output);
  CHECK(failing.exit_status == 1);
  const std::string marker = "server log (kept because the run failed): ";
  const auto at = failing.output.find(marker);
  REQUIRE(at != std::string::npos);
  const std::string path = failing.output.substr(at + marker.size(), failing.output.find('\n', at) - at - marker.size());
  std::ifstream log(path);
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  CHECK(text.find("the-server-said-this") != std::string::npos);
  unlink(path.c_str());
  CHECK(kept_logs(dir.path()) == before);
  // Asked for: kept where asked, and said where, even when the run passes.
  const std::string address2 = free_address();
  auto asked = run_harness({"--target", "tcp://" + address2, "--clients", "4", "--restarts", "1", "--server-log",
                            dir.file("mine.log"), "--", helper_path("GRACE_HTTP"), address2},
                           dir);
  check_pass(asked, 1);
  CHECK(asked.output.find("server log: " + dir.file("mine.log")) != std::string::npos);
  CHECK(std::filesystem::file_size(dir.file("mine.log")) > 0);
}

TEST_CASE("restart-harness --version; an unknown option is unknown wherever it stands") {
  spawn_options options;
  options.argv = {helper_path("GRACE_HARNESS"), "--version"};
  child_process version(options);
  const auto line = version.read_line();
  REQUIRE(line);
  CHECK(line->rfind("restart-harness ", 0) == 0);
  CHECK(line->find(GRACE_VERSION_STRING) != std::string::npos);
  CHECK(version.wait() == std::optional<int>(0));
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--bogus"}, {"--target", "tcp://127.0.0.1:1", "--bogus"},
        {"--bogus", "--target", "tcp://127.0.0.1:1", "--", "/bin/true"}}) {
    spawn_options bad;
    bad.argv = {helper_path("GRACE_HARNESS")};
    bad.argv.insert(bad.argv.end(), args.begin(), args.end());
    child_process refused(bad);
    CHECK_MESSAGE(refused.wait_stderr("unknown option \"--bogus\""), args.size());
    CHECK(refused.wait() == std::optional<int>(2 << 8));
  }
}

namespace {

// Runs `argv` to its end (bounded); its exit status, stdout and stderr.
struct finished {
  int status = -1;
  std::string out, err;
};
finished run_to_end(const std::vector<std::string>& argv) {
  spawn_options options;
  options.argv = argv;
  child_process p(options);
  finished f;
  while (auto line = p.read_line(20s)) f.out += *line + "\n";
  const auto status = p.wait(20s);
  f.status = status && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
  f.err = p.stderr_text();
  return f;
}

// A program built beside restart-harness (tools/ in both builds), if this build made it.
std::string beside_harness(const std::string& name) {
  const std::string harness = helper_path("GRACE_HARNESS");
  return harness.substr(0, harness.rfind('/') + 1) + name;
}

}  // namespace

TEST_CASE("every sample and benchmark: --version names it and grace's version; an unknown option is unknown, even last") {
  std::vector<std::pair<std::string, std::string>> programs = {
      {helper_path("GRACE_HTTP"), "grace-http"},     {helper_path("GRACE_ECHO"), "grace-echo"},
      {helper_path("GRACE_UNIX"), "grace-unix"},     {helper_path("GRACE_EPOLL"), "grace-epoll"},
      {helper_path("GRACE_ASIO"), "grace-asio"},     {helper_path("GRACE_UDP_ECHO"), "grace-udp-echo"},
      {helper_path("GRACE_UDP_SESSION"), "grace-udp-session"}};
  for (const char* bench : {"grace-bench-inherit", "grace-bench-restart", "grace-bench-bare-http",
                            "grace-bench-throughput", "grace-bench-restart-tail", "grace-bench-fd-channel",
                            "grace-bench-udp-sessions"}) {
    if (access(beside_harness(bench).c_str(), X_OK) == 0) programs.emplace_back(beside_harness(bench), bench);
    else MESSAGE(bench << " is not built here: not checked");
  }
  for (const auto& program : programs) {
    const std::string& path = program.first;
    const std::string& name = program.second;
    CAPTURE(name);
    const auto version = run_to_end({path, "--version"});
    CHECK(version.status == 0);
    CHECK(version.out == name + " (grace) " GRACE_VERSION_STRING "\n");
    const auto help = run_to_end({path, "--help"});
    CHECK(help.status == 0);
    CHECK(help.out.find("usage: ") != std::string::npos);
    for (const std::vector<std::string>& args : {std::vector<std::string>{"--bogus"}, {"127.0.0.1:1", "--bogus"}}) {
      std::vector<std::string> argv{path};
      argv.insert(argv.end(), args.begin(), args.end());
      const auto refused = run_to_end(argv);
      CHECK(refused.status == 2);
      CHECK(refused.err.find("unknown option \"--bogus\"") != std::string::npos);
    }
  }
  // grace-listen, whose own parser another part of the tree owns: the same conventions.
  const auto listen_version = run_to_end({helper_path("GRACE_LISTEN"), "--version"});
  CHECK(listen_version.status == 0);
  CHECK(listen_version.out == "grace-listen (grace) " GRACE_VERSION_STRING "\n");
  const auto listen_refused = run_to_end({helper_path("GRACE_LISTEN"), "-s", "tcp:127.0.0.1:1", "--bogus"});
  CHECK(listen_refused.status == 2);
  CHECK(listen_refused.err.find("unknown option \"--bogus\"") != std::string::npos);
  // A value that is missing is still said so.
  const auto missing = run_to_end({helper_path("GRACE_HTTP"), "127.0.0.1:1", "--pidfile"});
  CHECK(missing.status == 2);
  CHECK(missing.err.find("--pidfile needs a value") != std::string::npos);
}

TEST_CASE("grace-bench-fd-channel words its ratio as faster or slower, never \"0.5x faster\"") {
  const std::string bench = beside_harness("grace-bench-fd-channel");
  if (access(bench.c_str(), X_OK) != 0) {
    MESSAGE("grace-bench-fd-channel is not built here: not checked");
    return;
  }
  const auto run = run_to_end({bench, "200", "3"});
  INFO(run.out << run.err);
  REQUIRE(run.status == 0);
  const auto at = run.out.find("| batching ");
  REQUIRE(at != std::string::npos);
  const double ratio = std::atof(run.out.c_str() + at + 11);
  CHECK(ratio >= 1.0);
  CHECK((run.out.find("x faster", at) != std::string::npos || run.out.find("x slower", at) != std::string::npos));
}

TEST_CASE("man pages for restart-harness and grace-listen, made from --help, where help2man is installed") {
  if (access("/usr/bin/help2man", X_OK) != 0) {
    MESSAGE("help2man is not installed: no man pages to check");
    return;
  }
  for (const char* program : {"restart-harness", "grace-listen"}) {
    CAPTURE(program);
    std::ifstream in(beside_harness(std::string(program) + ".1"));
    const std::string page((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (page.empty()) {
      MESSAGE("not built here (the default target makes it)");
      continue;
    }
    CHECK(page.find(".TH ") != std::string::npos);
    CHECK(page.find(GRACE_VERSION_STRING) != std::string::npos);
  }
}

TEST_CASE("grace-http's body keeps its length from generation 1 to 11 (load tools count a longer one as failed)") {
  temp_dir dir;
  const int port = free_port();
  const std::string pidfile = dir.file("http.pid");
  service http(helper_path("GRACE_HTTP"), {"127.0.0.1:" + std::to_string(port), "--pidfile", pidfile});
  REQUIRE(http.wait_for("(new socket) as pid"));
  pid_t current = http.first_pid();
  std::set<std::size_t> lengths;
  for (unsigned generation = 1; generation <= 11; ++generation) {
    if (generation > 1) current = http.upgrade(current, generation);
    const int fd = connect_tcp("127.0.0.1", port);
    REQUIRE(fd >= 0);
    const std::string body = http_body_of(fd);
    close(fd);
    CHECK(body == expected_body(current, generation));
    lengths.insert(body.size());
  }
  CHECK(lengths == std::set<std::size_t>{48});
}
