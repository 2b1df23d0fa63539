#include "supervisor.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "control.hpp"
#include "grace/activation.hpp"
#include "grace/notify.hpp"
#include "notify_inbox.hpp"
#include "path_watch.hpp"

namespace grace_listen {
namespace {

constexpr auto fast_failure = std::chrono::seconds(1);  // a failed run shorter than this failed fast
constexpr std::chrono::milliseconds first_backoff{100};
constexpr std::chrono::milliseconds max_backoff{10000};
// A clean exit is started again at once, but never more often than this: a command that exits 0
// at once (`true`) must not spin a core.
constexpr std::chrono::milliseconds clean_exit_floor{100};

void say(const std::string& line) {
  std::fprintf(stderr, "grace-listen[%d]: %s\n", static_cast<int>(getpid()), line.c_str());
  std::fflush(stderr);
}

std::string describe_exit(int64_t status, int signal, bool known) {
  if (!known) return "exited (its parent reaped it)";
  if (signal != 0) return std::string("was killed by ") + strsignal(signal);
  return "exited with status " + std::to_string(status);
}

std::string seconds_text(std::chrono::milliseconds ms) {
  char text[32];
  std::snprintf(text, sizeof text, "%g s", static_cast<double>(ms.count()) / 1000.0);
  return text;
}

long long ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t).count();
}

// The parent of `pid` from /proc (an in-memory file: reading it does not wait on a disk), 0 when
// it is gone.
pid_t parent_of(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char text[512];
  const ssize_t n = ::read(fd, text, sizeof text - 1);
  ::close(fd);
  if (n <= 0) return 0;
  text[n] = '\0';
  const char* close_paren = std::strrchr(text, ')');
  if (close_paren == nullptr) return 0;
  char state = 0;
  int ppid = 0;
  if (std::sscanf(close_paren + 1, " %c %d", &state, &ppid) != 2) return 0;
  return static_cast<pid_t>(ppid);
}

template <typename Handle>
void close_and_delete(Handle* h) {
  if (h == nullptr) return;
  uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* closed) { delete reinterpret_cast<Handle*>(closed); });
}

}  // namespace

// One run of the command, from start until its process is gone.
struct supervisor::generation {
  enum class state { starting, serving, retiring };
  supervisor* owner = nullptr;
  unsigned number = 0;
  pid_t pid = 0;  // the process that stands for it: the one started, or the one it named (MAINPID=)
  state at = state::starting;
  bool signalled = false;  // told to stop (SIGTERM): the stop timeout runs
  bool gone = false;       // its pid could not be watched because it had exited already
  clock_type::time_point started_at;
  int pid_fd = -1;
  uv_poll_t* exit_poll = nullptr;  // readable once `pid` exited
  uv_timer_t* ready_timer = nullptr;  // --ready-timeout
  uv_timer_t* after_timer = nullptr;  // --ready-after
  uv_timer_t* kill_timer = nullptr;   // --stop-timeout
  uv_timer_t* make_timer(uv_loop_t* loop) {
    auto* t = new uv_timer_t{};
    uv_timer_init(loop, t);
    t->data = this;
    return t;
  }
  void stop_polling() {
    if (exit_poll != nullptr) uv_poll_stop(exit_poll);
  }
  void stop_watching() {
    close_and_delete(std::exchange(exit_poll, nullptr));
    if (pid_fd >= 0) ::close(std::exchange(pid_fd, -1));  // libuv let go of it in uv_close
  }
  void close_handles() {
    stop_watching();
    close_and_delete(std::exchange(ready_timer, nullptr));
    close_and_delete(std::exchange(after_timer, nullptr));
    close_and_delete(std::exchange(kill_timer, nullptr));
  }
};

struct supervisor::handles {
  uv_signal_t hup{}, term{}, interrupt{}, child{};
  uv_timer_t backoff{}, debounce{}, notify_retry{}, gone_check{};
  uv_poll_t inbox{};
};

