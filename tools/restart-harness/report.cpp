#include "report.hpp"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <iterator>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

namespace harness {
namespace {

tl::unexpected<grace::error> cannot_write(const std::string& path) {
  const int err = errno != 0 ? errno : EIO;
  return tl::unexpected(grace::error(std::error_code(err, std::system_category()),
                                     "cannot write " + path + ": " + std::strerror(err)));
}

constexpr std::uint64_t window_margin_us = 100000;  // after the old generation is gone

using interval = std::pair<std::uint64_t, std::uint64_t>;

struct window_stats {
  std::array<std::uint64_t, static_cast<std::size_t>(outcome::count)> by_outcome{};
  std::uint64_t stalled = 0;
  std::vector<std::uint32_t> latencies;  // answered requests
  std::uint64_t span_us = 0;
  std::uint64_t total() const {
    std::uint64_t n = 0;
    for (auto c : by_outcome) n += c;
    return n;
  }
  std::uint64_t lost() const { return total() - by_outcome[0]; }
  std::uint64_t retryable_lost(load_mode mode) const {
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < by_outcome.size(); ++i)
      if (retryable(static_cast<outcome>(i), mode)) n += by_outcome[i];
    return n;
  }
};

std::string ms(double us) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", us / 1000.0);
  return buf;
}

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

double percentile(std::vector<std::uint32_t>& v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k];
}

// The time around restarts: from each signal until the old generation was gone (or the new
// one answered, if later), plus a margin; overlapping windows merged.
std::vector<interval> restart_windows(const run_record& r) {
  std::vector<interval> windows;
  for (const auto& rs : r.restarts) {
    const std::uint64_t end = rs.completed ? std::max(rs.new_answer_us, rs.old_exit_us) + window_margin_us : r.end_us;
    windows.emplace_back(rs.signal_us, std::min(end, r.end_us));
  }
  std::sort(windows.begin(), windows.end());
  std::vector<interval> merged;
  for (const auto& w : windows) {
    if (!merged.empty() && w.first <= merged.back().second) merged.back().second = std::max(merged.back().second, w.second);
    else merged.push_back(w);
  }
  return merged;
}

bool inside(const std::vector<interval>& windows, std::uint64_t t) {
  auto it = std::upper_bound(windows.begin(), windows.end(), interval{t, UINT64_MAX});
  return it != windows.begin() && t <= std::prev(it)->second;
}

std::pair<window_stats, window_stats> split(const options& o, const run_record& r) {
  window_stats steady, restart;
  const auto windows = restart_windows(r);
  for (const auto& q : r.requests) {
    auto& w = inside(windows, q.end_us) ? restart : steady;
    ++w.by_outcome[static_cast<std::size_t>(q.result)];
    if (q.result == outcome::ok) {
      w.latencies.push_back(q.latency_us);
      if (q.latency_us > o.stall_ms * 1000) ++w.stalled;
    }
  }
  std::uint64_t restart_span = 0;
  for (const auto& [begin, end] : windows) restart_span += end - begin;
  restart.span_us = std::min(restart_span, r.end_us);
  steady.span_us = r.end_us - restart.span_us;
  return {steady, restart};
}

std::string row(const std::string& name, const std::string& a, const std::string& b, const std::string& c) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "  %-38s %12s %12s %12s\n", name.c_str(), a.c_str(), b.c_str(), c.c_str());
  return buf;
}

std::string num(std::uint64_t n) { return std::to_string(n); }

