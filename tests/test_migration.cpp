// Connection migration, end to end: a keep-alive connection answered by generation N is answered
// by N+1 on the same TCP connection, through SIGUSR2 and through a takeover alike, with a request
// half read at the moment of the hand-over; an idle client no longer keeps the old generation
// alive; a new generation that dies before taking the connections gives them back.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/harness_run.hpp"
#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/service.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {

bool send_all(int fd, const std::string& text) { return write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()); }

}  // namespace

TEST_CASE("one keep-alive connection, answered by every generation in turn: SIGUSR2 and takeover") {
  temp_dir dir;
  const int port = free_port();
  // A drain deadline far away: only the migration can let the old generations go quickly.
  const std::vector<std::string> args = {"127.0.0.1:" + std::to_string(port), "--pidfile", dir.file("http.pid"),
                                         "--handover-socket", dir.file("handover.sock"), "--drain-timeout", "300"};
  service http(helper_path("GRACE_HTTP"), args);
  REQUIRE(http.wait_for("(new socket)"));
  const int kept = connect_tcp("127.0.0.1", port);
  REQUIRE(kept >= 0);
  CHECK(http_body_of(kept) == expected_body(http.first_pid(), 1));

  // Generation 2 by SIGUSR2, with half a request read by generation 1 when it hands over.
  REQUIRE(send_all(kept, "GET / HTTP/1.1\r\nHo"));
  const pid_t second = http.upgrade(http.first_pid(), 2);
  REQUIRE(http.wait_for("handing 1 idle connection(s) to pid " + std::to_string(second)));
  REQUIRE(send_all(kept, "st: x\r\n\r\n"));
  auto answer = http_read_response(kept);
  REQUIRE(answer);
  CHECK(answer->body == expected_body(second, 2));
  CHECK_FALSE(answer->connection_close);
  auto first_status = http.first().wait(10s);  // gone long before the 300 s deadline
  REQUIRE(first_status);
  CHECK(WIFEXITED(*first_status));

  // Generation 3 by a takeover.
  auto third = start_program(helper_path("GRACE_HTTP"), args);
  REQUIRE(http.wait_for("pid " + std::to_string(third->pid()) + " is ready and in charge"));
  REQUIRE(http.wait_for("handing 1 idle connection(s) to pid " + std::to_string(third->pid())));
  auto again = http_get(kept);
  REQUIRE(again);
  CHECK(again->body == expected_body(third->pid(), 3));
  CHECK_FALSE(again->connection_close);
  CHECK(wait_exited(second));
  // Generation 4 by SIGUSR2 from the taker.
  REQUIRE(kill(third->pid(), SIGUSR2) == 0);
  REQUIRE(third->wait_stderr("is ready and in charge"));
  const std::string log = third->stderr_text();
  const pid_t fourth = static_cast<pid_t>(std::atol(log.c_str() + log.rfind("as pid ") + 7));
  REQUIRE(third->wait_stderr("handing 1 idle connection(s) to pid " + std::to_string(fourth)));
  auto last = http_get(kept);
  REQUIRE(last);
  CHECK(last->body == expected_body(fourth, 4));
  CHECK(third->wait(10s));
  close(kept);
  kill(fourth, SIGTERM);
  CHECK(wait_exited(fourth));
}

TEST_CASE("an echo connection keeps echoing across upgrades") {
  const int port = free_port();
  service echo(helper_path("GRACE_ECHO"), {"127.0.0.1:" + std::to_string(port), "--drain-timeout", "300"});
  REQUIRE(echo.wait_for("(new socket)"));
  const int c = connect_tcp("127.0.0.1", port);
  pid_t current = echo.first_pid();
  for (unsigned generation = 1; generation <= 3; ++generation) {
    const std::string line = "message " + std::to_string(generation) + "\n";
    REQUIRE(send_all(c, line));
    CHECK(read_line_from(c) == line.substr(0, line.size() - 1));
    const pid_t next = echo.upgrade(current, generation + 1);
    REQUIRE(echo.wait_for("handing 1 idle connection(s) to pid " + std::to_string(next)));
    CHECK(wait_exited(current));  // the idle connection moved: nothing keeps it
    current = next;
  }
  REQUIRE(send_all(c, "after\n"));
  CHECK(read_line_from(c) == "after");
  close(c);
  kill(current, SIGTERM);
  CHECK(wait_exited(current));
}