supervisor::supervisor(uv_loop_t* loop, const options& o, std::vector<held_socket> sockets, notify_inbox& inbox)
    : loop_(loop), options_(o), sockets_(std::move(sockets)), inbox_(inbox), handles_(std::make_unique<handles>()) {
  auto& h = *handles_;
  for (uv_signal_t* s : {&h.hup, &h.term, &h.interrupt, &h.child}) {
    uv_signal_init(loop_, s);
    s->data = this;
  }
  uv_signal_start(
      &h.hup, [](uv_signal_t* s, int) { static_cast<supervisor*>(s->data)->restart("SIGHUP", std::nullopt); }, SIGHUP);
  uv_signal_start(&h.term, [](uv_signal_t* s, int n) { static_cast<supervisor*>(s->data)->stop(n); }, SIGTERM);
  uv_signal_start(&h.interrupt, [](uv_signal_t* s, int n) { static_cast<supervisor*>(s->data)->stop(n); }, SIGINT);
  uv_signal_start(&h.child, [](uv_signal_t* s, int) { static_cast<supervisor*>(s->data)->reap_children(); }, SIGCHLD);
  for (uv_timer_t* t : {&h.backoff, &h.debounce, &h.notify_retry, &h.gone_check}) {
    uv_timer_init(loop_, t);
    t->data = this;
  }
  uv_poll_init(loop_, &h.inbox, inbox_.fd());
  h.inbox.data = this;
  uv_poll_start(&h.inbox, UV_READABLE,
                [](uv_poll_t* p, int, int) { static_cast<supervisor*>(p->data)->on_notifications(); });

  for (const auto& path : options_.watch) {
    auto w = std::make_unique<path_watch>(loop_, path, [this](const std::string& changed) {
      // A build writes many files: upgrade once things have been quiet for a moment.
      pending_reason_ = "a change under " + changed;
      uv_timer_start(&handles_->debounce,
                     [](uv_timer_t* t) {
                       auto* self = static_cast<supervisor*>(t->data);
                       self->restart(self->pending_reason_, std::nullopt);
                     },
                     static_cast<uint64_t>(options_.debounce.count()), 0);
    });
    if (const std::string error = w->start(); !error.empty()) {
      say(error);
      std::exit(1);
    }
    watches_.push_back(std::move(w));
  }

  control_ = std::make_unique<control_server>(loop_, [this](unsigned id) { restart("--reload", id); });
  if (const std::string error = control_->open(options_.control); !error.empty()) {
    if (!options_.control.empty()) {
      say(error);
      std::exit(1);
    }
    // The default abstract name is taken (another grace-listen of the same pid number in this
    // network namespace, from another pid namespace): serve on without it.
    say(error + "; --reload " + std::to_string(getpid()) + " will not reach this process (give --control PATH)");
    control_.reset();
  }
}

supervisor::~supervisor() {
  for (auto& g : generations_) g->close_handles();
}

int supervisor::run() {
  std::string shown;
  for (const auto& s : sockets_) shown += (shown.empty() ? "" : ", ") + s.shown;
  say("holding " + shown + (control_ ? "; --reload at " + control_->address() : std::string()));
  start("first start", false);
  uv_run(loop_, UV_RUN_DEFAULT);
  return exit_status_;
}

// --- Starting ------------------------------------------------------------------------------------

