// The upgrade lifecycle end to end, with the real samples, real signals and real re-execs.
// Every generation writes to the stderr pipe of the first, so the tests wait on its lines.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <poll.h>
#include <sys/un.h>

#include <cstddef>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/service.hpp"
#include "support/sockets.hpp"

using namespace test_support;


TEST_CASE("five generations deep, without migration: old connections finish on the old process, new ones go to the new") {
  temp_dir dir;
  const std::string pidfile = dir.file("http.pid");
  const int port = free_port();
  service http(helper_path("GRACE_HTTP"), {"127.0.0.1:" + std::to_string(port), "--pidfile", pidfile, "--no-migrate"});
  REQUIRE(http.wait_for("(new socket) as pid"));
  CHECK(pidfile_names(pidfile, http.first_pid()));

  pid_t current = http.first_pid();
  for (unsigned generation = 1; generation <= 5; ++generation) {
    CAPTURE(generation);
    const int kept = connect_tcp("127.0.0.1", port);
    REQUIRE(kept >= 0);
    CHECK(http_body_of(kept) == expected_body(current, generation));

    const pid_t next = http.upgrade(current, generation + 1);
    CHECK(pidfile_names(pidfile, next));
    // The connection opened before the upgrade is answered by the old process, which says
    // "Connection: close" and then closes it.
    auto last = http_get(kept);
    REQUIRE(last);
    CHECK(last->body == expected_body(current, generation));
    CHECK(last->connection_close);
    close(kept);
    const int fresh = connect_tcp("127.0.0.1", port);
    CHECK(http_body_of(fresh) == expected_body(next, generation + 1));
    close(fresh);
    if (current == http.first_pid()) {
      auto status = http.first().wait();
      REQUIRE(status);
      CHECK(WIFEXITED(*status));
      CHECK(WEXITSTATUS(*status) == 0);
    } else {
      CHECK(wait_exited(current));
    }
    current = next;
  }
  REQUIRE(kill(current, SIGTERM) == 0);
  CHECK(wait_exited(current));
}

TEST_CASE("a broken release: exits early, cannot exec, hangs; each time the old process serves on") {
  temp_dir dir;
  const std::string pidfile = dir.file("http.pid");
  const std::string link = dir.file("grace-http");
  point_link(link, helper_path("GRACE_HTTP"));
  const int port = free_port();
  service http(link, {"127.0.0.1:" + std::to_string(port), "--pidfile", pidfile, "--ready-timeout", "0.5"}, {},
               link);
  REQUIRE(http.wait_for("(new socket) as pid"));
  const pid_t server = http.first_pid();
  auto still_serving = [&] {
    const int c = connect_tcp("127.0.0.1", port);
    CHECK(http_body_of(c) == expected_body(server, 1));
    close(c);
    CHECK(pidfile_names(pidfile, server));
  };

  SUBCASE("the child exits before it is ready") {
    write_script(dir.file("exits"), "exit 7");
    point_link(link, dir.file("exits"));
    kill(server, SIGUSR2);
    REQUIRE(http.wait_for("exited with status 7 before it was ready; still serving"));
  }
  SUBCASE("the binary is gone") {
    REQUIRE(unlink(link.c_str()) == 0);
    kill(server, SIGUSR2);
    REQUIRE(http.wait_for("rollback: cannot start the next generation"));
    CHECK(http.count("No such file or directory") == 1);
  }
  SUBCASE("the child hangs past the ready timeout") {
    write_script(dir.file("hangs"), "exec sleep 60");
    point_link(link, dir.file("hangs"));
    kill(server, SIGUSR2);
    REQUIRE(http.wait_for("was not ready within 500 ms and was killed; still serving"));
    CHECK(wait_exited(http.number_after("started generation 2 as pid ")));
  }
  SUBCASE("a child with a large address space hangs: killed, reaped once its exit is known") {
    // 1 GiB touched: its teardown takes the kernel a while, which a blocking waitpid would spend
    // on the event loop. Perl is part of every Debian system (perl-base).
    write_script(dir.file("large"), "exec perl -e '$x = \"x\" x (1 << 30); sleep 60'");
    point_link(link, dir.file("large"));
    kill(server, SIGUSR2);
    REQUIRE(http.wait_for("was not ready within 500 ms and was killed; still serving"));
    const pid_t large = http.number_after("started generation 2 as pid ");
    CHECK(wait_exited(large));
  }
  SUBCASE("SIGTERM while the next generation starts: killed, and the log says why") {
    write_script(dir.file("hangs"), "exec sleep 60");
    point_link(link, dir.file("hangs"));
    kill(server, SIGUSR2);
    REQUIRE(http.wait_for("started generation 2 as pid "));
    kill(server, SIGTERM);
    REQUIRE(http.wait_for("was killed before it was ready: this process got SIGTERM; shutting down"));
    CHECK(wait_exited(http.number_after("started generation 2 as pid ")));
    REQUIRE(http.first().wait());
    return;
  }
  still_serving();
  // A later SIGUSR2, with a good binary in place, upgrades.
  point_link(link, helper_path("GRACE_HTTP"));
  const pid_t next = http.upgrade(server, 2);
  const int c = connect_tcp("127.0.0.1", port);
  CHECK(http_body_of(c) == expected_body(next, 2));
  close(c);
  CHECK(pidfile_names(pidfile, next));
  kill(next, SIGTERM);
  CHECK(wait_exited(next));
}

