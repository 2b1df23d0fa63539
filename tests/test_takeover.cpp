// Takeover through the hand-over socket, end to end: a process started independently (not by
// the serving one) takes every listener over, and the old one drains, with the guarantees of
// SIGUSR2: rollback when the new one dies or hangs, one takeover at a time, the generation cap,
// the pid file. The re-exec path and takeovers mix freely.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "grace/fd_channel.hpp"
#include "grace/takeover.hpp"
#include "support/harness_run.hpp"
#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/service.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {

std::string body_at(int port) {
  const int c = connect_tcp("127.0.0.1", port);
  const std::string body = http_body_of(c);
  close(c);
  return body;
}

// The probe that takes over and then does `then`; its first line says what it got.
std::unique_ptr<child_process> probe(const temp_dir& dir, const std::string& then) {
  return start_program(helper_path("GRACE_PROBE"), {"takeover", dir.file("handover.sock"), then});
}

}  // namespace

TEST_CASE("processes started independently take over one after another, mixed with SIGUSR2") {
  temp_dir dir;
  const int port = free_port();
  const std::string pidfile = dir.file("http.pid");
  service first(helper_path("GRACE_HTTP"), http_with_handover(port, dir));
  REQUIRE(first.wait_for("hand-over socket " + dir.file("handover.sock") + " as pid"));
  struct stat st {};
  REQUIRE(stat(dir.file("handover.sock").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  const int kept = connect_tcp("127.0.0.1", port);
  CHECK(http_body_of(kept) == expected_body(first.first_pid(), 1));

  // Generation 2: started by "someone else".
  auto second = start_program(helper_path("GRACE_HTTP"), http_with_handover(port, dir));
  REQUIRE(first.wait_for("pid " + std::to_string(second->pid()) + ", started independently, took the listeners as generation 2"));
  REQUIRE(first.wait_for("pid " + std::to_string(second->pid()) + " is ready and in charge"));
  CHECK(second->wait_stderr("took 2 listener(s) over from pid " + std::to_string(first.first_pid())));
  CHECK(pidfile_names(pidfile, second->pid()));
  CHECK(body_at(port) == expected_body(second->pid(), 2));
  // The idle connection the old generation had moved to the new one.
  REQUIRE(first.wait_for("handing 1 idle connection(s) to pid " + std::to_string(second->pid())));
  auto last = http_get(kept);
  REQUIRE(last);
  CHECK(last->body == expected_body(second->pid(), 2));
  CHECK_FALSE(last->connection_close);
  close(kept);
  auto status = first.first().wait();
  REQUIRE(status);
  CHECK(WIFEXITED(*status));

  // Generation 3 by SIGUSR2: the hand-over socket travels with the listeners.
  REQUIRE(kill(second->pid(), SIGUSR2) == 0);
  REQUIRE(second->wait_stderr("started generation 3 as pid "));
  const std::string log = second->stderr_text();
  const pid_t third = static_cast<pid_t>(std::atol(log.c_str() + log.rfind("as pid ") + 7));
  REQUIRE(second->wait_stderr("pid " + std::to_string(third) + " is ready and in charge"));
  CHECK(body_at(port) == expected_body(third, 3));
  CHECK(second->wait(10s));

  // Generation 4 takes over from the re-executed generation 3.
  auto fourth = start_program(helper_path("GRACE_HTTP"), http_with_handover(port, dir));
  CHECK(fourth->wait_stderr("took 2 listener(s) over from pid " + std::to_string(third)));
  CHECK(fourth->wait_stderr("generation 4: serving"));
  CHECK(pidfile_names(pidfile, fourth->pid()));
  CHECK(body_at(port) == expected_body(fourth->pid(), 4));
  CHECK(wait_exited(third));
  kill(third, SIGKILL);  // in case it did not exit (it is not this test's child to reap)
  REQUIRE(kill(fourth->pid(), SIGTERM) == 0);
  CHECK(fourth->wait(10s));
}

TEST_CASE("a taker that exits before it is ready, or hangs, is rolled back; the old process serves on") {
  temp_dir dir;
  const int port = free_port();
  service http(helper_path("GRACE_HTTP"), http_with_handover(port, dir, {"--ready-timeout", "0.5"}));
  REQUIRE(http.wait_for("hand-over socket"));
  const pid_t server = http.first_pid();

  SUBCASE("exits before it is ready") {
    auto taker = probe(dir, "exit");
    CHECK(taker->read_line() == "took 2 from " + std::to_string(server));
    REQUIRE(http.wait_for("pid " + std::to_string(taker->pid()) + " exited before it was ready; still serving"));
  }
  SUBCASE("hangs past the ready timeout: killed") {
    auto taker = probe(dir, "hang");
    CHECK(taker->read_line() == "took 2 from " + std::to_string(server));
    REQUIRE(http.wait_for("pid " + std::to_string(taker->pid()) + " was not ready within 500 ms and was killed"));
    auto status = taker->wait(10s);
    REQUIRE(status);
    CHECK(WIFSIGNALED(*status));
  }
  CHECK(body_at(port) == expected_body(server, 1));
  CHECK(pidfile_names(dir.file("http.pid"), server));
  // The next takeover succeeds.
  auto next = start_program(helper_path("GRACE_HTTP"), http_with_handover(port, dir));
  REQUIRE(http.wait_for("pid " + std::to_string(next->pid()) + " is ready and in charge"));
  CHECK(body_at(port) == expected_body(next->pid(), 2));
  kill(next->pid(), SIGTERM);
  CHECK(next->wait(10s));
}

TEST_CASE("one takeover at a time: a second taker and a SIGUSR2 meanwhile are refused") {
  temp_dir dir;
  const int port = free_port();
  service http(helper_path("GRACE_HTTP"), http_with_handover(port, dir, {"--ready-timeout", "30"}));
  REQUIRE(http.wait_for("hand-over socket"));
  auto hanging = probe(dir, "hang");
  REQUIRE(hanging->read_line() == "took 2 from " + std::to_string(http.first_pid()));
  auto second = probe(dir, "exit");
  const auto refused = second->read_line();
  REQUIRE(refused);
  CHECK(refused->find("error take over from the process serving") == 0);
  CHECK(refused->find("refused: an upgrade is already in progress (pid " + std::to_string(hanging->pid()) + ")") !=
        std::string::npos);
  CHECK(http.wait_for("takeover by pid " + std::to_string(second->pid()) + " refused"));
  kill(http.first_pid(), SIGUSR2);
  CHECK(http.wait_for("upgrade refused: an upgrade is already in progress"));
  // SIGTERM kills the pending taker, as it would a pending child.
  kill(http.first_pid(), SIGTERM);
  CHECK(http.wait_for("was killed before it was ready: this process got SIGTERM"));
  CHECK(hanging->wait(10s));
}

TEST_CASE("the generation cap counts a draining generation: a takeover past it is refused") {
  temp_dir dir;
  const int port = free_port();
  // Generation 1 watches over its successor for a while after handing over, and counts.
  service http(helper_path("GRACE_HTTP"), http_with_handover(port, dir, {"--max-generations", "2", "--successor-watch", "30"}));
  REQUIRE(http.wait_for("hand-over socket"));
  auto second = start_program(helper_path("GRACE_HTTP"), http_with_handover(port, dir, {"--max-generations", "2"}));
  REQUIRE(http.wait_for("is ready and in charge"));
  REQUIRE(second->wait_stderr("generation 2: serving"));
  auto third = probe(dir, "exit");
  const auto refused = third->read_line();
  REQUIRE(refused);
  CHECK(refused->find("2 generations alive (older ones still draining: " + std::to_string(http.first_pid()) + ")") !=
        std::string::npos);
  CHECK(second->wait_stderr("takeover by pid " + std::to_string(third->pid()) + " refused"));
  kill(second->pid(), SIGTERM);
  CHECK(second->wait(10s));
}

TEST_CASE("the hand-over socket refuses strangers and garbage, and wants a private directory") {
  temp_dir dir;
  const int port = free_port();
  SUBCASE("a directory others may write to") {
    const std::string open_dir = dir.file("open");
    REQUIRE(mkdir(open_dir.c_str(), 0777) == 0);
    chmod(open_dir.c_str(), 0777);
    auto http = start_program(helper_path("GRACE_HTTP"),
                      {"127.0.0.1:" + std::to_string(port), "--handover-socket", open_dir + "/h.sock"});
    auto status = http->wait(10s);
    REQUIRE(status);
    CHECK(WEXITSTATUS(*status) == 1);
    CHECK(http->stderr_text().find("must be owned by uid 0 and writable by nobody else (it is owned by uid 0, mode 0777)") !=
          std::string::npos);
  }
  SUBCASE("a process of another uid, on an abstract socket") {
    const std::string name = "@grace-test-" + std::to_string(getpid());
    service http(helper_path("GRACE_HTTP"), {"127.0.0.1:" + std::to_string(port), "--handover-socket", name});
    REQUIRE(http.wait_for("hand-over socket " + name));
    const pid_t stranger = fork();
    if (stranger == 0) {
      if (setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
      grace::channel_options anyone;
      anyone.allow_any_uid = true;
      auto c = grace::fd_channel::connect(name, anyone);
      if (!c) _exit(4);
      auto answer = c->receive(10s);  // the server hangs up
      _exit(!answer && answer.error().code() == grace::errc::channel_closed ? 0 : 5);
    }
    CHECK(http.wait_for("runs as uid 65534, which is not allowed"));
    int status = 0;
    REQUIRE(waitpid(stranger, &status, 0) == stranger);
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(body_at(port) == expected_body(http.first_pid(), 1));
  }
  SUBCASE("a message that is not the hello") {
    service http(helper_path("GRACE_HTTP"), http_with_handover(port, dir));
    REQUIRE(http.wait_for("hand-over socket"));
    auto c = grace::fd_channel::connect(dir.file("handover.sock"));
    REQUIRE(c);
    grace::outgoing_parcel garbage;
    garbage.note = "GET / HTTP/1.1";
    REQUIRE(c->send(garbage, 10s));
    auto answer = c->receive(10s);
    REQUIRE(answer);
    CHECK(answer->note.find("refused\nthis is a grace hand-over socket") == 0);
    CHECK(body_at(port) == expected_body(http.first_pid(), 1));
  }
}

TEST_CASE("nobody serving the hand-over socket: the process binds fresh and serves it") {
  temp_dir dir;
  const int port = free_port();
  // A stale socket file from a crashed server is replaced.
  close(raw_unix_listener(dir.file("handover.sock"), SOCK_SEQPACKET));
  service http(helper_path("GRACE_HTTP"), http_with_handover(port, dir));
  REQUIRE(http.wait_for("(new socket); hand-over socket " + dir.file("handover.sock")));
  CHECK(body_at(port) == expected_body(http.first_pid(), 1));
}

TEST_CASE("the referee: takeover restarts under load lose nothing, in every mode") {
  for (const char* mode : {"http-close", "http-keepalive", "echo"}) {
    CAPTURE(mode);
    temp_dir dir;
    const std::string address = free_address();
    const std::string server = helper_path(std::string(mode) == "echo" ? "GRACE_ECHO" : "GRACE_HTTP");
    const std::string args = address + " --pidfile " + dir.file("server.pid") + " --handover-socket " +
                             dir.file("handover.sock") + " --drain-timeout 5";
    // The restart command starts the next server itself, in the background, as a deploy would.
    auto run = run_harness({"--target", "tcp://" + address, "--mode", mode, "--clients", "16", "--restarts", "10",
                            "--pidfile", dir.file("server.pid"), "--restart-cmd",
                            server + " " + args + " 2>>" + dir.file("takers.log") + " &", "--", "/bin/sh", "-c",
                            "exec " + server + " " + args},
                           dir);
    check_pass(run, 10);
  }
}
