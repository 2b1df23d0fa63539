// Worker groups: one socket shared by N loops, or an SO_REUSEPORT group of N; the whole group
// handed over, and a group whose size changes from one generation to the next, with nothing that
// queued on any member lost.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "grace/grace.hpp"
#include "support/errors.hpp"
#include "support/harness_run.hpp"
#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/service.hpp"

using namespace test_support;

namespace {

std::vector<int> counts_of(const std::string& line, const std::string& prefix) {
  std::vector<int> out;
  if (line.rfind(prefix, 0) != 0) return out;
  std::stringstream in(line.substr(prefix.size()));
  std::string each;
  while (std::getline(in, each, ',')) out.push_back(std::stoi(each));
  return out;
}

int nonzero(const std::vector<int>& counts) {
  int n = 0;
  for (int c : counts) n += c != 0;
  return n;
}

// This process holds a group of `now` sockets with `queued` connections waiting on them; a probe
// started with them (a new generation) asks for `next` and accepts everything, then `fresh` more.
struct regroup_report {
  std::string members;
  std::vector<int> queued, fresh;
};

regroup_report regroup(std::size_t now, std::size_t next, int queued, int fresh) {
  grace::net net;
  grace::listen_options options;
  options.reuse_port = true;
  auto group = net.listen_group("tcp", "127.0.0.1:0", now, options);
  REQUIRE_MESSAGE(group, error_text(group));
  const int port = group->members.front()->local_address().port();
  std::vector<int> clients;
  for (int i = 0; i < queued; ++i) clients.push_back(connect_tcp("127.0.0.1", port));
  int report[2];
  REQUIRE(pipe2(report, O_CLOEXEC) == 0);
  grace::process_options p;
  p.executable_path = helper_path("GRACE_PROBE");
  p.extra_fds = {report[1]};
  p.extra_env = {"GRACE_PROBE_MODE=group",
                 "GRACE_PROBE_ADDRESS=127.0.0.1:" + std::to_string(port),
                 "GRACE_PROBE_COUNT=" + std::to_string(next),
                 "GRACE_PROBE_QUEUED=" + std::to_string(queued),
                 "GRACE_PROBE_NEW=" + std::to_string(fresh),
                 "GRACE_PROBE_REPORT_FD=" + std::to_string(3 + now)};
  auto pid = net.start_process(p);
  REQUIRE_MESSAGE(pid, error_text(pid));
  close(report[1]);
  regroup_report out;
  out.members = read_line_from(report[0], 10s);
  out.queued = counts_of(read_line_from(report[0], 10s), "queued ");
  const std::string steered = read_line_from(report[0], 10s);
  CHECK(steered == "steered");
  for (int i = 0; i < fresh; ++i) clients.push_back(connect_tcp("127.0.0.1", port));
  out.fresh = counts_of(read_line_from(report[0], 15s), "new ");
  close(report[0]);
  CHECK(wait_exited(*pid, 10s));
  int status = 0;
  waitpid(*pid, &status, 0);
  for (int c : clients) close(c);
  return out;
}

std::string body_of(int port) {
  const int fd = connect_tcp("127.0.0.1", port);
  if (fd < 0) return "";
  auto r = http_get(fd, 10s);
  close(fd);
  return r ? r->body : "";
}

}  // namespace

TEST_CASE("a group that shrinks 3 -> 1: what queued on every member is accepted, new connections go to the first") {
  const auto r = regroup(3, 1, 30, 20);
  CHECK(r.members == "members 3 steered 1");
  REQUIRE(r.queued.size() == 3);
  CHECK(std::accumulate(r.queued.begin(), r.queued.end(), 0) == 30);
  CHECK(nonzero(r.queued) >= 2);  // the kernel had spread them over the old group
  CHECK(r.fresh == std::vector<int>{20, 0, 0});
}

TEST_CASE("a group that grows 1 -> 3: the inherited socket stays first and the new members share new connections") {
  const auto r = regroup(1, 3, 10, 40);
  CHECK(r.members == "members 3 steered 3");
  CHECK(r.queued == std::vector<int>{10, 0, 0});
  REQUIRE(r.fresh.size() == 3);
  CHECK(std::accumulate(r.fresh.begin(), r.fresh.end(), 0) == 40);
  CHECK(nonzero(r.fresh) >= 2);
}