TEST_CASE("a SIGUSR2 storm starts exactly one upgrade") {
  temp_dir dir;
  const int port = free_port();
  service echo(helper_path("GRACE_ECHO"), {"127.0.0.1:" + std::to_string(port)});
  REQUIRE(echo.wait_for("(new socket) as pid"));
  for (int i = 0; i < 50; ++i) kill(echo.first_pid(), SIGUSR2);
  REQUIRE(echo.wait_for("is ready and in charge"));
  auto status = echo.first().wait();
  REQUIRE(status);
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK(echo.count("started generation") == 1);
  const pid_t next = echo.number_after("started generation 2 as pid ");
  const int c = connect_tcp("127.0.0.1", port);
  REQUIRE(c >= 0);
  REQUIRE(write(c, "x\n", 2) == 2);
  CHECK(read_line_from(c) == "x");
  close(c);
  kill(next, SIGTERM);
  CHECK(wait_exited(next));
}

TEST_CASE("a connection still busy at the drain deadline is closed by force and counted") {
  const int port = free_port();
  service echo(helper_path("GRACE_ECHO"), {"127.0.0.1:" + std::to_string(port), "--drain-timeout", "0.3", "--no-migrate"});
  REQUIRE(echo.wait_for("(new socket) as pid"));
  const int busy = connect_tcp("127.0.0.1", port);
  REQUIRE(write(busy, "hi\n", 3) == 3);
  REQUIRE(read_line_from(busy) == "hi");
  const pid_t next = echo.upgrade(echo.first_pid(), 2);
  REQUIRE(echo.wait_for("drain deadline passed: closed 1 connection(s) by force"));
  CHECK(read_line_from(busy) == "");  // EOF
  close(busy);
  auto status = echo.first().wait();
  REQUIRE(status);
  CHECK(WEXITSTATUS(*status) == 0);
  kill(next, SIGTERM);
  CHECK(wait_exited(next));
}

TEST_CASE("SIGTERM drains; a second SIGTERM closes what is left at once") {
  const int port = free_port();
  service echo(helper_path("GRACE_ECHO"), {"127.0.0.1:" + std::to_string(port), "--drain-timeout", "60"});
  REQUIRE(echo.wait_for("(new socket) as pid"));
  const int client = connect_tcp("127.0.0.1", port);
  REQUIRE(write(client, "a\n", 2) == 2);
  REQUIRE(read_line_from(client) == "a");
  echo.first().kill(SIGTERM);
  REQUIRE(echo.wait_for("shutting down: stopped accepting; 1 connection(s)"));
  CHECK(connect_tcp("127.0.0.1", port) < 0);  // nobody accepts any more
  REQUIRE(write(client, "b\n", 2) == 2);      // the open connection is still served
  CHECK(read_line_from(client) == "b");
  echo.first().kill(SIGTERM);
  REQUIRE(echo.wait_for("closed 1 connection(s) now"));
  auto status = echo.first().wait();
  REQUIRE(status);
  CHECK(WEXITSTATUS(*status) == 0);
  close(client);
}

