#include "grace/uv/upgrader.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "../failure.hpp"
#include "grace/log.hpp"
#include "grace/notify.hpp"
#include "child_starter.hpp"
#include "handle.hpp"
#include "migration_state.hpp"
#include "pidfile_writer.hpp"
#include "service_notifier.hpp"
#include "takeover_server.hpp"
#include "upgrader_internals.hpp"

namespace grace::uv {
namespace {

constexpr int exit_log_flush_ms = 1000;
// How long after ready() the start-up's deferred work waits: the log's and the pid file's threads
// (50-100 us of CPU each here) would otherwise start ahead of the first answers this generation
// owes the connections queued while it started. grace-bench-restart, alternating builds: SIGUSR2
// to the new generation's first answer, 1.66-1.98x a trivial fork+exec with them, 1.35-1.60x without.
constexpr uint64_t start_up_quiet_ms = 10;
// Log lines held meanwhile, at most; past that they all go out, in order, and holding ends.
constexpr std::size_t held_log_limit = 256;

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

std::string describe_status(int status) {
  if (status < 0) return "exited";
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by ") + strsignal(WTERMSIG(status));
  return "ended";
}

std::optional<error> check_options(const upgrader_options& o) {
  auto bad = [](const std::string& what) { return error(make_error_code(errc::invalid_argument), what); };
  if (o.ready_timeout.count() <= 0) return bad("ready_timeout must be positive");
  if (o.drain_timeout.count() < 0) return bad("drain_timeout must not be negative");
  if (o.max_generations < 2) return bad("max_generations must be at least 2 (this one and the next)");
  if (o.successor_watch.count() < 0) return bad("successor_watch must not be negative");
  return std::nullopt;
}

}  // namespace

struct upgrader::handles {
  detail::owned_handle<uv_signal_t> usr2, term, interrupt, hup;
  detail::owned_handle<uv_poll_t> ready_poll, exit_poll, successor_poll;
  detail::owned_handle<uv_timer_t> ready_timer, drain_timer, progress_timer, successor_watch_timer, quiet_timer;
  detail::owned_handle<uv_async_t> wake;  // from workers: a connection closed, a task ran
};

struct upgrader::reaping {
  upgrader* owner;
  pending_child child;
  std::function<void(const pending_child&)> on_reaped;
  detail::owned_handle<uv_poll_t> exit_poll;
};

upgrader::upgrader(uv_loop_t* loop, grace::net& net, upgrader_options options)
    : loop_(loop),
      net_(net),
      options_(std::move(options)),
      options_error_(check_options(options_)),
      generation_(grace::generation()),
      handles_(std::make_unique<handles>()),
      migration_(std::make_unique<detail::migration_state>()) {
  loop_thread_ = std::this_thread::get_id();
  handles_->wake.init([&](uv_async_t* a) {
    return uv_async_init(loop_, a, [](uv_async_t* woken) { static_cast<upgrader*>(woken->data)->on_wake(); });
  }, this);
  uv_unref(reinterpret_cast<uv_handle_t*>(handles_->wake.get()));
  starter_ = std::make_unique<detail::child_starter>(
      loop_, [this](result<pending_child> child) { on_started(std::move(child)); });
  notifier_ = std::make_unique<detail::service_notifier>(
      loop_, [this](const std::string& message) { log(event_kind::warning, message); });
  if (!options_.pidfile.empty())
    pidfile_ = std::make_unique<detail::pidfile_writer>(loop_, options_.pidfile, [this](pid_t, const std::string& failure) {
      if (!failure.empty()) log(event_kind::warning, failure);
      maybe_stop();
    });
  for (const auto& warning : inheritance_warnings()) log(event_kind::warning, warning);
  if (!options_.handle_signals) return;
  auto init_signal = [this](detail::owned_handle<uv_signal_t>& h, int signum, uv_signal_cb cb) {
    h.init([&](uv_signal_t* s) { return uv_signal_init(loop_, s); }, this);
    uv_signal_start(h.get(), cb, signum);
    // A busy loop must not keep a process alive for a signal handler alone.
    uv_unref(reinterpret_cast<uv_handle_t*>(h.get()));
  };
  init_signal(handles_->usr2, SIGUSR2, [](uv_signal_t* s, int) { static_cast<upgrader*>(s->data)->upgrade(); });
  auto terminate = [](uv_signal_t* s, int) { static_cast<upgrader*>(s->data)->shutdown(); };
  init_signal(handles_->term, SIGTERM, terminate);
  init_signal(handles_->interrupt, SIGINT, terminate);
  init_signal(handles_->hup, SIGHUP, [](uv_signal_t* s, int) { static_cast<upgrader*>(s->data)->reload(); });
}

upgrader::~upgrader() {
  // Servers on workers go on their own threads, after whatever was posted to them.
  for (auto& each : servers_)
    if (each.group != nullptr) each.group->run(each.worker, [&each] { each.s.reset(); });
  migration_.reset();
  takeover_.reset();
  starter_.reset();  // a start under way ends first; its child is killed and reaped
  handles_.reset();
  pending_.reset();   // a child still pending is killed and reaped (blocking: the loop is over)
  reaping_.clear();
  notifier_.reset();
  // Destroyed before its start-up was over (ready() failed, say): what it held says why.
  const bool held_lines = !held_log_.empty();
  release_held_log();
  if (held_lines) flush_stderr_log(exit_log_flush_ms);
  pidfile_.reset();
  servers_.clear();
  // Let libuv run the close callbacks that free the handles.
  uv_run(loop_, UV_RUN_NOWAIT);
}

void upgrader::log(event_kind kind, std::string message, pid_t child, std::size_t count) {
  const event e{kind, std::move(message), child, count};
  if (options_.log) return options_.log(e);
  // The messages of routine events speak for themselves; the others carry their kind.
  const bool routine = kind == event_kind::serving || kind == event_kind::upgrade_started ||
                       kind == event_kind::child_ready || kind == event_kind::draining ||
                       kind == event_kind::exiting || kind == event_kind::drain_progress;
  std::string line = "grace[" + std::to_string(getpid()) + "] generation " + std::to_string(generation_) + ": " +
                     (routine ? "" : std::string(kind_name(kind)) + ": ") + e.message;
  if (holding_log_ && held_log_.size() >= held_log_limit) release_held_log();
  if (holding_log_) held_log_.push_back(std::move(line));
  else log_to_stderr(std::move(line));
}

void upgrader::release_held_log() {
  holding_log_ = false;
  std::vector<std::string> lines;
  lines.swap(held_log_);
  for (auto& line : lines) log_to_stderr(std::move(line));
}

void upgrader::after_start_up() {
  handles_->quiet_timer.reset();
  release_held_log();
  if (pidfile_) pidfile_->start();
}

void upgrader::notify(const std::string& message) { notifier_->send(message); }

void upgrader::write_pidfile(pid_t pid) {
  if (pidfile_) pidfile_->write(pid);
}

result<server*> upgrader::serve(grace::listener* l, server::accept_callback on_accept) {
  if (l == nullptr) return grace::detail::fail(errc::invalid_argument, "serve: no listener");
  auto s = server::open(loop_, *l, std::move(on_accept));
  if (!s) return tl::unexpected(s.error());
  (*s)->on_connection_closed = [this] { check_drained(); };
  if (state_ == state::draining || state_ == state::exiting) (*s)->stop_accepting();
  servers_.push_back(served{std::move(*s), nullptr, 0});
  if (std::find(served_.begin(), served_.end(), l) == served_.end()) served_.push_back(l);
  return servers_.back().s.get();
}

result<server*> upgrader::serve(grace::listener* l, server::accept_callback on_accept, worker_group& workers,
                                unsigned worker) {
  if (l == nullptr) return grace::detail::fail(errc::invalid_argument, "serve: no listener");
  if (worker >= workers.size())
    return grace::detail::fail(errc::invalid_argument, "serve " + l->address() + ": no worker " +
                                                           std::to_string(worker) + " in a group of " +
                                                           std::to_string(workers.size()));
  result<std::unique_ptr<server>> s = grace::detail::fail(errc::invalid_argument, "serve: the worker stopped");
  const bool stopped = state_ == state::draining || state_ == state::exiting;
  workers.run(worker, [&] {
    s = server::open(workers.loop(worker), *l, std::move(on_accept));
    if (!s) return;
    (*s)->on_connection_closed = [this] { wake(); };
    if (stopped) (*s)->stop_accepting();
  });
  if (!s) return tl::unexpected(s.error());
  // This loop has nothing of its own to keep it running while workers serve.
  serving_elsewhere();
  servers_.push_back(served{std::move(*s), &workers, worker});
  if (std::find(served_.begin(), served_.end(), l) == served_.end()) served_.push_back(l);
  return servers_.back().s.get();
}

result<std::vector<server*>> upgrader::serve(const listener_group& group, server::accept_callback on_accept,
                                            worker_group& workers) {
  if (group.members.empty() || group.steered == 0 || group.steered > group.members.size())
    return grace::detail::fail(errc::invalid_argument, "serve: an empty or malformed listener group");
  std::vector<server*> out;
  for (const auto& [member, worker] : place_group(group, workers.size())) {
    auto s = serve(member, on_accept, workers, worker);
    if (!s) return tl::unexpected(s.error());
    out.push_back(*s);
  }
  return out;
}

void upgrader::serving_elsewhere() { uv_ref(reinterpret_cast<uv_handle_t*>(handles_->wake.get())); }

void upgrader::on_loop_of(served& each, std::function<void(server&)> fn) {
  if (each.group == nullptr) return fn(*each.s);
  server* s = each.s.get();
  ++worker_tasks_;
  const bool posted = each.group->post(each.worker, [this, s, fn = std::move(fn)] {
    fn(*s);
    --worker_tasks_;
    wake();
  });
  if (!posted) --worker_tasks_;
}

upgrader::served* upgrader::served_by(const server* s) {
  for (auto& each : servers_)
    if (each.s.get() == s) return &each;
  return nullptr;
}

void upgrader::wake() noexcept { uv_async_send(handles_->wake.get()); }

// On this loop, after a worker ran a task, closed a connection or migrated one.
void upgrader::on_wake() {
  std::vector<detail::handed_connection> arrived;
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    arrived.swap(inbox_);
  }
  for (auto& each : arrived) queue_migration(each.fd.release(), std::move(each.state), each.from);
  report_exports();
  check_drained();
}

