#include "flows.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <set>

#include "../../reuseport_steering.hpp"
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

// The kernel path (flow_options::cookie). The shared socket is index 0 of its SO_REUSEPORT group;
// each generation adds a socket of its own (a slot), and its cookie is that socket's index. No
// socket ever leaves the group while the service runs: each generation hands every slot socket
// it holds to the next (the kernel would move the group's last socket into a slot that leaves,
// and every cookie past it would point elsewhere), and a new generation takes a slot whose
// generation is gone before it adds one. The newest generation attaches the program that maps
// the live generations' cookies to their slots; any other datagram goes to the shared socket.
struct flow_service::steering {
  grace::detail::cookie_format format;
  int shared_fd = -1;  // the net's
  sockaddr_storage local{};
  socklen_t local_length = 0;
  std::vector<int> pool;        // pool[i] is the socket at group index i + 1 (owned)
  std::set<unsigned> in_use;    // slots of live generations before this one
  unsigned own = 0;
  socket* reader = nullptr;     // this generation's slot, read on the loop (freed when closed)
  // The newest generation reads the slots of generations that are gone: what the kernel steered
  // there before the program changed is answered, not lost.
  std::map<unsigned, socket*> free_readers;
  bool pool_arrived = false;
  ~steering() {
    for (int fd : pool) ::close(fd);
  }
};

namespace {

constexpr unsigned max_slots = 255;

struct send_request {
  uv_udp_send_t req;
  std::string bytes;
};

std::string count_text(std::size_t n, const char* what) { return std::to_string(n) + " " + what; }

}  // namespace

flow_service::flow_service(uv_loop_t* loop, hooks h) : loop_(loop), hooks_(std::move(h)) {}

flow_service::~flow_service() {
  if (router_) router_->on_closing(nullptr);  // the polls go first, below
  predecessor_poll_.reset();
  successor_poll_.reset();
  if (steering_) {
    stop_free_slots();
    close_reader(std::exchange(steering_->reader, nullptr));
  }
  close_sockets();
}

// Freed once libuv has closed them; the loop turns again in the upgrader's destructor.
void flow_service::close_sockets() {
  for (auto& s : sockets_) {
    if (!s->opened) continue;
    uv_close(reinterpret_cast<uv_handle_t*>(&s.release()->handle),
             [](uv_handle_t* h) { delete static_cast<socket*>(h->data); });
  }
  sockets_.clear();
}

result<void> flow_service::serve(const std::vector<grace::listener*>& sockets, flow_options options,
                                 std::function<void(const routed_datagram&)> on_datagram) {
  if (router_) return tl::unexpected(error(errc::invalid_argument, "serve_flows: called twice"));
  if (sockets.empty() || !on_datagram)
    return tl::unexpected(error(errc::invalid_argument, "serve_flows: no UDP socket, or no datagram callback"));
  if (sockets.size() > 65535) return tl::unexpected(error(errc::invalid_argument, "serve_flows: too many sockets"));
  if (options.table.idle.count() <= 0 || options.table.max_flows == 0)
    return tl::unexpected(error(errc::invalid_argument, "serve_flows: table.idle and table.max_flows must be above 0"));
  for (grace::listener* l : sockets)
    if (l == nullptr || socket_type(l->network()) != SOCK_DGRAM)
      return tl::unexpected(error(errc::invalid_argument, "serve_flows: " + (l ? l->address() : std::string("null")) +
                                                              " is not a UDP socket"));
  for (grace::listener* l : sockets) {
    auto s = std::make_unique<socket>();
    s->owner = this;
    s->index = static_cast<unsigned>(sockets_.size());
    s->address = l->address();
    if (auto made = uv_result(uv_udp_init(loop_, &s->handle), "serve_flows: " + s->address); !made) {
      close_sockets();
      return made;
    }
    s->handle.data = s.get();
    s->opened = true;
    const int copy = fcntl(l->fd(), F_DUPFD_CLOEXEC, 3);
    if (copy < 0) {
      const int err = errno;
      const std::string address = s->address;
      sockets_.push_back(std::move(s));
      close_sockets();
      return tl::unexpected(error(std::error_code(err, std::system_category()),
                                  "serve_flows: duplicate the socket of " + address));
    }
    const int rc = uv_udp_open(&s->handle, copy);
    const std::string address = s->address;
    sockets_.push_back(std::move(s));
    if (rc != 0) {
      ::close(copy);
      close_sockets();
      return uv_result(rc, "serve_flows: " + address);
    }
  }
  options_ = std::move(options);
  if (options_.cookie && options_.affinity)
    if (auto checked = check_cookie_setup(sockets); !checked) {
      close_sockets();
      return checked;
    }
  deliver_ = std::move(on_datagram);
  router_ = std::make_unique<flow_router>(options_.table, options_.affinity);
  router_->on_extension([this](std::string_view bytes, std::vector<int> fds) { on_extension(bytes, std::move(fds)); });
  // A channel the router closes is let go of by its poll first (another process may hold a copy
  // of the socket, and epoll would report it for ever).
  router_->on_closing([this](int fd) {
    if (fd == router_->predecessor_fd()) predecessor_poll_.reset();
    if (fd == router_->successor_fd()) successor_poll_.reset();
  });
  arm_expiry();
  if (steering_ && !(offers() && parent_offers_flows())) take_slot();
  // A previous generation that hands its flows over sends them once this one is ready: until
  // then its datagrams wait in the sockets' queues (it stopped reading them).
  if (!(offers() && parent_offers_flows())) start_reading();
  return {};
}

