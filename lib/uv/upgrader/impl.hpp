#pragma once
// The upgrader's private implementation: the parts (this folder) and the state that ties them,
// with the event handlers. upgrader.cpp makes it and forwards the public calls to it;
// lifecycle.cpp holds the handlers, each read top to bottom; the decisions are in rules.hpp.
#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "../child_starter.hpp"
#include "../takeover_server.hpp"
#include "charge.hpp"
#include "drain.hpp"
#include "event_log.hpp"
#include "flows.hpp"
#include "grace/uv/upgrader.hpp"
#include "migration_in.hpp"
#include "migration_out.hpp"
#include "rules.hpp"
#include "server_set.hpp"
#include "successor.hpp"

namespace grace::uv {

using detail::phase;

struct upgrader::impl {
  impl(uv_loop_t* loop, grace::net& net, upgrader_options options);
  ~impl();

  // Events, each read top to bottom.
  result<void> ready();
  void upgrade();
  void shutdown();
  void reload();
  int run();
  void on_started(result<pending_child> child);
  void adopt_taker(pid_t pid, int ready_fd, bool same_pid_namespace);
  void on_settled(upgrade_outcome outcome, pending_child child, const std::string& kill_reason);
  void hand_over(pending_child child);
  void on_successor_exited(pid_t pid, int status, bool retired);
  void resume_after_takeover(pid_t successor, int status);
  void on_drain_deadline();

  // Steps.
  void log(event_kind kind, std::string message, pid_t child = 0, std::size_t count = 0) {
    events.write(kind, std::move(message), child, count);
  }
  detail::hand_over_view hand_over_state(pid_t taker = 0) const;
  void wait_for(pending_child child);
  result<void> open_handover_socket();
  result<void> handle_signals();
  std::string serving_line() const;
  std::string since_upgrade_began() const;
  void close_unclaimed_listeners();
  void close_listeners();
  void begin_drain(const std::string& why, bool defer_hook = false);
  void check_drained();
  void finish();
  void maybe_stop();

  uv_loop_t* loop;
  grace::net& net;
  upgrader_options options;
  std::optional<error> setup_error;  // what ready() reports
  unsigned generation;
  phase at = phase::starting;
  bool terminating = false;  // SIGTERM (or shutdown()) came
  bool offered_connections = false;  // the pending process was told it gets connections
  bool offered_flows = false;        // ... and UDP flows
  bool deadline_extended = false;    // the drain deadline waits once for connections in flight
  bool charge_elsewhere = false;     // the pending process runs in another pid namespace
  std::chrono::steady_clock::time_point upgrade_began{};  // SIGUSR2, or a taker: what hand-over times count from
  std::function<void()> reload_hook;
  std::function<void()> resume_hook;
  detail::migration_hooks migration;
  // The parts. The log is declared first so that it outlives every part that may log.
  detail::event_log events;
  detail::service_charge charge;
  detail::server_set servers;
  detail::drain draining;
  detail::successor_watch successor;
  detail::migration_out outbound;
  detail::migration_in inbound;
  detail::flow_service flows;
  detail::child_starter starter;
  grace::listener* handover = nullptr;  // in net
  std::unique_ptr<detail::takeover_server> takeover;
  detail::owned_handle<uv_signal_t> usr2, term, interrupt, hup;
};

}  // namespace grace::uv