void upgrader::on_drain(std::function<void()> hook) { drain_hook_ = std::move(hook); }
void upgrader::on_reload(std::function<void()> hook) { reload_hook_ = std::move(hook); }
void upgrader::on_resume(std::function<void()> hook) { resume_hook_ = std::move(hook); }

std::size_t upgrader::connection_count() const noexcept {
  std::size_t n = 0;
  for (const auto& each : servers_) n += each.s->connection_count();
  return n;
}

void upgrader::take_charge() {
  write_pidfile(getpid());
  notify("READY=1\nMAINPID=" + std::to_string(getpid()));
}

result<void> upgrader::ready() {
  if (options_error_) return tl::unexpected(*options_error_);
  if (auto opened = open_handover_socket(); !opened) return tl::unexpected(opened.error());
  auto told = notify_ready();
  if (!told) return tl::unexpected(told.error());
  if (*told == ready_outcome::first_start) take_charge();
  if (*told == ready_outcome::told_parent) watch_parent_offer();
  if (*told == ready_outcome::parent_gone) {
    take_charge();
    log(event_kind::took_charge, "the generation that started this one is gone; pid " + std::to_string(getpid()) +
                                     " is in charge");
  }
  state_ = state::serving;
  if (takeover_) takeover_->start_accepting();
  if (options_.fd_store) keep_listeners_in_fd_store();
  std::string addresses;
  std::vector<std::pair<const worker_group*, unsigned>> workers;
  for (const auto& each : servers_) {
    const std::pair<const worker_group*, unsigned> where(each.group, each.worker);
    if (each.group != nullptr && std::find(workers.begin(), workers.end(), where) == workers.end())
      workers.push_back(where);
  }
  for (const grace::listener* l : served_)
    addresses += (addresses.empty() ? "" : ", ") + l->address() +
                 (l->inherited() ? " (inherited, name " + l->name() + ")" : " (new socket)");
  for (const grace::listener* l : net_.active_listeners())
    if (socket_type(l->network()) == SOCK_DGRAM)
      addresses += (addresses.empty() ? "udp " : ", udp ") + l->address() +
                   (l->inherited() ? " (inherited)" : " (new socket)");
  if (!workers.empty()) addresses += " on " + std::to_string(workers.size()) + " worker(s)";
  if (takeover_) addresses += "; hand-over socket " + takeover_->address();
  log(event_kind::serving, "serving " + addresses + " as pid " + std::to_string(getpid()));
  if (holding_log_ && !handles_->quiet_timer) {
    handles_->quiet_timer.init([&](uv_timer_t* t) { return uv_timer_init(loop_, t); }, this);
    uv_timer_start(handles_->quiet_timer.get(),
                   [](uv_timer_t* t) { static_cast<upgrader*>(t->data)->after_start_up(); }, start_up_quiet_ms, 0);
    uv_unref(reinterpret_cast<uv_handle_t*>(handles_->quiet_timer.get()));  // run() releases the log at its end
  }
  return {};
}

