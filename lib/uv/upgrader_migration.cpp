// Connection migration in the upgrader: the old side offers a channel to the generation that
// took over and sends idle connections on it; the new side takes them and serves them on.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>

#include "grace/migration.hpp"
#include "grace/uv/upgrader.hpp"
#include "migration_state.hpp"
#include "upgrader_internals.hpp"

namespace grace::uv {
namespace {

using namespace std::chrono_literals;

constexpr auto hello_timeout = 1000ms;  // a new generation that takes connections answers at once
constexpr auto parcel_timeout = 10s;

}  // namespace

void upgrader::on_export(std::function<std::optional<std::string>(connection&)> hook) { export_hook_ = std::move(hook); }
void upgrader::on_import(std::function<void(connection&, std::string)> hook) { import_hook_ = std::move(hook); }

bool upgrader::can_migrate() const noexcept { return migration_open_.load(); }

// --- Old side ---------------------------------------------------------------------------------

void upgrader::offer_connections(const pending_child& successor) {
  if (!pending_offered_connections_ || !export_hook_ || !import_hook_) return;
  auto fd = offer_connection_channel(successor.ready_fd());
  if (!fd) {
    log(event_kind::warning, "connections stay here: " + fd.error().message());
    return;
  }
  auto channel = fd_channel::adopt(loop_, *fd);
  if (!channel) {
    log(event_kind::warning, "connections stay here: " + channel.error().message());
    return;
  }
  auto& m = *migration_;
  m.outbound = std::move(*channel);
  m.outbound_ready = false;
  m.successor = successor.pid();
  m.outbound->on_parcel([this](result<parcel> p) { on_outbound(std::move(p)); });
  m.hello_timer.init([&](uv_timer_t* t) { return uv_timer_init(loop_, t); }, this);
  uv_timer_start(m.hello_timer.get(),
                 [](uv_timer_t* t) {
                   static_cast<upgrader*>(t->data)->stop_migrating("the new generation did not take connections", true);
                 },
                 static_cast<std::uint64_t>(hello_timeout.count()), 0);
}

void upgrader::on_outbound(result<parcel> p) {
  auto& m = *migration_;
  if (!p) return stop_migrating(p.error().message(), true);
  if (m.outbound_ready || !is_connection_hello(*p))
    return stop_migrating("the new generation sent something other than its hello", true);
  m.outbound_ready = true;
  migration_open_ = true;
  m.hello_timer.reset();
  export_all();
}

// Each server's connections are offered on its own loop's thread, where the application's state
// for them lives; the last one to finish says how many moved.
void upgrader::export_all() {
  exported_ = 0;
  kept_ = 0;
  export_report_due_ = true;
  exports_running_ = static_cast<int>(servers_.size()) + 1;
  for (auto& each : servers_)
    on_loop_of(each, [this](server& s) {
      export_from(s);
      if (--exports_running_ == 0) wake();
    });
  if (--exports_running_ == 0) on_wake();
}

void upgrader::export_from(server& s) {
  for (connection* c : s.connections()) {
    if (!can_migrate()) return;
    if (c->closing()) continue;
    if (auto bytes = export_hook_(*c); bytes && migrate(*c, std::move(*bytes))) ++exported_;
    else ++kept_;
  }
}

void upgrader::report_exports() {
  if (!export_report_due_ || exports_running_.load() != 0) return;
  export_report_due_ = false;
  log(event_kind::drain_progress,
      "handing " + std::to_string(exported_.load()) + " idle connection(s) to pid " +
          std::to_string(migration_->successor) + "; " + std::to_string(kept_.load()) +
          " busy one(s) finish here first",
      0, kept_.load());
}

bool upgrader::migrate(connection& c, std::string bytes) {
  if (!can_migrate() || c.closing() || c.owner() == nullptr) return false;
  uv_os_fd_t fd = -1;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(c.stream()), &fd) != 0) return false;
  // A copy of the socket travels; closing `c` then leaves the connection open.
  const int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) return false;
  uv_read_stop(c.stream());
  server* from = c.owner();
  ++moving_;
  c.close();
  if (std::this_thread::get_id() == loop_thread_) {
    queue_migration(copy, std::move(bytes), from);
    return true;
  }
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    inbox_.push_back(detail::handed_connection{owned_fd(copy), std::move(bytes), from});
  }
  wake();
  return true;
}

// On this loop: `fd` joins the next parcel, or goes back where it came from when the new
// generation no longer takes connections.
void upgrader::queue_migration(int fd, std::string bytes, server* from) {
  auto& m = *migration_;
  if (!can_migrate() || !m.outbound) return give_back(fd, std::move(bytes), from);
  m.queued.push_back(detail::handed_connection{owned_fd(fd), std::move(bytes), from});
  // Connections handed over in one turn of the loop travel together.
  if (!m.flush_timer) {
    m.flush_timer.init([&](uv_timer_t* t) { return uv_timer_init(loop_, t); }, this);
    uv_timer_start(m.flush_timer.get(), [](uv_timer_t* t) { static_cast<upgrader*>(t->data)->flush_migrations(); }, 0, 0);
  }
}

// A connection the new generation could not take is served here again, on its server's loop.
void upgrader::give_back(int fd, std::string bytes, server* from) {
  served* home = served_by(from);
  if (home == nullptr || state_ == state::exiting || state_ == state::done) {
    ::close(fd);
    --moving_;
    return;
  }
  on_loop_of(*home, [this, fd, bytes = std::move(bytes)](server& s) mutable {
    if (auto c = s.adopt_connection(fd)) import_hook_(**c, std::move(bytes));
    --moving_;
    wake();
  });
}