void flow_service::start_reading() {
  if (reading_ || handed_over_) return;
  reading_ = true;
  for (auto& s : sockets_)
    if (!start_reader(s.get())) hooks_.warn("cannot read " + s->address);
}

bool flow_service::start_reader(socket* r) {
  return uv_udp_recv_start(
             &r->handle,
             [](uv_handle_t* h, size_t, uv_buf_t* buf) {
               auto* self = static_cast<socket*>(h->data);
               *buf = uv_buf_init(self->buffer, sizeof self->buffer);
             },
             [](uv_udp_t* h, ssize_t n, const uv_buf_t* buf, const sockaddr* from, unsigned) {
               auto* self = static_cast<socket*>(h->data);
               self->owner->on_datagram(*self, n, buf, from);
             }) == 0;
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
  const flow_counters before = router_->counters();
  const bool forwarded = router_->forward_if_not_ours(d, now);
  const flow_counters& after = router_->counters();
  if (after.forward_dropped != before.forward_dropped && after.forward_dropped >= next_drop_report_) {
    // Said once per power of two: a flood does not flood the log.
    next_drop_report_ = after.forward_dropped * 2;
    hooks_.warn("flows: " + std::to_string(after.forward_dropped) +
                " datagram(s) of the previous generation's flows dropped so far: its channel is full");
  }
  if (after.predecessor_flows_lost != before.predecessor_flows_lost) {
    hooks_.warn("the previous generation went with " +
                count_text(after.predecessor_flows_lost - before.predecessor_flows_lost, "flow(s)") +
                " still open: their datagrams are this generation's now");
    predecessor_poll_.reset();
    if (steering_) slots_freed(std::vector<unsigned>(steering_->in_use.begin(), steering_->in_use.end()));
  }
  if (forwarded) {
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
  // Without the previous generation's slot sockets the group's layout is unknown here: a socket
  // added now could land anywhere, so this generation goes without the kernel path.
  if (steering_ && steering_->own == 0)
    drop_steering("the previous generation's slot sockets did not arrive");
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
      // The previous generation had no slot sockets (no kernel path there): the group is the
      // shared socket alone, and this one adds the first.
      if (steering_ && steering_->own == 0 && !steering_->pool_arrived) take_slot();
      hooks_.progress("took the previous generation's " + count_text(router_->predecessor_flows(), "flow(s)") +
                      ": their datagrams go to it while it drains");
      start_reading();
    }
    if (const std::size_t lost = router_->counters().predecessor_flows_lost - lost_before; lost > 0)
      hooks_.warn("the previous generation went with " + count_text(lost, "flow(s)") +
                  " still open: their datagrams are this generation's now");
    if (router_->predecessor_fd() < 0) {
      predecessor_poll_.reset();
      // Gone, and with it every generation before it (each waits for the one before it).
      if (steering_) slots_freed(std::vector<unsigned>(steering_->in_use.begin(), steering_->in_use.end()));
      if (!reading_) done_holding("");
    } else {
      watch(predecessor_poll_, router_->predecessor_fd(), true);
    }
  } else {
    if (status < 0 || (events & UV_READABLE)) {
      auto read = router_->on_successor_readable(now, [this](const routed_datagram& d) {
        // The socket index comes from the other process: one this generation has not is refused.
        if (d.socket < sockets_.size()) return deliver_(d);
        if (!warned_bad_socket_) hooks_.warn("flows: a datagram forwarded for socket " + std::to_string(d.socket) +
                                             ", which this generation does not serve: dropped (said once)");
        warned_bad_socket_ = true;
      });
      if (!read && read.error().code() != errc::channel_closed) hooks_.warn(read.error().message());
    }
    if (router_->successor_fd() < 0) {
      // The next generation went (or failed the channel): whether this one serves again or its
      // flows end is the lifecycle's to say (resume(), successor_gone()).
      successor_poll_.reset();
      hooks_.changed();
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
  stop_free_slots();  // the next generation reads them, or takes one
  handed_over_ = true;
  if (!offers()) return close("flow affinity is off");
  if (!offered) return close("the new generation was not offered flows");
  std::vector<flow_router::extension> extensions;
  if (steering_) {
    // Every slot socket, and which are taken: this generation's and those before it still alive.
    flow_router::extension pool;
    pool.bytes = "P";
    for (unsigned slot : steering_->in_use) pool.bytes.push_back(static_cast<char>(slot));
    if (steering_->own != 0) pool.bytes.push_back(static_cast<char>(steering_->own));
    pool.fds = steering_->pool;
    extensions.push_back(std::move(pool));
  }
  auto channel = router_->open_successor_channel(extensions);
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
  if (steering_) {
    if (steering_->reader != nullptr && !start_reader(steering_->reader))
      hooks_.warn("flows: cannot read cookie slot " + std::to_string(steering_->own) + " again");
    steer();  // the newest again: the dead generation's cookie goes to the shared socket
    read_free_slots();
  }
}

void flow_service::successor_gone() {
  if (!router_ || !handed_over_) return;
  router_->close_successor();
  successor_poll_.reset();
  // Flows whose datagrams carry this generation's cookie still come to its own socket.
  if (steering_ && steering_->reader != nullptr) return;
  close("the next generation is gone, and nothing forwards to this one any more");
}

void flow_service::drop_steering(const std::string& why) {
  if (!steering_) return;
  stop_free_slots();
  close_reader(std::exchange(steering_->reader, nullptr));
  steering_.reset();
  hooks_.warn("flows: the kernel path is off in this generation: " + why);
}

bool flow_service::finished() const noexcept { return !router_ || !handed_over_ || router_->finished(); }

void flow_service::close(const std::string& why) {
  if (!router_) return;
  stop_reading();
  if (steering_ && steering_->reader) uv_udp_recv_stop(&steering_->reader->handle);
  stop_free_slots();
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

unsigned flow_service::cookie() const noexcept { return steering_ ? steering_->own : 0; }

result<void> flow_service::check_cookie_setup(const std::vector<grace::listener*>& sockets) {
  const auto refuse = [](const std::string& why) -> result<void> {
    return tl::unexpected(error(errc::invalid_argument, "serve_flows: cookie steering: " + why));
  };
  if (sockets.size() != 1) return refuse("it serves one UDP socket, not " + std::to_string(sockets.size()));
  const auto& c = *options_.cookie;
  auto s = std::make_unique<steering>();
  s->format.offset = c.offset;
  s->format.encoding = c.hex ? grace::detail::cookie_format::encoding::hex2 : grace::detail::cookie_format::encoding::byte;
  s->format.prefix = c.prefix;
  // The format is checked once here, with every slot mapped.
  std::vector<std::pair<std::uint8_t, std::uint32_t>> all;
  for (unsigned slot = 1; slot <= 3; ++slot) all.emplace_back(static_cast<std::uint8_t>(slot), slot);
  if (auto program = grace::detail::steering_program(s->format, all, 0); !program) return refuse(program.error().message());
  s->shared_fd = sockets.front()->fd();
  int reuse = 0;
  socklen_t length = sizeof reuse;
  if (getsockopt(s->shared_fd, SOL_SOCKET, SO_REUSEPORT, &reuse, &length) != 0 || reuse == 0)
    return refuse(sockets.front()->address() + " is not bound with SO_REUSEPORT (listen_options::reuse_port)");
  s->local_length = sizeof s->local;
  if (getsockname(s->shared_fd, reinterpret_cast<sockaddr*>(&s->local), &s->local_length) != 0)
    return refuse("the address of " + sockets.front()->address() + ": " + std::strerror(errno));
  steering_ = std::move(s);
  return {};
}

void flow_service::on_extension(std::string_view bytes, std::vector<int> fds) {
  const auto close_all = [&] {
    for (int fd : fds) ::close(fd);
  };
  if (!steering_ || bytes.empty()) return close_all();
  steering& s = *steering_;
  std::vector<unsigned> slots;
  for (char c : bytes.substr(1)) slots.push_back(static_cast<unsigned char>(c));
  if (bytes.front() == 'G' && fds.empty()) return slots_freed(slots);
  if (bytes.front() != 'P' || s.pool_arrived || s.own != 0 || reading_ || fds.size() > max_slots) {
    hooks_.warn("flows: slot sockets from the previous generation twice, too many, or too late: ignored");
    return close_all();
  }
  // Each must be a UDP socket bound where the shared one is: anything else is refused whole.
  for (int fd : fds) {
    sockaddr_storage a{};
    socklen_t n = sizeof a;
    int type = 0;
    socklen_t type_length = sizeof type;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n) != 0 || n != s.local_length ||
        std::memcmp(&a, &s.local, n) != 0 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_length) != 0 ||
        type != SOCK_DGRAM) {
      close_all();
      return drop_steering("a slot socket from the previous generation is not bound where the shared socket is");
    }
  }
  s.pool_arrived = true;
  s.pool = std::move(fds);
  for (unsigned slot : slots)
    if (slot >= 1 && slot <= s.pool.size()) s.in_use.insert(slot);
  take_slot();
}

