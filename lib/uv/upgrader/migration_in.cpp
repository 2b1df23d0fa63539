#include "migration_in.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "grace/flows.hpp"
#include "grace/migration.hpp"

namespace grace::uv::detail {
namespace {

constexpr auto hello_send_timeout = std::chrono::seconds(10);

std::string ms_text(double ms) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f ms", ms);
  return text;
}

}  // namespace

void migration_in::watch_parent() {
  expect_connections_ = parent_offers_connections();
  expect_flows_ = parent_offers_flows() && static_cast<bool>(hooks_.flow_channel);
  if (!expect_connections_ && !expect_flows_) return;
  auto watched = parent_connection_fd() < 0
                     ? result<void>(tl::unexpected(error(errc::channel_closed, "no readiness connection to the parent")))
                     : start_poll(parent_poll_, loop_, parent_connection_fd(), this, UV_READABLE,
                                  [](uv_poll_t* p, int, int) { static_cast<migration_in*>(p->data)->on_offer(); },
                                  "connections from the previous generation");
  if (watched) return;
  // Unwatched, the offers are never taken: the previous generation drains as it always did.
  if (expect_connections_) hooks_.warn(watched.error().message());
  if (expect_flows_) hooks_.flow_channel(tl::unexpected(watched.error()));
  expect_connections_ = expect_flows_ = false;
}

// The offers come on the readiness connection, in either order: the flow channel, the
// connection channel.
void migration_in::on_offer() {
  if (expect_flows_) {
    auto flows = receive_flow_channel();
    if (!flows || *flows) {
      expect_flows_ = false;
      hooks_.flow_channel(flows ? result<int>(**flows) : result<int>(tl::unexpected(flows.error())));
    }
  }
  if (expect_connections_) take_connection_offer();
  if (!expect_connections_ && !expect_flows_) parent_poll_.reset();
}

void migration_in::take_connection_offer() {
  auto offered = receive_connection_channel();
  if (offered && !*offered) return;  // nothing yet
  expect_connections_ = false;
  if (!offered) {
    if (offered.error().code() != errc::channel_closed) hooks_.warn(offered.error().message());
    return;
  }
  if (!app_.import_state) {
    ::close(**offered);  // declined: the old generation drains as it always did
    hooks_.progress("the previous generation offered its connections; this one has no import hook and takes "
                    "none: they finish there");
    return;
  }
  auto channel = fd_channel::adopt(loop_, **offered);
  if (!channel) return hooks_.warn("connections from the previous generation: " + channel.error().message());
  inbound_ = std::move(*channel);
  inbound_->on_parcel([this](result<parcel> p) { on_parcel(std::move(p)); });
  // It takes what its fd table holds while keeping room to accept new clients; the previous
  // generation keeps the rest, and they finish there.
  hello_at_ = std::chrono::steady_clock::now();
  inbound_->send(connection_hello(parent_reads_capacity_in_hello() ? connection_capacity() : SIZE_MAX),
                 hello_send_timeout, [](result<void>) {});
}

void migration_in::on_parcel(result<parcel> p) {
  if (!p) {
    // The previous generation is done (it exits) or gone; what it sent is here.
    if (p.error().code() != errc::channel_closed)
      hooks_.warn("connections from the previous generation: " + p.error().message());
    inbound_.reset();  // before the log line: it says the channel is closed
    std::string line = "took " + std::to_string(imported_) + " connection(s) from the previous generation";
    if (parcels_ > 0)
      line += " in " + std::to_string(parcels_) + " parcel(s), the last " +
              ms_text(std::chrono::duration<double, std::milli>(last_parcel_at_ - hello_at_).count()) +
              " after this one's hello; adopting them into the loop took " +
              ms_text(static_cast<double>(adopting_ns_) / 1e6);
    hooks_.progress(line);
    return;
  }
  const auto arrived = std::chrono::steady_clock::now();
  ++parcels_;
  last_parcel_at_ = arrived;
  for (auto& received : p->fds) {
    // Servers of the same address (one per worker) take turns; a unix connection for an address
    // no longer served goes to any unix server, a TCP one to any TCP server.
    const bool is_unix = received.description.network == grace::network::unix_stream;
    const auto targets = servers_.servers_for(received.description.address, is_unix);
    if (targets.empty()) {
      hooks_.warn("a connection from the previous generation for " + received.description.address +
                  ", which this one does not serve, is closed");
      continue;
    }
    const server* target = targets[round_robin_++ % targets.size()];
    ++imported_;
    const int fd = received.fd.release();
    auto bytes = std::make_shared<std::string>(std::move(received.description.application));
    const bool placed = servers_.on_loop_of(target, [this, fd, bytes](server& s) {
      auto c = s.adopt_connection(fd);
      if (c) app_.import_state(**c, std::move(*bytes));
    });
    if (!placed) ::close(fd);
  }
  // With workers, only posting them to their threads is counted here.
  adopting_ns_ += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - arrived).count();
}

void migration_in::close() {
  parent_poll_.reset();
  inbound_.reset();
}

}  // namespace grace::uv::detail
