#include "flows.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "grace/migration.hpp"

namespace grace::uv::detail {

using clock = std::chrono::steady_clock;

// One of the application's UDP sockets, read on this loop through a duplicate: the net keeps
// the original for the next generation.
struct flow_service::socket {
  uv_udp_t handle{};
  flow_service* owner = nullptr;
  unsigned index = 0;
  std::string address;
  bool opened = false;
  char buffer[65536];
};

namespace {

struct send_request {
  uv_udp_send_t req;
  std::string bytes;
};

std::string count_text(std::size_t n, const char* what) { return std::to_string(n) + " " + what; }

}  // namespace

flow_service::flow_service(uv_loop_t* loop, hooks h) : loop_(loop), hooks_(std::move(h)) {}

flow_service::~flow_service() {
  predecessor_poll_.reset();
  successor_poll_.reset();
  for (auto& s : sockets_) {
    if (!s->opened) continue;
    // Freed once libuv has closed it; the loop turns again in the upgrader's destructor.
    uv_close(reinterpret_cast<uv_handle_t*>(&s.release()->handle),
             [](uv_handle_t* h) { delete static_cast<socket*>(h->data); });
  }
}

result<void> flow_service::serve(const std::vector<grace::listener*>& sockets, flow_options options,
                                 std::function<void(const routed_datagram&)> on_datagram) {
  if (router_) return tl::unexpected(error(errc::invalid_argument, "serve_flows: called twice"));
  if (sockets.empty() || !on_datagram)
    return tl::unexpected(error(errc::invalid_argument, "serve_flows: no UDP socket, or no datagram callback"));
  if (sockets.size() > 65535) return tl::unexpected(error(errc::invalid_argument, "serve_flows: too many sockets"));
  for (grace::listener* l : sockets)
    if (l == nullptr || socket_type(l->network()) != SOCK_DGRAM)
      return tl::unexpected(error(errc::invalid_argument, "serve_flows: " + (l ? l->address() : std::string("null")) +
                                                              " is not a UDP socket"));
  for (grace::listener* l : sockets) {
    auto s = std::make_unique<socket>();
    s->owner = this;
    s->index = static_cast<unsigned>(sockets_.size());
    s->address = l->address();
    if (auto made = uv_result(uv_udp_init(loop_, &s->handle), "serve_flows: " + s->address); !made) return made;
    s->handle.data = s.get();
    s->opened = true;
    const int copy = fcntl(l->fd(), F_DUPFD_CLOEXEC, 3);
    if (copy < 0) {
      const int err = errno;
      sockets_.push_back(std::move(s));
      return tl::unexpected(error(std::error_code(err, std::system_category()),
                                  "serve_flows: duplicate the socket of " + sockets_.back()->address));
    }
    const int rc = uv_udp_open(&s->handle, copy);
    sockets_.push_back(std::move(s));
    if (rc != 0) {
      ::close(copy);
      return uv_result(rc, "serve_flows: " + sockets_.back()->address);
    }
  }
  options_ = std::move(options);
  deliver_ = std::move(on_datagram);
  router_ = std::make_unique<flow_router>(options_.table, options_.affinity);
  arm_expiry();
  // A previous generation that hands its flows over sends them once this one is ready: until
  // then its datagrams wait in the sockets' queues (it stopped reading them).
  if (!(offers() && parent_offers_flows())) start_reading();
  return {};
}

void flow_service::start_reading() {
  if (reading_ || handed_over_) return;
  reading_ = true;
  for (auto& s : sockets_) {
    const int rc = uv_udp_recv_start(
        &s->handle,
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          auto* self = static_cast<socket*>(h->data);
          *buf = uv_buf_init(self->buffer, sizeof self->buffer);
        },
        [](uv_udp_t* h, ssize_t n, const uv_buf_t* buf, const sockaddr* from, unsigned) {
          auto* self = static_cast<socket*>(h->data);
          self->owner->on_datagram(*self, n, buf, from);
        });
    if (rc != 0) hooks_.warn("cannot read " + s->address + ": " + uv_strerror(rc));
  }
}

void flow_service::stop_reading() {
  if (!reading_) return;
  reading_ = false;
  for (auto& s : sockets_) uv_udp_recv_stop(&s->handle);
}