void flow_service::take_slot() {
  steering& s = *steering_;
  if (s.own != 0) return;
  for (unsigned slot = 1; slot <= s.pool.size() && s.own == 0; ++slot)
    if (s.in_use.count(slot) == 0) s.own = slot;
  if (s.own == 0) {
    if (s.pool.size() >= max_slots) {
      hooks_.warn("flows: every one of the " + std::to_string(max_slots) +
                  " cookies is taken: the kernel path is off in this generation");
      return;
    }
    const int fd = ::socket(s.local.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, reinterpret_cast<const sockaddr*>(&s.local), s.local_length) != 0) {
      hooks_.warn(std::string("flows: cannot add a socket to the shared socket's group (") + std::strerror(errno) +
                  "): the kernel path is off in this generation");
      if (fd >= 0) ::close(fd);
      return;
    }
    s.pool.push_back(fd);
    s.own = static_cast<unsigned>(s.pool.size());
  }
  s.reader = open_slot_reader(s.pool[s.own - 1], s.own);
  if (s.reader == nullptr) {
    hooks_.warn("flows: cannot read cookie slot " + std::to_string(s.own) + ": the kernel path is off");
    s.own = 0;
    return;
  }
  steer();
  read_free_slots();
  hooks_.progress("cookie " + std::to_string(s.own) + " is this generation's: its flows' datagrams come to it straight");
}

