#include "grace/uv/upgrader.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "../generations.hpp"
#include "../pidfile.hpp"
#include "grace/notify.hpp"

namespace grace::uv {
namespace {

constexpr char generation_variable[] = "GRACE_GENERATION";
constexpr char ancestors_variable[] = "GRACE_ANCESTORS";

const char* kind_name(event_kind kind) {
  switch (kind) {
    case event_kind::serving: return "serving";
    case event_kind::upgrade_started: return "upgrade started";
    case event_kind::upgrade_refused: return "upgrade refused";
    case event_kind::child_ready: return "child ready";
    case event_kind::rollback: return "rollback";
    case event_kind::draining: return "draining";
    case event_kind::drain_progress: return "drain progress";
    case event_kind::forced_close: return "forced close";
    case event_kind::exiting: return "exiting";
    case event_kind::warning: return "warning";
  }
  return "event";
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by ") + strsignal(WTERMSIG(status));
  return "ended";
}

template <typename Handle>
Handle* new_handle(void* owner) {
  auto* h = new Handle{};
  reinterpret_cast<uv_handle_t*>(h)->data = owner;
  return h;
}

std::string take_env(const char* name) {
  const char* value = std::getenv(name);
  std::string out = value != nullptr ? value : "";
  unsetenv(name);
  return out;
}

}  // namespace

upgrader::upgrader(uv_loop_t* loop, grace::net& net, upgrader_options options)
    : loop_(loop), net_(net), options_(std::move(options)) {
  const std::string generation = take_env(generation_variable);
  if (!generation.empty()) generation_ = static_cast<unsigned>(std::strtoul(generation.c_str(), nullptr, 10));
  if (generation_ == 0) generation_ = 1;
  ancestors_ = take_env(ancestors_variable);
  // Until ready() uses it, the readiness pipe must not leak into processes the application
  // starts: they would keep it open after this process died.
  if (const char* ready_fd = std::getenv("GRACE_READY_FD")) {
    const int fd = std::atoi(ready_fd);
    if (fd > 2) fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  if (options_.handle_signals) {
    usr2_ = new_handle<uv_signal_t>(this);
    term_ = new_handle<uv_signal_t>(this);
    int_ = new_handle<uv_signal_t>(this);
    uv_signal_init(loop_, usr2_);
    uv_signal_init(loop_, term_);
    uv_signal_init(loop_, int_);
    uv_signal_start(usr2_, [](uv_signal_t* s, int) { static_cast<upgrader*>(s->data)->upgrade(); }, SIGUSR2);
    auto terminate = [](uv_signal_t* s, int) { static_cast<upgrader*>(s->data)->shutdown(); };
    uv_signal_start(term_, terminate, SIGTERM);
    uv_signal_start(int_, terminate, SIGINT);
    // A busy loop must not keep a process alive for a signal handler alone.
    uv_unref(reinterpret_cast<uv_handle_t*>(usr2_));
    uv_unref(reinterpret_cast<uv_handle_t*>(term_));
    uv_unref(reinterpret_cast<uv_handle_t*>(int_));
  }
}

upgrader::~upgrader() {
  pending_.reset();  // a child still pending is killed and reaped
  for (uv_handle_t* h : {reinterpret_cast<uv_handle_t*>(usr2_), reinterpret_cast<uv_handle_t*>(term_),
                         reinterpret_cast<uv_handle_t*>(int_), reinterpret_cast<uv_handle_t*>(ready_poll_),
                         reinterpret_cast<uv_handle_t*>(exit_poll_), reinterpret_cast<uv_handle_t*>(ready_timer_),
                         reinterpret_cast<uv_handle_t*>(drain_timer_),
                         reinterpret_cast<uv_handle_t*>(progress_timer_)})
    close_handle(h);
  servers_.clear();
  // Let libuv run the close callbacks that free the handles.
  uv_run(loop_, UV_RUN_NOWAIT);
}

void upgrader::close_handle(uv_handle_t* h) {
  if (h == nullptr || uv_is_closing(h)) return;
  uv_close(h, [](uv_handle_t* closed) {
    switch (closed->type) {
      case UV_SIGNAL: delete reinterpret_cast<uv_signal_t*>(closed); break;
      case UV_POLL: delete reinterpret_cast<uv_poll_t*>(closed); break;
      case UV_TIMER: delete reinterpret_cast<uv_timer_t*>(closed); break;
      default: break;
    }
  });
}

void upgrader::log(event_kind kind, std::string message, pid_t child, std::size_t count) {
  const event e{kind, std::move(message), child, count};
  if (options_.log) return options_.log(e);
  // The messages of routine events speak for themselves; the others carry their kind.
  const bool routine = kind == event_kind::serving || kind == event_kind::upgrade_started ||
                       kind == event_kind::child_ready || kind == event_kind::draining ||
                       kind == event_kind::exiting || kind == event_kind::drain_progress;
  std::fprintf(stderr, "grace[%d] generation %u: %s%s%s\n", static_cast<int>(getpid()), generation_,
               routine ? "" : kind_name(kind), routine ? "" : ": ", e.message.c_str());
}

void upgrader::notify(const std::string& state) {
  if (auto sent = notify_service_manager(state); !sent)
    log(event_kind::warning, "cannot notify the service manager (" + state + "): " + sent.error().message());
}

tl::expected<server*, std::error_code> upgrader::serve(grace::listener* l, server::accept_callback on_accept) {
  auto s = server::open(loop_, *l, std::move(on_accept));
  if (!s) return tl::unexpected(s.error());
  (*s)->on_connection_closed = [this] { check_drained(); };
  servers_.push_back(std::move(*s));
  return servers_.back().get();
}

void upgrader::on_drain(std::function<void()> hook) { drain_hook_ = std::move(hook); }

std::size_t upgrader::connection_count() const noexcept {
  std::size_t n = 0;
  for (const auto& s : servers_) n += s->connection_count();
  return n;
}

tl::expected<void, std::error_code> upgrader::ready() {
  const bool started_by_upgrade = std::getenv("GRACE_READY_FD") != nullptr;
  if (auto told = notify_ready(); !told) return told;
  if (!started_by_upgrade) {
    // First start: nobody hands over to us, so we announce ourselves.
    if (!options_.pidfile.empty())
      if (auto written = detail::write_pidfile(options_.pidfile, getpid()); !written)
        log(event_kind::warning, written.error().why);
    notify("READY=1\nMAINPID=" + std::to_string(getpid()));
  }
  state_ = state::serving;
  std::string addresses;
  for (const auto& s : servers_) {
    const auto& l = s->listener();
    addresses += (addresses.empty() ? "" : ", ") + l.address() +
                 (l.inherited() ? " (inherited, name " + l.name() + ")" : " (new socket)");
  }
  log(event_kind::serving, "serving " + addresses + " as pid " + std::to_string(getpid()));
  return {};
}

void upgrader::upgrade() {
  if (state_ != state::serving) {
    log(event_kind::upgrade_refused, state_ == state::draining ? "this generation is draining; signal the newest one"
                                                               : "not serving yet");
    return;
  }
  if (pending_) {
    log(event_kind::upgrade_refused, "an upgrade is already in progress (pid " + std::to_string(pending_pid_) + ")",
        pending_pid_);
    return;
  }
  std::vector<detail::process_identity> alive;
  for (const auto& p : detail::parse_ancestors(ancestors_))
    if (detail::still_running(p)) alive.push_back(p);
  if (alive.size() + 2 > options_.max_generations) {
    std::string pids;
    for (const auto& p : alive) pids += " " + std::to_string(p.pid);
    log(event_kind::upgrade_refused, std::to_string(alive.size() + 1) + " generations alive (older ones still draining:" +
                                         pids + "); at most " + std::to_string(options_.max_generations) + " at once");
    return;
  }
  alive.push_back(detail::identify(getpid()));
  notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec()));
  process_options process = options_.process;
  process.extra_env.push_back(std::string(generation_variable) + "=" + std::to_string(generation_ + 1));
  process.extra_env.push_back(std::string(ancestors_variable) + "=" + detail::format_ancestors(alive));
  auto child = pending_child::start(net_, process);
  if (!child) {
    log(event_kind::rollback, "cannot start the next generation: " + net_.last_error() + "; still serving");
    notify("READY=1");
    return;
  }
  pending_pid_ = child->pid();
  pending_.emplace(std::move(*child));
  log(event_kind::upgrade_started, "started generation " + std::to_string(generation_ + 1) + " as pid " +
                                       std::to_string(pending_pid_) + "; waiting until it is ready",
      pending_pid_);
  watch_child();
}