TEST_CASE("grace-http --workers 2: the body names pid, generation and worker; with --reuse-port both answer") {
  for (const bool reuse_port : {false, true}) {
    CAPTURE(reuse_port);
    temp_dir dir;
    const std::string address = free_address();
    spawn_options o;
    o.argv = {helper_path("GRACE_HTTP"), address, "--workers", "2"};
    if (reuse_port) o.argv.push_back("--reuse-port");
    child_process http(o);
    REQUIRE(http.wait_stderr("on 2 worker(s)"));
    const int port = std::stoi(address.substr(address.rfind(':') + 1));
    std::set<std::string> bodies;
    for (int i = 0; i < 200 && bodies.size() < 2; ++i) {
      const std::string body = body_of(port);
      REQUIRE(!body.empty());
      bodies.insert(body);
    }
    for (const auto& b : bodies)
      CHECK((b == expected_body(http.pid(), 1, 0) || b == expected_body(http.pid(), 1, 1)));
    if (reuse_port) CHECK(bodies.size() == 2);
  }
}

TEST_CASE("the referee: grace-http --workers 2, both strategies, keep-alive and close: PASS across 20 restarts") {
  for (const bool reuse_port : {false, true})
    for (const char* mode : {"http-keepalive", "http-close"}) {
      CAPTURE(reuse_port);
      CAPTURE(mode);
      temp_dir dir;
      const std::string address = free_address(), pidfile = dir.file("http.pid");
      std::vector<std::string> args = {"--target", "tcp://" + address, "--mode", mode, "--clients", "16",
                                       "--restarts", "20", "--pidfile", pidfile, "--", helper_path("GRACE_HTTP"),
                                       address, "--pidfile", pidfile, "--workers", "2"};
      if (reuse_port) args.push_back("--reuse-port");
      check_pass(run_harness(args, dir), 20);
    }
}

TEST_CASE("the referee: the number of workers changes at every takeover (2, 1, 3, 2, ...) under load: PASS") {
  struct variant {
    const char* mode;
    bool reuse_port;
  };
  for (const variant v : {variant{"http-keepalive", true}, variant{"http-close", true}, variant{"http-keepalive", false}}) {
    CAPTURE(v.mode);
    CAPTURE(v.reuse_port);
    temp_dir dir;
    const std::string address = free_address();
    const std::string common = address + " --pidfile " + dir.file("server.pid") + " --handover-socket " +
                               dir.file("handover.sock") + " --drain-timeout 5" + (v.reuse_port ? " --reuse-port" : "");
    // Each restart starts the next server itself, with the next worker count, as a deploy that
    // resizes would.
    const std::string script = dir.file("next.sh");
    std::ofstream(script) << "c=$(cat " << dir.file("count") << " 2>/dev/null || echo 0); c=$((c + 1)); echo $c > "
                          << dir.file("count") << "\n"
                          << "case $((c % 3)) in 1) n=1;; 2) n=3;; *) n=2;; esac\n"
                          << "echo \"restart $c: $n worker(s)\" >> " << dir.file("takers.log") << "\n"
                          << helper_path("GRACE_HTTP") << " " << common << " --workers $n 2>>" << dir.file("takers.log")
                          << " &\n";
    auto run = run_harness({"--target", "tcp://" + address, "--mode", v.mode, "--clients", "16", "--restarts", "9",
                            "--pidfile", dir.file("server.pid"), "--restart-cmd", "/bin/sh " + script, "--",
                            "/bin/sh", "-c", "exec " + helper_path("GRACE_HTTP") + " " + common + " --workers 2"},
                           dir);
    check_pass(run, 9);
    std::ifstream in(dir.file("takers.log"));
    const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    INFO(log);
    CHECK(log.find("on 1 worker(s)") != std::string::npos);
    CHECK(log.find("on 3 worker(s)") != std::string::npos);
    if (v.reuse_port) {
      // The group never shrank: a one-worker generation after a three-worker one still served three
      // inherited sockets.
      CHECK(log.find("(inherited, name unknown), 127.0.0.1") != std::string::npos);
    }
  }
}
