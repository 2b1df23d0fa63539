// grace-listen --overlap, with real processes: the next generation starts beside the serving one
// and takes over once it says READY=1; the old one then drains. Under the referee: Debian's
// gunicorn (an application nobody here wrote) and grace-http (whose keep-alive connections move
// to the new generation), and grace-listen as PID 1 of a pid namespace. Rollbacks (a new
// generation that exits at once, one that never says READY=1 and ignores SIGTERM), the cap on
// generations alive, and `grace-listen --reload`, which waits for the outcome.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "support/harness_run.hpp"
#include "support/process.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {

std::unique_ptr<child_process> start(const std::vector<std::string>& args) {
  spawn_options options;
  options.argv = {helper_path("GRACE_LISTEN")};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  return std::make_unique<child_process>(options);
}

struct reload_outcome {
  int status = -1;
  std::string output;
};

// `grace-listen --reload TARGET`, as a deploy script or ExecReload= runs it.
reload_outcome reload(const std::string& target) {
  spawn_options options;
  options.argv = {helper_path("GRACE_LISTEN"), "--reload", target};
  child_process client(options);
  reload_outcome out;
  while (auto line = client.read_line(30s)) out.output += *line + "\n";
  auto status = client.wait(30s);
  REQUIRE(status);
  out.status = WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
  out.output += client.stderr_text();
  return out;
}

std::string body_at(const std::string& address) {
  const auto colon = address.rfind(':');
  const int c = connect_tcp(address.substr(0, colon), std::atoi(address.c_str() + colon + 1));
  if (c < 0) return "refused";
  timeval bound{10, 0};
  setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound);
  const std::string request = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
  if (write(c, request.data(), request.size()) != static_cast<ssize_t>(request.size())) return "write failed";
  std::string in;
  char chunk[1024];
  ssize_t n;
  while ((n = read(c, chunk, sizeof chunk)) > 0) in.append(chunk, static_cast<std::size_t>(n));
  close(c);
  const auto at = in.find("\r\n\r\n");
  return at == std::string::npos ? "no answer" : in.substr(at + 4);
}

