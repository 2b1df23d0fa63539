// grace-bench-throughput: steady-state requests/s of grace-http beside the same protocol on bare
// libuv (grace-bench-bare-http), measured by restart-harness with no restarts, alternating the
// servers round by round so that all see the same machine. The ratio is the figure. Then
// grace-http on worker groups: --workers 1, --workers 2 (one shared socket) and --workers 2
// --reuse-port, beside grace-http on its main loop alone.
//
//   grace-bench-throughput RESTART_HARNESS BARE_HTTP GRACE_HTTP [SECONDS_PER_ROUND] [ROUNDS]
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "harness_runs.hpp"
#include "command_line.hpp"

namespace {

double number_after(const std::string& text, const std::string& key) {
  const auto at = text.find(key);
  return at == std::string::npos ? 0 : std::atof(text.c_str() + at + key.size());
}

// Requests per second that one run of the harness measured against `server`.
double measure(const std::string& harness, const std::string& server, const std::string& seconds,
               const std::vector<std::string>& server_args = {}) {
  const std::string address = "127.0.0.1:" + std::to_string(bench::free_port());
  std::vector<std::string> args = {"--target", "tcp://" + address, "--clients", "32", "--restarts", "0",
                                   "--duration", seconds, "--settle", "0", "--", server, address};
  args.insert(args.end(), server_args.begin(), server_args.end());
  const auto run = bench::run_harness(harness, args);
  const double requests = number_after(run.json, "\"requests\": ");
  const double ms = number_after(run.json, "\"duration_ms\": ");
  return ms > 0 && run.passed ? requests * 1000 / ms : 0;
}

}  // namespace

int main(int argc, char** argv) {
  bench::follow_conventions(argc, argv, "grace-bench-throughput",
                            "usage: grace-bench-throughput RESTART_HARNESS BARE_HTTP GRACE_HTTP [SECONDS] [ROUNDS]");
  if (argc < 4) {
    std::fprintf(stderr, "usage: grace-bench-throughput RESTART_HARNESS BARE_HTTP GRACE_HTTP [SECONDS] [ROUNDS]\n");
    return 2;
  }
  const std::string seconds = argc > 4 ? argv[4] : "3";
  const int rounds = argc > 5 ? std::atoi(argv[5]) : 5;
  std::vector<double> bare, grace, one, two, two_reuse;
  for (int i = 0; i < rounds; ++i) {
    bare.push_back(measure(argv[1], argv[2], seconds));
    grace.push_back(measure(argv[1], argv[3], seconds));
    one.push_back(measure(argv[1], argv[3], seconds, {"--workers", "1"}));
    two.push_back(measure(argv[1], argv[3], seconds, {"--workers", "2"}));
    two_reuse.push_back(measure(argv[1], argv[3], seconds, {"--workers", "2", "--reuse-port"}));
  }
  const double b = bench::median(bare), g = bench::median(grace), w1 = bench::median(one), w2 = bench::median(two),
               w2r = bench::median(two_reuse);
  std::printf("steady-state requests/s, 32 keep-alive clients, median of %d rounds of %s s: bare libuv %.0f | "
              "grace-http %.0f | ratio %.3f\n", rounds, seconds.c_str(), b, g, b > 0 ? g / b : 0);
  std::printf("worker groups: 1 worker %.0f | 2 workers, one shared socket %.0f (%.2fx) | 2 workers, SO_REUSEPORT "
              "%.0f (%.2fx)\n", w1, w2, w1 > 0 ? w2 / w1 : 0, w2r, w1 > 0 ? w2r / w1 : 0);
  return b > 0 && g > 0 && w1 > 0 && w2 > 0 && w2r > 0 ? 0 : 1;
}
