// Connection migration in the upgrader: the old side offers a channel to the generation that
// took over and sends idle connections on it; the new side takes them and serves them on.
#include <unistd.h>

#include <chrono>

#include "grace/migration.hpp"
#include "grace/uv/upgrader.hpp"
#include "migration_state.hpp"

namespace grace::uv {
namespace {

using namespace std::chrono_literals;

constexpr auto hello_timeout = 1000ms;  // a new generation that takes connections answers at once
constexpr auto parcel_timeout = 10s;

}  // namespace

void upgrader::on_export(std::function<std::optional<std::string>(connection&)> hook) { export_hook_ = std::move(hook); }
void upgrader::on_import(std::function<void(connection&, std::string)> hook) { import_hook_ = std::move(hook); }

bool upgrader::can_migrate() const noexcept {
  return migration_ && migration_->outbound && migration_->outbound_ready;
}

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
  m.hello_timer.reset();
  export_all();
}

void upgrader::export_all() {
  for (auto& s : servers_)
    for (connection* c : s->connections()) {
      if (c->closing() || migration_->moving_set.count(c) != 0) continue;
      if (auto bytes = export_hook_(*c)) migrate(*c, std::move(*bytes));
      if (!can_migrate()) return;
    }
  const std::size_t kept = connection_count() - migration_->moving_set.size();
  log(event_kind::drain_progress,
      "handing " + std::to_string(migration_->moving_set.size()) + " idle connection(s) to pid " +
          std::to_string(migration_->successor) + "; " + std::to_string(kept) + " busy one(s) finish here first",
      0, kept);
}

bool upgrader::migrate(connection& c, std::string bytes) {
  if (!can_migrate() || c.closing() || c.owner() == nullptr) return false;
  auto& m = *migration_;
  if (!m.moving_set.insert(&c).second) return true;
  uv_read_stop(c.stream());
  m.queued.push_back({&c, std::move(bytes)});
  // Connections handed over in one turn of the loop travel together.
  if (!m.flush_timer) {
    m.flush_timer.init([&](uv_timer_t* t) { return uv_timer_init(loop_, t); }, this);
    uv_timer_start(m.flush_timer.get(), [](uv_timer_t* t) { static_cast<upgrader*>(t->data)->flush_migrations(); }, 0, 0);
  }
  return true;
}

void upgrader::flush_migrations() {
  auto& m = *migration_;
  m.flush_timer.reset();
  if (m.queued.empty() || !m.outbound) return;
  outgoing_parcel p;
  for (const auto& each : m.queued) {
    uv_os_fd_t fd = -1;
    uv_fileno(reinterpret_cast<uv_handle_t*>(each.c->stream()), &fd);
    const listener_info& from = each.c->owner()->listener();
    fd_description d;
    d.kind = fd_kind::connection;
    d.network = from.is_unix ? grace::network::unix_stream : grace::network::tcp;
    d.address = from.address;
    d.name = from.name;
    d.application = each.state;
    p.fds.push_back({fd, std::move(d)});
  }
  m.in_flight.push_back(std::move(m.queued));
  m.queued.clear();
  auto batch = std::prev(m.in_flight.end());
  m.outbound->send(std::move(p), parcel_timeout, [this, batch](result<void> sent) {
    auto& ms = *migration_;
    if (!sent) return stop_migrating(sent.error().message(), true);
    // The new generation holds them now: this process lets go of its copies, which leaves the
    // connections open.
    for (auto& each : *batch) {
      ms.moving_set.erase(each.c);
      each.c->close();
    }
    ms.in_flight.erase(batch);
  });
}

// The channel failed, or the process stops: connections not yet confirmed are given back to the
// application here (give_back, when the new generation cannot have them: it hung up or never
// said hello), or left for the caller to close.
void upgrader::stop_migrating(const std::string& why, bool give_back) {
  auto& m = *migration_;
  if (!m.outbound) return;
  const pid_t successor = m.successor;
  std::vector<detail::migration_state::moving> back = std::move(m.queued);
  for (auto& batch : m.in_flight)
    for (auto& each : batch) back.push_back(std::move(each));
  m.queued.clear();
  m.in_flight.clear();
  m.moving_set.clear();
  m.hello_timer.reset();
  m.flush_timer.reset();
  m.outbound_ready = false;
  m.outbound.reset();  // may be inside its own callback: allowed
  if (!give_back) return;
  log(event_kind::warning, "connections stay here (" + std::to_string(back.size()) + " given back): pid " +
                               std::to_string(successor) + ": " + why);
  for (auto& each : back)
    if (!each.c->closing()) import_hook_(*each.c, std::move(each.state));
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
    server* target = nullptr;
    for (auto& s : servers_) {
      if (s->listener().address == received.description.address) {
        target = s.get();
        break;
      }
      const bool is_unix = received.description.network == grace::network::unix_stream;
      if (target == nullptr && s->listener().is_unix == is_unix) target = s.get();
    }
    if (target == nullptr) {
      log(event_kind::warning, "a connection from the previous generation for " + received.description.address +
                                   ", which this one does not serve, is closed");
      continue;
    }
    auto c = target->adopt_connection(received.fd.release());
    if (!c) {
      log(event_kind::warning, c.error().message());
      continue;
    }
    ++m.imported;
    import_hook_(**c, std::move(received.description.application));
  }
}

}  // namespace grace::uv
