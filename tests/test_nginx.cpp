// The referee refereeing a server nobody here wrote: Debian's nginx, through `nginx -s reload`
// (the master stays, its workers are replaced) and through the binary upgrade (USR2, WINCH,
// QUIT: a new master), in close and keep-alive modes. Every restart must complete, the new
// generation must be new workers (never the master, never an old worker), and nginx's idle
// keep-alive closes must land in the retryable category.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/harness_run.hpp"

using namespace test_support;

namespace {

const char* const nginx_binary = "/usr/sbin/nginx";

// An nginx with two workers on `address`, everything it writes inside `dir`.
std::string write_config(const temp_dir& dir, const std::string& address, bool daemon) {
  const std::string path = dir.file("nginx.conf");
  const std::string scratch = dir.file("tmp");
  mkdir(scratch.c_str(), 0700);
  std::ofstream(path) << "daemon " << (daemon ? "on" : "off") << ";\nworker_processes 2;\n"
                      << "pid " << dir.file("nginx.pid") << ";\nerror_log " << dir.file("error.log") << ";\n"
                      << "events { worker_connections 1024; }\nhttp {\n  access_log off;\n"
                      << "  client_body_temp_path " << scratch << "; proxy_temp_path " << scratch << ";\n"
                      << "  fastcgi_temp_path " << scratch << "; uwsgi_temp_path " << scratch << "; scgi_temp_path "
                      << scratch << ";\n  server { listen " << address << "; location / { return 200 \"ok\\n\"; } }\n}\n";
  return path;
}

// nginx's binary upgrade as an operator runs it: USR2 to the master, wait for the new one,
// WINCH and QUIT the old one, and wait until it is gone (nginx refuses a USR2 while it lives).
std::string write_binary_upgrade(const temp_dir& dir) {
  const std::string path = dir.file("upgrade.sh");
  // The pid file is read once: testing it and then reading it races with the old master's
  // rename of it, and going on before the new master wrote it makes the old master exit before
  // the new one noted its parent, after which nginx ignores every later USR2.
  std::ofstream(path) << "old=$MAINPID\nkill -USR2 \"$old\"\ni=0\n"
                      << "until new=$(cat '" << dir.file("nginx.pid")
                      << "' 2>/dev/null) && [ -n \"$new\" ] && [ \"$new\" != \"$old\" ]; do\n"
                      << "  i=$((i+1)); [ $i -gt 1000 ] && exit 1; sleep 0.01\ndone\n"
                      << "kill -WINCH \"$old\"\nkill -QUIT \"$old\"\ni=0\n"
                      << "until ! kill -0 \"$old\" 2>/dev/null || grep -q ') Z' \"/proc/$old/stat\" 2>/dev/null; do\n"
                      << "  i=$((i+1)); [ $i -gt 3000 ] && exit 1; sleep 0.01\ndone\n";
  return path;
}

// Every restart completed; the new generation is never a process that served before it, and
// never the main pid; the losses are only the retryable kind (idle keep-alive connections
// closed as a request went out).
void check_refereed(const harness_run& run, unsigned restarts) {
  INFO(run.output);
  const auto json = nlohmann::json::parse(run.json);
  REQUIRE(json["restarts"].size() == restarts);
  for (const auto& restart : json["restarts"]) {
    CHECK(restart["completed"] == true);
    const pid_t new_pid = restart["new_pid"].get<pid_t>();
    CHECK(new_pid != restart["old_pid"].get<pid_t>());  // a worker, not the master
    for (const auto& old : restart["old_generation"]) CHECK(old["pid"].get<pid_t>() != new_pid);
    CHECK_FALSE(restart["old_generation"].empty());
    CHECK(restart["first_new_answer_ms"].get<double>() > 0);
  }
  CHECK(json["steady"]["lost_to_retrying_client"] == 0);
  CHECK(json["restart_windows"]["lost_to_retrying_client"] == 0);
  CHECK(json["steady"]["ok"].get<std::uint64_t>() + json["restart_windows"]["ok"].get<std::uint64_t>() > 1000);
}

bool nothing_left(const std::string& address) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const pid_t pid = static_cast<pid_t>(std::atol(entry.path().filename().c_str()));
    if (pid <= 0 || has_exited(pid)) continue;
    std::ifstream cmdline(entry.path() / "cmdline");
    const std::string text((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
    if (text.find("nginx") != std::string::npos && text.find(address) != std::string::npos) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("nginx -s reload: the master stays, new workers take over") {
  for (const char* mode : {"http-close", "http-keepalive"}) {
    CAPTURE(mode);
    temp_dir dir;
    const std::string address = free_address();
    const std::string config = write_config(dir, address, false);
    auto run = run_harness({"--target", "tcp://" + address, "--mode", mode, "--clients", "16", "--restarts", "5",
                            "--pidfile", dir.file("nginx.pid"), "--restart-cmd",
                            std::string(nginx_binary) + " -c " + config + " -s reload", "--", nginx_binary, "-c", config},
                           dir);
    check_refereed(run, 5);
    if (std::string(mode) == "http-close") CHECK(run.verdict.rfind("PASS: 0 lost", 0) == 0);
    CHECK(nothing_left(config));
  }
}

TEST_CASE("nginx binary upgrade: a new master and new workers take over; the daemon is stopped at the end") {
  for (const char* mode : {"http-close", "http-keepalive"}) {
    const unsigned restarts = 4;
    CAPTURE(mode);
    temp_dir dir;
    const std::string address = free_address();
    // Daemonized, as the binary upgrade needs: the master is reparented to the harness.
    const std::string config = write_config(dir, address, true);
    auto run = run_harness({"--target", "tcp://" + address, "--mode", mode, "--clients", "16", "--restarts",
                            std::to_string(restarts), "--interval", "0.5", "--pidfile", dir.file("nginx.pid"),
                            "--restart-cmd", "sh " + write_binary_upgrade(dir), "--", nginx_binary, "-c", config},
                           dir);
    check_refereed(run, restarts);
    if (std::string(mode) == "http-close") CHECK(run.verdict.rfind("PASS: 0 lost", 0) == 0);
    CHECK(nothing_left(config));
  }
}
