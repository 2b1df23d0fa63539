// grace-listen, with real processes: a socket-activated app that exits after a few answers is
// started again and again under load, and no client is refused or fails; a change under a
// watched path restarts it; a command that fails at once is backed off, not spun; SIGTERM is
// passed on; bad command lines are refused with the reason.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "support/harness_run.hpp"
#include "support/process.hpp"
#include "support/service.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {

std::unique_ptr<child_process> start(const std::vector<std::string>& args) {
  spawn_options options;
  options.argv = {helper_path("GRACE_LISTEN")};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  return std::make_unique<child_process>(options);
}

std::string body_at(const std::string& address) {
  const auto colon = address.rfind(':');
  const int c = connect_tcp(address.substr(0, colon), std::atoi(address.c_str() + colon + 1));
  if (c < 0) return "refused";
  timeval bound{10, 0};  // never wait for ever on a server that does not answer
  setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound);
  const std::string request = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
  if (write(c, request.data(), request.size()) != static_cast<ssize_t>(request.size())) return "write failed";
  std::string in;
  char chunk[1024];
  ssize_t n;
  while ((n = read(c, chunk, sizeof chunk)) > 0) in.append(chunk, static_cast<std::size_t>(n));
  close(c);
  const auto at = in.find("\r\n\r\n");
  return at == std::string::npos ? "no answer" : in.substr(at + 4);
}

}  // namespace

TEST_CASE("an app that exits after a few answers, restarted under load: nothing refused, nothing lost") {
  temp_dir dir;
  const std::string address = free_address();
  // Every 40 answers the app exits and grace-listen starts it again; the clients meanwhile wait
  // in the backlog of the socket grace-listen holds.
  auto run = run_harness({"--target", "tcp://" + address, "--mode", "http-close", "--clients", "8", "--restarts", "0",
                          "--duration", "3", "--server-log", dir.file("server.log"), "--", helper_path("GRACE_LISTEN"),
                          "-s", "tcp:" + address, "--",
                          helper_path("GRACE_PROBE"), "serve-http", address, "40"},
                         dir);
  INFO(run.output);
  CHECK(run.exit_status == 0);
  CHECK(run.verdict.rfind("PASS: 0 lost in ", 0) == 0);
  // It really was restarted, many times.
  std::ifstream log(dir.file("server.log"));
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  CHECK(count_of(text, "(it exited with status 0)") >= 3);
  CHECK(text.find("refused") == std::string::npos);
}

TEST_CASE("SIGHUP and a change under a watched path restart the command; SIGTERM is passed on") {
  temp_dir dir;
  const std::string address = free_address();
  const std::string watched = dir.file("app.conf");
  std::ofstream(watched) << "one\n";
  auto listen = start({"-s", "tcp:" + address, "--name", "web", "--watch", watched, "--", helper_path("GRACE_PROBE"),
                       "serve-http", address, "100000"});
  REQUIRE(listen->wait_stderr("(first start)"));
  const std::string first = body_at(address);
  REQUIRE(first.rfind("pid=", 0) == 0);

  std::ofstream(watched, std::ios::app) << "two\n";
  REQUIRE(listen->wait_stderr("(a change under " + watched + ")", 10s, 2));  // "restarting ..." and "started ..."
  const std::string second = body_at(address);
  CHECK(second.rfind("pid=", 0) == 0);
  CHECK(second != first);

  listen->kill(SIGHUP);
  REQUIRE(listen->wait_stderr("(SIGHUP)", 10s, 2));
  const std::string third = body_at(address);
  CHECK(third != second);

  listen->kill(SIGTERM);
  auto status = listen->wait(10s);
  REQUIRE(status);
  // The probe dies of the SIGTERM passed to it, and grace-listen reports that as a shell would.
  CHECK_MESSAGE((WIFEXITED(*status) && WEXITSTATUS(*status) == 128 + SIGTERM), listen->stderr_text());
  CHECK(listen->stderr_text().find("passing Terminated to pid") != std::string::npos);
}

TEST_CASE("a command that fails at once is backed off, each time longer, not spun") {
  const std::string address = free_address();
  auto listen = start({"-s", "tcp:" + address, "--", "/bin/false"});
  REQUIRE(listen->wait_stderr("(3 fast failure(s) in a row); starting it again in 400 ms", 15s));
  const std::string log = listen->stderr_text();
  CHECK(log.find("(1 fast failure(s) in a row); starting it again in 100 ms") != std::string::npos);
  CHECK(log.find("(2 fast failure(s) in a row); starting it again in 200 ms") != std::string::npos);
  // The socket stays open all along: a client is queued, not refused.
  const auto colon = address.rfind(':');
  const int c = connect_tcp("127.0.0.1", std::atoi(address.c_str() + colon + 1));
  CHECK(c >= 0);
  close(c);
  listen->kill(SIGTERM);
  auto status = listen->wait(10s);
  REQUIRE(status);
  CHECK_MESSAGE((WIFEXITED(*status) && WEXITSTATUS(*status) == 128 + SIGTERM), listen->stderr_text());
}

