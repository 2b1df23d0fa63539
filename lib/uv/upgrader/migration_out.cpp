#include "migration_out.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iterator>

#include "grace/migration.hpp"

namespace grace::uv::detail {
namespace {

using namespace std::chrono_literals;

// A new generation that takes connections answers the offer at once; the connections exported
// meanwhile wait for it, their requests in their sockets. Counted on the clock, not the loop's
// time, which a busy turn leaves behind.
constexpr auto hello_timeout = 1000ms;
// When it expires with the hello already waiting in the channel, the hello is read in this turn
// of the loop (timers run before the poll): it gets that long more.
constexpr std::uint64_t hello_grace_ms = 20;
constexpr auto parcel_timeout = 10s;
// Connections in one parcel, at most: the receiver holds a parcel's fds until its last arrives.
constexpr std::size_t max_parcel = 128;

// The parcels go out back to back, several awaiting their confirmation at once: the new
// generation, busy with the connections it took, reads them a turn of its loop at a time. The
// kernel lets a user have no more fds on their way than RLIMIT_NOFILE: a quarter of it at most.
grace::channel_options pipelined() {
  grace::channel_options options;
  rlimit limit{};
  const std::size_t nofile = getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY
                                 ? static_cast<std::size_t>(limit.rlim_cur)
                                 : 1024;
  options.max_messages_in_flight = std::clamp<std::size_t>(nofile / 4 / max_parcel, 1, 16);
  return options;
}

double ms_between(migration_out::clock::time_point from, migration_out::clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

std::string ms_text(double ms) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f ms", ms);
  return text;
}

// Adds the time from its making to its end to `total`: the parcel building's share of each thread.
class timed_into {
 public:
  explicit timed_into(std::atomic<std::int64_t>& total) : total_(total), start_(migration_out::clock::now()) {}
  ~timed_into() {
    total_ += std::chrono::duration_cast<std::chrono::nanoseconds>(migration_out::clock::now() - start_).count();
  }
  timed_into(const timed_into&) = delete;
  timed_into& operator=(const timed_into&) = delete;