// What the server wrote, kept by the referee's --server-log.
std::string server_log(const temp_dir& dir) {
  std::ifstream log(dir.file("server.log"));
  return std::string((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
}

// The pids grace-listen's log lines carry ("grace-listen[PID]: ...").
std::set<std::string> listen_pids(const std::string& log) {
  std::set<std::string> pids;
  for (std::size_t at = log.find("grace-listen["); at != std::string::npos; at = log.find("grace-listen[", at + 1))
    pids.insert(log.substr(at + 13, log.find(']', at) - at - 13));
  return pids;
}

}  // namespace

TEST_CASE("gunicorn behind grace-listen --overlap: 10 upgrades, nothing refused or lost, one pid") {
  const char* gunicorn = "/usr/bin/gunicorn";
  if (access(gunicorn, X_OK) != 0) {
    MESSAGE("SKIPPED: " << gunicorn << " is not installed (apt-get install gunicorn; tools/setup.sh does)");
    return;
  }
  temp_dir dir;
  std::ofstream(dir.file("app.py")) << "def app(environ, start_response):\n"
                                       "    body = b'hello from gunicorn\\n'\n"
                                       "    start_response('200 OK', [('Content-Type', 'text/plain'),\n"
                                       "                              ('Content-Length', str(len(body)))])\n"
                                       "    return [body]\n";
  const std::string address = free_address();
  const std::string control = dir.file("control.sock");
  // gunicorn takes LISTEN_FDS and says READY=1 on NOTIFY_SOCKET; SIGTERM makes it finish what
  // it serves and exit. --timeout bounds how long an idle sync worker takes to notice.
  auto run = run_harness({"--target", "tcp://" + address, "--mode", "http-close", "--clients", "8", "--restarts", "10",
                          "--server-log", dir.file("server.log"), "--restart-cmd",
                          helper_path("GRACE_LISTEN") + " --reload " + control, "--",
                          helper_path("GRACE_LISTEN"), "--overlap", "--control", control, "--ready-timeout", "30",
                          "-s", "tcp:" + address, "--", gunicorn, "--chdir", dir.path(), "--workers", "2",
                          "--timeout", "4", "--graceful-timeout", "10", "app:app"},
                         dir);
  check_pass(run, 10);  // a refused connection would be a loss
  const std::string log = server_log(dir);
  INFO(log);
  // One grace-listen all along, and eleven generations that each said READY=1 themselves.
  CHECK(listen_pids(log).size() == 1);
  CHECK(count_of(log, "is ready (READY=1)") == 11);
  CHECK(count_of(log, "rollback") == 0);
}

TEST_CASE("grace-http behind grace-listen --overlap keeps every keep-alive connection across 10 upgrades") {
  temp_dir dir;
  const std::string address = free_address();
  const std::string control = dir.file("control.sock");
  auto run = run_harness({"--target", "tcp://" + address, "--mode", "http-keepalive", "--clients", "16", "--restarts",
                          "10", "--think-ms", "0-30", "--server-log", dir.file("server.log"), "--restart-cmd",
                          helper_path("GRACE_LISTEN") + " --reload " + control, "--", helper_path("GRACE_LISTEN"),
                          "--overlap", "--control", control, "-s", "tcp:" + address, "--", helper_path("GRACE_HTTP"),
                          address},
                         dir);
  check_pass(run, 10);
  const auto json = nlohmann::json::parse(run.json);
  // The old generation hands its idle connections to the new one: the server ends none.
  CHECK(json["server_ended_connections"]["idle"] == 0);
  CHECK(json["server_ended_connections"]["after_answer"] == 0);
  const std::string log = server_log(dir);
  INFO(log);
  CHECK(listen_pids(log).size() == 1);
  // The old generation said the new one was ready (MAINPID=<new> READY=1), after the takeover.
  CHECK(count_of(log, " READY=1) after ") == 10);
  CHECK(count_of(log, "rollback") == 0);
}

TEST_CASE("rollback: a new generation that exits at once, or never says READY=1, leaves the old one serving") {
  temp_dir dir;
  const std::string address = free_address();
  const std::string control = dir.file("control.sock");
  // The next release is broken in the way a file in the directory says.
  const std::string command = "if [ -e " + dir.file("exit") + " ]; then exit 3; fi; if [ -e " + dir.file("hang") +
                              " ]; then trap '' TERM; exec sleep 600; fi; exec " + helper_path("GRACE_HTTP") + " " +
                              address;
  auto listen = start({"--overlap", "--control", control, "--ready-timeout", "2", "--stop-timeout", "1", "-s",
                       "tcp:" + address, "--", "/bin/sh", "-c", command});
  REQUIRE(listen->wait_stderr("is ready (READY=1) and serves"));
  const std::string first = body_at(address);
  REQUIRE(first.rfind("pid=", 0) == 0);

  std::ofstream(dir.file("exit")) << "";
  auto outcome = reload(control);
  CHECK(outcome.status == 1);
  CHECK(outcome.output.find("rollback: pid ") != std::string::npos);
  CHECK(outcome.output.find("(generation 2) exited with status 3 before it was ready") != std::string::npos);
  CHECK(body_at(address) == first);

  std::remove(dir.file("exit").c_str());
  std::ofstream(dir.file("hang")) << "";
  outcome = reload(control);
  CHECK(outcome.status == 1);
  CHECK(outcome.output.find("(generation 3) was not ready within 2 s (--ready-timeout)") != std::string::npos);
  CHECK(body_at(address) == first);
  // It ignores SIGTERM: killed after the stop timeout.
  REQUIRE_MESSAGE(listen->wait_stderr("(generation 3) did not exit within 1 s (--stop-timeout)"),
                  listen->stderr_text());
  REQUIRE_MESSAGE(listen->wait_stderr("(generation 3) was killed by Killed after it was told to stop"),
                  listen->stderr_text());

  // A good release then goes through, and the old one drains and exits.
  std::remove(dir.file("hang").c_str());
  outcome = reload(control);
  CHECK(outcome.status == 0);
  CHECK(outcome.output.find("(generation 4) serves") != std::string::npos);
  const std::string now = body_at(address);
  CHECK(now.rfind("pid=", 0) == 0);
  CHECK(now != first);
  // It drained (nothing to finish) and left. grace-listen's SIGTERM, sent as the new one said it
  // is ready, can land in the last moments of that exit, once the upgrader has given the signal
  // back to its default: then the same end is reported as the SIGTERM it was told to stop with.
  REQUIRE_MESSAGE(listen->wait_stderr("after it was told to stop", 10s, 2), listen->stderr_text());
  const std::string told = listen->stderr_text();
  CHECK_MESSAGE((told.find("(generation 1) exited with status 0 after it was told to stop") != std::string::npos ||
                 told.find("(generation 1) was killed by Terminated after it was told to stop") != std::string::npos),
                told);
  CHECK_MESSAGE(told.find("generation 1: drained; exiting") != std::string::npos, told);

  listen->kill(SIGTERM);
  auto status = listen->wait(20s);
  REQUIRE(status);
  CHECK(WEXITSTATUS(*status) == 0);  // grace-http drains and exits 0
}

TEST_CASE("the cap: no more generations alive than --max-generations, draining ones included") {
  temp_dir dir;
  const std::string address = free_address();
  // Generations that never leave on SIGTERM: each one told to stop stays until the stop timeout.
  // Each says "armed" once it ignores SIGTERM; it is sent SIGTERM only once the next one is
  // ready, and the next one is started only after that line.
  auto listen = start({"--overlap", "--ready-after", "0.2", "--max-generations", "3", "--stop-timeout", "5", "-s",
                       "tcp:" + address, "--", "/bin/sh", "-c", "trap '' TERM; echo armed; exec sleep 600"});
  REQUIRE(listen->wait_stderr("(generation 1) is ready (it ran for 0.2 s (--ready-after))"));
  REQUIRE(listen->read_line() == "armed");
  listen->kill(SIGHUP);
  REQUIRE(listen->wait_stderr("(generation 2) is ready"));
  REQUIRE(listen->read_line() == "armed");
  listen->kill(SIGHUP);
  REQUIRE(listen->wait_stderr("(generation 3) is ready"));
  REQUIRE(listen->read_line() == "armed");
  // Generations 1 and 2 drain (they ignore SIGTERM), 3 serves: a fourth would exceed the cap.
  listen->kill(SIGHUP);
  REQUIRE_MESSAGE(listen->wait_stderr("SIGHUP: not now: 3 generation(s) alive"), listen->stderr_text());
  CHECK(listen->stderr_text().find("--max-generations is 3") != std::string::npos);
  CHECK(listen->stderr_text().find("(generation 4)") == std::string::npos);
  // Once the stop timeout has removed one, the next upgrade goes through.
  REQUIRE_MESSAGE(listen->wait_stderr("(generation 1) was killed by Killed after it was told to stop", 15s),
                  listen->stderr_text());
  listen->kill(SIGHUP);
  REQUIRE_MESSAGE(listen->wait_stderr("(generation 4) is ready"), listen->stderr_text());
  REQUIRE(listen->read_line() == "armed");
  listen->kill(SIGTERM);
  auto status = listen->wait(20s);
  REQUIRE_MESSAGE(status, listen->stderr_text());
  CHECK(WEXITSTATUS(*status) == 128 + SIGKILL);  // the serving one ignored SIGTERM too
}

TEST_CASE("grace-listen --overlap as PID 1 of a pid namespace: 10 upgrades under the referee, 0 lost") {
  {
    spawn_options probe;
    probe.argv = {"/usr/bin/unshare", "--pid", "--fork", "--mount-proc", "/bin/true"};
    child_process p(probe);
    auto status = p.wait(10s);
    if (!status || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      MESSAGE("SKIPPED: unshare --pid --fork --mount-proc does not work here (needs root): " << p.stderr_text());
      return;
    }
  }
  temp_dir dir;
  const std::string address = free_address();
  const std::string control = dir.file("control.sock");
  // HEAD: grace-http's body names its pid as seen in its own namespace, which the referee (in
  // the parent namespace) would take for a pid of its own.
  auto run = run_harness({"--target", "tcp://" + address, "--mode", "http-keepalive", "--method", "HEAD", "--clients",
                          "16", "--restarts", "10", "--server-log", dir.file("server.log"), "--restart-cmd",
                          helper_path("GRACE_LISTEN") + " --reload " + control, "--", "/usr/bin/unshare", "--pid",
                          "--fork", "--mount-proc", helper_path("GRACE_LISTEN"), "--overlap",
                          "--control", control, "-s", "tcp:" + address, "--", helper_path("GRACE_HTTP"), address},
                         dir);
  check_pass(run, 10);
  const std::string log = server_log(dir);
  INFO(log);
  // PID 1 of its namespace all along: its generations exit and are reaped, and it stays.
  CHECK(listen_pids(log) == std::set<std::string>{"1"});
  CHECK(count_of(log, " READY=1) after ") == 10);
}

TEST_CASE("a real container runtime: systemd-nspawn runs grace-listen --overlap as PID 1, 10 upgrades, 0 lost") {
  // As `docker run` starts an entrypoint: no init (-b), the command is the container's PID 1. The
  // container shares this network namespace, so the referee outside reaches it on loopback.
  const char* const nspawn = "/usr/bin/systemd-nspawn";
  if (geteuid() != 0 || access(nspawn, X_OK) != 0) {
    MESSAGE("SKIPPED: systemd-nspawn is missing or this is not root (tools/setup.sh installs systemd-container)");
    return;
  }
  temp_dir dir;
  const std::string address = free_address();
  const std::string control = dir.file("control.sock");
  // The build's programs and this test's directory, at the same paths inside; the rest of the
  // container is the host's /usr, read-only, on a fresh tmpfs.
  const std::string listen = helper_path("GRACE_LISTEN"), http = helper_path("GRACE_HTTP");
  const std::string build_root = listen.substr(0, listen.rfind("/tools/"));
  std::vector<std::string> container = {nspawn, "-D", "/", "--volatile=yes", "--register=no", "--keep-unit", "--quiet",
                                        "--console=pipe", "--bind-ro=" + build_root, "--bind=" + dir.path()};
  {
    spawn_options probe;
    probe.argv = container;
    probe.argv.push_back("/bin/true");
    child_process p(probe);
    auto status = p.wait(60s);
    if (!status || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      MESSAGE("SKIPPED: systemd-nspawn cannot start a container here: " << p.stderr_text());
      return;
    }
  }
  std::vector<std::string> args = {"--target", "tcp://" + address, "--mode", "http-keepalive", "--method", "HEAD",
                                   "--clients", "16", "--restarts", "10", "--server-log", dir.file("server.log"),
                                   "--restart-cmd", listen + " --reload " + control, "--"};
  args.insert(args.end(), container.begin(), container.end());
  for (const std::string& a : {listen, std::string("--overlap"), std::string("--control"), control, std::string("-s"),
                               "tcp:" + address, std::string("--"), http, address})
    args.push_back(a);
  auto run = run_harness(args, dir);
  check_pass(run, 10);
  const std::string log = server_log(dir);
  INFO(log);
  CHECK(listen_pids(log) == std::set<std::string>{"1"});
  CHECK(count_of(log, " READY=1) after ") == 10);
}

TEST_CASE("--reload refuses a second upgrade while one is under way, and talks only to the pid it names") {
  temp_dir dir;
  const std::string address = free_address();
  // Ready only 1.5 s after it starts: long enough to ask again meanwhile.
  auto listen = start({"--overlap", "--ready-after", "1.5", "--ready-timeout", "10", "-s", "tcp:" + address, "--",
                       "/bin/sh", "-c", "exec sleep 600"});
  REQUIRE(listen->wait_stderr("(generation 1) is ready"));
  const std::string pid = std::to_string(listen->pid());
  spawn_options first;
  first.argv = {helper_path("GRACE_LISTEN"), "--reload", pid};
  child_process waiting(first);
  REQUIRE(listen->wait_stderr("upgrading (--reload)"));
  auto second = reload(pid);
  CHECK(second.status == 1);
  CHECK(second.output.find("an upgrade is under way") != std::string::npos);
  auto status = waiting.wait(15s);
  REQUIRE(status);
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK(waiting.read_line().value_or("").find("(generation 2) serves") != std::string::npos);
  // A pid that is not a grace-listen's: nothing answers there.
  auto wrong = reload(std::to_string(getpid()));
  CHECK(wrong.status == 2);
  listen->kill(SIGTERM);
  REQUIRE(listen->wait(20s));
}

TEST_CASE("grace-listen speaks for the service: READY=1, RELOADING=1, READY=1, STOPPING=1; its commands tell it") {
  temp_dir dir;
  const std::string manager_path = dir.file("manager.sock");
  const int manager = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  std::memcpy(un.sun_path, manager_path.c_str(), manager_path.size() + 1);
  REQUIRE(bind(manager, reinterpret_cast<sockaddr*>(&un), sizeof un) == 0);
  auto next_message = [&] {
    pollfd p{manager, POLLIN, 0};
    if (poll(&p, 1, 15000) != 1) return std::string("<none>");
    char buf[512];
    const ssize_t n = recv(manager, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string("<none>");
  };
  const std::string address = free_address();
  const std::string control = dir.file("control.sock");
  const std::string command = "if [ -e " + dir.file("exit") + " ]; then exit 3; fi; exec " + helper_path("GRACE_HTTP") +
                              " " + address;
  spawn_options options;
  options.argv = {helper_path("GRACE_LISTEN"), "--overlap", "--control", control, "-s", "tcp:" + address, "--",
                  "/bin/sh", "-c", command};
  options.env["NOTIFY_SOCKET"] = manager_path;
  child_process listen(options);
  // grace-http's own READY=1 and MAINPID= go to grace-listen, which alone tells the manager.
  CHECK(next_message() == "READY=1");
  auto outcome = reload(control);
  CHECK(outcome.status == 0);
  CHECK(next_message().rfind("RELOADING=1\nMONOTONIC_USEC=", 0) == 0);
  CHECK(next_message() == "READY=1");
  // A rolled-back upgrade ends the reload too.
  std::ofstream(dir.file("exit")) << "";
  outcome = reload(control);
  CHECK(outcome.status == 1);
  CHECK(next_message().rfind("RELOADING=1\nMONOTONIC_USEC=", 0) == 0);
  CHECK(next_message() == "READY=1");
  std::remove(dir.file("exit").c_str());

  // The serving generation crashing is no outage: it is started again with the sockets held.
  const std::string before = body_at(address);
  REQUIRE(before.rfind("pid=", 0) == 0);
  REQUIRE(kill(std::atoi(before.c_str() + 4), SIGKILL) == 0);
  CHECK(body_at(address).rfind("pid=", 0) == 0);
  REQUIRE(listen.wait_stderr("(it was killed by Killed)"));
  CHECK(next_message() == "READY=1");  // the new one serves

  listen.kill(SIGTERM);
  CHECK(next_message() == "STOPPING=1");
  auto status = listen.wait(20s);
  REQUIRE(status);
  CHECK(WEXITSTATUS(*status) == 0);
  close(manager);
}

TEST_CASE("a command that re-executes itself stays tracked, and orphans are reaped") {
  temp_dir dir;
  const std::string address = free_address();
  const std::string orphan_file = dir.file("orphan.pid");
  // The shell leaves an orphan behind (a subshell's background sleep), then becomes grace-http.
  const std::string command = "(sleep 1 & echo $! > " + orphan_file + ".tmp; mv " + orphan_file + ".tmp " +
                              orphan_file + "); exec " + helper_path("GRACE_HTTP") + " " + address;
  auto listen = start({"--overlap", "-s", "tcp:" + address, "--", "/bin/sh", "-c", command});
  REQUIRE(listen->wait_stderr("(generation 1) is ready (READY=1) and serves"));
  const std::string first = body_at(address);
  REQUIRE(first.rfind("pid=", 0) == 0);

  // The orphan became grace-listen's child (a child subreaper) and is reaped once it exits: its
  // pid disappears, a zombie would not.
  const pid_t orphan = wait_pidfile(orphan_file, [](pid_t p) { return p > 0; });
  REQUIRE(orphan > 0);
  REQUIRE(wait_exited(orphan, 10s));
  bool reaped = false;
  for (int i = 0; i < 500 && !reaped; ++i) {
    reaped = kill(orphan, 0) != 0 && errno == ESRCH;
    if (!reaped) usleep(10000);  // bounded: the reap follows the exit within one turn of its loop
  }
  CHECK(reaped);

  // SIGUSR2 to grace-http itself: it re-executes, and says MAINPID=<new> READY=1; grace-listen
  // follows the new process, which becomes its child once the old one exits.
  const pid_t old_pid = std::atoi(first.c_str() + 4);
  REQUIRE(kill(old_pid, SIGUSR2) == 0);
  REQUIRE_MESSAGE(listen->wait_stderr("(MAINPID=), which stands for it from now on"), listen->stderr_text());
  const std::string old_gone =
      "pid " + std::to_string(old_pid) + " (generation 1) exited with status 0 after it handed over";
  REQUIRE_MESSAGE(listen->wait_stderr(old_gone), listen->stderr_text());
  const std::string second = body_at(address);
  CHECK(second.rfind("pid=", 0) == 0);
  CHECK(second != first);
  // ...and is the one an upgrade replaces, through the hand-over socket it inherited.
  auto outcome = reload(std::to_string(listen->pid()));
  CHECK(outcome.status == 0);
  CHECK(body_at(address) != second);
  listen->kill(SIGTERM);
  auto status = listen->wait(20s);
  REQUIRE(status);
  CHECK(WEXITSTATUS(*status) == 0);
}
