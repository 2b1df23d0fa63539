// grace-bench-restart-tail: does a restart show in the latency histogram? restart-harness drives
// grace-http with 32 clients through 20 SIGUSR2 restarts; each run splits its answers into
// steady state and restart windows (signal to the old generation gone, plus 100 ms), so both
// percentiles come from the same run, the same clients and the same machine. Printed per mode,
// median of ROUNDS runs: steady p99 and p99.9, restart-window p99 and p99.9, and their ratio
// (the goal: p99.9 ratio at most 1.5). Keep-alive also runs with --no-migrate, to show what
// moving connections costs or saves.
//
//   grace-bench-restart-tail RESTART_HARNESS GRACE_HTTP [ROUNDS] [RESTARTS]
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "harness_runs.hpp"
#include "command_line.hpp"

namespace {

// The number after `key` that follows `section` in the harness's JSON.
double number_in(const std::string& json, const std::string& section, const std::string& key) {
  const auto at = json.find("\"" + section + "\"");
  if (at == std::string::npos) return 0;
  const auto k = json.find("\"" + key + "\": ", at);
  return k == std::string::npos ? 0 : std::atof(json.c_str() + k + key.size() + 4);
}

struct tail {
  double steady_p99 = 0, steady_p999 = 0, restart_p99 = 0, restart_p999 = 0;
  bool passed = false;
};

tail run_once(const std::string& harness, const std::string& server, const std::string& mode, bool migrate,
              const std::string& restarts) {
  const std::string address = "127.0.0.1:" + std::to_string(bench::free_port());
  const std::string pidfile = "/tmp/grace-bench-tail-" + std::to_string(getpid()) + ".pid";
  std::vector<std::string> args = {"--target", "tcp://" + address, "--mode", mode, "--clients", "32", "--restarts",
                                   restarts, "--pidfile", pidfile, "--", server, address, "--pidfile", pidfile};
  if (!migrate) args.push_back("--no-migrate");
  const auto run = bench::run_harness(harness, args);
  unlink(pidfile.c_str());
  tail t;
  t.passed = run.passed;
  t.steady_p99 = number_in(run.json, "steady", "p99");
  t.steady_p999 = number_in(run.json, "steady", "p999");
  t.restart_p99 = number_in(run.json, "restart_windows", "p99");
  t.restart_p999 = number_in(run.json, "restart_windows", "p999");
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  bench::follow_conventions(argc, argv, "grace-bench-restart-tail",
                            "usage: grace-bench-restart-tail RESTART_HARNESS GRACE_HTTP [ROUNDS] [RESTARTS]");
  if (argc < 3) {
    std::fprintf(stderr, "usage: grace-bench-restart-tail RESTART_HARNESS GRACE_HTTP [ROUNDS] [RESTARTS]\n");
    return 2;
  }
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 3;
  const std::string restarts = argc > 4 ? argv[4] : "20";
  struct variant {
    const char* label;
    const char* mode;
    bool migrate;
  };
  bool all_passed = true;
  std::printf("latency (ms), 32 clients, %s restarts, median of %d runs: steady p99 / p99.9 | restart windows "
              "p99 / p99.9 | p99.9 ratio (goal <= 1.5)\n", restarts.c_str(), rounds);
  for (const variant v : {variant{"http-close", "http-close", true}, variant{"http-keepalive", "http-keepalive", true},
                          variant{"http-keepalive --no-migrate", "http-keepalive", false}}) {
    std::vector<double> sp99, sp999, rp99, rp999, ratio;
    for (int i = 0; i < rounds; ++i) {
      const tail t = run_once(argv[1], argv[2], v.mode, v.migrate, restarts);
      all_passed = all_passed && t.passed;
      sp99.push_back(t.steady_p99);
      sp999.push_back(t.steady_p999);
      rp99.push_back(t.restart_p99);
      rp999.push_back(t.restart_p999);
      ratio.push_back(t.steady_p999 > 0 ? t.restart_p999 / t.steady_p999 : 0);
    }
    std::printf("%-28s %6.2f / %6.2f | %6.2f / %6.2f | %.2f\n", v.label, bench::median(sp99),
                bench::median(sp999), bench::median(rp99), bench::median(rp999), bench::median(ratio));
  }
  if (!all_passed) std::printf("a run did not PASS: its figures are not comparable\n");
  return all_passed ? 0 : 1;
}
