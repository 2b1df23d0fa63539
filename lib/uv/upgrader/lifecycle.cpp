// The upgrader's event handlers, each read top to bottom: ready, upgrade (SIGUSR2 or a taker),
// the child's outcome, the hand-over, a successor's death, stop, drain and exit.
#include "impl.hpp"

#include <signal.h>
#include <unistd.h>

#include <cstdio>

#include "../../failure.hpp"
#include "grace/notify.hpp"

namespace grace::uv {

using detail::phase;

namespace {

// How long past the drain deadline connections in flight wait for the next generation's answer.
constexpr std::chrono::milliseconds answer_wait{2000};

}  // namespace

// --- Ready: this generation serves -------------------------------------------------------------

result<void> upgrader::impl::ready() {
  if (setup_error) return tl::unexpected(*setup_error);
  if (auto opened = open_handover_socket(); !opened) return tl::unexpected(opened.error());
  auto told = notify_ready();
  if (!told) return tl::unexpected(told.error());
  switch (*told) {
    case ready_outcome::first_start:
      charge.take();
      flows.on_predecessor_channel(tl::unexpected(error(errc::channel_closed, "")));
      break;
    case ready_outcome::told_parent:
      inbound.watch_parent();
      flows.after_ready();
      if (predecessor_out_of_sight()) {
        charge.take();
        log(event_kind::took_charge, "the previous generation runs in another pid namespace, where this one's pid means "
                                     "nothing: pid " + std::to_string(getpid()) +
                                         " names itself in the pid file and to the service manager");
      }
      break;
    case ready_outcome::parent_gone:
      charge.take();
      flows.on_predecessor_channel(tl::unexpected(error(errc::channel_closed, "the previous generation is gone")));
      log(event_kind::took_charge,
          "the generation that started this one is gone; pid " + std::to_string(getpid()) + " is in charge");
      break;
  }
  at = phase::serving;
  if (takeover) takeover->start_accepting();
  if (options.fd_store) charge.keep_listeners_in_store(net);
  close_unclaimed_listeners();
  log(event_kind::serving, serving_line());
  events.end_start_up_soon([this] { charge.start_up_over(); });
  return {};
}

// An inherited listener this generation did not claim would be a black hole: the kernel
// completes its clients' handshakes and nobody ever answers. Closed, they are refused instead.
void upgrader::impl::close_unclaimed_listeners() {
  for (const grace::listener* unused : net.unused_inherited())
    log(event_kind::warning, "the inherited listener " + unused->address() + " (name " + unused->name() +
                                 ") is not claimed by this generation: closed, its clients are refused");
  net.close_unused_inherited();
}

std::string upgrader::impl::serving_line() const {
  detail::serving_view v;
  for (const grace::listener* l : servers.listeners())
    v.served.push_back({l->address(), l->name(), l->inherited(), false});
  for (const grace::listener* l : net.active_listeners())
    if (socket_type(l->network()) == SOCK_DGRAM) v.udp.push_back({l->address(), l->name(), l->inherited(), true});
  v.workers = servers.worker_count();
  if (takeover) v.handover_socket = takeover->address();
  v.pid = getpid();
  return detail::serving_line(v);
}

result<void> upgrader::impl::open_handover_socket() {
  if (options.handover_socket.empty() || takeover) return {};
  auto l = detail::open_handover_socket(net, options.handover_socket);
  if (!l) return tl::unexpected(l.error());
  handover = *l;
  detail::takeover_server::hooks h;
  h.cannot_hand_over = [this](pid_t taker) { return detail::hand_over_refusal(hand_over_state(taker)); };
  h.took_listeners = [this](pid_t pid, int ready_fd, bool same_pid_namespace) {
    adopt_taker(pid, ready_fd, same_pid_namespace);
  };
  h.refused = [this](pid_t pid, const std::string& why) {
    log(event_kind::upgrade_refused, "takeover by pid " + std::to_string(pid) + " refused: " + why, pid);
  };
  h.warn = [this](const std::string& message) { log(event_kind::warning, message); };
  h.offers_connections = [this] { return migration.set(); };
  h.offers_flows = [this] { return flows.offers(); };
  auto server = detail::takeover_server::open(loop, net, handover, options.handover_peers, options.max_generations,
                                              std::move(h));
  if (!server) return tl::unexpected(server.error());
  takeover = std::move(*server);
  return {};
}

// --- Upgrade: SIGUSR2, or a process taking over ------------------------------------------------

void upgrader::impl::upgrade() {
  upgrade_began = std::chrono::steady_clock::now();
  if (auto why = detail::upgrade_refusal(hand_over_state())) {
    log(event_kind::upgrade_refused, *why, successor.pending());
    return;
  }
  process_options process = options.process;
  process.offer_connections = migration.set();
  process.offer_flows = flows.offers();
  offered_connections = process.offer_connections;
  offered_flows = process.offer_flows;
  starter.start(net, std::move(process), options.max_generations);
}

// The next generation, started off the loop.
void upgrader::impl::on_started(result<pending_child> child) {
  const std::string after = detail::after_rollback(terminating);
  if (!child) {
    if (child.error().code() == errc::too_many_generations)
      log(event_kind::upgrade_refused, child.error().message());
    else
      log(event_kind::rollback, "cannot start the next generation: " + child.error().message() + after);
  } else if (terminating) {
    // SIGTERM came while it started: a service that is stopping is not handed over.
    const pid_t pid = child->pid();
    child->kill_pending();
    log(event_kind::rollback, "pid " + std::to_string(pid) + " was killed before it was ready: this process got SIGTERM" + after,
        pid);
    successor.reap_later(std::move(*child), [](const pending_child&) {});
  } else {
    const pid_t pid = child->pid();
    log(event_kind::upgrade_started,
        "started generation " + std::to_string(generation + 1) + " as pid " + std::to_string(pid) +
            "; waiting until it is ready",
        pid);
    charge_elsewhere = false;
    return wait_for(std::move(*child));
  }
  if (terminating) begin_drain("shutting down");  // shutdown() left it to us
}

// A process started by somebody else took the listeners: from here it is watched exactly as a
// child this process started (ready, rollback, timeout), except that it is not reaped here.
void upgrader::impl::adopt_taker(pid_t pid, int ready_fd, bool same_pid_namespace) {
  upgrade_began = std::chrono::steady_clock::now();
  auto taker = pending_child::adopt(pid, ready_fd);
  if (!taker) {
    log(event_kind::rollback,
        "takeover by pid " + std::to_string(pid) + ": " + taker.error().message() + "; still serving", pid);
    return;
  }
  const std::string who = pid > 0 ? "pid " + std::to_string(pid) : std::string("a process in another pid namespace");
  if (auto why = detail::hand_over_refusal(hand_over_state(pid))) {
    // It holds the listeners and would take a hang-up for this process's death: it must go.
    taker->kill_pending();
    log(event_kind::rollback, "takeover by " + who + " abandoned (" + *why + "); it was killed", pid);
    successor.reap_later(std::move(*taker), [](const pending_child&) {});
    return;
  }
  log(event_kind::upgrade_started,
      who + ", started independently, took the listeners as generation " + std::to_string(generation + 1) +
          " through the hand-over socket" + (same_pid_namespace ? "" : " from another pid namespace") +
          "; waiting until it is ready",
      pid);
  offered_connections = migration.set();
  offered_flows = flows.offers();
  charge_elsewhere = !same_pid_namespace;
  wait_for(std::move(*taker));
}

// What it was offered and where its charge lies are set before: it may settle (ready, or gone)
// before successor.wait_for() returns.
void upgrader::impl::wait_for(pending_child child) {
  charge.notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec()));
  successor.wait_for(std::move(child));
}

