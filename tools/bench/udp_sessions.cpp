// grace-bench-udp-sessions: what flow affinity saves UDP sessions across restarts. restart-harness
// --mode udp-session drives grace-udp-session with 64 sessions (each on a socket of its own:
// HELLO, DATA 1, 2, 3 ... back to back, BYE after 1.5 s, and a new session) through 20 SIGUSR2
// restarts, once per affinity mode (off, forward, cookie), and the figures are printed side by
// side: sessions broken, datagrams lost, the round trip of an answer from a draining generation
// (forwarded to it, in forward mode) against one from the current generation over the same
// spans, and how long each replaced generation took to exit. Figures are printed, never asserted;
// the status is 1 only when a run with affinity on did not PASS (sessions broke there).
//
//   grace-bench-udp-sessions RESTART_HARNESS GRACE_UDP_SESSION [RESTARTS] [SESSIONS] [INTERVAL]
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "command_line.hpp"
#include "harness_runs.hpp"

namespace {

constexpr const char* usage =
    "usage: grace-bench-udp-sessions RESTART_HARNESS GRACE_UDP_SESSION [RESTARTS] [SESSIONS] [INTERVAL]";

struct figures {
  bool ran = false;     // the harness wrote its JSON
  bool passed = false;  // exit status 0
  std::string summary;
  std::vector<std::string> notes;  // what the harness says a person should know (the server exited, ...)
  unsigned long long opened = 0, broken = 0, unknown = 0, replay = 0, no_answer = 0, sent = 0, lost = 0;
  unsigned long long draining_answers = 0;
  double ratio_p50 = 0, ratio_p99 = 0;  // 0: no answer from a draining generation
  double direct_p50 = 0, forwarded_p50 = 0;
  double exit_p50 = 0, exit_max = 0;
  unsigned long long exited = 0, still_running = 0;
};

double number_or_zero(const nlohmann::json& j) { return j.is_number() ? j.get<double>() : 0; }

figures run_once(const std::string& harness, const std::string& server, const std::string& affinity,
                 const std::string& restarts, const std::string& sessions, const std::string& interval) {
  const std::string address = "127.0.0.1:" + std::to_string(bench::free_port());
  const std::string pidfile = "/tmp/grace-bench-udp-sessions-" + std::to_string(getpid()) + ".pid";
  // The server's log, removed after the run: the run without affinity fails by design, and the
  // harness would keep a log of each.
  const std::string log = "/tmp/grace-bench-udp-sessions-" + std::to_string(getpid()) + ".log";
  std::vector<std::string> args = {"--target", "udp://" + address, "--mode", "udp-session", "--clients", sessions,
                                   "--session-ms", "1500", "--restarts", restarts, "--hard-cap", "240",
                                   "--pidfile", pidfile, "--server-log", log};
  if (interval != "0") args.insert(args.end(), {"--interval", interval});
  // Sessions of 1.5 s span several restarts: the replaced generations live on beside the new one.
  args.insert(args.end(), {"--", server, address, "--pidfile", pidfile, "--affinity", affinity, "--max-generations",
                           "64"});
  const auto run = bench::run_harness(harness, args);
  unlink(pidfile.c_str());
  unlink(log.c_str());
  figures f;
  f.passed = run.passed;
  const auto json = nlohmann::json::parse(run.json, nullptr, false);
  if (json.is_discarded() || !json.contains("udp_session")) return f;
  f.ran = true;
  f.summary = json.value("summary", "");
  if (json.contains("notes"))
    for (const auto& note : json["notes"]) f.notes.push_back(note.get<std::string>());
  const auto& u = json["udp_session"];
  const auto& s = u["sessions"];
  f.opened = s["opened"].get<unsigned long long>();
  f.broken = s["broken"].get<unsigned long long>();
  f.unknown = s["broken_unknown"].get<unsigned long long>();
  f.replay = s["broken_replay"].get<unsigned long long>();
  f.no_answer = s["broken_no_answer"].get<unsigned long long>();
  f.sent = u["datagrams"]["sent"].get<unsigned long long>();
  f.lost = u["datagrams"]["lost"].get<unsigned long long>();
  f.draining_answers = u["answers"]["draining"].get<unsigned long long>();
  f.ratio_p50 = number_or_zero(u["draining_ratio"]["p50"]);
  f.ratio_p99 = number_or_zero(u["draining_ratio"]["p99"]);
  f.direct_p50 = number_or_zero(u["round_trip_ms"]["current_while_draining"]["p50"]);
  f.forwarded_p50 = number_or_zero(u["round_trip_ms"]["draining"]["p50"]);
  const auto& old = u["old_generations"];
  f.exited = old["exited"].get<unsigned long long>();
  f.still_running = old["still_running"].get<unsigned long long>();
  f.exit_p50 = number_or_zero(old["exit_ms"]["p50"]);
  f.exit_max = number_or_zero(old["exit_ms"]["max"]);
  return f;
}

std::string ratio_text(double ratio) {
  if (ratio <= 0) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.2fx", ratio);
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  bench::follow_conventions(argc, argv, "grace-bench-udp-sessions", usage);
  if (argc < 3) {
    std::fprintf(stderr, "%s\n", usage);
    return 2;
  }
  const std::string restarts = argc > 3 ? argv[3] : "20";
  const std::string sessions = argc > 4 ? argv[4] : "64";
  const std::string interval = argc > 5 ? argv[5] : "0.25";  // 0: as soon as the new generation answers a HELLO
  for (const std::string& number : {restarts, sessions, interval})
    if (number.empty() || number.find_first_not_of("0123456789.") != std::string::npos) {
      std::fprintf(stderr, "grace-bench-udp-sessions: \"%s\" is not a number\n%s\n", number.c_str(), usage);
      return 2;
    }
  std::printf("udp-session: %s sessions of 1500 ms under load (DATA back to back), %s SIGUSR2 restarts%s%s\n",
              sessions.c_str(), restarts.c_str(), interval == "0" ? " back to back" : " every ",
              interval == "0" ? "" : (interval + " s").c_str());
  std::printf("%-8s %-5s %18s %22s %10s %14s %8s %8s %26s\n", "affinity", "run", "sessions broken",
              "datagrams lost", "draining", "direct/fwd p50", "fwd p50", "fwd p99", "old generations exit p50/max");
  bool affinity_failed = false;
  for (const char* affinity : {"off", "forward", "cookie"}) {
    const figures f = run_once(argv[1], argv[2], affinity, restarts, sessions, interval);
    if (!f.ran) {
      std::printf("%-8s no figures: the run did not get as far as a report (does the server take --affinity %s?)\n",
                  affinity, affinity);
      if (std::string(affinity) != "off") affinity_failed = true;
      continue;
    }
    char broken[48], lost[48], latency[48], exits[64];
    std::snprintf(broken, sizeof broken, "%llu of %llu", f.broken, f.opened);
    std::snprintf(lost, sizeof lost, "%llu of %llu", f.lost, f.sent);
    if (f.forwarded_p50 > 0) std::snprintf(latency, sizeof latency, "%.3f/%.3f", f.direct_p50, f.forwarded_p50);
    else std::snprintf(latency, sizeof latency, "-");
    if (f.exited > 0)
      std::snprintf(exits, sizeof exits, "%.0f / %.0f ms (%llu of %llu)", f.exit_p50, f.exit_max, f.exited,
                    f.exited + f.still_running);
    else std::snprintf(exits, sizeof exits, "- (0 of %llu)", f.still_running);
    std::printf("%-8s %-5s %18s %22s %10llu %14s %8s %8s %26s\n", affinity, f.passed ? "PASS" : "FAIL", broken, lost,
                f.draining_answers, latency, ratio_text(f.ratio_p50).c_str(), ratio_text(f.ratio_p99).c_str(), exits);
    if (f.broken > 0)
      std::printf("%-8s broken: %llu UNKNOWN, %llu REPLAY, %llu without an answer\n", "", f.unknown, f.replay,
                  f.no_answer);
    if (std::string(affinity) != "off" && !f.passed) {
      affinity_failed = true;
      std::printf("%-8s %s\n", "", f.summary.c_str());
      for (const auto& note : f.notes) std::printf("%-8s note: %s\n", "", note.c_str());
    }
  }
  std::printf("draining: answers from a replaced generation; fwd p50/p99: their round trip over the current "
              "generation's in the same spans (goal: at most 2x); exit: signal to the replaced generation's exit\n");
  if (affinity_failed) std::printf("a run with affinity did not PASS\n");
  return affinity_failed ? 1 : 0;
}
