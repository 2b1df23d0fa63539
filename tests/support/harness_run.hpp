#pragma once
// Running restart-harness from a test: its output, verdict, exit status and JSON.
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "support/process.hpp"
#include "support/sockets.hpp"

namespace test_support {

struct harness_run {
  int exit_status = -1;
  std::string output;
  std::string verdict;  // the last line
  std::string json;
};

inline harness_run run_harness(const std::vector<std::string>& args, const temp_dir& dir) {
  spawn_options options;
  options.argv = {helper_path("GRACE_HARNESS"), "--json", dir.file("run.json"), "--plot", dir.file("run.svg"),
                  "--hard-cap", "90"};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  // The server logs of failing runs (kept, by design) stay in the test's directory.
  options.env["TMPDIR"] = dir.path();
  child_process harness(options);
  harness_run run;
  while (auto line = harness.read_line(120s)) {
    run.output += *line + "\n";
    run.verdict = *line;
  }
  auto status = harness.wait(30s);
  REQUIRE_MESSAGE(status, run.output);
  run.exit_status = WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
  std::ifstream json(dir.file("run.json"));
  run.json.assign(std::istreambuf_iterator<char>(json), std::istreambuf_iterator<char>());
  return run;
}

inline std::string free_address() {
  int port = 0;
  close(raw_tcp_listener("127.0.0.1", port));
  return "127.0.0.1:" + std::to_string(port);
}

inline void check_pass(const harness_run& run, int restarts) {
  INFO(run.output);
  CHECK(run.exit_status == 0);
  CHECK(run.verdict.rfind("PASS: 0 lost in ", 0) == 0);
  CHECK(run.verdict.find("across " + std::to_string(restarts) + " restarts") != std::string::npos);
  CHECK(run.json.find("\"verdict\": \"PASS\"") != std::string::npos);
}

}  // namespace test_support
