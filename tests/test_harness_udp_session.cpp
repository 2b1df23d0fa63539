// restart-harness --mode udp-session refereed: sessions of grace-udp-session kept across
// restarts by flow affinity PASS with none broken; the same restarts without affinity break
// sessions, and the run says how many and FAILs; bad option values are refused by name.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/harness_run.hpp"
#include "support/process.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {

std::string free_udp_address() {
  int port = 0;
  close(raw_udp_socket(port));
  return "127.0.0.1:" + std::to_string(port);
}

// udp-session against grace-udp-session with `affinity`: 16 sessions of 1 s, a restart every
// 0.5 s (so that each session spans one or two), followed through the pid file. The server may
// keep a few generations at once while their sessions end.
harness_run run_sessions(const std::string& affinity, unsigned restarts, const temp_dir& dir) {
  const std::string address = free_udp_address(), pidfile = dir.file("session.pid");
  return run_harness({"--target", "udp://" + address, "--mode", "udp-session", "--clients", "16", "--session-ms",
                      "1000", "--restarts", std::to_string(restarts), "--interval", "0.5", "--pidfile", pidfile,
                      "--server-log", dir.file("server.log"), "--", helper_path("GRACE_UDP_SESSION"), address,
                      "--pidfile", pidfile, "--affinity", affinity, "--max-generations", "16"},
                     dir);
}