void flow_service::on_datagram(socket& s, ssize_t n, const uv_buf_t* buf, const sockaddr* from) {
  if (n < 0 || from == nullptr) return;  // an error read, or nothing more for now
  routed_datagram d;
  d.socket = s.index;
  d.from = from;
  d.from_length = from->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  d.payload = std::string_view(buf->base, static_cast<std::size_t>(n));
  d.key = options_.key ? options_.key(from, d.from_length, d.payload) : flow_key::of_address(from, d.from_length);
  const auto now = clock::now();
  if (router_->forward_if_not_ours(d, now)) {
    if (router_->wants_write(router_->predecessor_fd())) watch(predecessor_poll_, router_->predecessor_fd(), true);
    return;
  }
  deliver_(d);
}

void flow_service::after_ready() {
  if (!router_ || reading_ || handed_over_ || router_->predecessor_fd() >= 0) return;
  auto timed = start_timer(
      hold_timer_, loop_, this,
      [](uv_timer_t* t) {
        static_cast<flow_service*>(t->data)->done_holding("the previous generation's flows did not arrive within " +
                                                          std::to_string(static_cast<flow_service*>(t->data)
                                                                             ->options_.wait_for_predecessor.count()) +
                                                          " ms");
      },
      static_cast<std::uint64_t>(options_.wait_for_predecessor.count()), 0, "flow hold timer");
  if (!timed) done_holding(timed.error().message());
}

void flow_service::done_holding(const std::string& why) {
  hold_timer_.reset();
  if (!router_ || reading_) return;
  router_->stop_holding();
  if (!why.empty()) hooks_.warn("flows: " + why + "; every datagram is this generation's from now on");
  start_reading();
}

void flow_service::on_predecessor_channel(result<int> fd) {
  if (!fd) {
    if (router_ && !reading_) done_holding(fd.error().message());
    return;
  }
  if (!offers()) {
    ::close(*fd);  // declined: the previous generation's flows end there
    return;
  }
  router_->attach_predecessor(*fd);
  watch(predecessor_poll_, *fd, true);
}

void flow_service::watch(owned_handle<uv_poll_t>& poll, int fd, bool predecessor) {
  const int events = UV_READABLE | (router_->wants_write(fd) ? UV_WRITABLE : 0);
  const uv_poll_cb cb = predecessor ? static_cast<uv_poll_cb>([](uv_poll_t* p, int status, int ev) {
    static_cast<flow_service*>(p->data)->on_channel_event(true, status, ev);
  })
                                    : [](uv_poll_t* p, int status, int ev) {
                                        static_cast<flow_service*>(p->data)->on_channel_event(false, status, ev);
                                      };
  if (poll && uv_poll_start(poll.get(), events, cb) == 0) return;
  auto started = start_poll(poll, loop_, fd, this, events, cb, "flow channel");
  if (!started) hooks_.warn(started.error().message());
}

void flow_service::on_channel_event(bool predecessor, int status, int events) {
  const auto now = clock::now();
  const int fd = predecessor ? router_->predecessor_fd() : router_->successor_fd();
  if (fd >= 0 && (events & UV_WRITABLE)) {
    if (auto flushed = router_->flush(fd); !flushed) hooks_.warn(flushed.error().message());
  }
  if (predecessor) {
    const bool was_holding = router_->holding();
    const std::size_t lost_before = router_->counters().predecessor_flows_lost;
    if (status < 0 || (events & UV_READABLE)) {
      if (auto read = router_->on_predecessor_readable(now); !read && read.error().code() != errc::channel_closed)
        hooks_.warn(read.error().message());
    }
    if (was_holding && !router_->holding()) {
      hold_timer_.reset();
      hooks_.progress("took the previous generation's " + count_text(router_->predecessor_flows(), "flow(s)") +
                      ": their datagrams go to it while it drains");
      start_reading();
    }
    if (const std::size_t lost = router_->counters().predecessor_flows_lost - lost_before; lost > 0)
      hooks_.warn("the previous generation went with " + count_text(lost, "flow(s)") +
                  " still open: their datagrams are this generation's now");
    if (router_->predecessor_fd() < 0) {
      predecessor_poll_.reset();
      if (!reading_) done_holding("");
    } else {
      watch(predecessor_poll_, router_->predecessor_fd(), true);
    }
  } else {
    if (status < 0 || (events & UV_READABLE)) {
      auto read = router_->on_successor_readable(now, deliver_);
      if (!read && read.error().code() != errc::channel_closed) hooks_.warn(read.error().message());
    }
    if (router_->successor_fd() < 0) {
      successor_poll_.reset();
      // Nobody forwards to this generation any more: what it still owns has ended.
      close("the next generation closed the flow channel");
      return;
    }
    watch(successor_poll_, router_->successor_fd(), false);
    if (router_->wants_write(router_->predecessor_fd())) watch(predecessor_poll_, router_->predecessor_fd(), true);
  }
  hooks_.changed();
}