// The newest generation maps the live generations' cookies to their sockets.
void flow_service::steer() {
  if (!steering_ || steering_->own == 0 || (router_ && router_->successor_fd() >= 0)) return;
  steering& s = *steering_;
  std::vector<std::pair<std::uint8_t, std::uint32_t>> map;
  for (unsigned slot : s.in_use) map.emplace_back(static_cast<std::uint8_t>(slot), slot);
  map.emplace_back(static_cast<std::uint8_t>(s.own), s.own);
  auto program = grace::detail::steering_program(s.format, map, 0);
  auto attached = program ? grace::detail::attach_steering(s.shared_fd, *program) : tl::unexpected(program.error());
  if (!attached) hooks_.warn("flows: the kernel path: " + attached.error().message());
}

void flow_service::slots_freed(const std::vector<unsigned>& slots) {
  if (!steering_ || slots.empty()) return;
  for (unsigned slot : slots) steering_->in_use.erase(slot);
  if (router_ && router_->successor_fd() >= 0) {
    // Not the newest: the word goes on to the generation that steers.
    flow_router::extension gone;
    gone.bytes = "G";
    for (unsigned slot : slots) gone.bytes.push_back(static_cast<char>(slot));
    if (auto sent = router_->send_extension(gone); !sent) hooks_.warn(sent.error().message());
    return;
  }
  steer();
  read_free_slots();
}

flow_service::socket* flow_service::open_slot_reader(int fd, unsigned slot) {
  auto reader = std::make_unique<socket>();
  reader->owner = this;
  reader->index = 0;  // the shared socket's: answers go out from the same address and port
  reader->address = "cookie slot " + std::to_string(slot);
  const int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) return nullptr;
  if (uv_udp_init(loop_, &reader->handle) != 0) {
    ::close(copy);
    return nullptr;
  }
  reader->handle.data = reader.get();
  reader->opened = true;
  socket* r = reader.release();
  if (uv_udp_open(&r->handle, copy) != 0) {
    ::close(copy);
    close_reader(r);
    return nullptr;
  }
  if (!start_reader(r)) {
    close_reader(r);
    return nullptr;
  }
  return r;
}

void flow_service::close_reader(socket* s) {
  if (s == nullptr) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&s->handle), [](uv_handle_t* h) { delete static_cast<socket*>(h->data); });
}

void flow_service::read_free_slots() {
  if (!steering_ || handed_over_ || (router_ && router_->successor_fd() >= 0)) return;
  steering& s = *steering_;
  for (unsigned slot = 1; slot <= s.pool.size(); ++slot) {
    if (slot == s.own || s.in_use.count(slot) != 0 || s.free_readers.count(slot) != 0) continue;
    if (socket* r = open_slot_reader(s.pool[slot - 1], slot)) s.free_readers[slot] = r;
    else hooks_.warn("flows: cannot read cookie slot " + std::to_string(slot) + " of a generation that is gone");
  }
}

void flow_service::stop_free_slots() {
  if (!steering_) return;
  for (auto& [slot, r] : steering_->free_readers) close_reader(r);
  steering_->free_readers.clear();
}

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
