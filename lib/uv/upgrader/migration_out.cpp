#include "migration_out.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>

#include "grace/migration.hpp"

namespace grace::uv::detail {
namespace {

using namespace std::chrono_literals;

constexpr auto hello_timeout = 1000ms;  // a new generation that takes connections answers at once
constexpr auto parcel_timeout = 10s;

}  // namespace

migration_out::migration_out(uv_loop_t* loop, server_set& servers, const migration_hooks& app, hooks h)
    : loop_(loop), servers_(servers), app_(app), hooks_(std::move(h)), loop_thread_(std::this_thread::get_id()) {}

migration_out::~migration_out() = default;

void migration_out::offer(const pending_child& successor) {
  if (!app_.set()) return;
  auto fd = offer_connection_channel(successor.ready_fd());
  if (!fd) return hooks_.warn("connections stay here: " + fd.error().message());
  auto channel = fd_channel::adopt(loop_, *fd);
  if (!channel) return hooks_.warn("connections stay here: " + channel.error().message());
  outbound_ = std::move(*channel);
  hello_seen_ = false;
  successor_ = successor.pid();
  outbound_->on_parcel([this](result<parcel> p) { on_outbound(std::move(p)); });
  auto timed = start_timer(
      hello_timer_, loop_, this,
      [](uv_timer_t* t) { static_cast<migration_out*>(t->data)->stop("the new generation did not take connections", true); },
      static_cast<std::uint64_t>(hello_timeout.count()), 0, "hello timer");
  if (!timed) stop(timed.error().message(), true);
}

void migration_out::on_outbound(result<parcel> p) {
  if (!p) return stop(p.error().message(), true);
  if (hello_seen_ || !is_connection_hello(*p)) return stop("the new generation sent something other than its hello", true);
  hello_seen_ = true;
  open_ = true;
  hello_timer_.reset();
  export_all();
}

// Each server's connections are offered on its own loop's thread, where the application's state
// for them lives; the last one to finish says how many moved.
void migration_out::export_all() {
  exported_ = 0;
  kept_ = 0;
  report_due_ = true;
  exports_running_ = static_cast<int>(servers_.size()) + 1;
  servers_.each([this](server& s) {
    export_from(s);
    if (--exports_running_ == 0) servers_.wake();
  });
  if (--exports_running_ == 0) {
    collect();
    hooks_.changed();
  }
}

void migration_out::export_from(server& s) {
  for (connection* c : s.connections()) {
    if (!open()) return;
    if (c->closing()) continue;
    if (auto bytes = app_.export_state(*c); bytes && migrate(*c, std::move(*bytes))) ++exported_;
    else ++kept_;
  }
}

void migration_out::report_exports() {
  if (!report_due_ || exports_running_.load() != 0) return;
  report_due_ = false;
  hooks_.progress("handing " + std::to_string(exported_.load()) + " idle connection(s) to pid " +
                      std::to_string(successor_) + "; " + std::to_string(kept_.load()) +
                      " busy one(s) finish here first",
                  kept_.load());
}

bool migration_out::migrate(connection& c, std::string bytes) {
  if (!open() || c.closing() || c.owner() == nullptr) return false;
  uv_os_fd_t fd = -1;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(c.stream()), &fd) != 0) return false;
  // A copy of the socket travels; closing `c` then leaves the connection open.
  const int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) return false;
  uv_read_stop(c.stream());
  const server* from = c.owner();
  ++moving_;
  c.close();
  handed h{owned_fd(copy), std::move(bytes), from};
  if (std::this_thread::get_id() == loop_thread_) {
    queue(std::move(h));
    return true;
  }
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    inbox_.push_back(std::move(h));
  }
  servers_.wake();
  return true;
}

void migration_out::collect() {
  std::vector<handed> arrived;
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    arrived.swap(inbox_);
  }
  for (auto& each : arrived) queue(std::move(each));
  report_exports();
}

// On this loop: joins the next parcel, or goes back where it came from when the new generation
// no longer takes connections.
void migration_out::queue(handed h) {
  if (!open() || !outbound_) return give_back(std::move(h));
  queued_.push_back(std::move(h));
  // Connections handed over in one turn of the loop travel together.
  if (flush_timer_) return;
  auto timed = start_timer(
      flush_timer_, loop_, this, [](uv_timer_t* t) { static_cast<migration_out*>(t->data)->flush(); }, 0, 0,
      "migration timer");
  if (!timed) stop(timed.error().message(), true);
}

// A connection the new generation could not take is served here again, on its server's loop.
void migration_out::give_back(handed h) {
  const server* from = h.from;
  auto bytes = std::make_shared<std::string>(std::move(h.state));
  const int fd = h.fd.release();
  const bool home = !hooks_.stopping() && servers_.on_loop_of(from, [this, fd, bytes](server& s) {
    if (auto c = s.adopt_connection(fd)) app_.import_state(**c, std::move(*bytes));
    --moving_;
    servers_.wake();
  });
  if (!home) {
    ::close(fd);
    --moving_;
  }
}

void migration_out::flush() {
  flush_timer_.reset();
  if (queued_.empty() || !outbound_) return;
  outgoing_parcel p;
  for (const auto& each : queued_) {
    const listener_info& from = each.from->listener();
    fd_description d;
    d.kind = fd_kind::connection;
    d.network = from.is_unix ? grace::network::unix_stream : grace::network::tcp;
    d.address = from.address;
    d.name = from.name;
    d.application = each.state;
    p.fds.push_back({each.fd.get(), std::move(d)});
  }
  in_flight_.push_back(std::move(queued_));
  queued_.clear();
  auto batch = std::prev(in_flight_.end());
  outbound_->send(std::move(p), parcel_timeout, [this, batch](result<void> sent) {
    if (!sent) return stop(sent.error().message(), true);
    // The new generation holds them now: this process lets go of its copies, which leaves the
    // connections open.
    moving_ -= batch->size();
    in_flight_.erase(batch);
    hooks_.changed();
  });
}

void migration_out::stop(const std::string& why, bool give_back_connections) {
  open_ = false;
  if (!outbound_) return;
  std::vector<handed> back = std::move(queued_);
  for (auto& batch : in_flight_)
    for (auto& each : batch) back.push_back(std::move(each));
  queued_.clear();
  in_flight_.clear();
  hello_timer_.reset();
  flush_timer_.reset();
  hello_seen_ = false;
  outbound_.reset();  // may be inside its own callback: allowed
  if (!give_back_connections) {
    moving_ -= back.size();
    return;  // their copies close with `back`
  }
  hooks_.warn("connections stay here (" + std::to_string(back.size()) + " given back): pid " +
              std::to_string(successor_) + ": " + why);
  for (auto& each : back) give_back(std::move(each));
  hooks_.given_back();
}

}  // namespace grace::uv::detail