void upgrader::watch_child() {
  ready_poll_ = new_handle<uv_poll_t>(this);
  uv_poll_init(loop_, ready_poll_, pending_->ready_fd());
  uv_poll_start(ready_poll_, UV_READABLE | UV_DISCONNECT,
                [](uv_poll_t* p, int, int) { static_cast<upgrader*>(p->data)->on_child_event(); });
  if (pending_->pid_fd() >= 0) {
    exit_poll_ = new_handle<uv_poll_t>(this);
    uv_poll_init(loop_, exit_poll_, pending_->pid_fd());
    uv_poll_start(exit_poll_, UV_READABLE,
                  [](uv_poll_t* p, int, int) { static_cast<upgrader*>(p->data)->on_child_event(); });
  }
  ready_timer_ = new_handle<uv_timer_t>(this);
  uv_timer_init(loop_, ready_timer_);
  uv_timer_start(ready_timer_,
                 [](uv_timer_t* t) {
                   auto* self = static_cast<upgrader*>(t->data);
                   self->settle(self->pending_->give_up());
                 },
                 static_cast<uint64_t>(options_.ready_timeout.count()), 0);
}

void upgrader::on_child_event() {
  if (auto outcome = pending_->check()) settle(*outcome);
}

void upgrader::settle(upgrade_outcome outcome) {
  // The polls must let go of the fds before pending_child closes them.
  close_handle(reinterpret_cast<uv_handle_t*>(ready_poll_));
  close_handle(reinterpret_cast<uv_handle_t*>(exit_poll_));
  close_handle(reinterpret_cast<uv_handle_t*>(ready_timer_));
  ready_poll_ = exit_poll_ = nullptr;
  ready_timer_ = nullptr;
  const pid_t child = pending_pid_;
  const int status = pending_->exit_status();
  pending_.reset();
  pending_pid_ = 0;
  if (outcome == upgrade_outcome::ready) {
    // New connections must reach the new generation at once; the bookkeeping can wait.
    stop_accepting();
    if (!options_.pidfile.empty())
      if (auto written = detail::write_pidfile(options_.pidfile, child); !written)
        log(event_kind::warning, written.error().why);
    notify("MAINPID=" + std::to_string(child) + "\nREADY=1");
    log(event_kind::child_ready, "pid " + std::to_string(child) + " is ready and in charge", child);
    begin_drain("handed over to pid " + std::to_string(child));
    return;
  }
  const std::string why = outcome == upgrade_outcome::timed_out
                              ? "was not ready within " + std::to_string(options_.ready_timeout.count()) +
                                    " ms and was killed"
                              : describe_status(status) + " before it was ready";
  log(event_kind::rollback, "pid " + std::to_string(child) + " " + why + "; still serving", child);
  notify("READY=1");
  if (terminate_requested_) begin_drain("shutting down");
}