TEST_CASE("a new generation that dies before taking the connections: they stay, and are served again") {
  temp_dir dir;
  const int port = free_port();
  service http(helper_path("GRACE_HTTP"), {"127.0.0.1:" + std::to_string(port), "--handover-socket",
                                           dir.file("handover.sock"), "--successor-watch", "5"});
  REQUIRE(http.wait_for("(new socket)"));
  const int kept = connect_tcp("127.0.0.1", port);
  CHECK(http_body_of(kept) == expected_body(http.first_pid(), 1));
  // Takes the listeners, says it is ready, and exits without reading the connection offer.
  auto taker = start_program(helper_path("GRACE_PROBE"), {"takeover", dir.file("handover.sock"), "ready-then-exit"});
  CHECK(taker->read_line() == "took 2 from " + std::to_string(http.first_pid()));
  CHECK(taker->read_line() == "told");
  REQUIRE(http.wait_for("rollback after takeover"));
  // The connection was never closed: the old generation answers on it, and accepts again.
  auto answer = http_get(kept);
  REQUIRE(answer);
  CHECK(answer->body == expected_body(http.first_pid(), 1));
  CHECK_FALSE(answer->connection_close);
  const int fresh = connect_tcp("127.0.0.1", port);
  CHECK(http_body_of(fresh) == expected_body(http.first_pid(), 1));
  close(fresh);
  close(kept);
}

// A turn of the old loop busy with thousands of clients can outlast the hello timeout: the hello
// waiting in the channel is still read, and the connections move.
TEST_CASE("an old loop that stalls past the hello timeout right after the offer still moves every connection") {
  const int port = free_port();
  service probe(helper_path("GRACE_PROBE"), {"stalled-handover", "127.0.0.1:" + std::to_string(port), "1500"});
  REQUIRE(probe.wait_for("as pid"));
  const std::string first = "pid=" + std::to_string(probe.first_pid());
  std::vector<int> clients;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(connect_tcp("127.0.0.1", port));
    REQUIRE(send_all(clients.back(), "x\n"));
    REQUIRE(read_line_from(clients.back()) == first);
  }
  const pid_t second = probe.upgrade(probe.first_pid(), 2);
  REQUIRE(probe.wait_for("moved 20 connection(s) to pid " + std::to_string(second)));
  CHECK(wait_exited(probe.first_pid(), 15s));
  for (int c : clients) {
    REQUIRE(send_all(c, "x\n"));
    CHECK(read_line_from(c) == "pid=" + std::to_string(second));
    close(c);
  }
  CHECK(probe.count("given back") == 0);
  kill(second, SIGTERM);
  CHECK(wait_exited(second));
}

TEST_CASE("the referee: with think time, no restart ends a keep-alive connection") {
  for (bool takeover : {false, true}) {
    CAPTURE(takeover);
    temp_dir dir;
    const std::string address = free_address();
    const std::string args = address + " --pidfile " + dir.file("http.pid") + " --handover-socket " +
                             dir.file("handover.sock");
    std::vector<std::string> harness = {"--target", "tcp://" + address, "--mode", "http-keepalive", "--clients", "16",
                                        "--restarts", "10", "--think-ms", "0-30", "--pidfile", dir.file("http.pid")};
    if (takeover) {
      harness.insert(harness.end(), {"--restart-cmd", helper_path("GRACE_HTTP") + " " + args + " 2>>" + dir.file("takers.log") + " &"});
    }
    harness.insert(harness.end(), {"--", "/bin/sh", "-c", "exec " + helper_path("GRACE_HTTP") + " " + args});
    auto run = run_harness(harness, dir);
    check_pass(run, 10);
    const auto json = nlohmann::json::parse(run.json);
    CHECK(json["server_ended_connections"]["idle"] == 0);
    CHECK(json["server_ended_connections"]["after_answer"] == 0);
  }
}