void supervisor::start(const std::string& reason, bool beside_serving) {
  grace::activation_options a;
  a.argv = options_.command;
  for (const auto& sock : sockets_) a.sockets.push_back({sock.fd, sock.name});
  // Each generation tells grace-listen, never the service manager directly: grace-listen is the
  // service's main process, and speaks for it.
  a.extra_env.push_back("NOTIFY_SOCKET=" + inbox_.notify_path());
  if (options_.overlap) a.extra_env.push_back("GRACE_HANDOVER_SOCKET=" + inbox_.handover_path());
  const auto started_at = clock_type::now();
  auto pid = grace::run_with_sockets(a);
  if (!pid) {
    say("cannot start: " + pid.error().message());
    if (beside_serving) {
      candidate_ = nullptr;
      say("rollback: the next generation could not be started; pid " + std::to_string(serving_->pid) +
          " serves on");
      tell_manager("READY=1");
      settle_waiters(false, "rolled back: cannot start: " + pid.error().message());
      return after_upgrade_settled();
    }
    settle_waiters(false, "cannot start: " + pid.error().message());
    return start_after_exit(127, 0, true, clock_type::duration::zero());
  }
  auto owned = std::make_unique<generation>();
  generation& g = *owned;
  g.owner = this;
  g.number = next_number_++;
  g.pid = *pid;
  g.started_at = started_at;
  generations_.push_back(std::move(owned));
  if (beside_serving) candidate_ = &g;
  watch_pid(g);
  say("started " + options_.command.front() + " as pid " + std::to_string(g.pid) + ", generation " +
      std::to_string(g.number) + " (" + reason + ")");
  if (!options_.overlap && !options_.ready_after) {
    // Nothing to roll back to, and nothing waits for it to serve: it serves once it runs.
    became_ready(g, "");
    return;
  }
  g.ready_timer = g.make_timer(loop_);
  uv_timer_start(g.ready_timer,
                 [](uv_timer_t* t) {
                   auto* gen = static_cast<generation*>(t->data);
                   gen->owner->on_ready_timeout(*gen);
                 },
                 static_cast<uint64_t>(options_.ready_timeout.count()), 0);
  if (options_.ready_after) {
    g.after_timer = g.make_timer(loop_);
    uv_timer_start(g.after_timer,
                   [](uv_timer_t* t) {
                     auto* gen = static_cast<generation*>(t->data);
                     gen->owner->became_ready(*gen, "it ran for " + seconds_text(*gen->owner->options_.ready_after) +
                                                        " (--ready-after)");
                   },
                   static_cast<uint64_t>(options_.ready_after->count()), 0);
  }
}

// Watches g.pid's exit with a pidfd: the one way to learn the exit of a process that is not our
// child (one named by MAINPID=). Our children are reaped on SIGCHLD.
void supervisor::watch_pid(generation& g) {
  g.stop_watching();
  g.pid_fd = static_cast<int>(syscall(SYS_pidfd_open, g.pid, 0));
  if (g.pid_fd < 0) {
    if (errno == ESRCH) {
      // Gone and reaped already, by its own parent (a child of ours is a zombie until we reap it,
      // and has a pidfd until then): its exit is reported on the next turn of the loop.
      g.gone = true;
      uv_timer_start(&handles_->gone_check,
                     [](uv_timer_t* t) {
                       auto* self = static_cast<supervisor*>(t->data);
                       for (bool again = true; again;) {
                         again = false;
                         for (const auto& gen : self->generations_)
                           if (gen->gone) {
                             self->on_exit(*gen, 0, 0, false);
                             again = true;
                             break;
                           }
                       }
                     },
                     0, 0);
      return;
    }
    say("cannot watch pid " + std::to_string(g.pid) + " (" + std::strerror(errno) +
        "): its exit is known only if it is a child of grace-listen");
    return;
  }
  g.exit_poll = new uv_poll_t{};
  uv_poll_init(loop_, g.exit_poll, g.pid_fd);
  g.exit_poll->data = &g;
  uv_poll_start(g.exit_poll, UV_READABLE, [](uv_poll_t* p, int, int) {
    auto* gen = static_cast<generation*>(p->data);
    gen->owner->on_pidfd(*gen);
  });
}