void flow_service::hand_over(const pending_child& successor, bool offered) {
  if (!router_) return;
  hold_timer_.reset();
  stop_reading();
  handed_over_ = true;
  if (!offers()) return close("flow affinity is off");
  if (!offered) return close("the new generation was not offered flows");
  auto channel = router_->open_successor_channel();
  if (!channel) return close(channel.error().message());
  const std::size_t flows = router_->owned_flows() + router_->predecessor_flows();
  if (auto sent = offer_flow_channel(successor.ready_fd(), *channel); !sent) {
    router_->close_successor();
    return close(sent.error().message());
  }
  watch(successor_poll_, router_->successor_fd(), false);
  hooks_.progress("handed the list of " + count_text(flows, "flow(s)") +
                  " to the new generation: their datagrams come back here until they end");
}

void flow_service::resume() {
  if (!router_) return;
  successor_poll_.reset();
  router_->close_successor();
  handed_over_ = false;
  start_reading();
}

bool flow_service::finished() const noexcept { return !router_ || !handed_over_ || router_->finished(); }

void flow_service::close(const std::string& why) {
  if (!router_) return;
  stop_reading();
  handed_over_ = true;
  successor_poll_.reset();
  predecessor_poll_.reset();
  const std::size_t left = router_->abandon();
  if (left > 0) hooks_.warn(count_text(left, "UDP flow(s)") + " end here unfinished: " + why);
  hooks_.changed();
}

void flow_service::began(const flow_key& key) {
  if (router_) router_->began(key, clock::now());
}

void flow_service::ended(const flow_key& key) {
  if (!router_) return;
  router_->ended(key);
  if (router_->wants_write(router_->successor_fd())) watch(successor_poll_, router_->successor_fd(), false);
  if (handed_over_) hooks_.changed();
}

bool flow_service::reply(const routed_datagram& d, std::string_view bytes) {
  if (d.socket >= sockets_.size() || d.from == nullptr) return false;
  socket& s = *sockets_[d.socket];
  uv_buf_t buf = uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
  const int sent = uv_udp_try_send(&s.handle, &buf, 1, d.from);
  if (sent >= 0) return true;
  if (sent != UV_EAGAIN) {
    ++reply_failures_;
    return false;
  }
  // The socket's buffer is full: libuv queues a copy.
  auto* r = new send_request{{}, std::string(bytes)};
  uv_buf_t copy = uv_buf_init(r->bytes.data(), static_cast<unsigned>(r->bytes.size()));
  if (uv_udp_send(&r->req, &s.handle, &copy, 1, d.from,
                  [](uv_udp_send_t* req, int) { delete reinterpret_cast<send_request*>(req); }) != 0) {
    delete r;
    ++reply_failures_;
    return false;
  }
  return true;
}

flow_counters flow_service::counters() const { return router_ ? router_->counters() : flow_counters{}; }

void flow_service::arm_expiry() {
  const auto idle = options_.table.idle.count();
  const auto period = static_cast<std::uint64_t>(std::clamp<long long>(idle / 4, 10, 1000));
  auto started = start_timer(
      expiry_timer_, loop_, this, [](uv_timer_t* t) { static_cast<flow_service*>(t->data)->on_expiry(); }, period,
      period, "flow expiry timer");
  if (!started) return hooks_.warn(started.error().message() + ": idle flows do not end");
  uv_unref(reinterpret_cast<uv_handle_t*>(expiry_timer_.get()));
}

void flow_service::on_expiry() {
  if (!router_) return;
  const std::size_t before = router_->owned_flows();
  router_->expire(clock::now(), options_.on_flow_end);
  if (router_->wants_write(router_->successor_fd())) watch(successor_poll_, router_->successor_fd(), false);
  if (handed_over_ && router_->owned_flows() != before) hooks_.changed();
}

}  // namespace grace::uv::detail