result<void> upgrader::open_handover_socket() {
  if (options_.handover_socket.empty() || takeover_) return {};
  auto l = detail::open_handover_socket(net_, options_.handover_socket);
  if (!l) return tl::unexpected(l.error());
  handover_ = *l;
  detail::takeover_server::hooks h;
  h.cannot_hand_over = [this] { return cannot_hand_over(); };
  h.took_listeners = [this](pid_t pid, int ready_fd) { adopt_taker(pid, ready_fd); };
  h.refused = [this](pid_t pid, const std::string& why) {
    log(event_kind::upgrade_refused, "takeover by pid " + std::to_string(pid) + " refused: " + why, pid);
  };
  h.warn = [this](const std::string& message) { log(event_kind::warning, message); };
  h.offers_connections = [this] { return export_hook_ && import_hook_; };
  takeover_ = std::make_unique<detail::takeover_server>(loop_, net_, handover_, options_.handover_peers,
                                                        options_.max_generations, std::move(h));
  return {};
}

std::optional<std::string> upgrader::cannot_hand_over() const {
  if (state_ != state::serving) return std::string("this generation is draining; the newest one serves");
  if (pending_) return "an upgrade is already in progress (pid " + std::to_string(pending_pid_) + ")";
  if (starter_->busy()) return std::string("an upgrade is already in progress (starting the next generation)");
  return std::nullopt;
}