void upgrader::flush_migrations() {
  auto& m = *migration_;
  m.flush_timer.reset();
  if (m.queued.empty() || !m.outbound) return;
  outgoing_parcel p;
  for (const auto& each : m.queued) {
    const listener_info& from = each.from->listener();
    fd_description d;
    d.kind = fd_kind::connection;
    d.network = from.is_unix ? grace::network::unix_stream : grace::network::tcp;
    d.address = from.address;
    d.name = from.name;
    d.application = each.state;
    p.fds.push_back({each.fd.get(), std::move(d)});
  }
  m.in_flight.push_back(std::move(m.queued));
  m.queued.clear();
  auto batch = std::prev(m.in_flight.end());
  m.outbound->send(std::move(p), parcel_timeout, [this, batch](result<void> sent) {
    auto& ms = *migration_;
    if (!sent) return stop_migrating(sent.error().message(), true);
    // The new generation holds them now: this process lets go of its copies, which leaves the
    // connections open.
    moving_ -= batch->size();
    ms.in_flight.erase(batch);
    check_drained();
  });
}

// The channel failed, or the process stops: connections not yet confirmed are given back to the
// application here (give_back, when the new generation cannot have them: it hung up or never
// said hello), or closed.
void upgrader::stop_migrating(const std::string& why, bool give_back_connections) {
  auto& m = *migration_;
  migration_open_ = false;
  if (!m.outbound) return;
  const pid_t successor = m.successor;
  std::vector<detail::handed_connection> back = std::move(m.queued);
  for (auto& batch : m.in_flight)
    for (auto& each : batch) back.push_back(std::move(each));
  m.queued.clear();
  m.in_flight.clear();
  m.hello_timer.reset();
  m.flush_timer.reset();
  m.outbound_ready = false;
  m.outbound.reset();  // may be inside its own callback: allowed
  if (!give_back_connections) {
    moving_ -= back.size();
    return;  // their copies close with `back`
  }
  log(event_kind::warning, "connections stay here (" + std::to_string(back.size()) + " given back): pid " +
                               std::to_string(successor) + ": " + why);
  for (auto& each : back) give_back(each.fd.release(), std::move(each.state), each.from);
  // Without a taker, the connections left end as a drain ends them.
  if (state_ == state::draining) run_drain_hook();
  check_drained();
}

// --- New side ---------------------------------------------------------------------------------

void upgrader::watch_parent_offer() {
  if (!parent_offers_connections() || parent_connection_fd() < 0) return;
  auto& m = *migration_;
  m.parent_poll.init([&](uv_poll_t* p) { return uv_poll_init(loop_, p, parent_connection_fd()); }, this);
  uv_poll_start(m.parent_poll.get(), UV_READABLE,
                [](uv_poll_t* p, int, int) { static_cast<upgrader*>(p->data)->on_parent_offer(); });
}

void upgrader::on_parent_offer() {
  auto& m = *migration_;
  auto offered = receive_connection_channel();
  if (offered && !*offered) return;  // nothing yet
  m.parent_poll.reset();
  if (!offered) {
    if (offered.error().code() != errc::channel_closed) log(event_kind::warning, offered.error().message());
    return;
  }
  if (!import_hook_) {
    ::close(**offered);  // declined: the old generation drains as it always did
    return;
  }
  auto channel = fd_channel::adopt(loop_, **offered);
  if (!channel) {
    log(event_kind::warning, "connections from the previous generation: " + channel.error().message());
    return;
  }
  m.inbound = std::move(*channel);
  m.inbound->on_parcel([this](result<parcel> p) { on_inbound(std::move(p)); });
  m.inbound->send(connection_hello(), parcel_timeout, [](result<void>) {});
}

void upgrader::on_inbound(result<parcel> p) {
  auto& m = *migration_;
  if (!p) {
    // The previous generation is done (it exits) or gone; what it sent is here.
    if (p.error().code() != errc::channel_closed)
      log(event_kind::warning, "connections from the previous generation: " + p.error().message());
    m.inbound.reset();  // before the log line: it says the channel is closed
    log(event_kind::drain_progress, "took " + std::to_string(m.imported) + " connection(s) from the previous generation");
    return;
  }
  for (auto& received : p->fds) {
    // Servers of the same address (one per worker) take turns; a unix connection for an address
    // no longer served goes to any unix server, a TCP one to any TCP server.
    const bool is_unix = received.description.network == grace::network::unix_stream;
    std::vector<served*> same, similar;
    for (auto& each : servers_) {
      if (each.s->listener().address == received.description.address) same.push_back(&each);
      else if (each.s->listener().is_unix == is_unix) similar.push_back(&each);
    }
    const auto& targets = same.empty() ? similar : same;
    if (targets.empty()) {
      log(event_kind::warning, "a connection from the previous generation for " + received.description.address +
                                   ", which this one does not serve, is closed");
      continue;
    }
    served* target = targets[m.round_robin++ % targets.size()];
    ++m.imported;
    on_loop_of(*target, [this, fd = received.fd.release(),
                         bytes = std::move(received.description.application)](server& s) mutable {
      auto c = s.adopt_connection(fd);
      if (c) import_hook_(**c, std::move(bytes));
    });
  }
}

}  // namespace grace::uv