// SIGHUP, --reload or a change under --watch.
void supervisor::restart(const std::string& reason, std::optional<unsigned> waiter) {
  const auto refuse = [&](const std::string& why) {
    say(reason + ": not now: " + why);
    if (waiter) control_->answer(*waiter, false, why);
  };
  if (stopping_) return refuse("grace-listen is stopping");
  if (waiter) waiters_.push_back(*waiter);  // answered when what starts now serves, or fails
  if (restarting_ != nullptr) return;       // without --overlap: one is on its way already
  generation* now = current();
  if (now == nullptr) {
    // Waiting out a backoff: start now.
    uv_timer_stop(&handles_->backoff);
    fast_failures_ = 0;
    start(reason, false);
    return;
  }
  if (options_.overlap) {
    const bool busy = candidate_ != nullptr || now->at == generation::state::starting;
    if (busy || generations_.size() + 1 > options_.max_generations) {
      // Refused: this request is not answered with the upgrade under way.
      if (waiter) waiters_.pop_back();
      // A change that comes during an upgrade is not lost: it starts another once this one settles.
      if (busy && reason.rfind("a change under ", 0) == 0) {
        deferred_change_ = reason;
        say(reason + ": an upgrade is under way; another follows once it settles");
        return;
      }
      return refuse(upgrade_refusal());
    }
    return upgrade(reason);
  }
  // Without --overlap: stop it, then start the next one.
  restart_reason_ = reason;
  restarting_ = now;
  if (serving_ == now) serving_ = nullptr;
  say("restarting pid " + std::to_string(now->pid) + " (" + reason + ")");
  retire(*now, SIGTERM);
}

// Why an upgrade cannot start now (one at a time; the cap).
std::string supervisor::upgrade_refusal() const {
  generation* now = current();
  if (candidate_ != nullptr)
    return "an upgrade is under way: " + describe(*candidate_) + " is not ready yet (one upgrade at a time)";
  if (now != nullptr && now->at == generation::state::starting)
    return describe(*now) + " is starting and not ready yet";
  std::string alive;
  for (const auto& g : generations_) alive += (alive.empty() ? "" : ", ") + describe(*g);
  return std::to_string(generations_.size()) + " generation(s) alive (" + alive + "), and --max-generations is " +
         std::to_string(options_.max_generations);
}