bool upgrader::upgrading() const noexcept { return pending_.has_value() || starter_->busy(); }

// A process started by somebody else took the listeners: from here it is watched exactly as a
// child this process started (ready, rollback, timeout), except that it is not reaped here.
void upgrader::adopt_taker(pid_t pid, int ready_fd) {
  auto taker = pending_child::adopt(pid, ready_fd);
  if (!taker) {
    log(event_kind::rollback, "takeover by pid " + std::to_string(pid) + ": " + taker.error().message() +
                                  "; still serving", pid);
    return;
  }
  if (auto why = cannot_hand_over()) {
    // It holds the listeners and would take a hang-up for this process's death: it must go.
    taker->kill_pending();
    log(event_kind::rollback, "takeover by pid " + std::to_string(pid) + " abandoned (" + *why + "); it was killed",
        pid);
    reap_later(std::move(*taker), [](const pending_child&) {});
    return;
  }
  notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec()));
  pending_pid_ = pid;
  pending_offered_connections_ = export_hook_ && import_hook_;
  pending_kill_reason_.clear();
  pending_.emplace(std::move(*taker));
  log(event_kind::upgrade_started, "pid " + std::to_string(pid) + ", started independently, took the listeners as generation " +
                                       std::to_string(generation_ + 1) + " through the hand-over socket; waiting until it is ready",
      pid);
  watch_child();
}