std::string rate(std::uint64_t n, std::uint64_t span_us) {
  if (span_us == 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", static_cast<double>(n) * 1e6 / static_cast<double>(span_us));
  return buf;
}

const char* mode_name(load_mode m) {
  return m == load_mode::http_keepalive ? "http-keepalive"
         : m == load_mode::http_close   ? "http-close"
         : m == load_mode::echo         ? "echo"
         : m == load_mode::udp_echo     ? "udp-echo"
                                        : "udp-session";
}

// udp-session: the answers by who gave them. An answer comes from a draining generation when
// the process naming itself in it had been replaced by then (a later generation had answered
// a HELLO); else from the current one, which is compared with the draining ones over the same
// spans (a replaced generation's takeover to its exit): a forwarded datagram against a direct
// one, on the same loaded machine.
struct session_figures {
  std::uint64_t sent = 0, answered = 0, lost = 0, wrong = 0;
  std::uint64_t from_current = 0, from_draining = 0;
  std::vector<std::uint32_t> current, current_while_draining, draining;  // round trips, us
  std::vector<std::uint32_t> old_exit;  // signal to the replaced generation's exit, us
  std::uint64_t exited = 0, still_running = 0;
  double ratio(double p) {
    auto& direct = current_while_draining.empty() ? current : current_while_draining;
    if (draining.empty() || direct.empty()) return 0;
    const double base = percentile(direct, p);
    return base > 0 ? percentile(draining, p) / base : 0;
  }
};

session_figures session_figures_of(const run_record& r) {
  session_figures f;
  std::map<pid_t, std::uint64_t> replaced_at;  // pid -> when its successor answered a HELLO
  std::vector<interval> drains;
  for (const auto& rs : r.restarts) {
    if (rs.replaced_pid == 0 || rs.new_answer_us == 0) continue;
    replaced_at.emplace(rs.replaced_pid, rs.new_answer_us);
    drains.emplace_back(rs.new_answer_us, rs.old_exit_us != 0 ? rs.old_exit_us : r.end_us);
    if (rs.old_exit_us != 0) {
      ++f.exited;
      f.old_exit.push_back(static_cast<std::uint32_t>(rs.old_exit_us - rs.signal_us));
    } else if (!rs.old_serving.empty()) {
      ++f.still_running;
    }
  }
  std::sort(drains.begin(), drains.end());
  std::vector<interval> merged;
  for (const auto& d : drains) {
    if (!merged.empty() && d.first <= merged.back().second) merged.back().second = std::max(merged.back().second, d.second);
    else merged.push_back(d);
  }
  for (const auto& q : r.requests) {
    ++f.sent;
    if (q.result == outcome::timeout || q.result == outcome::refused) {
      ++f.lost;
      continue;
    }
    ++f.answered;
    if (q.result != outcome::ok) {
      ++f.wrong;
      continue;
    }
    if (q.served_by == 0) continue;
    const auto replaced = replaced_at.find(q.served_by);
    if (replaced != replaced_at.end() && replaced->second <= q.end_us) {
      ++f.from_draining;
      f.draining.push_back(q.latency_us);
      continue;
    }
    ++f.from_current;
    f.current.push_back(q.latency_us);
    if (inside(merged, q.end_us)) f.current_while_draining.push_back(q.latency_us);
  }
  return f;
}

std::string ratio_text(double ratio) {
  if (ratio <= 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2fx", ratio);
  return buf;
}

}  // namespace

const char* outcome_name(outcome o) {
  switch (o) {
    case outcome::ok: return "ok";
    case outcome::refused: return "connect refused";
    case outcome::new_closed: return "closed (FIN) on a new connection";
    case outcome::new_reset: return "reset on a new connection";
    case outcome::reused_closed: return "closed (FIN) on a reused connection";
    case outcome::reused_reset: return "reset on a reused connection";
    case outcome::partial: return "failed after a partial answer";
    case outcome::timeout: return "timeout";
    case outcome::wrong: return "wrong answer";
    case outcome::count: break;
  }
  return "?";
}

const char* outcome_key(outcome o) {
  switch (o) {
    case outcome::ok: return "ok";
    case outcome::refused: return "refused";
    case outcome::new_closed: return "new_closed";
    case outcome::new_reset: return "new_reset";
    case outcome::reused_closed: return "reused_closed";
    case outcome::reused_reset: return "reused_reset";
    case outcome::partial: return "partial";
    case outcome::timeout: return "timeout";
    case outcome::wrong: return "wrong";
    case outcome::count: break;
  }
  return "?";
}

bool retryable(outcome o, load_mode mode) {
  return is_http(mode) && (o == outcome::reused_closed || o == outcome::reused_reset);
}

verdict summarize(const options& o, const run_record& r, std::string& table) {
  auto [steady, restart] = split(o, r);
  window_stats all;
  for (std::size_t i = 0; i < all.by_outcome.size(); ++i) all.by_outcome[i] = steady.by_outcome[i] + restart.by_outcome[i];
  all.stalled = steady.stalled + restart.stalled;
  all.latencies = steady.latencies;
  all.latencies.insert(all.latencies.end(), restart.latencies.begin(), restart.latencies.end());
  all.span_us = r.end_us;

  std::ostringstream out;
  out << "restart-harness: " << mode_name(o.mode) << " against " << o.target_text << ", " << o.clients
      << " clients, " << ms(static_cast<double>(r.end_us)) << " ms\n";
  out << row("", "steady", "restarts", "total");
  for (std::size_t i = 0; i < all.by_outcome.size(); ++i)
    out << row(outcome_name(static_cast<outcome>(i)), num(steady.by_outcome[i]), num(restart.by_outcome[i]), num(all.by_outcome[i]));
  out << row("lost", num(steady.lost()), num(restart.lost()), num(all.lost()));
  if (is_http(o.mode))
    out << row("lost to a retrying client (RFC 9112)", num(steady.lost() - steady.retryable_lost(o.mode)),
               num(restart.lost() - restart.retryable_lost(o.mode)), num(all.lost() - all.retryable_lost(o.mode)));
  out << row("stalled > " + std::to_string(static_cast<int>(o.stall_ms)) + " ms (answered)", num(steady.stalled), num(restart.stalled), num(all.stalled));
  out << row("requests/s", rate(steady.total(), steady.span_us), rate(restart.total(), restart.span_us), rate(all.total(), all.span_us));
  for (const auto& [name, p] : std::vector<std::pair<std::string, double>>{{"latency p50 ms", 0.5}, {"latency p99 ms", 0.99}, {"latency p99.9 ms", 0.999}, {"latency max ms", 1.0}})
    out << row(name, ms(percentile(steady.latencies, p)), ms(percentile(restart.latencies, p)), ms(percentile(all.latencies, p)));

  std::vector<std::uint32_t> takeover, old_exit;
  unsigned completed = 0;
  for (const auto& rs : r.restarts) {
    if (!rs.completed) continue;
    ++completed;
    takeover.push_back(static_cast<std::uint32_t>(rs.new_answer_us - rs.signal_us));
    if (rs.old_exit_us > 0) old_exit.push_back(static_cast<std::uint32_t>(rs.old_exit_us - rs.signal_us));
  }
  out << "  restarts: " << completed << " of " << o.restarts << " completed";
  if (!takeover.empty())
    out << "; signal to first answer of the new generation p50 " << ms(percentile(takeover, 0.5)) << " ms, max "
        << ms(percentile(takeover, 1.0)) << " ms";
  if (!old_exit.empty())
    out << "; old generation gone p50 " << ms(percentile(old_exit, 0.5)) << " ms, max " << ms(percentile(old_exit, 1.0)) << " ms";
  out << "\n";
  for (const auto& rs : r.restarts)
    if (!rs.completed) out << "  restart " << rs.index << " failed: " << rs.failure << "\n";
  if (o.mode == load_mode::http_keepalive)
    out << "  keep-alive connections the server ended (reopened, not lost): " << r.server_ended_idle << " while idle, "
        << r.server_ended_after_answer << " after an answer with Connection: close\n";
  const session_counts& sc = r.sessions;
  const bool sessions = o.mode == load_mode::udp_session;
  if (sessions) {
    auto f = session_figures_of(r);
    const std::string timeout = seconds(o.timeout_s);
    out << "  sessions: " << sc.opened << " opened, " << sc.completed << " completed (BYE answered), " << sc.broken()
        << " broken (" << sc.broken_unknown << " UNKNOWN, " << sc.broken_replay << " REPLAY, " << sc.broken_no_answer
        << " no answer within " << timeout << " s, " << sc.broken_wrong << " wrong answer), "
        << sc.opened - std::min(sc.opened, sc.completed + sc.broken()) << " open at the end";
    if (sc.hello_failed > 0) out << "; " << sc.hello_failed << " HELLO without a SESSION answer";
    out << "\n";
    out << "  datagrams: " << f.sent << " sent, " << f.answered << " answered, " << f.lost << " lost (no answer within "
        << timeout << " s), " << f.wrong << " wrong answers\n";
    out << "  answers: " << f.from_current << " from the current generation, " << f.from_draining
        << " from draining generations\n";
    auto p50_p99 = [](std::vector<std::uint32_t>& v) {
      return v.empty() ? std::string("- / -") : ms(percentile(v, 0.5)) + " / " + ms(percentile(v, 0.99));
    };
    out << "  round trip ms p50 / p99: current " << p50_p99(f.current) << " (" << p50_p99(f.current_while_draining)
        << " while a generation drained), draining " << p50_p99(f.draining) << "\n";
    out << "  draining / current round trip (forwarded vs direct, goal at most 2x): p50 " << ratio_text(f.ratio(0.5))
        << ", p99 " << ratio_text(f.ratio(0.99)) << "\n";
    out << "  old generations: " << f.exited << " exited";
    if (!f.old_exit.empty())
      out << ", signal to exit p50 " << ms(percentile(f.old_exit, 0.5)) << " ms, max " << ms(percentile(f.old_exit, 1.0)) << " ms";
    out << "; " << f.still_running << " still running at the end (not required to have exited)\n";
  }
  for (const auto& note : r.notes) out << "  note: " << note << "\n";
  table = out.str();

  verdict v;
  const std::uint64_t lost = all.lost();
  const char* what = sessions ? " datagrams" : " requests";
  v.pass = lost == 0 && completed == o.restarts && !r.aborted && all.by_outcome[0] > 0 && (!sessions || sc.broken() == 0);
  std::ostringstream line;
  if (v.pass) {
    line << "PASS: 0 lost in " << all.total() << what;
    if (sessions) line << ", 0 of " << sc.opened << " sessions broken";
    line << " across " << completed << " restarts";
  } else {
    line << "FAIL: " << lost << " lost in " << all.total() << what;
    if (sessions)
      line << ", " << sc.broken() << " of " << sc.opened << " sessions broken (" << sc.broken_unknown << " UNKNOWN, "
           << sc.broken_replay << " REPLAY, " << sc.broken_no_answer << " no answer, " << sc.broken_wrong << " wrong answer)";
    for (std::size_t i = 1; i < all.by_outcome.size(); ++i)
      if (all.by_outcome[i] > 0) line << ", " << all.by_outcome[i] << " " << outcome_name(static_cast<outcome>(i));
    if (const auto retryable_count = all.retryable_lost(o.mode); retryable_count > 0)
      line << " (" << all.lost() - retryable_count << " left for a client that retries idempotent requests)";
    line << "; " << completed << " of " << o.restarts << " restarts completed";
    if (all.by_outcome[0] == 0) line << "; no request was answered at all";
    if (r.aborted) line << "; run aborted";
  }
  v.line = line.str();
  return v;
}

namespace {

double to_ms(std::uint64_t us) { return static_cast<double>(us) / 1000.0; }

nlohmann::json window_json(window_stats& w, load_mode mode) {
  nlohmann::json j;
  for (std::size_t i = 0; i < w.by_outcome.size(); ++i) j[outcome_key(static_cast<outcome>(i))] = w.by_outcome[i];
  j["lost"] = w.lost();
  j["lost_to_retrying_client"] = w.lost() - w.retryable_lost(mode);
  j["stalled"] = w.stalled;
  j["span_ms"] = to_ms(w.span_us);
  j["latency_ms"] = {{"p50", percentile(w.latencies, 0.5) / 1000.0},
                     {"p99", percentile(w.latencies, 0.99) / 1000.0},
                     {"p999", percentile(w.latencies, 0.999) / 1000.0},
                     {"max", percentile(w.latencies, 1.0) / 1000.0}};
  return j;
}

// The span a restart answers for: from its signal to the next one (or the end of the run).
std::vector<interval> restart_spans(const run_record& r) {
  std::vector<interval> spans;
  for (std::size_t i = 0; i < r.restarts.size(); ++i)
    spans.emplace_back(r.restarts[i].signal_us, i + 1 < r.restarts.size() ? r.restarts[i + 1].signal_us : r.end_us);
  return spans;
}

constexpr std::size_t max_failures_listed = 100000;
constexpr std::size_t slowest_listed = 20;

// Where the restart windows' tail came from: the answers there slower than the steady state's
// p99.9, by who answered (the generation signalled, its successor, or no pid in the answer) and
// by when they were sent (before the new generation's first answer, until the old one was gone,
// after), with the slowest listed. What a restart costs is found here, not guessed.
nlohmann::json restart_tail_json(const run_record& r, double steady_p999_us) {
  const auto windows = restart_windows(r);
  const auto threshold = static_cast<std::uint64_t>(steady_p999_us);
  std::map<std::string, std::uint64_t> by_server, by_phase;
  struct slow {
    std::uint32_t latency_us;
    std::size_t restart;
    std::uint64_t sent_after_signal_us;
    const char* server;
  };
  std::vector<slow> slowest;
  // Without a restart there is no window: inside() is false for every answer.
  for (const auto& q : r.requests) {
    if (q.result != outcome::ok || q.latency_us <= threshold || !inside(windows, q.end_us)) continue;
    const std::uint64_t sent = q.end_us >= q.latency_us ? q.end_us - q.latency_us : 0;
    // The restart it belongs to: the last signalled before it was sent (or the first).
    std::size_t k = 0;
    while (k + 1 < r.restarts.size() && r.restarts[k + 1].signal_us <= sent) ++k;
    const auto& rs = r.restarts[k];
    const char* server = q.served_by == 0           ? "unknown"
                         : q.served_by == rs.old_pid ? "old"
                         : q.served_by == rs.new_pid ? "new"
                                                     : "other";
    const char* phase = rs.new_answer_us == 0 || sent < rs.new_answer_us ? "before_new_answers"
                        : rs.old_exit_us == 0 || sent < rs.old_exit_us   ? "until_old_gone"
                                                                          : "after_old_gone";
    ++by_server[server];
    ++by_phase[phase];
    slowest.push_back({q.latency_us, k, sent > rs.signal_us ? sent - rs.signal_us : 0, server});
  }
  const std::size_t listed = std::min(slowest.size(), slowest_listed);
  std::partial_sort(slowest.begin(), slowest.begin() + static_cast<long>(listed), slowest.end(),
                    [](const slow& a, const slow& b) { return a.latency_us > b.latency_us; });
  nlohmann::json list = nlohmann::json::array();
  for (std::size_t i = 0; i < listed; ++i)
    list.push_back({{"restart", slowest[i].restart + 1}, {"sent_ms_after_signal", to_ms(slowest[i].sent_after_signal_us)},
                    {"latency_ms", slowest[i].latency_us / 1000.0}, {"served_by", slowest[i].server}});
  return {{"threshold_ms", steady_p999_us / 1000.0}, {"above", slowest.size()}, {"by_server", by_server},
          {"by_phase", by_phase}, {"slowest", list}};
}

}  // namespace

grace::result<void> write_json(const options& o, const run_record& r, const verdict& v, const std::string& path) {
  auto [steady, restart] = split(o, r);
  nlohmann::json j;
  j["verdict"] = v.pass ? "PASS" : "FAIL";
  j["summary"] = v.line;
  j["target"] = o.target_text;
  j["mode"] = mode_name(o.mode);
  j["clients"] = o.clients;
  j["duration_ms"] = to_ms(r.end_us);
  j["requests"] = r.requests.size();
  const double steady_p999_us = percentile(steady.latencies, 0.999);
  j["steady"] = window_json(steady, o.mode);
  j["restart_windows"] = window_json(restart, o.mode);
  j["restart_window_tail"] = restart_tail_json(r, steady_p999_us);

  const auto spans = restart_spans(r);
  std::vector<std::map<std::string, std::uint64_t>> losses(spans.size());
  nlohmann::json failures = nlohmann::json::array();
  std::map<pid_t, std::array<std::uint64_t, 3>> generations;  // first, last answer (us), answers
  for (const auto& q : r.requests) {
    if (q.served_by != 0) {
      auto [it, fresh] = generations.try_emplace(q.served_by, std::array<std::uint64_t, 3>{q.end_us, q.end_us, 0});
      it->second[1] = q.end_us;
      ++it->second[2];
    }
    if (q.result == outcome::ok) continue;
    if (failures.size() < max_failures_listed)
      failures.push_back({{"time_ms", to_ms(q.end_us)}, {"category", outcome_key(q.result)}});
    for (std::size_t i = 0; i < spans.size(); ++i)
      if (q.end_us >= spans[i].first && q.end_us < spans[i].second) ++losses[i][outcome_key(q.result)];
  }
  nlohmann::json restarts = nlohmann::json::array();
  for (std::size_t i = 0; i < r.restarts.size(); ++i) {
    const auto& rs = r.restarts[i];
    nlohmann::json one = {{"index", rs.index}, {"old_pid", rs.old_pid}, {"new_pid", rs.new_pid},
                          {"completed", rs.completed}, {"signal_ms", to_ms(rs.signal_us)},
                          {"failure", rs.failure}, {"losses", losses[i]}};
    one["first_new_answer_ms"] = rs.new_answer_us ? nlohmann::json(to_ms(rs.new_answer_us - rs.signal_us)) : nlohmann::json();
    one["old_exit_ms"] = rs.old_exit_us ? nlohmann::json(to_ms(rs.old_exit_us - rs.signal_us)) : nlohmann::json();
    nlohmann::json old_generation = nlohmann::json::array();
    for (const auto& [pid, gone_us] : rs.old_serving)
      old_generation.push_back({{"pid", pid}, {"gone_ms", gone_us ? nlohmann::json(to_ms(gone_us - rs.signal_us)) : nlohmann::json()}});
    one["old_generation"] = std::move(old_generation);
    if (o.mode == load_mode::udp_session) one["replaced_pid"] = rs.replaced_pid;
    restarts.push_back(std::move(one));
  }
  j["restarts"] = std::move(restarts);
  j["failures"] = std::move(failures);
  j["failures_truncated"] = r.requests.size() - steady.by_outcome[0] - restart.by_outcome[0] > max_failures_listed;
  nlohmann::json gens = nlohmann::json::array();
  for (const auto& [pid, g] : generations)
    gens.push_back({{"pid", pid}, {"first_answer_ms", to_ms(g[0])}, {"last_answer_ms", to_ms(g[1])}, {"answers", g[2]}});
  j["generations"] = std::move(gens);
  j["notes"] = r.notes;
  if (o.mode == load_mode::http_keepalive)
    j["server_ended_connections"] = {{"idle", r.server_ended_idle}, {"after_answer", r.server_ended_after_answer}};
  if (o.mode == load_mode::udp_session) {
    auto f = session_figures_of(r);
    const session_counts& sc = r.sessions;
    auto round_trip = [](std::vector<std::uint32_t>& answers) {
      return nlohmann::json{{"p50", percentile(answers, 0.5) / 1000.0}, {"p99", percentile(answers, 0.99) / 1000.0}, {"answers", answers.size()}};
    };
    auto ratio = [&f](double p) { const double x = f.ratio(p); return x > 0 ? nlohmann::json(x) : nlohmann::json(); };
    j["udp_session"] = {
        {"session_ms", o.session_ms},
        {"sessions", {{"opened", sc.opened}, {"completed", sc.completed}, {"broken", sc.broken()},
                      {"broken_unknown", sc.broken_unknown}, {"broken_replay", sc.broken_replay},
                      {"broken_no_answer", sc.broken_no_answer}, {"broken_wrong", sc.broken_wrong},
                      {"hello_failed", sc.hello_failed}}},
        {"datagrams", {{"sent", f.sent}, {"answered", f.answered}, {"lost", f.lost}, {"wrong", f.wrong}}},
        {"answers", {{"current", f.from_current}, {"draining", f.from_draining}}},
        {"round_trip_ms", {{"current", round_trip(f.current)}, {"current_while_draining", round_trip(f.current_while_draining)},
                           {"draining", round_trip(f.draining)}}},
        {"draining_ratio", {{"p50", ratio(0.5)}, {"p99", ratio(0.99)}}},
        {"old_generations", {{"exited", f.exited}, {"still_running", f.still_running},
                             {"exit_ms", {{"p50", f.old_exit.empty() ? nlohmann::json() : nlohmann::json(percentile(f.old_exit, 0.5) / 1000.0)},
                                          {"max", f.old_exit.empty() ? nlohmann::json() : nlohmann::json(percentile(f.old_exit, 1.0) / 1000.0)}}}}}};
  }

  std::ofstream out(path);
  if (!out) return cannot_write(path);
  out << j.dump(2) << "\n";
  out.flush();
  if (!out) return cannot_write(path);
  return {};
}

}  // namespace harness