void supervisor::upgrade(const std::string& reason) {
  generation* now = current();
  tell_manager("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(grace::monotonic_usec()));
  say("upgrading (" + reason + "): starting the next generation beside " + describe(*now));
  start(reason, true);
}

// The generation that served ended on its own: start the next one, backing off only after runs
// that failed fast.
void supervisor::start_after_exit(int64_t status, int signal, bool status_known, clock_type::duration ran) {
  const std::string how = describe_exit(status, signal, status_known);
  const auto ran_ms = std::chrono::duration_cast<std::chrono::milliseconds>(ran);
  pending_reason_ = "it " + how;
  const auto later = [this](std::chrono::milliseconds delay) {
    uv_timer_start(&handles_->backoff,
                   [](uv_timer_t* t) {
                     auto* self = static_cast<supervisor*>(t->data);
                     self->start(self->pending_reason_, false);
                   },
                   static_cast<uint64_t>(delay.count()), 0);
  };
  const bool clean = status_known && status == 0 && signal == 0;
  if (clean) {
    // A clean exit is not a failure: no back-off, however short the run.
    fast_failures_ = 0;
    if (ran_ms >= clean_exit_floor) return start(pending_reason_, false);
    say("the command " + how + " after " + std::to_string(ran_ms.count()) + " ms; starting it again in " +
        std::to_string(clean_exit_floor.count()) + " ms (a clean exit: no back-off)");
    return later(clean_exit_floor);
  }
  if (ran >= fast_failure) {
    fast_failures_ = 0;
    return start(pending_reason_, false);
  }
  // Failing at once, again and again: wait longer each time rather than spin.
  ++fast_failures_;
  const std::chrono::milliseconds delay =
      std::min<std::chrono::milliseconds>(max_backoff, first_backoff * (1LL << std::min(fast_failures_ - 1, 10U)));
  say("the command " + how + " after " + std::to_string(ran_ms.count()) + " ms (" + std::to_string(fast_failures_) +
      " fast failure(s) in a row); starting it again in " + std::to_string(delay.count()) + " ms");
  later(delay);
}

// --- Readiness -----------------------------------------------------------------------------------

void supervisor::became_ready(generation& g, const std::string& how) {
  if (g.at != generation::state::starting) return;
  close_and_delete(std::exchange(g.ready_timer, nullptr));
  close_and_delete(std::exchange(g.after_timer, nullptr));
  g.at = generation::state::serving;
  if (candidate_ == &g) {
    generation* old = serving_;
    candidate_ = nullptr;
    serving_ = &g;
    say(describe(g) + " is ready (" + how + ") after " + std::to_string(ms_since(g.started_at)) + " ms and serves; " +
        (old != nullptr ? describe(*old) + " is told to stop (SIGTERM) and drains" : std::string("nothing to stop")));
    if (old != nullptr) retire(*old, SIGTERM);
  } else {
    serving_ = &g;
    if (!how.empty()) say(describe(g) + " is ready (" + how + ") and serves");
  }
  tell_manager("READY=1");
  settle_waiters(true, describe(g) + " serves");
  after_upgrade_settled();
}

void supervisor::on_ready_timeout(generation& g) {
  close_and_delete(std::exchange(g.ready_timer, nullptr));
  if (g.at != generation::state::starting) return;
  if (candidate_ == &g)
    return roll_back(g, "was not ready within " + seconds_text(options_.ready_timeout) + " (--ready-timeout)");
  // Nothing older to go back to: it serves, ready or not.
  say(describe(g) + " did not say READY=1 within " + seconds_text(options_.ready_timeout) +
      "; it serves anyway, having no older generation to give way to (a command that cannot say READY=1 wants "
      "--ready-after)");
  became_ready(g, "--ready-timeout passed");
}

void supervisor::roll_back(generation& g, const std::string& why) {
  candidate_ = nullptr;
  const std::string line = "rollback: " + describe(g) + " " + why + "; " +
                           (serving_ != nullptr ? describe(*serving_) + " serves on" : std::string("nothing serves"));
  say(line);
  if (g.at == generation::state::starting) retire(g, SIGTERM);
  tell_manager("READY=1");
  settle_waiters(false, line);
  after_upgrade_settled();
}

void supervisor::after_upgrade_settled() {
  if (deferred_change_.empty() || stopping_ || candidate_ != nullptr) return;
  // Later, on its own turn: the one that just settled finishes what it does first.
  pending_reason_ = std::exchange(deferred_change_, std::string());
  uv_timer_start(&handles_->debounce,
                 [](uv_timer_t* t) {
                   auto* self = static_cast<supervisor*>(t->data);
                   self->restart(self->pending_reason_, std::nullopt);
                 },
                 static_cast<uint64_t>(options_.debounce.count()), 0);
}

void supervisor::settle_waiters(bool ok, const std::string& line) {
  for (unsigned id : std::exchange(waiters_, {}))
    if (control_) control_->answer(id, ok, line);
}

// --- Stopping ------------------------------------------------------------------------------------

// Tells g to stop with `signal` (once), and kills it if it is still there after --stop-timeout.
void supervisor::retire(generation& g, int signal) {
  close_and_delete(std::exchange(g.ready_timer, nullptr));
  close_and_delete(std::exchange(g.after_timer, nullptr));
  g.at = generation::state::retiring;
  if (g.signalled) return;
  g.signalled = true;
  ::kill(g.pid, signal);
  g.kill_timer = g.make_timer(loop_);
  uv_timer_start(g.kill_timer,
                 [](uv_timer_t* t) {
                   auto* gen = static_cast<generation*>(t->data);
                   say(gen->owner->describe(*gen) + " did not exit within " +
                       seconds_text(gen->owner->options_.stop_timeout) +
                       " (--stop-timeout) of being told to stop: killing it (SIGKILL)");
                   ::kill(gen->pid, SIGKILL);
                 },
                 static_cast<uint64_t>(options_.stop_timeout.count()), 0);
}

void supervisor::stop(int signal) {
  if (stopping_) {
    // Asked twice: now.
    for (auto& g : generations_) ::kill(g->pid, SIGKILL);
    return;
  }
  stopping_ = true;
  stop_signal_ = signal;
  exit_status_ = 128 + signal;
  tell_manager("STOPPING=1");
  uv_timer_stop(&handles_->backoff);
  uv_timer_stop(&handles_->debounce);
  deferred_change_.clear();
  settle_waiters(false, "grace-listen is stopping");
  if (candidate_ != nullptr) {
    say(describe(*candidate_) + " was not ready yet: stopping it");
    candidate_ = nullptr;
  }
  for (auto& g : generations_) {
    if (g->signalled) continue;  // told already: its stop timeout runs
    say(std::string("passing ") + strsignal(signal) + " to pid " + std::to_string(g->pid));
    retire(*g, signal);  // serving_ stays set: its exit status is grace-listen's
  }
  if (generations_.empty()) finish();
}

void supervisor::finish() {
  say("exiting with status " + std::to_string(exit_status_));
  uv_stop(loop_);
}

// --- Exits ---------------------------------------------------------------------------------------

// Reaps every child that exited: the generations started here, and any orphan reparented to this
// process (a child subreaper, or PID 1).
void supervisor::reap_children() {
  for (;;) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    const int64_t code = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
    const int signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    if (generation* g = find(pid)) on_exit(*g, code, signal, true);
  }
}