void upgrader::reload() {
  if (reload_hook_) {
    log(event_kind::reload, "SIGHUP: reloading");
    reload_hook_();
    return;
  }
  log(event_kind::reload, "SIGHUP ignored (no reload hook; SIGUSR2 upgrades, SIGTERM stops)");
}

void upgrader::upgrade() {
  if (state_ != state::serving) {
    log(event_kind::upgrade_refused, state_ == state::starting ? "not serving yet"
                                                               : "this generation is draining; signal the newest one");
    return;
  }
  if (auto why = cannot_hand_over()) {  // serving: a child pending, or one being started
    log(event_kind::upgrade_refused, *why, pending_pid_);
    return;
  }
  if (takeover_ && takeover_->busy()) {
    log(event_kind::upgrade_refused,
        "pid " + std::to_string(takeover_->busy_with()) + " is taking over through the hand-over socket");
    return;
  }
  process_options process = options_.process;
  process.offer_connections = export_hook_ && import_hook_;
  pending_offered_connections_ = process.offer_connections;
  starter_->start(net_, std::move(process), options_.max_generations);
}

void upgrader::on_started(result<pending_child> child) {
  if (!child || terminate_requested_) {
    const std::string after = terminate_requested_ ? "; shutting down" : "; still serving";
    if (!child) {
      if (child.error().code() == errc::too_many_generations)
        log(event_kind::upgrade_refused, child.error().message());
      else
        log(event_kind::rollback, "cannot start the next generation: " + child.error().message() + after);
    } else {
      // SIGTERM came while it started: a service that is stopping is not handed over.
      child->kill_pending();
      log(event_kind::rollback,
          "pid " + std::to_string(child->pid()) + " was killed before it was ready: this process got SIGTERM" + after,
          child->pid());
      reap_later(std::move(*child), [](const pending_child&) {});
    }
    if (terminate_requested_) begin_drain("shutting down");  // shutdown() left it to us
    return;
  }
  notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec()));
  pending_pid_ = child->pid();
  pending_kill_reason_.clear();
  pending_.emplace(std::move(*child));
  log(event_kind::upgrade_started, "started generation " + std::to_string(generation_ + 1) + " as pid " +
                                       std::to_string(pending_pid_) + "; waiting until it is ready",
      pending_pid_);
  watch_child();
}

void upgrader::watch_child() {
  auto& h = *handles_;
  auto on_event = [](uv_poll_t* p, int, int) { static_cast<upgrader*>(p->data)->on_child_event(); };
  h.ready_poll.init([&](uv_poll_t* p) { return uv_poll_init(loop_, p, pending_->ready_fd()); }, this);
  uv_poll_start(h.ready_poll.get(), UV_READABLE | UV_DISCONNECT, on_event);
  if (pending_->pid_fd() >= 0) {
    h.exit_poll.init([&](uv_poll_t* p) { return uv_poll_init(loop_, p, pending_->pid_fd()); }, this);
    uv_poll_start(h.exit_poll.get(), UV_READABLE, on_event);
  }
  h.ready_timer.init([&](uv_timer_t* t) { return uv_timer_init(loop_, t); }, this);
  uv_timer_start(h.ready_timer.get(),
                 [](uv_timer_t* t) {
                   auto* self = static_cast<upgrader*>(t->data);
                   self->pending_kill_reason_ = "was not ready within " +
                                                std::to_string(self->options_.ready_timeout.count()) +
                                                " ms and was killed";
                   self->pending_->kill_pending();
                   self->settle(upgrade_outcome::timed_out);
                 },
                 static_cast<uint64_t>(options_.ready_timeout.count()), 0);
}