TEST_CASE("generations alive at once are capped; older ones still draining count") {
  const int port = free_port();
  service echo(helper_path("GRACE_ECHO"),
               {"127.0.0.1:" + std::to_string(port), "--drain-timeout", "60", "--max-generations", "3", "--no-migrate"});
  REQUIRE(echo.wait_for("(new socket) as pid"));
  auto hold = [&] {
    const int c = connect_tcp("127.0.0.1", port);
    REQUIRE(write(c, "h\n", 2) == 2);
    REQUIRE(read_line_from(c) == "h");
    return c;
  };
  const int on_first = hold();
  const pid_t second = echo.upgrade(echo.first_pid(), 2);
  const int on_second = hold();
  // Generation 1 still drains; an upgrade from generation 2 may start anyway.
  const pid_t third = echo.upgrade(second, 3);
  kill(third, SIGUSR2);
  REQUIRE(echo.wait_for("upgrade refused: 3 generations alive"));
  // When an older generation finishes, the next upgrade goes through.
  close(on_first);
  auto status = echo.first().wait();
  REQUIRE(status);
  const pid_t fourth = echo.upgrade(third, 4);
  close(on_second);
  CHECK(wait_exited(second));
  CHECK(wait_exited(third));
  kill(fourth, SIGTERM);
  CHECK(wait_exited(fourth));
}

TEST_CASE("systemd notifications arrive in order; abstract and path sockets") {
  for (const bool abstract : {false, true}) {
    CAPTURE(abstract);
    temp_dir dir;
    const std::string path = abstract ? "@grace-notify-" + std::to_string(getpid()) : dir.file("notify");
    const int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::memcpy(un.sun_path, path.data(), path.size());
    if (abstract) un.sun_path[0] = '\0';
    REQUIRE(bind(sock, reinterpret_cast<sockaddr*>(&un), static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size())) == 0);
    auto next_message = [&] {
      pollfd p{sock, POLLIN, 0};
      if (poll(&p, 1, 10000) != 1) return std::string("<none>");
      char buf[512];
      const ssize_t n = recv(sock, buf, sizeof buf, 0);
      return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("<none>");
    };
    const int port = free_port();
    service http(helper_path("GRACE_HTTP"), {"127.0.0.1:" + std::to_string(port)}, {{"NOTIFY_SOCKET", path}});
    const pid_t first = http.first_pid();
    CHECK(next_message() == "READY=1\nMAINPID=" + std::to_string(first));
    REQUIRE(kill(first, SIGUSR2) == 0);
    const std::string reloading = next_message();
    CHECK(reloading.rfind("RELOADING=1\nMONOTONIC_USEC=", 0) == 0);
    const std::string handed = next_message();
    REQUIRE(http.wait_for("is ready and in charge"));
    const pid_t second = http.number_after("started generation 2 as pid ");
    CHECK(handed == "MAINPID=" + std::to_string(second) + "\nREADY=1");
    REQUIRE(http.first().wait());
    kill(second, SIGTERM);
    CHECK(next_message() == "STOPPING=1");
    CHECK(wait_exited(second));
    close(sock);
  }
}

TEST_CASE("no fd leaks across 100 upgrades") {
  const int port = free_port();
  service echo(helper_path("GRACE_ECHO"), {"127.0.0.1:" + std::to_string(port)});
  REQUIRE(echo.wait_for("(new socket) as pid"));
  auto fd_count = [](pid_t pid) {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) ++n;
    return n;
  };
  pid_t current = echo.first_pid();
  std::size_t second_generation_fds = 0;
  for (unsigned generation = 2; generation <= 101; ++generation) {
    const pid_t next = echo.upgrade(current, generation);
    REQUIRE(echo.wait_for("generation " + std::to_string(generation) + ": serving"));
    if (current == echo.first_pid()) REQUIRE(echo.first().wait());
    else REQUIRE(wait_exited(current));
    // The connection channel from the old generation closes as that one exits; the new one says
    // so once it has let go of it.
    REQUIRE(echo.wait_for("generation " + std::to_string(generation) + ": took 0 connection(s) from the previous generation"));
    const std::size_t fds = fd_count(next);
    if (generation == 2) second_generation_fds = fds;
    CHECK_MESSAGE(fds == second_generation_fds, "generation " << generation);
    current = next;
  }
  const int c = connect_tcp("127.0.0.1", port);
  REQUIRE(write(c, "z\n", 2) == 2);
  CHECK(read_line_from(c) == "z");
  close(c);
  kill(current, SIGTERM);
  CHECK(wait_exited(current));
}
