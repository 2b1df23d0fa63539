// restart-harness: the referee. See --help, and harness.hpp for how the pieces fit.
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <poll.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "connection_owners.hpp"
#include "generations.hpp"
#include "process_tree.hpp"
#include "harness.hpp"
#include "load.hpp"
#include "owner_sampler.hpp"
#include "report.hpp"
#include "server_control.hpp"

namespace harness {

std::uint64_t now_us() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000ULL + static_cast<std::uint64_t>(ts.tv_nsec) / 1000ULL;
}

namespace {

// UDP: a datagram comes back within 100 ms (udp-session: any answer, an ERROR for this one,
// which opens no session that would keep the first generation alive).
bool target_echoes(const options& o) {
  const int fd = socket(o.target.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0);
  bool ok = fd >= 0 && connect(fd, o.target.data(), o.target.size()) == 0 && send(fd, "probe", 5, 0) == 5;
  if (ok) {
    pollfd p{fd, POLLIN, 0};
    char back[64];
    const ssize_t got = poll(&p, 1, 100) == 1 ? recv(fd, back, sizeof back, 0) : -1;
    ok = o.mode == load_mode::udp_session ? got > 0 : got == 5;
  }
  if (fd >= 0) close(fd);
  return ok;
}

bool target_accepts(const options& o) {
  if (o.udp) return target_echoes(o);
  const int fd = socket(o.target.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  const bool ok = fd >= 0 && connect(fd, o.target.data(), o.target.size()) == 0;
  if (fd >= 0) close(fd);
  return ok;
}

class referee {
 public:
  referee(uv_loop_t* loop, options o) : loop_(loop), options_(std::move(o)), server_(loop_, options_), load_(loop_, options_, record_) {
    for (uv_timer_t* t : {&phase_timer_, &watch_timer_, &cap_timer_, &progress_timer_, &drain_timer_}) {
      uv_timer_init(loop_, t);
      t->data = this;
    }
    load_.on_served_by = [this](pid_t pid) { served_by(pid); };
    load_.on_session_opened = [this](pid_t pid) { session_opened(pid); };
    load_.on_answer_at_port = [this](connection_key port) { answered_at_port(port); };
    load_.on_port_closed = [this](connection_key port) {
      owner_by_port_.erase(port);
      // A port is reused by a later connection, maybe one the new generation holds: an answer
      // on this one (maybe from the old generation) must not be taken for that one's.
      last_answer_at_.erase(port);
    };
    load_.owner_of_port = [this](connection_key port) {
      const auto it = owner_by_port_.find(port);
      return it == owner_by_port_.end() ? pid_t{0} : it->second;
    };
    uv_timer_init(loop_, &owner_timer_);
    owner_timer_.data = this;
  }

  int run() {
    record_.start_us = now_us();
    if (server_.started_by_us()) {
      if (!options_.server_log.empty()) {
        log_path_ = options_.server_log;
      } else {
        // Kept only if the run fails (report()): runs that pass leave nothing behind.
        const char* directory = std::getenv("TMPDIR");
        std::string name = std::string(directory != nullptr && *directory != '\0' ? directory : "/tmp") +
                           "/restart-harness-XXXXXX.log";
        const int fd = mkstemps(name.data(), 4);
        if (fd >= 0) {
          close(fd);
          log_path_ = name;
          temporary_log_ = true;
        }
      }
    }
    if (auto started = server_.start(log_path_); !started) {
      if (temporary_log_) unlink(log_path_.c_str());
      return fail_early(started.error().message());
    }
    start_watchdog();
    // A server we did not start: its generations need not descend from anything we know.
    owners_.search_anywhere(!server_.started_by_us());
    if (owners_.supported()) {
      const bool ours = server_.started_by_us();
      sampler_ = std::make_unique<owner_sampler>(loop_, owners_, ours ? getpid() : options_.attach_pid,
                                                 !ours && options_.attach_pid > 0,
                                                 [this](owner_sample s) { apply_owners(std::move(s)); });
    }
    // The loop's own cap leaves time to stop the server and report before the watchdog's.
    uv_timer_start(&cap_timer_, [](uv_timer_t* t) {
      auto* self = static_cast<referee*>(t->data);
      self->record_.notes.push_back("hard cap of " + seconds_text(self->options_.hard_cap_s) + " s reached");
      self->record_.aborted = true;
      self->finish();
    }, static_cast<std::uint64_t>(loop_cap_s() * 1000), 0);
    startup_deadline_ = now_us() + static_cast<std::uint64_t>(options_.startup_timeout_s * 1e6);
    uv_timer_start(&watch_timer_, [](uv_timer_t* t) { static_cast<referee*>(t->data)->wait_for_target(); }, 0, 20);
    if (options_.progress && isatty(STDERR_FILENO))
      uv_timer_start(&progress_timer_, [](uv_timer_t* t) { static_cast<referee*>(t->data)->show_progress(); }, 250, 250);
    uv_run(loop_, UV_RUN_DEFAULT);
    stop_watchdog();
    return exit_status_;
  }

  ~referee() { stop_watchdog(); }

 private:
  static std::string seconds_text(double s) {
    char text[32];
    std::snprintf(text, sizeof text, "%g", s);
    return text;
  }

  // When the loop stops the run: a little before the hard cap, so that stopping the server and
  // the report fit in it.
  double loop_cap_s() const { return std::max(options_.hard_cap_s * 0.8, options_.hard_cap_s - 3); }

  // The hard cap, kept by a thread of its own: a loop too busy to run its timers (a tiny
  // --timeout once made it spin through timeouts and reconnects) cannot outlive it. At the cap
  // it stops every process we started, says so, and ends the run with status 1.
  void start_watchdog() {
    const auto cap = std::chrono::microseconds(static_cast<std::int64_t>(options_.hard_cap_s * 1e6));
    const bool ours = server_.started_by_us();
    watchdog_ = std::thread([this, cap, ours] {
      std::unique_lock<std::mutex> lock(watchdog_mutex_);
      if (watchdog_done_cv_.wait_for(lock, cap, [this] { return watchdog_done_; })) return;
      if (ours)
        for (pid_t pid : descendants_of(getpid())) kill(pid, SIGKILL);
      std::string line = "FAIL: hard cap of " + seconds_text(options_.hard_cap_s) +
                         " s reached before the referee could finish; the run was ended";
      if (ours) line += " and the server killed (server log: " + log_path_ + ")";
      line += "\n";
      std::fflush(stdout);
      if (write(STDOUT_FILENO, line.data(), line.size()) < 0) {}
      _exit(1);
    });
  }

  void stop_watchdog() {
    if (!watchdog_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(watchdog_mutex_);
      watchdog_done_ = true;
    }
    watchdog_done_cv_.notify_one();
    watchdog_.join();
  }

  int fail_early(const std::string& why) {
    std::printf("FAIL: %s\n", why.c_str());
    return 1;
  }

  std::uint64_t elapsed() const { return now_us() - record_.start_us; }

  void wait_for_target() {
    if (target_accepts(options_)) {
      uv_timer_stop(&watch_timer_);
      load_.start();
      // Keep learning which processes serve, so that a restart knows what was there before it.
      uv_timer_start(&owner_timer_, [](uv_timer_t* t) { static_cast<referee*>(t->data)->sample_owners(false); }, 0, 50);
      after(options_.settle_s, [](referee* self) { self->next_restart(); });
      return;
    }
    if (server_.started_by_us() && server_.first_exited()) {
      record_.notes.push_back("the server exited with status " + std::to_string(server_.first_exit_status()) +
                              " before it accepted a connection");
      record_.aborted = true;
      return finish();
    }
    if (now_us() > startup_deadline_) {
      record_.notes.push_back(options_.target_text + " did not accept a connection within " +
                              std::to_string(options_.startup_timeout_s) + " s");
      record_.aborted = true;
      finish();
    }
  }

  void after(double seconds, void (*then)(referee*)) {
    then_ = then;
    uv_timer_start(&phase_timer_, [](uv_timer_t* t) {
      auto* self = static_cast<referee*>(t->data);
      self->then_(self);
    }, static_cast<std::uint64_t>(seconds * 1000), 0);
  }

  void next_restart() {
    if (record_.restarts.size() >= options_.restarts) {
      const double ran = static_cast<double>(elapsed()) / 1e6;
      const double remaining = std::max(options_.settle_s, options_.duration_s - ran);
      if (options_.mode == load_mode::udp_session) after(remaining, [](referee* self) { self->wait_for_drains(); });
      else after(remaining, [](referee* self) { self->finish(); });
      return;
    }
    // Who serves right now, and who exists: only a process born after the signal can be the
    // new generation (an old worker that had not been seen serving yet is still old). The
    // signal goes out once that look is back.
    if (!sampler_) return signal_restart();
    looking_since_us_ = elapsed();
    look_then_signal();
  }

  // A restart is judged by the processes seen serving before it: without any (under load a look
  // can miss every short-lived connection), a reloading master that never exits would be taken
  // for an old generation that never leaves. So the signal waits for a look that found one, up
  // to a bound, and a note says so if it had to go without.
  void look_then_signal() {
    awaiting_ = sample_owners(true);
    then_sampled_ = [](referee* self) {
      const bool known = std::any_of(self->ever_served_.begin(), self->ever_served_.end(),
                                     [](pid_t pid) { return !grace::detail::process_has_exited(pid); });
      if (known || !self->owners_.supported()) return self->signal_restart();
      if (self->elapsed() - self->looking_since_us_ > owners_wait_us) {
        self->record_.notes.push_back("restart " + std::to_string(self->record_.restarts.size() + 1) +
                                      ": no look found a process serving a connection within " +
                                      std::to_string(owners_wait_us / 1000000) +
                                      " s; the old generation is judged by the main pid alone");
        return self->signal_restart();
      }
      self->after(0.005, [](referee* again) { again->look_then_signal(); });
    };
  }

  void signal_restart() {
    restart_record rs;
    rs.index = static_cast<unsigned>(record_.restarts.size() + 1);
    rs.old_pid = server_.main_pid();
    served_before_ = ever_served_;
    for (pid_t pid : tree_) served_before_.insert(pid);
    if (options_.mode == load_mode::udp_session) {
      // The generation answering HELLOs now is the one replaced; older ones already drain,
      // each followed by the restart that replaced it.
      rs.replaced_pid = current_generation_ != 0 ? current_generation_ : rs.old_pid;
      if (!grace::detail::process_has_exited(rs.replaced_pid)) rs.old_serving.emplace_back(rs.replaced_pid, 0);
    } else {
      for (pid_t pid : ever_served_)
        // UDP: the main process may be a socket holder that stays (grace-listen); the old
        // generation is the others. Without others, the main pid's exit is the old generation's.
        if (!grace::detail::process_has_exited(pid) && !(options_.udp && pid == rs.old_pid))
          rs.old_serving.emplace_back(pid, 0);
    }
    udp_new_holder_ = 0;
    new_ports_.clear();
    born_after_.clear();
    signal_ticks_ = boot_ticks_now();
    rs.signal_us = elapsed();
    record_.restarts.push_back(rs);
    answered_at_takeover_ = 0;
    if (auto triggered = server_.trigger_restart(); !triggered) {
      record_.restarts.back().failure = triggered.error().message();
      record_.aborted = true;
      return finish();
    }
    uv_timer_start(&watch_timer_, [](uv_timer_t* t) { static_cast<referee*>(t->data)->watch_restart(); }, 2, 2);
  }

  void served_by(pid_t pid) {
    answers_name_pids_ = true;
    // udp-session: every answer names its process, but only a HELLO's tells a new generation
    // (session_opened): a draining one answers its own sessions.
    if (options_.mode == load_mode::udp_session) {
      server_.saw_process(pid);
      ever_served_.insert(pid);
      return;
    }
    server_.saw_pid(pid);
    if (record_.restarts.empty()) return;
    auto& rs = record_.restarts.back();
    // A hint the server gives; an answer from a process that served before is never the new one.
    if (rs.completed || rs.new_answer_us != 0 || pid == rs.old_pid || served_before_.count(pid) != 0) return;
    if (rs.new_pid != 0 && pid != rs.new_pid) return;
    rs.new_pid = pid;
    rs.new_answer_us = elapsed();
  }

  // udp-session: a HELLO answered by `pid`. The first from a process that did not serve before
  // the signal is the new generation's, and completes the restart (watch_restart).
  void session_opened(pid_t pid) {
    if (current_generation_ == 0) current_generation_ = pid;
    if (record_.restarts.empty()) return;
    auto& rs = record_.restarts.back();
    if (rs.completed || rs.new_answer_us != 0 || pid == rs.old_pid || served_before_.count(pid) != 0) return;
    rs.new_pid = pid;
    rs.new_answer_us = elapsed();
    current_generation_ = pid;
  }

  // udp-session: each replaced generation is followed until it exits, restarts after its own
  // included; its exit is its restart's old_exit_us.
  bool track_drains() {
    bool draining = false;
    for (auto& rs : record_.restarts) {
      if (rs.old_exit_us != 0 || rs.old_serving.empty()) continue;
      bool all_gone = true;
      for (auto& [pid, gone_us] : rs.old_serving) {
        if (gone_us == 0 && grace::detail::process_has_exited(pid)) gone_us = elapsed();
        if (gone_us == 0) all_gone = false;
      }
      if (all_gone && rs.new_pid != 0)
        for (const auto& [pid, gone_us] : rs.old_serving) rs.old_exit_us = std::max(rs.old_exit_us, gone_us);
      else draining = true;
    }
    return draining;
  }

  // udp-session, after the last restart: the load goes on until every replaced generation has
  // exited (its sessions ended), for at most a session, a timeout and a second more, so that
  // the last restarts' exit times are measured too. Those still running then are reported.
  void wait_for_drains() {
    const auto bound_us = static_cast<std::uint64_t>((options_.session_ms / 1000 + options_.timeout_s + 1) * 1e6);
    if (drains_deadline_us_ == 0) drains_deadline_us_ = elapsed() + bound_us;
    if (!track_drains() || elapsed() >= drains_deadline_us_) return finish();
    after(0.01, [](referee* self) { self->wait_for_drains(); });
  }

  // Asks which process holds the server side of each of our connections now (owner_sampler:
  // off this loop); 0 when that cannot be known. fresh_tree: list the server's processes anew.
  std::uint64_t sample_owners(bool fresh_tree) {
    if (!sampler_ || finishing_) return 0;
    const bool watching = !record_.restarts.empty() && !record_.restarts.back().completed;
    return sampler_->request(fresh_tree, watching || fresh_tree, load_.live_ports());
  }

  // During a restart, a process that did not serve before is the new generation, and the answer
  // on a connection it holds is its first (or, if it came before this look, the time it came).
  void apply_owners(owner_sample s) {
    tree_ = std::move(s.tree);
    const bool watching = !record_.restarts.empty() && !record_.restarts.back().completed && !finishing_;
    // UDP: the processes holding the socket serve; one that did not hold it before the signal is new.
    for (const pid_t pid : s.holders) {
      ever_served_.insert(pid);
      if (watching && served_before_.count(pid) == 0 && !born_before_signal(pid) && udp_new_holder_ == 0)
        udp_new_holder_ = pid;
    }
    for (const auto& [port, pid] : s.owners) {
      owner_by_port_[port] = pid;
      ever_served_.insert(pid);
      if (!watching || served_before_.count(pid) != 0 || born_before_signal(pid)) continue;
      auto& rs = record_.restarts.back();
      if (rs.new_pid == 0) rs.new_pid = pid;
      new_ports_.insert(port);
      const auto answered = last_answer_at_.find(port);
      if (answered != last_answer_at_.end() && answered->second >= rs.signal_us &&
          (rs.new_answer_us == 0 || answered->second < rs.new_answer_us))
        rs.new_answer_us = answered->second;
    }
    if (then_sampled_ && s.sequence >= awaiting_ && !finishing_) std::exchange(then_sampled_, nullptr)(this);
  }

  // Only a process born after the signal can be the new generation. The processes seen before
  // it are in served_before_; a server started elsewhere can have old processes never seen (an
  // old worker that had no connection of ours): their start time says so. A process started in
  // the signal's own clock tick counts as new.
  bool born_before_signal(pid_t pid) {
    if (born_after_.count(pid) != 0) return false;
    const std::uint64_t started = start_ticks(pid);
    if (started != 0 && started < signal_ticks_) {
      served_before_.insert(pid);
      return true;
    }
    born_after_.insert(pid);
    return false;
  }

  void answered_at_port(connection_key port) {
    const std::uint64_t now = elapsed();
    last_answer_at_[port] = now;
    if (record_.restarts.empty() || new_ports_.count(port) == 0) return;
    auto& rs = record_.restarts.back();
    if (!rs.completed && (rs.new_answer_us == 0 || now < rs.new_answer_us)) rs.new_answer_us = now;
  }

  void watch_restart() {
    auto& rs = record_.restarts.back();
    sample_owners(false);
    if (options_.mode == load_mode::udp_session) return watch_session_restart(rs);
    const pid_t main = server_.main_pid();
    const bool owners_known = owners_.supported() && !rs.old_serving.empty();
    if (!owners_known) {
      // Without socket owners (an abstract unix socket, or nothing seen serving before the
      // signal): the pid file moving, and pid hints in answers.
      if (!options_.pidfile.empty() && main != rs.old_pid && rs.new_pid == 0) rs.new_pid = main;
      if (rs.new_pid != 0 && rs.new_answer_us == 0 && !answers_name_pids_) {
        if (answered_at_takeover_ == 0) answered_at_takeover_ = load_.answered() + 1;
        else if (load_.answered() >= answered_at_takeover_) rs.new_answer_us = elapsed();
      }
    }
    // The old generation is gone when every process that served before the signal is.
    bool all_old_gone = true;
    for (auto& [pid, gone_us] : rs.old_serving) {
      if (gone_us == 0 && grace::detail::process_has_exited(pid)) gone_us = elapsed();
      if (gone_us == 0) all_old_gone = false;
    }
    if (rs.old_serving.empty()) all_old_gone = grace::detail::process_has_exited(rs.old_pid);
    if (options_.udp && owners_known) {
      // UDP behind a socket holder: the socket is the same in every generation, and an answer
      // names nobody. A new process holding the socket is the new generation, and the first
      // answer once every old holder is gone is its first: none of the old ones could send it.
      if (rs.new_pid == 0 && udp_new_holder_ != 0 && all_old_gone) rs.new_pid = udp_new_holder_;
      if (rs.new_pid != 0 && rs.new_answer_us == 0) {
        if (answered_at_takeover_ == 0) answered_at_takeover_ = load_.answered() + 1;
        else if (load_.answered() >= answered_at_takeover_) rs.new_answer_us = elapsed();
      }
    }
    if (rs.old_exit_us == 0 && rs.new_pid != 0 && all_old_gone) {
      rs.old_exit_us = elapsed();
      for (const auto& [pid, gone_us] : rs.old_serving) rs.old_exit_us = std::max(rs.old_exit_us, gone_us);
    }
    if (rs.new_answer_us != 0 && rs.old_exit_us != 0 && !server_.restart_command_running()) {
      rs.completed = true;
      // Without a pid file the next signal goes to the new generation, unless the old main
      // process lives on (a master whose workers were replaced: nginx -s reload, HAProxy).
      if (grace::detail::process_has_exited(rs.old_pid)) server_.follow(rs.new_pid);
      uv_timer_stop(&watch_timer_);
      const double since = static_cast<double>(elapsed() - rs.signal_us) / 1e6;
      const double wait = options_.interval_s ? std::max(0.0, *options_.interval_s - since) : 0.0;
      after(wait, [](referee* self) { self->next_restart(); });
      return;
    }
    if (static_cast<double>(elapsed() - rs.signal_us) / 1e6 > options_.restart_timeout_s) {
      rs.failure = rs.new_answer_us == 0 ? "no answer from a new generation within " + std::to_string(static_cast<int>(options_.restart_timeout_s)) + " s"
                                         : "old generation (pid " + std::to_string(rs.old_pid) + ") still running after " +
                                               std::to_string(static_cast<int>(options_.restart_timeout_s)) + " s";
      uv_timer_stop(&watch_timer_);
      record_.aborted = true;
      finish();
    }
  }

  // udp-session: a restart is complete once the new generation answers a HELLO; the old one may
  // live on while its sessions last (track_drains follows it, without holding the next restart).
  void watch_session_restart(restart_record& rs) {
    track_drains();
    // A pid file that still names the replaced generation (written off the new one's loop, it
    // lags its first answer) would send the next signal to a draining process: wait for it.
    const bool pidfile_lags = !options_.pidfile.empty() && rs.replaced_pid == rs.old_pid && server_.main_pid() == rs.old_pid;
    if (rs.new_answer_us != 0 && !server_.restart_command_running() && !pidfile_lags) {
      rs.completed = true;
      // The next signal goes to the new generation when the old main process was a generation
      // (it answered HELLOs itself), not a socket holder that stays (grace-listen).
      if (rs.replaced_pid == rs.old_pid || grace::detail::process_has_exited(rs.old_pid)) server_.follow(rs.new_pid);
      uv_timer_stop(&watch_timer_);
      if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&drain_timer_)))
        uv_timer_start(&drain_timer_, [](uv_timer_t* t) { static_cast<referee*>(t->data)->track_drains(); }, 10, 10);
      const double since = static_cast<double>(elapsed() - rs.signal_us) / 1e6;
      const double wait = options_.interval_s ? std::max(0.0, *options_.interval_s - since) : 0.0;
      after(wait, [](referee* self) { self->next_restart(); });
      return;
    }
    if (static_cast<double>(elapsed() - rs.signal_us) / 1e6 > options_.restart_timeout_s) {
      rs.failure = rs.new_answer_us == 0 ? "no HELLO answered by a new generation within " + std::to_string(static_cast<int>(options_.restart_timeout_s)) + " s"
                                         : "the pid file " + options_.pidfile + " still names the replaced generation (pid " +
                                               std::to_string(rs.old_pid) + ") after " + std::to_string(static_cast<int>(options_.restart_timeout_s)) + " s";
      uv_timer_stop(&watch_timer_);
      record_.aborted = true;
      finish();
    }
  }

  void show_progress() {
    std::fprintf(stderr, "\r%10llu answered %8llu lost %4zu/%u restarts %8.1f s ",
                 static_cast<unsigned long long>(load_.answered()), static_cast<unsigned long long>(load_.lost()),
                 record_.restarts.size(), options_.restarts, static_cast<double>(elapsed()) / 1e6);
    if (options_.mode == load_mode::udp_session)
      std::fprintf(stderr, "%8llu/%llu sessions broken ", static_cast<unsigned long long>(record_.sessions.broken()),
                   static_cast<unsigned long long>(record_.sessions.opened));
    std::fflush(stderr);
  }

  void finish() {
    if (finishing_) return;
    finishing_ = true;
    // A restart under way when the run ends (the hard cap) says so rather than failing silently.
    if (!record_.restarts.empty() && !record_.restarts.back().completed && record_.restarts.back().failure.empty())
      record_.restarts.back().failure = "the run ended before it completed";
    if (options_.mode == load_mode::udp_session) track_drains();
    for (uv_timer_t* t : {&phase_timer_, &watch_timer_, &cap_timer_, &progress_timer_, &owner_timer_, &drain_timer_}) uv_timer_stop(t);
    load_.stop([this] {
      record_.end_us = elapsed();
      // Within the hard cap, leaving the watchdog a second.
      const double left = options_.hard_cap_s - static_cast<double>(elapsed()) / 1e6 - 1;
      server_.stop_all(std::max(0.1, std::min(10.0, left)), [this] { report(); });
    });
  }

  void report() {
    if (options_.progress && isatty(STDERR_FILENO)) std::fprintf(stderr, "\r%100s\r", "");
    std::string table;
    const verdict v = summarize(options_, record_, table);
    std::fputs(table.c_str(), stdout);
    if (!options_.json_file.empty())
      if (auto written = write_json(options_, record_, v, options_.json_file); !written)
        std::printf("  note: %s\n", written.error().message().c_str());
    if (!options_.plot_file.empty())
      if (auto written = write_svg(options_, record_, options_.plot_file); !written)
        std::printf("  note: %s\n", written.error().message().c_str());
    if (!log_path_.empty()) {
      if (!temporary_log_) std::printf("  server log: %s\n", log_path_.c_str());
      else if (!v.pass) std::printf("  server log (kept because the run failed): %s\n", log_path_.c_str());
      else unlink(log_path_.c_str());
    }
    std::printf("%s\n", v.line.c_str());
    std::fflush(stdout);
    exit_status_ = v.pass ? 0 : 1;
    if (sampler_) sampler_->stop();
    uv_walk(loop_, [](uv_handle_t* h, void*) { if (!uv_is_closing(h)) uv_close(h, nullptr); }, nullptr);
  }

  uv_loop_t* loop_;
  options options_;
  run_record record_;
  server_control server_;
  load_generator load_;
  uv_timer_t phase_timer_{}, watch_timer_{}, cap_timer_{}, progress_timer_{}, drain_timer_{};
  void (*then_)(referee*) = nullptr;
  std::uint64_t startup_deadline_ = 0;
  std::uint64_t answered_at_takeover_ = 0;
  connection_owners owners_{options_.target, options_.udp};
  uv_timer_t owner_timer_{};
  std::unique_ptr<owner_sampler> sampler_;
  static constexpr std::uint64_t owners_wait_us = 5000000;
  std::uint64_t looking_since_us_ = 0;          // when the next restart began to wait for a look
  std::uint64_t awaiting_ = 0;                  // the look the next restart waits for
  void (*then_sampled_)(referee*) = nullptr;    // what runs once it is back
  std::vector<pid_t> tree_;                     // the server's processes, as last looked at
  std::set<pid_t> ever_served_, served_before_;
  std::unordered_set<connection_key> new_ports_;
  std::unordered_map<connection_key, std::uint64_t> last_answer_at_;
  std::unordered_map<connection_key, pid_t> owner_by_port_;  // as last seen; a port is reused later
  bool answers_name_pids_ = false;  // grace's samples say "pid=N"; other servers do not
  std::string log_path_;     // empty for a server we did not start
  bool temporary_log_ = false;  // ours to remove when the run passes
  std::thread watchdog_;
  std::mutex watchdog_mutex_;
  std::condition_variable watchdog_done_cv_;
  bool watchdog_done_ = false;
  pid_t udp_new_holder_ = 0;
  std::uint64_t signal_ticks_ = 0;   // the last signal, in clock ticks since boot
  std::set<pid_t> born_after_;       // processes known to be born after it  // UDP: a process holding the socket that did not before the signal
  bool finishing_ = false;
  int exit_status_ = 1;
  pid_t current_generation_ = 0;         // udp-session: the process answering HELLOs now
  std::uint64_t drains_deadline_us_ = 0;  // udp-session: the end of the wait for drains
};

}  // namespace
}  // namespace harness

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  harness::referee referee(uv_default_loop(), harness::parse_options(argc, argv));
  return referee.run();
}