void upgrader::on_child_event() {
  if (auto outcome = pending_->check()) settle(*outcome);
}

void upgrader::reap_later(pending_child child, std::function<void(const pending_child&)> on_reaped) {
  if (child.reaped() || child.pid_fd() < 0) {
    if (!child.reaped()) child.give_up();  // no pidfd (kernel before 5.3): reap by waiting
    on_reaped(child);
    return;
  }
  reaping_.push_back(reaping{this, std::move(child), std::move(on_reaped), {}});
  auto it = std::prev(reaping_.end());
  it->exit_poll.init([&](uv_poll_t* p) { return uv_poll_init(loop_, p, it->child.pid_fd()); }, &*it);
  uv_poll_start(it->exit_poll.get(), UV_READABLE, on_reapable);
}

void upgrader::on_reapable(uv_poll_t* p, int, int) {
  auto* r = static_cast<reaping*>(p->data);
  // The poll lets go of the pidfd before check() can close it.
  uv_poll_stop(p);
  r->child.check();
  if (!r->child.reaped()) {
    uv_poll_start(p, UV_READABLE, on_reapable);
    return;
  }
  r->exit_poll.reset();
  auto done = std::move(r->on_reaped);
  done(r->child);
  r->owner->reaping_.remove_if([r](const reaping& each) { return &each == r; });
}

void upgrader::settle(upgrade_outcome outcome) {
  // The polls must let go of the fds before pending_child closes them.
  handles_->ready_poll.reset();
  handles_->exit_poll.reset();
  handles_->ready_timer.reset();
  const pid_t child = pending_pid_;
  pending_child settled = std::move(*pending_);
  pending_.reset();
  pending_pid_ = 0;
  if (outcome == upgrade_outcome::ready) {
    // New connections must reach the new generation at once; the bookkeeping can wait.
    stop_accepting();
    write_pidfile(child);
    notify("MAINPID=" + std::to_string(child) + "\nREADY=1");
    log(event_kind::child_ready, "pid " + std::to_string(child) + " is ready and in charge", child);
    offer_connections(settled);
    watch_successor(std::move(settled));
    // With connections moving, the drain hook waits: it runs only if they cannot move.
    begin_drain("handed over to pid " + std::to_string(child), migration_->outbound != nullptr);
    return;
  }
  const std::string after = terminate_requested_ ? "; shutting down" : "; still serving";
  if (!pending_kill_reason_.empty()) {
    // We killed it, and know why: say so now (a process shutting down may be gone before the
    // child's exit is reaped).
    log(event_kind::rollback, "pid " + std::to_string(child) + " " + pending_kill_reason_ + after, child);
    reap_later(std::move(settled), [](const pending_child&) {});
  } else {
    // Logged once the exit status is known, so the reason is the true one.
    reap_later(std::move(settled), [this, child, after](const pending_child& gone) {
      const int status = gone.exit_status();
      const bool we_killed = gone.killed() && status >= 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
      const std::string why = we_killed ? "closed its readiness socket before it was ready and was killed"
                                        : describe_status(status) + " before it was ready";
      log(event_kind::rollback, "pid " + std::to_string(child) + " " + why + after, child);
    });
  }
  if (terminate_requested_) {
    begin_drain("shutting down");
    return;
  }
  notify("READY=1");
}