void upgrader::impl::on_settled(upgrade_outcome outcome, pending_child child, const std::string& kill_reason) {
  const pid_t pid = child.pid();
  switch (detail::after_settle(outcome, terminating)) {
    case detail::next_step::hand_over: return hand_over(std::move(child));
    case detail::next_step::drain:
    case detail::next_step::serve_on: break;
  }
  const std::string after = detail::after_rollback(terminating);
  if (!kill_reason.empty()) {
    // We killed it, and know why: say so now (a process shutting down may be gone before the
    // child's exit is reaped).
    log(event_kind::rollback, "pid " + std::to_string(pid) + " " + kill_reason + after, pid);
    successor.reap_later(std::move(child), [](const pending_child&) {});
  } else {
    // Logged once the exit status is known, so the reason is the true one.
    successor.reap_later(std::move(child), [this, pid, after](const pending_child& gone) {
      log(event_kind::rollback,
          "pid " + std::to_string(pid) + " " + detail::not_ready_reason(gone.exit_status(), gone.killed()) + after,
          pid);
    });
  }
  if (terminating) return begin_drain("shutting down");
  charge.notify("READY=1");
}

std::string upgrader::impl::since_upgrade_began() const {
  char text[64];
  std::snprintf(text, sizeof text, "%.1f ms after the upgrade began",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - upgrade_began).count());
  return text;
}