void supervisor::on_pidfd(generation& g) {
  const pid_t pid = g.pid;
  reap_children();
  if (generation* still = find(pid); still != &g) return;
  // Still here. If it is a child of ours, its status is ours to read: a pidfd can turn readable a
  // moment before the exit is waitable (kernels differ), and SIGCHLD follows once it is. Stop
  // polling (level-triggered, it would spin) and let the reaper report it, with its status.
  siginfo_t info{};
  if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0) {
    g.stop_polling();
    if (info.si_pid == pid) reap_children();  // waitable by now
    return;
  }
  // It exited (a zombie counts), but it is somebody else's child to reap: no status to report.
  on_exit(g, 0, 0, false);
}

void supervisor::on_exit(generation& g, int64_t status, int signal, bool status_known) {
  const std::string how = describe_exit(status, signal, status_known);
  const auto ran = clock_type::now() - g.started_at;
  if (&g == candidate_) {
    g.at = generation::state::retiring;  // gone: nothing to stop
    roll_back(g, how + " before it was ready");
    return forget(g);
  }
  if (&g == restarting_) {
    restarting_ = nullptr;
    say("the command " + how + "; starting it again");
    forget(g);
    if (!stopping_) start(std::exchange(restart_reason_, std::string()), false);
    else if (generations_.empty()) finish();
    return;
  }
  const bool was_serving = &g == serving_;
  if (stopping_) {
    if (was_serving) {
      exit_status_ = !status_known ? 0 : signal != 0 ? 128 + signal : static_cast<int>(status);
      serving_ = nullptr;
    }
    say(describe(g) + " " + how + (was_serving ? "; stopping" : ""));
    forget(g);
    if (generations_.empty()) finish();
    return;
  }
  if (g.at == generation::state::retiring) {
    say(describe(g) + " " + how + (g.signalled ? " after it was told to stop" : " after it handed over"));
    return forget(g);
  }
  // The current generation ended on its own: a crash, or a clean exit. The sockets are held, so
  // clients wait in the backlog meanwhile.
  const bool was_starting = g.at == generation::state::starting;
  if (was_serving) serving_ = nullptr;
  forget(g);
  if (was_starting)
    settle_waiters(false, "generation " + std::to_string(g.number) + " " + how + " before it was ready");
  if (candidate_ != nullptr) {
    // An upgrade was under way: its generation serves once ready, with nothing to roll back to.
    say("the serving generation " + how + "; " + describe(*candidate_) + " takes over once ready");
    candidate_ = nullptr;
    return;
  }
  if (current() != nullptr) return;  // another one serves already
  start_after_exit(status, signal, status_known, ran);
}

// Removes g (its process is gone); its handles close on their own.
void supervisor::forget(generation& g) {
  g.close_handles();
  if (serving_ == &g) serving_ = nullptr;
  if (candidate_ == &g) candidate_ = nullptr;
  if (restarting_ == &g) restarting_ = nullptr;
  generations_.erase(std::remove_if(generations_.begin(), generations_.end(),
                                    [&](const std::unique_ptr<generation>& p) { return p.get() == &g; }),
                     generations_.end());
}

// --- Notifications from the generations ----------------------------------------------------------