void upgrader::watch_successor(pending_child successor) {
  if (successor.pid_fd() < 0) return;  // nothing to watch it with
  successor_.emplace(std::move(successor));
  handles_->successor_poll.init([&](uv_poll_t* p) { return uv_poll_init(loop_, p, successor_->pid_fd()); }, this);
  uv_poll_start(handles_->successor_poll.get(), UV_READABLE,
                [](uv_poll_t* p, int, int) { static_cast<upgrader*>(p->data)->on_successor_event(); });
  if (options_.successor_watch.count() == 0) return;
  handles_->successor_watch_timer.init([&](uv_timer_t* t) { return uv_timer_init(loop_, t); }, this);
  uv_timer_start(handles_->successor_watch_timer.get(),
                 [](uv_timer_t* t) {
                   auto* self = static_cast<upgrader*>(t->data);
                   self->handles_->successor_watch_timer.reset();
                   self->check_drained();
                 },
                 static_cast<uint64_t>(options_.successor_watch.count()), 0);
}

void upgrader::on_successor_event() {
  const pid_t pid = successor_->pid();
  uv_poll_t* poll = handles_->successor_poll.get();
  uv_poll_stop(poll);  // before successor_exit() can close the pidfd
  auto retired = successor_->successor_exit();
  if (!retired) {
    uv_poll_start(poll, UV_READABLE, [](uv_poll_t* p, int, int) { static_cast<upgrader*>(p->data)->on_successor_event(); });
    return;
  }
  const int status = successor_->exit_status();
  handles_->successor_poll.reset();
  handles_->successor_watch_timer.reset();
  successor_.reset();
  if (*retired || terminate_requested_ || state_ != state::draining) return check_drained();
  resume_after_takeover(pid, status);
}

// The generation this one handed over to died without handing over or stopping on purpose,
// while this one still holds the listening sockets: accept again, rather than leave the service
// down until an operator notices (nginx's answer).
void upgrader::resume_after_takeover(pid_t successor, int status) {
  state_ = state::serving;
  handles_->drain_timer.reset();
  handles_->progress_timer.reset();
  for (auto& each : servers_) on_loop_of(each, [](server& s) { s.resume_accepting(); });
  if (takeover_) takeover_->start_accepting();
  drain_hook_ran_ = false;
  if (resume_hook_) resume_hook_();
  write_pidfile(getpid());
  notify("MAINPID=" + std::to_string(getpid()) + "\nREADY=1");
  log(event_kind::rollback_after_takeover,
      "pid " + std::to_string(successor) + " (generation " + std::to_string(generation_ + 1) + ") " +
          describe_status(status) + " after it took over; pid " + std::to_string(getpid()) +
          " serves again with " + std::to_string(connection_count()) + " connection(s)",
      successor);
}

void upgrader::shutdown() {
  if (state_ == state::draining || state_ == state::exiting || state_ == state::done) {
    if (!terminate_requested_) {
      terminate_requested_ = true;  // the first SIGTERM of a process draining after an upgrade
      return;
    }
    const std::size_t forced = connection_count();
    stop_migrating("asked again to stop", false);
    for (auto& each : servers_) on_loop_of(each, [](server& s) { s.close_all_connections(); });
    log(event_kind::forced_close, "asked again to stop: closed " + std::to_string(forced) + " connection(s) now",
        0, forced);
    finish();
    return;
  }
  terminate_requested_ = true;
  notify("STOPPING=1");
  close_listeners();
  if (pending_) {
    pending_kill_reason_ = "was killed before it was ready: this process got SIGTERM";
    pending_->kill_pending();
    settle(upgrade_outcome::timed_out);  // settle() drains once the child is gone
    return;
  }
  if (starter_->busy()) return;  // on_started() kills what it started, then drains
  begin_drain("shutting down");
}

void upgrader::stop_accepting() {
  for (auto& each : servers_) on_loop_of(each, [](server& s) { s.stop_accepting(); });
  if (takeover_) takeover_->stop_accepting();
  // The listening sockets stay open in the net: connections queue there for the next generation.
}