// The child is ready: new connections must reach it at once; the bookkeeping can wait.
void upgrader::impl::hand_over(pending_child child) {
  const pid_t pid = child.pid();
  servers.stop_accepting();
  if (takeover) takeover->stop_accepting();
  if (charge_elsewhere) {
    // Its pid means nothing here, nor this one's there: it names itself (pid file, MAINPID).
    log(event_kind::child_ready,
        (pid > 0 ? "pid " + std::to_string(pid) : std::string("the process")) +
            " in another pid namespace is ready and in charge, " + since_upgrade_began() + "; it writes the pid file and tells its service "
            "manager itself",
        pid);
  } else {
    charge.hand_to(pid);
    log(event_kind::child_ready, "pid " + std::to_string(pid) + " is ready and in charge, " + since_upgrade_began(),
        pid);
  }
  if (offered_connections) outbound.offer(child, upgrade_began);
  flows.hand_over(child, offered_flows);
  successor.watch(std::move(child));
  // With connections moving, the drain hook waits: it runs only if they cannot move.
  begin_drain(pid > 0 ? "handed over to pid " + std::to_string(pid) : std::string("handed over"), outbound.offered());
}

void upgrader::impl::on_successor_exited(pid_t pid, int status, bool retired) {
  if (!detail::must_resume(retired, terminating, at)) {
    flows.successor_gone();  // nobody forwards to this generation any more
    return check_drained();
  }
  resume_after_takeover(pid, status);
}

// The generation this one handed over to died without handing over or stopping on purpose,
// while this one still holds the listening sockets: accept again, rather than leave the service
// down until an operator notices (nginx's answer).
void upgrader::impl::resume_after_takeover(pid_t pid, int status) {
  at = phase::serving;
  draining.stop();
  servers.resume_accepting();
  if (takeover) takeover->start_accepting();
  flows.resume();
  if (resume_hook) resume_hook();
  charge.hand_to(getpid());
  log(event_kind::rollback_after_takeover,
      "pid " + std::to_string(pid) + " (generation " + std::to_string(generation + 1) + ") " +
          detail::describe_status(status) + " after it took over; pid " + std::to_string(getpid()) +
          " serves again with " + std::to_string(servers.connection_count()) + " connection(s)",
      pid);
}

// --- Stop: SIGTERM, the drain, the exit ----------------------------------------------------------

void upgrader::impl::shutdown() {
  if (at == phase::draining || at == phase::exiting || at == phase::done) {
    if (!terminating) {
      terminating = true;  // the first SIGTERM of a process draining after an upgrade
      return;
    }
    outbound.stop("asked again to stop", false);
    const std::size_t forced = servers.close_all_connections();
    log(event_kind::forced_close, "asked again to stop: closed " + std::to_string(forced) + " connection(s) now", 0,
        forced);
    return finish();
  }
  terminating = true;
  charge.notify("STOPPING=1");
  close_listeners();
  if (successor.has_pending()) {
    // on_settled() drains once the child is gone.
    return successor.kill_pending("was killed before it was ready: this process got SIGTERM");
  }
  if (starter.busy()) return;  // on_started() kills what it started, then drains
  begin_drain("shutting down");
}