 private:
  std::atomic<std::int64_t>& total_;
  migration_out::clock::time_point start_;
};

}  // namespace

migration_out::migration_out(uv_loop_t* loop, server_set& servers, const migration_hooks& app, hooks h)
    : loop_(loop), servers_(servers), app_(app), hooks_(std::move(h)), loop_thread_(std::this_thread::get_id()) {}

migration_out::~migration_out() = default;

void migration_out::offer(const pending_child& successor, clock::time_point upgrade_began) {
  if (!app_.set()) return;
  upgrade_began_ = upgrade_began;
  offered_at_ = clock::now();
  hello_at_ = first_sent_at_ = last_confirmed_at_ = clock::time_point{};
  building_ns_ = 0;
  parcels_ = confirmed_ = 0;
  auto fd = offer_connection_channel(successor.ready_fd());
  if (!fd) return hooks_.warn("connections stay here: " + fd.error().message());
  auto channel = fd_channel::adopt(loop_, *fd, pipelined());
  if (!channel) return hooks_.warn("connections stay here: " + channel.error().message());
  outbound_ = std::move(*channel);
  channel_fd_ = *fd;
  hello_seen_ = false;
  successor_ = successor.pid();
  outbound_->on_parcel([this](result<parcel> p) { on_outbound(std::move(p)); });
  uv_update_time(loop_);  // a busy turn of the loop may have left its time behind
  auto timed = start_timer(
      hello_timer_, loop_, this, [](uv_timer_t* t) { static_cast<migration_out*>(t->data)->on_hello_timer(); },
      static_cast<std::uint64_t>(hello_timeout.count()), 0, "hello timer");
  if (!timed) {
    stop(timed.error().message(), true);
    return;
  }
  // The idle connections leave now rather than after the hello: from here this loop serves only
  // the busy ones, and the turns that bring the hello and the confirmations are short. What
  // leaves waits in the parcels for the hello (capacity_ unknown until then), and comes back
  // should the new generation not take it.
  open_ = true;
  capacity_ = SIZE_MAX;
  export_all();
}

void migration_out::on_hello_timer() {
  hello_timer_.reset();
  if (hello_seen_ || !outbound_) return;
  const double waited = ms_between(offered_at_, clock::now());
  pollfd waiting{channel_fd_, POLLIN, 0};
  if (waited < 10.0 * static_cast<double>(hello_timeout.count()) && poll(&waiting, 1, 0) == 1) {
    // Here already: this turn's poll reads it.
    auto timed = start_timer(
        hello_timer_, loop_, this, [](uv_timer_t* t) { static_cast<migration_out*>(t->data)->on_hello_timer(); },
        hello_grace_ms, 0, "hello timer");
    if (timed) return;
  }
  stop("pid " + std::to_string(successor_) + " did not say it takes connections (its hello) within " +
           ms_text(waited) + " of the offer",
       true);
}

void migration_out::on_outbound(result<parcel> p) {
  if (!p) {
    stop(p.error().message(), true);
    return;
  }
  const auto capacity = hello_capacity(*p);
  if (hello_seen_ || !capacity) {
    stop("the new generation sent something other than its hello", true);
    return;
  }
  hello_seen_ = true;
  hello_at_ = clock::now();
  hello_timer_.reset();
  if (*capacity == 0) {
    stop("it has no room for connections in its fd table", true);
    return;
  }
  // What was exported before the hello goes now, as far as the new generation has room.
  capacity_ = *capacity;
  if (queued_.size() >= capacity_) {
    std::vector<handed> excess(std::make_move_iterator(queued_.begin() + static_cast<std::ptrdiff_t>(capacity_)),
                               std::make_move_iterator(queued_.end()));
    queued_.resize(capacity_);
    capacity_ = 0;
    // Closed before they come back: the import hook may try to move them again.
    close_for_good("pid " + std::to_string(successor_) + " has room for no more connections in its fd table (" +
                   std::to_string(*capacity) + "): " +
                   (excess.empty() ? std::string("any others") : std::to_string(excess.size()) + " exported and any others") +
                   " stay here and finish in this generation");
    for (auto& each : excess) give_back(std::move(each));
  } else {
    capacity_ -= queued_.size();
  }
  flush();
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
  const timed_into building(building_ns_);
  for (connection* c : s.connections()) {
    if (!open()) return;
    if (c->closing()) continue;
    auto bytes = app_.export_state(*c);
    if (!bytes) {
      ++kept_;
      continue;
    }
    if (send_away(*c, *bytes)) {
      ++exported_;
      continue;
    }
    // It stays (its state is too large to travel, or the new generation has no more room): the
    // application serves it here again, on the same connection.
    ++kept_;
    app_.import_state(*c, std::move(*bytes));
  }
}

void migration_out::report_exports() {
  if (!report_due_ || exports_running_.load() != 0) return;
  report_due_ = false;
  const std::size_t too_large = too_large_.load();
  hooks_.progress("handing " + std::to_string(exported_.load()) + " idle connection(s) to pid " +
                      std::to_string(successor_) + "; " + std::to_string(kept_.load()) +
                      " busy one(s) finish here first" +
                      (too_large == 0 ? std::string()
                                      : " (" + std::to_string(too_large) +
                                            " with more state than a connection carries)"),
                  kept_.load());
}

bool migration_out::fits(const std::string& bytes) {
  if (bytes.size() <= connection_state_limit) return true;
  ++too_large_;
  // Said once, on this loop (a worker's thread only counts: events come on the loop's thread).
  if (std::this_thread::get_id() == loop_thread_) say_too_large();
  else servers_.wake();
  return false;
}

void migration_out::say_too_large() {
  if (warned_too_large_ || too_large_.load() == 0) return;
  warned_too_large_ = true;
  hooks_.warn("a connection with more state than a connection carries (at most " +
              std::to_string(connection_state_limit) + " bytes) stays here and finishes in this generation");
}

bool migration_out::migrate(connection& c, std::string bytes) { return send_away(c, bytes); }

bool migration_out::send_away(connection& c, std::string& bytes) {
  if (!open() || c.closing() || c.owner() == nullptr || !fits(bytes)) return false;
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
  say_too_large();
  report_exports();
}

// On this loop: joins the next parcel, or goes back where it came from when the new generation
// no longer takes connections.
void migration_out::queue(handed h) {
  if (!open() || !outbound_ || capacity_ == 0) return give_back(std::move(h));
  queued_.push_back(std::move(h));
  if (!hello_seen_) return;  // they go with the hello (capacity_ is known then)
  if (--capacity_ == 0)
    close_for_good("pid " + std::to_string(successor_) +
                   " has room for no more connections in its fd table: any others stay here and finish in this "
                   "generation");
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

// Sends what is queued, in parcels small enough for the receiver to take one at a time.
void migration_out::flush() {
  flush_timer_.reset();
  while (!queued_.empty() && outbound_) {
    std::vector<handed> batch;
    const std::size_t n = std::min(queued_.size(), max_parcel);
    batch.reserve(n);
    std::move(queued_.begin(), queued_.begin() + static_cast<std::ptrdiff_t>(n), std::back_inserter(batch));
    queued_.erase(queued_.begin(), queued_.begin() + static_cast<std::ptrdiff_t>(n));
    send(std::move(batch));
  }
}

outgoing_parcel migration_out::describe(const std::vector<handed>& batch) {
  const timed_into building(building_ns_);
  outgoing_parcel p;
  p.fds.reserve(batch.size());
  for (const auto& each : batch) {
    const listener_info& from = each.from->listener();
    fd_description d;
    d.kind = fd_kind::connection;
    d.network = from.is_unix ? grace::network::unix_stream : grace::network::tcp;
    d.address = from.address;
    d.name = from.name;
    d.application = each.state;
    p.fds.push_back({each.fd.get(), std::move(d)});
  }
  return p;
}

void migration_out::send(std::vector<handed> batch_of) {
  outgoing_parcel p = describe(batch_of);
  if (parcels_++ == 0) first_sent_at_ = clock::now();
  in_flight_.push_back(std::move(batch_of));
  auto batch = std::prev(in_flight_.end());
  outbound_->send(std::move(p), parcel_timeout, [this, batch](result<void> sent) {
    if (!sent) {
      stop(sent.error().message(), true);
      return;
    }
    // The new generation holds them now: this process lets go of its copies, which leaves the
    // connections open.
    moving_ -= batch->size();
    confirmed_ += batch->size();
    last_confirmed_at_ = clock::now();
    in_flight_.erase(batch);
    hooks_.changed();
  });
}

void migration_out::report_timing() {
  if (!hello_seen_) return;
  std::string line = "moved " + std::to_string(confirmed_) + " connection(s) to pid " + std::to_string(successor_) +
                     " in " + std::to_string(parcels_) + " parcel(s): its hello came " +
                     ms_text(ms_between(offered_at_, hello_at_)) + " after the offer";
  if (parcels_ > 0)
    line += "; building the parcels took " + ms_text(static_cast<double>(building_ns_.load()) / 1e6) +
            " (export hooks included)";
  if (confirmed_ > 0)
    line += ", sending them " + ms_text(ms_between(first_sent_at_, last_confirmed_at_)) +
            " from the first to the last confirmation, which came " +
            ms_text(ms_between(upgrade_began_, last_confirmed_at_)) + " after the upgrade began";
  hooks_.progress(line, 0);
}

void migration_out::close_for_good(const std::string& why) {
  open_ = false;
  hooks_.warn(why);
  hooks_.given_back();
}

std::size_t migration_out::stop(const std::string& why, bool give_back_connections) {
  open_ = false;
  if (!outbound_) return 0;
  report_timing();
  std::vector<handed> back = std::move(queued_);
  for (auto& batch : in_flight_)
    for (auto& each : batch) back.push_back(std::move(each));
  queued_.clear();
  in_flight_.clear();
  hello_timer_.reset();
  flush_timer_.reset();
  hello_seen_ = false;
  channel_fd_ = -1;
  outbound_.reset();  // may be inside its own callback: allowed
  if (!give_back_connections) {
    moving_ -= back.size();
    return back.size();  // their copies close with `back`
  }
  hooks_.warn("connections stay here (" + std::to_string(back.size()) + " given back): pid " +
              std::to_string(successor_) + ": " + why +
              "; the connections left end here as a drain ends them");
  for (auto& each : back) give_back(std::move(each));
  hooks_.given_back();
  return 0;
}

}  // namespace grace::uv::detail