void upgrader::close_listeners() {
  // Stopping for good: new clients are refused at once instead of waiting in a queue nobody
  // will accept from. (A socket activated by systemd stays open in systemd.)
  for (auto& each : servers_) on_loop_of(each, [](server& s) { s.close_listening_socket(); });
  takeover_.reset();
  if (handover_) served_.push_back(std::exchange(handover_, nullptr));
  for (grace::listener* l : served_)
    if (auto closed = net_.close(l); !closed) log(event_kind::warning, closed.error().message());
  served_.clear();
}

void upgrader::run_drain_hook() {
  if (!drain_hook_ || drain_hook_ran_) return;
  drain_hook_ran_ = true;
  drain_hook_();
}

void upgrader::begin_drain(const std::string& why, bool defer_hook) {
  if (state_ == state::draining || state_ == state::exiting || state_ == state::done) return;
  state_ = state::draining;
  migration_->parent_poll.reset();  // before notify_retiring() closes the fd it watches
  notify_retiring();  // our parent, if it still drains, must not take our exit for a crash
  stop_accepting();
  log(event_kind::draining, why + ": stopped accepting; " + std::to_string(connection_count()) +
                                " connection(s) to finish within " + std::to_string(options_.drain_timeout.count()) +
                                " ms",
      0, connection_count());
  if (!defer_hook) run_drain_hook();
  auto& h = *handles_;
  h.drain_timer.init([&](uv_timer_t* t) { return uv_timer_init(loop_, t); }, this);
  uv_timer_start(h.drain_timer.get(),
                 [](uv_timer_t* t) {
                   auto* self = static_cast<upgrader*>(t->data);
                   self->stop_migrating("the drain deadline passed", false);
                   const std::size_t forced = self->connection_count();
                   for (auto& each : self->servers_)
                     self->on_loop_of(each, [](server& s) { s.close_all_connections(); });
                   self->log(event_kind::forced_close,
                             "drain deadline passed: closed " + std::to_string(forced) + " connection(s) by force",
                             0, forced);
                   self->finish();
                 },
                 static_cast<uint64_t>(options_.drain_timeout.count()), 0);
  h.progress_timer.init([&](uv_timer_t* t) { return uv_timer_init(loop_, t); }, this);
  uv_timer_start(h.progress_timer.get(),
                 [](uv_timer_t* t) {
                   auto* self = static_cast<upgrader*>(t->data);
                   self->log(event_kind::drain_progress,
                             std::to_string(self->connection_count()) + " connection(s) still open", 0,
                             self->connection_count());
                 },
                 1000, 1000);
  check_drained();
}

void upgrader::check_drained() {
  // Drained (every worker has stopped accepting, and no connection is on its way to the new
  // generation), and no longer watching over the generation it handed over to.
  if (state_ != state::draining || handles_->successor_watch_timer) return;
  if (worker_tasks_.load() == 0 && moving_.load() == 0 && connection_count() == 0) finish();
}

void upgrader::finish() {
  if (state_ == state::exiting || state_ == state::done) return;
  state_ = state::exiting;
  stop_migrating("exiting", false);
  migration_->inbound.reset();
  log(event_kind::exiting, "drained; exiting");
  handles_->drain_timer.reset();
  handles_->progress_timer.reset();
  handles_->successor_poll.reset();
  handles_->successor_watch_timer.reset();
  successor_.reset();  // left running: it serves
  maybe_stop();
}

void upgrader::maybe_stop() {
  // The pid file must name the new generation before this one is gone.
  if (state_ != state::exiting || (pidfile_ && !pidfile_->idle())) return;
  state_ = state::done;
  notifier_->abandon();
  uv_stop(loop_);
}

int upgrader::run() {
  if (!handles_->quiet_timer) release_held_log();  // no release pending (ready() not called): none to wait for
  while (state_ != state::done) {
    const int alive = uv_run(loop_, UV_RUN_DEFAULT);
    if (alive == 0 && state_ != state::done) break;  // the application closed everything itself
  }
  release_held_log();
  if (!options_.log) flush_stderr_log(exit_log_flush_ms);
  return 0;
}

}  // namespace grace::uv