void upgrader::shutdown() {
  if (state_ == state::draining || state_ == state::done) {
    if (!terminate_requested_) {
      terminate_requested_ = true;  // the first SIGTERM of a process draining after an upgrade
      return;
    }
    const std::size_t forced = connection_count();
    for (auto& s : servers_) s->close_all_connections();
    log(event_kind::forced_close, "asked again to stop: closed " + std::to_string(forced) + " connection(s) now",
        0, forced);
    finish();
    return;
  }
  terminate_requested_ = true;
  notify("STOPPING=1");
  if (pending_) {
    settle(pending_->give_up());  // settle() drains once the child is gone
    return;
  }
  begin_drain("shutting down");
}

void upgrader::stop_accepting() {
  for (auto& s : servers_) {
    if (!s->accepting()) continue;
    s->stop_accepting();
    net_.close(const_cast<grace::listener*>(&s->listener()));
  }
}

void upgrader::begin_drain(const std::string& why) {
  if (state_ == state::draining || state_ == state::done) return;
  state_ = state::draining;
  stop_accepting();
  log(event_kind::draining, why + ": stopped accepting; " + std::to_string(connection_count()) +
                                " connection(s) to finish within " + std::to_string(options_.drain_timeout.count()) +
                                " ms",
      0, connection_count());
  if (drain_hook_ && !drain_hook_ran_) {
    drain_hook_ran_ = true;
    drain_hook_();
  }
  drain_timer_ = new_handle<uv_timer_t>(this);
  uv_timer_init(loop_, drain_timer_);
  uv_timer_start(drain_timer_,
                 [](uv_timer_t* t) {
                   auto* self = static_cast<upgrader*>(t->data);
                   std::size_t forced = 0;
                   for (auto& s : self->servers_) forced += s->close_all_connections();
                   self->log(event_kind::forced_close,
                             "drain deadline passed: closed " + std::to_string(forced) + " connection(s) by force",
                             0, forced);
                   self->finish();
                 },
                 static_cast<uint64_t>(options_.drain_timeout.count()), 0);
  progress_timer_ = new_handle<uv_timer_t>(this);
  uv_timer_init(loop_, progress_timer_);
  uv_timer_start(progress_timer_,
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
  if (state_ == state::draining && connection_count() == 0) finish();
}

void upgrader::finish() {
  if (state_ == state::done) return;
  state_ = state::done;
  log(event_kind::exiting, "drained; exiting");
  close_handle(reinterpret_cast<uv_handle_t*>(drain_timer_));
  close_handle(reinterpret_cast<uv_handle_t*>(progress_timer_));
  drain_timer_ = progress_timer_ = nullptr;
  uv_stop(loop_);
}

int upgrader::run() {
  while (state_ != state::done) {
    const int alive = uv_run(loop_, UV_RUN_DEFAULT);
    if (alive == 0 && state_ != state::done) break;  // the application closed everything itself
  }
  return 0;
}

}  // namespace grace::uv
