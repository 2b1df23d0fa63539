#include "rules.hpp"

#include <signal.h>
#include <sys/wait.h>

#include <cstring>

namespace grace::uv::detail {

namespace {

std::string who(pid_t pid) {
  return pid > 0 ? "pid " + std::to_string(pid) : std::string("a process in another pid namespace");
}

const char* const pid_one_refusal =
    "this process is PID 1 of its pid namespace (a container's entrypoint): when it exits after handing over, the "
    "kernel kills the new generation with it. Run it under `grace-listen --overlap -- ...`, which stays PID 1 and "
    "starts each generation beside the last; this one serves on";

}  // namespace

std::optional<std::string> hand_over_refusal(const hand_over_view& v) {
  if (v.at != phase::serving) return std::string("this generation is draining; the newest one serves");
  if (v.pending) return "an upgrade is already in progress (" + who(v.pending_pid) + ")";
  if (v.starting) return std::string("an upgrade is already in progress (starting the next generation)");
  if (v.pid_one && v.taker > 0) return std::string(pid_one_refusal);
  // Handed over now, the next generation would get a partial list of the flows before this one.
  if (v.flows_arriving) return std::string("the previous generation's UDP flows have not all arrived yet");
  return std::nullopt;
}

std::optional<std::string> upgrade_refusal(const hand_over_view& v) {
  if (v.at == phase::starting) return std::string("not serving yet");
  if (v.pid_one) return std::string(pid_one_refusal);
  if (v.at != phase::serving) return std::string("this generation is draining; signal the newest one");
  if (auto why = hand_over_refusal(v)) return why;
  if (v.taking_over) return who(v.taking_over_pid) + " is taking over through the hand-over socket";
  return std::nullopt;
}

std::string describe_status(int status) {
  if (status < 0) return "exited";
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by ") + strsignal(WTERMSIG(status));
  return "ended";
}

std::string not_ready_reason(int status, bool killed_by_us) {
  const bool we_killed = killed_by_us && status >= 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  return we_killed ? "closed its readiness socket before it was ready and was killed"
                   : describe_status(status) + " before it was ready";
}

std::string after_rollback(bool terminating) { return terminating ? "; shutting down" : "; still serving"; }

next_step after_settle(upgrade_outcome outcome, bool terminating) {
  if (outcome == upgrade_outcome::ready) return next_step::hand_over;
  return terminating ? next_step::drain : next_step::serve_on;
}

bool must_resume(bool retired, bool terminating, phase at) { return !retired && !terminating && at == phase::draining; }

bool drain_complete(const drain_view& v) {
  // Drained (every worker has stopped, no connection is on its way to the new generation), and
  // no longer watching over the generation it handed over to.
  return v.at == phase::draining && !v.watching_successor && !v.workers_busy && v.moving == 0 &&
         v.connections == 0 && !v.flows_left;
}

std::string serving_line(const serving_view& v) {
  std::string addresses;
  for (const auto& l : v.served)
    addresses += (addresses.empty() ? "" : ", ") + l.address +
                 (l.inherited ? " (inherited, name " + l.name + ")" : " (new socket)");
  for (const auto& l : v.udp)
    addresses += (addresses.empty() ? "udp " : ", udp ") + l.address + (l.inherited ? " (inherited)" : " (new socket)");
  if (v.workers != 0) addresses += " on " + std::to_string(v.workers) + " worker(s)";
  if (!v.handover_socket.empty()) addresses += "; hand-over socket " + v.handover_socket;
  return "serving " + addresses + " as pid " + std::to_string(v.pid);
}

std::optional<error> check_options(const upgrader_options& o) {
  auto bad = [](const std::string& what) {
    return error(make_error_code(errc::invalid_argument), "upgrader options: " + what);
  };
  if (o.ready_timeout.count() <= 0) return bad("ready_timeout must be positive");
  if (o.drain_timeout.count() < 0) return bad("drain_timeout must not be negative");
  if (o.max_generations < 2) return bad("max_generations must be at least 2 (this one and the next)");
  if (o.successor_watch.count() < 0) return bad("successor_watch must not be negative");
  return std::nullopt;
}

const char* kind_name(event_kind kind) {
  switch (kind) {
    case event_kind::serving: return "serving";
    case event_kind::took_charge: return "took charge";
    case event_kind::upgrade_started: return "upgrade started";
    case event_kind::upgrade_refused: return "upgrade refused";
    case event_kind::child_ready: return "child ready";
    case event_kind::rollback: return "rollback";
    case event_kind::rollback_after_takeover: return "rollback after takeover";
    case event_kind::draining: return "draining";
    case event_kind::drain_progress: return "drain progress";
    case event_kind::forced_close: return "forced close";
    case event_kind::exiting: return "exiting";
    case event_kind::reload: return "reload";
    case event_kind::warning: return "warning";
  }
  return "event";
}

std::string log_line(const event& e, pid_t pid, unsigned generation) {
  // The messages of routine events speak for themselves; the others carry their kind.
  const bool routine = e.kind == event_kind::serving || e.kind == event_kind::upgrade_started ||
                       e.kind == event_kind::child_ready || e.kind == event_kind::draining ||
                       e.kind == event_kind::exiting || e.kind == event_kind::drain_progress;
  return "grace[" + std::to_string(pid) + "] generation " + std::to_string(generation) + ": " +
         (routine ? "" : std::string(kind_name(e.kind)) + ": ") + e.message;
}

}  // namespace grace::uv::detail