void upgrader::impl::close_listeners() {
  // Stopping for good: new clients are refused at once instead of waiting in a queue nobody
  // will accept from. (A socket activated by systemd stays open in systemd.)
  servers.close_listening_sockets();
  flows.close("shutting down");
  takeover.reset();
  std::vector<grace::listener*> listeners = servers.take_listeners();
  if (handover) listeners.push_back(std::exchange(handover, nullptr));
  for (grace::listener* l : listeners)
    if (auto closed = net.close(l); !closed) log(event_kind::warning, closed.error().message());
}

void upgrader::impl::begin_drain(const std::string& why, bool defer_hook) {
  if (at == phase::draining || at == phase::exiting || at == phase::done) return;
  at = phase::draining;
  deadline_extended = false;
  inbound.stop_watching_parent();  // before notify_retiring() closes the fd it watches
  notify_retiring();  // our parent, if it still drains, must not take our exit for a crash
  servers.stop_accepting();
  if (takeover) takeover->stop_accepting();
  const std::size_t open = servers.connection_count();
  log(event_kind::draining, why + ": stopped accepting; " + std::to_string(open) + " connection(s) to finish within " +
                                std::to_string(options.drain_timeout.count()) + " ms",
      0, open);
  if (!defer_hook) draining.run_hook();
  if (auto started = draining.start(options.drain_timeout); !started) log(event_kind::warning, started.error().message());
  check_drained();
}

void upgrader::impl::on_drain_deadline() {
  // Connections on their way to the next generation are its as soon as it answers: wait for the
  // answer (bounded) rather than close them under it.
  if (outbound.awaiting_answer() && !deadline_extended) {
    deadline_extended = true;
    log(event_kind::drain_progress,
        "drain deadline passed with " + std::to_string(outbound.moving()) +
            " connection(s) on their way to the next generation: waiting up to " +
            std::to_string(answer_wait.count()) + " ms for its answer",
        0, outbound.moving());
    if (draining.extend(answer_wait)) return;
  }
  const std::size_t in_flight = outbound.stop("the drain deadline passed", false);
  const std::size_t forced = servers.close_all_connections();
  log(event_kind::forced_close,
      "drain deadline passed: closed " + std::to_string(forced + in_flight) + " connection(s) by force" +
          (in_flight == 0 ? std::string()
                          : " (" + std::to_string(in_flight) + " of them on their way to the next generation)"),
      0, forced + in_flight);
  finish();
}

void upgrader::impl::check_drained() {
  const detail::drain_view v{at, successor.watch_time_left(), servers.workers_busy(), outbound.moving(),
                             servers.connection_count(), !flows.finished()};
  if (detail::drain_complete(v)) finish();
}

void upgrader::impl::finish() {
  if (at == phase::exiting || at == phase::done) return;
  at = phase::exiting;
  outbound.stop("exiting", false);
  inbound.close();
  flows.close("exiting");
  log(event_kind::exiting, upgrade_began == std::chrono::steady_clock::time_point{}
                              ? std::string("drained; exiting")
                              : "drained; exiting, " + since_upgrade_began());
  draining.stop();
  successor.let_go();  // left running: it serves
  maybe_stop();
}

void upgrader::impl::maybe_stop() {
  // The pid file must name the new generation before this one is gone.
  if (at != phase::exiting || !charge.idle()) return;
  at = phase::done;
  charge.abandon();
  uv_stop(loop);
}

void upgrader::impl::reload() {
  if (reload_hook) {
    log(event_kind::reload, "SIGHUP: reloading");
    reload_hook();
    return;
  }
  log(event_kind::reload, "SIGHUP ignored (no reload hook; SIGUSR2 upgrades, SIGTERM stops)");
}

int upgrader::impl::run() {
  if (!events.ending_soon()) events.end_start_up();  // no release pending (ready() not called)
  while (at != phase::done) {
    const int alive = uv_run(loop, UV_RUN_DEFAULT);
    if (alive == 0 && at != phase::done) break;  // the application closed everything itself
  }
  events.flush();
  return 0;
}

}  // namespace grace::uv