TEST_CASE("bad command lines are refused with the reason") {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--", "/bin/true"}, "no socket"},
      {{"-s", "tcp:127.0.0.1:1"}, "no command"},
      {{"-s", "ftp:127.0.0.1:21", "--", "/bin/true"}, "expected tcp:HOST:PORT"},
      {{"--name", "web", "-s", "tcp::1", "--", "/bin/true"}, "there is none"},
      {{"-s", "tcp::1", "--name", "a:b", "--", "/bin/true"}, "without ':'"},
      {{"-s", "tcp:127.0.0.1:99999", "--", "/bin/true"}, "tcp:127.0.0.1:99999"},
  };
  for (const auto& one : cases) {
    const std::string& expected = one.second;
    CAPTURE(expected);
    auto listen = start(one.first);
    auto status = listen->wait(10s);
    REQUIRE(status);
    CHECK(WEXITSTATUS(*status) != 0);
    CHECK(listen->stderr_text().find(expected) != std::string::npos);
  }
  auto help = start({"--help"});
  CHECK(help->read_line() == "usage: grace-listen -s KIND:ADDRESS [-s ...] [--name NAME] [--watch PATH]... -- CMD [ARGS...]");
  auto status = help->wait(10s);
  REQUIRE(status);
  CHECK(WEXITSTATUS(*status) == 0);
}

TEST_CASE("any program gets the sockets, a udp one among them, as systemd would pass them") {
  int udp_port = 0;
  close(raw_udp_socket(udp_port));
  const std::string tcp = free_address();
  auto listen = start({"-s", "udp:127.0.0.1:" + std::to_string(udp_port), "-s", "tcp:" + tcp, "--name", "web", "--",
                       "/bin/sh", "-c",
                       "echo \"$LISTEN_FDS $LISTEN_FDNAMES $([ \"$LISTEN_PID\" = \"$$\" ] && echo own-pid)\"; "
                       "stat -L -c %F /proc/self/fd/3 /proc/self/fd/4; exec sleep 60"});
  CHECK(listen->read_line() == "2 udp:web own-pid");
  CHECK(listen->read_line() == "socket");
  CHECK(listen->read_line() == "socket");
  listen->kill(SIGTERM);
  auto status = listen->wait(10s);
  REQUIRE(status);
  CHECK_MESSAGE((WIFEXITED(*status) && WEXITSTATUS(*status) == 128 + SIGTERM), listen->stderr_text());
}

namespace {

// Replaces `path` the way linkers, `cp` + `mv` and editors do: a new file renamed over it.
void replace_by_rename(const std::string& path, const std::string& text) {
  const std::string temporary = path + ".new";
  std::ofstream(temporary) << text;
  REQUIRE(std::rename(temporary.c_str(), path.c_str()) == 0);
}

}  // namespace

TEST_CASE("--watch follows a file replaced by rename, unlinked and re-created, and a directory made again") {
  temp_dir dir;
  const std::string address = free_address();
  const std::string file = dir.file("app.conf");
  const std::string tree = dir.file("static");
  std::ofstream(file) << "0\n";
  REQUIRE(mkdir(tree.c_str(), 0700) == 0);
  auto listen = start({"-s", "tcp:" + address, "--watch", file, "--watch", tree, "--", helper_path("GRACE_PROBE"),
                       "serve-http", address, "100000"});
  REQUIRE(listen->wait_stderr("(first start)"));
  const std::string started_for_file = "(a change under " + file + ")";
  // "restarting ..." and "started ..." name the reason: two lines per restart.
  for (int i = 1; i <= 3; ++i) {
    replace_by_rename(file, std::to_string(i) + "\n");
    REQUIRE_MESSAGE(listen->wait_stderr(started_for_file, 10s, 2 * static_cast<std::size_t>(i)),
                    listen->stderr_text());
  }
  std::remove(file.c_str());
  std::ofstream(file) << "re-created\n";
  REQUIRE_MESSAGE(listen->wait_stderr(started_for_file, 10s, 8), listen->stderr_text());
  std::ofstream(file, std::ios::app) << "written in place\n";
  REQUIRE_MESSAGE(listen->wait_stderr(started_for_file, 10s, 10), listen->stderr_text());

  // The directory: an entry, the directory removed and made again, then an entry in the new one.
  const std::string started_for_tree = "(a change under " + tree + ")";
  std::ofstream(tree + "/a.css") << "a\n";
  REQUIRE_MESSAGE(listen->wait_stderr(started_for_tree, 10s, 2), listen->stderr_text());
  std::remove((tree + "/a.css").c_str());
  REQUIRE(rmdir(tree.c_str()) == 0);
  REQUIRE(mkdir(tree.c_str(), 0700) == 0);
  REQUIRE_MESSAGE(listen->wait_stderr(started_for_tree, 10s, 4), listen->stderr_text());
  std::ofstream(tree + "/b.css") << "b\n";
  REQUIRE_MESSAGE(listen->wait_stderr(started_for_tree, 10s, 6), listen->stderr_text());
  CHECK(body_at(address).rfind("pid=", 0) == 0);
  listen->kill(SIGTERM);
  REQUIRE(listen->wait(10s));
}