void supervisor::on_notifications() {
  for (const received_notice& n : inbox_.drain()) {
    // Attributed by the sender's pid, from the kernel: the generation's process, or a descendant
    // of it (a wrapper that did not exec, say) a few levels down.
    generation* from = find(n.sender);
    for (pid_t p = n.sender, depth = 0; from == nullptr && p > 1 && depth < 8; ++depth) {
      p = parent_of(p);
      from = find(p);
    }
    if (from == nullptr) continue;  // not a process of any generation: ignored
    if (n.what.main_pid != 0 && n.what.main_pid != from->pid) {
      generation* named = find(n.what.main_pid);
      if (named != nullptr) {
        // An older generation speaking for a newer one it handed over to (grace's servers do).
        if (n.what.ready && named != from) became_ready(*named, "pid " + std::to_string(n.sender) + " said MAINPID=" +
                                                                   std::to_string(named->pid) + " READY=1");
        continue;
      }
      // A new process stands for this generation (the command re-executed itself, as a grace
      // server does on SIGUSR2): follow it. It becomes this process's child once its parent exits
      // (grace-listen is a child subreaper).
      const pid_t new_pid = n.what.main_pid;
      if (::kill(new_pid, 0) != 0) continue;
      bool descendant = false;
      for (pid_t p = new_pid, depth = 0; !descendant && p > 1 && depth < 8; ++depth) {
        p = parent_of(p);
        descendant = p == from->pid || p == getpid();
      }
      if (!descendant) {
        say("pid " + std::to_string(n.sender) + " named pid " + std::to_string(new_pid) +
            " as MAINPID, which is not a process of its generation: ignored");
        continue;
      }
      auto old = std::make_unique<generation>();
      old->owner = this;
      old->number = from->number;
      old->pid = from->pid;
      old->at = generation::state::retiring;  // it hands over and drains on its own terms
      old->started_at = from->started_at;
      say("pid " + std::to_string(from->pid) + " (generation " + std::to_string(from->number) +
          ") handed over to pid " + std::to_string(new_pid) + " (MAINPID=), which stands for it from now on");
      std::swap(old->pid_fd, from->pid_fd);
      std::swap(old->exit_poll, from->exit_poll);
      if (old->exit_poll != nullptr) old->exit_poll->data = old.get();
      from->pid = new_pid;
      generation& moved = *from;
      generations_.push_back(std::move(old));
      watch_pid(moved);
      if (n.what.ready) became_ready(moved, "MAINPID=" + std::to_string(new_pid) + " READY=1");
      continue;
    }
    if (n.what.ready) became_ready(*from, "READY=1");
  }
}

// Service-manager notifications, never waited for: one that cannot go now (its queue is full)
// is retried on a timer, and a newer one replaces it (the newest state is what counts).
void supervisor::tell_manager(const std::string& state) {
  unsent_ = state;
  auto sent = grace::notify_service_manager(unsent_);
  if (sent) {
    unsent_.clear();
    uv_timer_stop(&handles_->notify_retry);
    return;
  }
  if (sent.error().code() != std::errc::resource_unavailable_try_again &&
      sent.error().code() != std::errc::operation_would_block) {
    say("cannot tell the service manager " + state + ": " + sent.error().message());
    unsent_.clear();
    return;
  }
  uv_timer_start(&handles_->notify_retry,
                 [](uv_timer_t* t) {
                   auto* self = static_cast<supervisor*>(t->data);
                   if (!self->unsent_.empty()) self->tell_manager(self->unsent_);
                 },
                 100, 0);
}

// --- Lookups -------------------------------------------------------------------------------------

supervisor::generation* supervisor::find(pid_t pid) const {
  for (const auto& g : generations_)
    if (g->pid == pid) return g.get();
  return nullptr;
}

supervisor::generation* supervisor::current() const {
  if (serving_ != nullptr) return serving_;
  generation* newest = nullptr;
  for (const auto& g : generations_)
    if (g->at != generation::state::retiring && g.get() != candidate_) newest = g.get();
  return newest;
}

std::string supervisor::describe(const generation& g) const {
  return "pid " + std::to_string(g.pid) + " (generation " + std::to_string(g.number) + ")";
}

}  // namespace grace_listen