std::string server_log(const temp_dir& dir) {
  std::ifstream in(dir.file("server.log"));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("udp-session, --affinity forward: no session broken, no datagram lost across 5 restarts") {
  temp_dir dir;
  const auto run = run_sessions("forward", 5, dir);
  INFO(run.output);
  INFO(server_log(dir));
  check_pass(run, 5);
  CHECK(run.verdict.find(", 0 of ") != std::string::npos);
  REQUIRE_FALSE(run.json.empty());
  const auto json = nlohmann::json::parse(run.json);
  const auto& figures = json["udp_session"];
  CHECK(figures["sessions"]["broken"] == 0);
  CHECK(figures["datagrams"]["lost"] == 0);
  CHECK(figures["datagrams"]["sent"] == figures["datagrams"]["answered"]);
  CHECK(figures["sessions"]["opened"].get<unsigned>() >= 16);
  CHECK(figures["sessions"]["completed"].get<unsigned>() > 0);
  // Sessions did span restarts: a replaced generation answered some of its own after the
  // takeover, and at least one replaced generation ended once its sessions had.
  CHECK(figures["answers"]["draining"].get<unsigned>() > 0);
  CHECK(figures["old_generations"]["exited"].get<unsigned>() >= 1);
  REQUIRE(json["restarts"].size() == 5);
  for (const auto& restart : json["restarts"]) {
    CHECK(restart["completed"] == true);
    CHECK(restart["replaced_pid"].get<pid_t>() > 0);
    CHECK(restart["new_pid"] != restart["replaced_pid"]);
  }
}

TEST_CASE("udp-session, --affinity off: the sessions a restart breaks are counted, and the run FAILs") {
  temp_dir dir;
  const auto run = run_sessions("off", 3, dir);
  INFO(run.output);
  INFO(server_log(dir));
  CHECK(run.exit_status == 1);
  CHECK(run.verdict.rfind("FAIL: ", 0) == 0);
  CHECK(run.verdict.find(" sessions broken (") != std::string::npos);
  CHECK(run.output.find("restarts: 3 of 3 completed") != std::string::npos);
  REQUIRE_FALSE(run.json.empty());
  const auto json = nlohmann::json::parse(run.json);
  CHECK(json["verdict"] == "FAIL");
  const auto& sessions = json["udp_session"]["sessions"];
  CHECK(sessions["broken"].get<unsigned>() > 0);
  // The new generation holds none of the old sessions: it says so (UNKNOWN).
  CHECK(sessions["broken_unknown"].get<unsigned>() > 0);
  CHECK(sessions["broken"] == sessions["broken_unknown"].get<unsigned>() + sessions["broken_replay"].get<unsigned>() +
                                  sessions["broken_no_answer"].get<unsigned>() + sessions["broken_wrong"].get<unsigned>());
  // The timeline shows them, every one, where they broke.
  std::ifstream svg_file(dir.file("run.svg"));
  const std::string svg((std::istreambuf_iterator<char>(svg_file)), std::istreambuf_iterator<char>());
  const std::string bar_end = " sessions broken</title>";
  unsigned plotted = 0;
  for (auto at = svg.find(bar_end); at != std::string::npos; at = svg.find(bar_end, at + 1))
    plotted += static_cast<unsigned>(std::stoul(svg.substr(svg.rfind('>', at) + 1)));
  CHECK(plotted == sessions["broken"].get<unsigned>());
}

TEST_CASE("udp-session behind grace-listen --overlap: the holder stays the main pid, no session broken") {
  temp_dir dir;
  const std::string address = free_udp_address(), control = dir.file("control.sock");
  const auto run = run_harness({"--target", "udp://" + address, "--mode", "udp-session", "--clients", "16",
                                "--session-ms", "1000", "--restarts", "3", "--interval", "0.5", "--server-log",
                                dir.file("server.log"), "--restart-cmd",
                                helper_path("GRACE_LISTEN") + " --reload " + control, "--",
                                helper_path("GRACE_LISTEN"), "--overlap", "--control", control, "-s", "udp:" + address,
                                "--", helper_path("GRACE_UDP_SESSION"), address, "--max-generations", "16"},
                               dir);
  INFO(run.output);
  INFO(server_log(dir));
  check_pass(run, 3);
  REQUIRE_FALSE(run.json.empty());
  const auto json = nlohmann::json::parse(run.json);
  CHECK(json["udp_session"]["sessions"]["broken"] == 0);
  CHECK(json["udp_session"]["answers"]["draining"].get<unsigned>() > 0);
  REQUIRE(json["restarts"].size() == 3);
  for (const auto& restart : json["restarts"]) {
    // grace-listen is the main pid every time; the generations are its children.
    CHECK(restart["old_pid"] == json["restarts"][0]["old_pid"]);
    CHECK(restart["replaced_pid"] != restart["old_pid"]);
    CHECK(restart["new_pid"] != restart["replaced_pid"]);
  }
}

TEST_CASE("udp-session options: bad values are refused with an error naming the option") {
  const std::vector<std::pair<std::vector<std::string>, std::string>> refused = {
      {{"--session-ms", "0"}, "--session-ms must be 1 to"},
      {{"--session-ms", "-5"}, "--session-ms needs a non-negative number"},
      {{"--session-ms", "soon"}, "--session-ms needs a non-negative number, not \"soon\""},
      {{"--session-ms", "inf"}, "--session-ms needs a non-negative number"},
      {{"--session-ms", "3600001"}, "--session-ms must be 1 to"},
      {{"--requests-per-connection", "10"}, "--requests-per-connection is not for udp-session"},
      {{"--think-ms", "5-1"}, "--think-ms 5-1: the range must go up"},
      {{"--clients", "0"}, "--clients must be 1 to 10000"},
      {{"--mode", "udp-sessions"}, "--mode must be http-keepalive, http-close, echo, udp-echo or udp-session"},
      {{"--mode", "udp-echo", "--session-ms", "100"}, "--session-ms is for --mode udp-session"},
      {{"--session-ms"}, "--session-ms needs a value"},
  };
  // Not structured bindings: clang 14 cannot capture them (CAPTURE does).
  for (const auto& case_ : refused) {
    const std::vector<std::string>& extra = case_.first;
    const std::string& error = case_.second;
    CAPTURE(error);
    spawn_options options;
    options.argv = {helper_path("GRACE_HARNESS"), "--target", "udp://127.0.0.1:9", "--mode", "udp-session"};
    options.argv.insert(options.argv.end(), extra.begin(), extra.end());
    // An option given last without its value is still named: nothing follows it then.
    if (extra.size() > 1) options.argv.insert(options.argv.end(), {"--", "/bin/true"});
    child_process harness(options);
    CHECK(harness.wait_stderr(error));
    CHECK(harness.wait() == std::optional<int>(2 << 8));
  }
  // A TCP target is not for udp-session, nor a UDP one for the TCP modes.
  for (const auto& case_ : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"tcp://127.0.0.1:9", "udp-session", "--mode udp-session needs a udp://HOST:PORT target"},
           {"udp://127.0.0.1:9", "http-close", "--target udp://127.0.0.1:9 is UDP: it needs --mode udp-echo or udp-session"}}) {
    const std::string &target = std::get<0>(case_), &mode = std::get<1>(case_), &error = std::get<2>(case_);
    CAPTURE(error);
    spawn_options options;
    options.argv = {helper_path("GRACE_HARNESS"), "--target", target, "--mode", mode, "--", "/bin/true"};
    child_process harness(options);
    CHECK(harness.wait_stderr(error));
    CHECK(harness.wait() == std::optional<int>(2 << 8));
  }
  // --help says what the mode and its option are (the man page is made from it).
  spawn_options help_options;
  help_options.argv = {helper_path("GRACE_HARNESS"), "--help"};
  child_process help(help_options);
  std::string text;
  while (auto line = help.read_line(10s)) text += *line + "\n";
  CHECK(help.wait() == std::optional<int>(0));
  CHECK(text.find("udp-session: stateful flows") != std::string::npos);
  CHECK(text.find("--session-ms MS") != std::string::npos);
}