TEST_CASE("a command that ignores SIGTERM is killed after --stop-timeout, and says so") {
  const std::string address = free_address();
  // SIG_IGN survives exec: sleep ignores SIGTERM.
  auto listen = start({"-s", "tcp:" + address, "--stop-timeout", "1", "--", "/bin/sh", "-c",
                       "trap '' TERM; echo armed; exec sleep 600"});
  REQUIRE(listen->read_line() == "armed");  // SIGTERM ignored from here on
  listen->kill(SIGTERM);
  auto status = listen->wait(15s);
  REQUIRE_MESSAGE(status, listen->stderr_text());
  CHECK_MESSAGE((WIFEXITED(*status) && WEXITSTATUS(*status) == 128 + SIGKILL), listen->stderr_text());
  const std::string log = listen->stderr_text();
  CHECK(log.find("passing Terminated to pid") != std::string::npos);
  CHECK(log.find("did not exit within 1 s (--stop-timeout) of being told to stop: killing it (SIGKILL)") !=
        std::string::npos);
}

TEST_CASE("a command that exits 0 again and again is started again without back-off") {
  const std::string address = free_address();
  auto listen = start({"-s", "tcp:" + address, "--", "/bin/sh", "-c", "sleep 0.2; exit 0"});
  // With the back-off of fast failures, the 8th start would come after 0.1+0.2+...+6.4 s.
  REQUIRE_MESSAGE(listen->wait_stderr("(it exited with status 0)", 10s, 8), listen->stderr_text());
  const std::string log = listen->stderr_text();
  CHECK(log.find("fast failure") == std::string::npos);
  CHECK(log.find("starting it again in") == std::string::npos);
  listen->kill(SIGTERM);
  REQUIRE(listen->wait(10s));
}

TEST_CASE("--version names the program and grace's version; an unknown option is called unknown") {
  auto version = start({"--version"});
  CHECK(version->read_line().value_or("").rfind("grace-listen (grace) ", 0) == 0);
  auto status = version->wait(10s);
  REQUIRE(status);
  CHECK(WEXITSTATUS(*status) == 0);
  for (const auto& args : std::vector<std::vector<std::string>>{{"--bogus"}, {"-s", "tcp::1", "--bogus"}}) {
    auto bogus = start(args);
    status = bogus->wait(10s);
    REQUIRE(status);
    CHECK(WEXITSTATUS(*status) == 2);
    CHECK(bogus->stderr_text().find("unknown option \"--bogus\"") != std::string::npos);
  }
}

TEST_CASE("without --overlap, a SIGHUP while the command is being stopped starts no second one") {
  const std::string address = free_address();
  auto listen = start({"-s", "tcp:" + address, "--stop-timeout", "1", "--", "/bin/sh", "-c",
                       "trap '' TERM; echo armed; exec sleep 600"});
  REQUIRE(listen->read_line() == "armed");
  listen->kill(SIGHUP);
  REQUIRE(listen->wait_stderr("restarting pid"));
  listen->kill(SIGHUP);  // the first one ignores SIGTERM: it is still being stopped
  REQUIRE_MESSAGE(listen->wait_stderr("killing it (SIGKILL)"), listen->stderr_text());
  // Nothing was started beside the one being stopped...
  const std::string until_kill = listen->stderr_text();
  CHECK(count_of(until_kill.substr(0, until_kill.find("killing it")), "started /bin/sh as pid") == 1);
  // ...and one is, once it is gone.
  REQUIRE(listen->wait_stderr("started /bin/sh as pid", 10s, 2));
  REQUIRE(listen->read_line() == "armed");
  CHECK(count_of(listen->stderr_text(), "restarting pid") == 1);
  listen->kill(SIGTERM);
  auto status = listen->wait(15s);
  REQUIRE(status);
  CHECK_MESSAGE((WIFEXITED(*status) && WEXITSTATUS(*status) == 128 + SIGKILL), listen->stderr_text());
}
