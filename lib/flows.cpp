#include "grace/flows.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <deque>
#include <list>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "failure.hpp"
#include "scm_rights.hpp"

namespace grace {

// --- flow_key ------------------------------------------------------------------------------------

result<flow_key> flow_key::of_bytes(std::string_view bytes) {
  if (bytes.empty() || bytes.size() > max_size)
    return detail::fail(errc::invalid_argument, "flow key: " + std::to_string(bytes.size()) +
                                                    " bytes (a key has 1 to " + std::to_string(max_size) + ")");
  flow_key k;
  k.size_ = static_cast<std::uint8_t>(bytes.size());
  std::memcpy(k.data_, bytes.data(), bytes.size());
  return k;
}

flow_key flow_key::of_address(const sockaddr* address, socklen_t length) noexcept {
  flow_key k;
  if (address == nullptr) return k;
  auto put = [&](const void* p, std::size_t n) {
    std::memcpy(k.data_ + k.size_, p, n);
    k.size_ = static_cast<std::uint8_t>(k.size_ + n);
  };
  if (address->sa_family == AF_INET && length >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(address);
    const char family = 4;
    put(&family, 1);
    put(&in->sin_addr, sizeof in->sin_addr);
    put(&in->sin_port, sizeof in->sin_port);
  } else if (address->sa_family == AF_INET6 && length >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(address);
    const char family = 6;
    put(&family, 1);
    put(&in6->sin6_addr, sizeof in6->sin6_addr);
    put(&in6->sin6_port, sizeof in6->sin6_port);
    put(&in6->sin6_scope_id, sizeof in6->sin6_scope_id);
  }
  return k;
}

std::size_t flow_key::hash() const noexcept {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (std::uint8_t i = 0; i < size_; ++i) {
    h ^= static_cast<unsigned char>(data_[i]);
    h *= 1099511628211ull;
  }
  return static_cast<std::size_t>(h ^ (h >> 29));
}

// --- flow_table ----------------------------------------------------------------------------------

struct flow_table::state {
  struct entry {
    flow_key key;
    clock::time_point seen;
  };
  flow_table_options options;
  std::list<entry> by_age;  // most recently seen first
  std::unordered_map<flow_key, std::list<entry>::iterator, flow_key_hash> index;
};

flow_table::flow_table(flow_table_options options) : s_(std::make_unique<state>()) {
  if (options.max_flows == 0) options.max_flows = 1;
  s_->options = options;
}
flow_table::~flow_table() = default;
flow_table::flow_table(flow_table&&) noexcept = default;
flow_table& flow_table::operator=(flow_table&&) noexcept = default;

bool flow_table::contains(const flow_key& key) const noexcept { return s_->index.count(key) != 0; }

std::optional<flow_key> flow_table::touch(const flow_key& key, clock::time_point now) {
  auto found = s_->index.find(key);
  if (found != s_->index.end()) {
    found->second->seen = now;
    s_->by_age.splice(s_->by_age.begin(), s_->by_age, found->second);
    return std::nullopt;
  }
  std::optional<flow_key> evicted;
  if (s_->index.size() >= s_->options.max_flows) {
    evicted = s_->by_age.back().key;
    s_->index.erase(s_->by_age.back().key);
    s_->by_age.pop_back();
  }
  s_->by_age.push_front({key, now});
  s_->index.emplace(key, s_->by_age.begin());
  return evicted;
}

bool flow_table::erase(const flow_key& key) noexcept {
  auto found = s_->index.find(key);
  if (found == s_->index.end()) return false;
  s_->by_age.erase(found->second);
  s_->index.erase(found);
  return true;
}

std::vector<flow_key> flow_table::expire(clock::time_point now) {
  std::vector<flow_key> gone;
  while (!s_->by_age.empty() && now - s_->by_age.back().seen >= s_->options.idle) {
    gone.push_back(s_->by_age.back().key);
    s_->index.erase(s_->by_age.back().key);
    s_->by_age.pop_back();
  }
  return gone;
}

std::optional<flow_table::clock::time_point> flow_table::next_expiry() const noexcept {
  if (s_->by_age.empty()) return std::nullopt;
  return s_->by_age.back().seen + s_->options.idle;
}

std::size_t flow_table::size() const noexcept { return s_->index.size(); }

std::vector<flow_key> flow_table::keys() const {
  std::vector<flow_key> out;
  out.reserve(s_->by_age.size());
  for (const auto& e : s_->by_age) out.push_back(e.key);
  return out;
}

const flow_table_options& flow_table::options() const noexcept { return s_->options; }

std::size_t flow_table::bytes_per_flow() noexcept {
  // A list node (two pointers and the entry), a hash node (next pointer, the key, the iterator,
  // the cached hash) and its share of the buckets (one pointer at load factor 1).
  return (2 * sizeof(void*) + sizeof(state::entry)) +
         (sizeof(void*) + sizeof(flow_key) + sizeof(void*) + sizeof(std::size_t)) + sizeof(void*);
}

// --- The channel's messages ----------------------------------------------------------------------
//
// One message per SOCK_SEQPACKET record; the first byte says what it is:
//   'K' key*   flows the sender owns (its list, in as many messages as it takes)
//   'S'        the list is complete
//   'E' key*   flows that ended at the sender: the receiver owns those keys from now on
//   'C'        with fds: the sender's channels to the generations before it that still own flows
//              (write ends: the receiver forwards to them directly, never reads them), in order
//   'J' tag:u8 key*
//              flows of the generation the tag names: tag 1 is the first channel of 'C', ...
//   'F' socket:u16 addrlen:u8 address keylen:u8 key payload
//              a datagram for a flow the receiver owns, forwarded by a newer generation
// where key = len:u8 bytes (1 to 64).

namespace {

constexpr std::size_t max_payload = 65536;
constexpr std::size_t max_message = max_payload + 512;
constexpr std::size_t list_chunk = 32 * 1024;
// Forwarded datagrams waiting for room on the channel, at most: more are dropped (counted).
constexpr std::size_t max_forward_queue_bytes = 8 * 1024 * 1024;

void put_key(std::string& out, const flow_key& k) {
  out.push_back(static_cast<char>(k.bytes().size()));
  out.append(k.bytes());
}

// Reads a key at `at`; false when the message ends short or the length is out of range.
bool take_key(std::string_view m, std::size_t& at, flow_key& out) {
  if (at >= m.size()) return false;
  const std::size_t n = static_cast<unsigned char>(m[at]);
  if (n == 0 || n > flow_key::max_size || at + 1 + n > m.size()) return false;
  auto k = flow_key::of_bytes(m.substr(at + 1, n));
  if (!k) return false;
  out = *k;
  at += 1 + n;
  return true;
}

struct outgoing {
  std::string bytes;
  std::vector<int> fds;  // owned: closed once sent, or when the channel closes
  outgoing() = default;
  outgoing(std::string b) : bytes(std::move(b)) {}
  outgoing(outgoing&& o) noexcept : bytes(std::move(o.bytes)), fds(std::exchange(o.fds, {})) {}
  outgoing& operator=(outgoing&& o) noexcept {
    release();
    bytes = std::move(o.bytes);
    fds = std::exchange(o.fds, {});
    return *this;
  }
  ~outgoing() { release(); }
  void release() {
    for (int fd : fds) ::close(fd);
    fds.clear();
  }
};

// Sends one message; the number of bytes sent, or -1 with errno.
ssize_t send_one(int fd, const outgoing& m) {
  iovec iov{const_cast<char*>(m.bytes.data()), m.bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * (m.fds.empty() ? 1 : m.fds.size())));
  if (!m.fds.empty()) detail::attach_fds(msg, control.data(), m.fds.data(), m.fds.size());
  ssize_t sent;
  do sent = ::sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  return sent;
}

struct channel {
  int fd = -1;
  std::deque<outgoing> queued;  // messages the socket had no room for yet
  std::size_t queued_forwards = 0;  // bytes of forwarded datagrams among them
  // Told before the fd closes: an event loop watching it must let go first (epoll keeps the
  // registration of a socket another process still holds a copy of).
  const std::function<void(int)>* on_close = nullptr;

  bool open() const { return fd >= 0; }
  void close() {
    if (fd >= 0 && on_close != nullptr && *on_close) (*on_close)(fd);
    if (fd >= 0) ::close(fd);
    fd = -1;
    queued.clear();
    queued_forwards = 0;
  }
  // Sends what is queued, then `m`; what does not fit waits. An error when the channel failed.
  result<void> send(outgoing m, bool is_forward) {
    if (!open()) return detail::fail(errc::channel_closed, "flow channel: closed");
    if (queued.empty()) {
      if (send_one(fd, m) >= 0) return {};
      if (errno != EAGAIN && errno != EWOULDBLOCK) return detail::fail_errno(errno, "flow channel: send");
    }
    if (is_forward) {
      if (queued_forwards + m.bytes.size() > max_forward_queue_bytes)
        return detail::fail(std::make_error_code(std::errc::no_buffer_space), "flow channel: queue full");
      queued_forwards += m.bytes.size();
    }
    queued.push_back(std::move(m));
    return {};
  }
  result<void> flush() {
    while (open() && !queued.empty()) {
      if (send_one(fd, queued.front()) < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return {};
        return detail::fail_errno(errno, "flow channel: send");
      }
      if (!queued.front().bytes.empty() && queued.front().bytes.front() == 'F')
        queued_forwards -= queued.front().bytes.size();
      queued.pop_front();
    }
    return {};
  }
};

// Duplicates of `fds` for a message (close-on-exec).
result<std::vector<int>> duplicates(const std::vector<int>& fds) {
  std::vector<int> out;
  for (int fd : fds) {
    const int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (copy < 0) {
      const int err = errno;
      for (int c : out) ::close(c);
      return detail::fail_errno(err, "flow channel: duplicate fd " + std::to_string(fd));
    }
    out.push_back(copy);
  }
  return out;
}

}  // namespace

struct flow_router::state {
  explicit state(flow_table_options t) : own(t) {}
  flow_table own;
  bool affinity = true;
  channel predecessor;
  bool holding = false;
  // The flows of the generations before this one, each with its owner: 0 the predecessor, i > 0
  // older[i - 1], a channel straight to an older generation (a copy of the write end its own
  // successor holds): a datagram crosses one channel however many generations drain.
  std::unordered_map<flow_key, unsigned, flow_key_hash> predecessor_keys;
  std::deque<channel> older;
  std::vector<std::size_t> owned_by;  // keys per owner
  channel successor;
  std::vector<flow_key> evicted;  // reported by the next expire()
  std::function<void(std::string_view, std::vector<int>)> extension_handler;
  std::function<void(int)> closing;

  result<void> send_extension(const extension& e) {
    if (e.bytes.size() + 1 > max_message || e.fds.size() > 200)
      return detail::fail(errc::invalid_argument, "flow channel: an extension too large");
    auto copies = duplicates(e.fds);
    if (!copies) return tl::unexpected(copies.error());
    outgoing m("X" + e.bytes);
    m.fds = std::move(*copies);
    return successor.send(std::move(m), false);
  }
  flow_counters counters;
  std::string buffer = std::string(max_message, '\0');

  // A flow of this generation or its predecessor ended: the successor, told of it in the list,
  // owns the key now.
  void tell_successor_ended(const flow_key& k) {
    if (!successor.open()) return;
    std::string m = "E";
    put_key(m, k);
    if (!successor.send(std::move(m), false)) successor.close();
  }
  // False when the previous generation is gone (its channel failed): the datagram is this
  // generation's then, as its flow is.
  bool forward(const routed_datagram& d, unsigned owner) {
    std::string m;
    m.reserve(6 + d.from_length + d.key.bytes().size() + d.payload.size());
    m.push_back('F');
    m.push_back(static_cast<char>(d.socket >> 8));
    m.push_back(static_cast<char>(d.socket & 0xff));
    const socklen_t addr_len = d.from_length > 255 ? 0 : d.from_length;
    m.push_back(static_cast<char>(addr_len));
    m.append(reinterpret_cast<const char*>(d.from), addr_len);
    put_key(m, d.key);
    m.append(d.payload.substr(0, max_payload));
    if (owner > 0 && owner <= older.size() && older[owner - 1].open()) {
      // Straight to the generation that owns it; when its channel has no room (or failed), the
      // predecessor relays it instead.
      if (send_one(older[owner - 1].fd, outgoing(m)) >= 0) {
        ++counters.forwarded;
        return true;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) older[owner - 1].close();
    }
    auto sent = predecessor.send(std::move(m), true);
    if (sent) {
      ++counters.forwarded;
      return true;
    }
    if (sent.error().code() == std::make_error_code(std::errc::no_buffer_space) ||
        sent.error().code() == std::make_error_code(std::errc::message_size)) {
      ++counters.forward_dropped;  // the channel is full, or the datagram too large for it: counted
      return true;
    }
    lose_predecessor();
    return false;
  }
  void lose_predecessor() {
    counters.predecessor_flows_lost += predecessor_keys.size();
    for (const auto& [k, owner] : predecessor_keys) tell_successor_ended(k);
    predecessor_keys.clear();
    predecessor.close();
    for (auto& c : older) c.close();
    older.clear();
    owned_by.assign(1, 0);
    holding = false;
  }
  void add_predecessor_key(const flow_key& k, unsigned owner) {
    if (owned_by.size() <= owner) owned_by.resize(owner + 1, 0);
    auto [at, added] = predecessor_keys.emplace(k, owner);
    if (!added) {
      --owned_by[at->second];
      at->second = owner;
    }
    ++owned_by[owner];
  }
  // A flow before this generation ended: the successor owns it now; a channel to an older
  // generation that owns no more flows closes.
  void end_predecessor_key(const flow_key& k) {
    auto at = predecessor_keys.find(k);
    if (at == predecessor_keys.end()) return;
    const unsigned owner = at->second;
    predecessor_keys.erase(at);
    if (owner < owned_by.size() && --owned_by[owner] == 0 && owner > 0 && owner <= older.size())
      older[owner - 1].close();
    tell_successor_ended(k);
  }
};

flow_router::flow_router(flow_table_options table, bool affinity) : s_(std::make_unique<state>(table)) {
  s_->affinity = affinity;
  s_->owned_by.assign(1, 0);
  s_->predecessor.on_close = &s_->closing;
  s_->successor.on_close = &s_->closing;
}

flow_router::~flow_router() {
  s_->predecessor.close();
  s_->successor.close();
}

bool flow_router::affinity() const noexcept { return s_->affinity; }

void flow_router::attach_predecessor(int fd) {
  s_->predecessor.close();
  s_->predecessor.fd = fd;
  s_->holding = true;
}

bool flow_router::holding() const noexcept { return s_->holding; }
void flow_router::stop_holding() noexcept { s_->holding = false; }
int flow_router::predecessor_fd() const noexcept { return s_->predecessor.fd; }
std::size_t flow_router::predecessor_flows() const noexcept { return s_->predecessor_keys.size(); }

result<void> flow_router::on_predecessor_readable(clock::time_point) {
  state& s = *s_;
  for (int round = 0; round < 256 && s.predecessor.open(); ++round) {
    iovec iov{s.buffer.data(), s.buffer.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 200)];
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t got;
    do got = ::recvmsg(s.predecessor.fd, &msg, MSG_DONTWAIT | MSG_TRUNC | MSG_CMSG_CLOEXEC);
    while (got < 0 && errno == EINTR);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return {};
    std::vector<int> fds;
    if (got > 0) detail::collect_fds(msg, fds);
    if (got > 0 && s.buffer[0] == 'X' && static_cast<std::size_t>(got) <= s.buffer.size() &&
        !(msg.msg_flags & MSG_CTRUNC)) {
      const std::string_view bytes(s.buffer.data() + 1, static_cast<std::size_t>(got) - 1);
      if (s.extension_handler) s.extension_handler(bytes, std::move(fds));
      else for (int fd : fds) ::close(fd);
      continue;
    }
    if (got <= 0 || s.buffer[0] != 'C') {
      for (int fd : fds) ::close(fd);  // fds come only with extensions and channels
      fds.clear();
    }
    if (got > 0 && (msg.msg_flags & MSG_CTRUNC)) {
      s.lose_predecessor();
      return detail::fail(std::make_error_code(std::errc::too_many_files_open),
                          "flow channel: a message from the previous generation arrived without its fds");
    }
    if (got <= 0) {
      const int err = got < 0 ? errno : 0;
      s.lose_predecessor();
      if (err != 0) return detail::fail_errno(err, "flow channel from the previous generation");
      return detail::fail(errc::channel_closed, "flow channel: the previous generation closed it");
    }
    if (static_cast<std::size_t>(got) > s.buffer.size()) {
      s.lose_predecessor();
      return detail::fail(errc::protocol_error, "flow channel: a message of " + std::to_string(got) +
                                                    " bytes from the previous generation (at most " +
                                                    std::to_string(s.buffer.size()) + ")");
    }
    const std::string_view m(s.buffer.data(), static_cast<std::size_t>(got));
    const char kind = m.front();
    if (kind == 'S' && m.size() == 1) {
      s.holding = false;
      continue;
    }
    if (kind == 'C') {
      const bool all_seqpacket = std::all_of(fds.begin(), fds.end(), [](int fd) {
        int type = 0;
        socklen_t length = sizeof type;
        return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0 && type == SOCK_SEQPACKET;
      });
      if (!s.older.empty() || m.size() != 1 || fds.empty() || !all_seqpacket) {
        for (int fd : fds) ::close(fd);
        s.lose_predecessor();
        return detail::fail(errc::protocol_error, "flow channel: the previous generation passed channels twice, "
                                                  "none, or one that is not a seqpacket socket");
      }
      for (int fd : fds) {
        channel c;
        c.fd = fd;
        s.older.push_back(std::move(c));
      }
      continue;
    }
    unsigned owner = 0;
    std::size_t at = 1;
    if (kind == 'J') {
      owner = m.size() > 1 ? static_cast<unsigned char>(m[1]) : 0;
      if (owner == 0 || owner > s.older.size()) {
        s.lose_predecessor();
        return detail::fail(errc::protocol_error, "flow channel: flows of a generation the previous one named no "
                                                  "channel for (tag " + std::to_string(owner) + ")");
      }
      at = 2;
    } else if (kind != 'K' && kind != 'E') {
      s.lose_predecessor();
      return detail::fail(errc::protocol_error, "flow channel: a message the previous generation should not send (kind " +
                                                    std::to_string(static_cast<unsigned char>(kind)) + ")");
    }
    while (at < m.size()) {
      flow_key k;
      if (!take_key(m, at, k)) {
        s.lose_predecessor();
        return detail::fail(errc::protocol_error, "flow channel: a malformed flow key from the previous generation");
      }
      if (kind == 'E') s.end_predecessor_key(k);
      else s.add_predecessor_key(k, owner);
    }
  }
  return {};
}

bool flow_router::forward_if_not_ours(const routed_datagram& d, clock::time_point now) {
  state& s = *s_;
  if (d.key.empty()) return false;
  if (s.own.contains(d.key)) {
    s.own.touch(d.key, now);
    return false;
  }
  if (s.affinity && s.predecessor.open()) {
    auto owner = s.predecessor_keys.find(d.key);
    if (owner != s.predecessor_keys.end() && s.forward(d, owner->second)) return true;
  }
  // A generation that has handed over takes no new flow: a late datagram of one that ended is
  // answered, and the generation still exits when its own flows are done.
  if (s.successor.open()) return false;
  // A full table makes room for a flow the application begins (began()), not for any key a
  // datagram names: a flood of made-up keys evicts nothing.
  if (s.own.size() >= s.own.options().max_flows) {
    ++s.counters.untracked;
    return false;
  }
  s.own.touch(d.key, now);
  return false;
}

void flow_router::began(const flow_key& key, clock::time_point now) {
  if (key.empty()) return;
  const bool known = s_->own.contains(key);
  if (auto evicted = s_->own.touch(key, now)) {
    ++s_->counters.evicted;
    s_->evicted.push_back(*evicted);
    s_->tell_successor_ended(*evicted);
  }
  if (!known && s_->successor.open()) {
    // Begun after the hand-over (the old generation answered a hello late): the next generation
    // must forward it here too.
    std::string m = "K";
    put_key(m, key);
    if (!s_->successor.send(outgoing(std::move(m)), false)) s_->successor.close();
  }
}

void flow_router::ended(const flow_key& key) {
  if (key.empty()) return;
  if (s_->own.erase(key)) s_->tell_successor_ended(key);
}

void flow_router::expire(clock::time_point now, const ended_fn& on_end) {
  state& s = *s_;
  std::vector<flow_key> gone = s.own.expire(now);
  s.counters.expired += gone.size();
  gone.insert(gone.end(), s.evicted.begin(), s.evicted.end());
  s.evicted.clear();
  for (const auto& k : gone) {
    s.tell_successor_ended(k);
    if (on_end) on_end(k);
  }
}

std::optional<flow_router::clock::time_point> flow_router::next_expiry() const noexcept { return s_->own.next_expiry(); }
std::size_t flow_router::owned_flows() const noexcept { return s_->own.size(); }

result<int> flow_router::open_successor_channel(const std::vector<extension>& extensions) {
  state& s = *s_;
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) != 0)
    return detail::fail_errno(errno, "flow channel: socketpair");
  s.successor.close();
  s.successor.fd = pair[0];
  result<void> sent;
  // The channels to the generations before this one that still own flows, for the next one to
  // forward to them directly: the predecessor's (tag 1), then the older ones (tags 2...).
  std::vector<int> channels;
  std::vector<unsigned> tag_of(1 + s.older.size(), 0);  // owner here -> tag there
  if (s.predecessor.open() && !s.predecessor_keys.empty()) {
    channels.push_back(s.predecessor.fd);
    tag_of[0] = static_cast<unsigned>(channels.size());
  }
  for (std::size_t i = 0; i < s.older.size() && channels.size() < 200; ++i)
    if (s.older[i].open() && i + 1 < s.owned_by.size() && s.owned_by[i + 1] > 0) {
      channels.push_back(s.older[i].fd);
      tag_of[i + 1] = static_cast<unsigned>(channels.size());
    }
  if (!channels.empty()) {
    auto copies = duplicates(channels);
    if (!copies) sent = tl::unexpected(copies.error());
    else {
      outgoing c(std::string("C"));
      c.fds = std::move(*copies);
      sent = s.successor.send(std::move(c), false);
    }
  }
  // The list: this generation's flows ('K'), then those of the generations before it, each
  // tagged with its owner's channel ('J'; a flow whose owner has none left is relayed by the
  // predecessor: tag 1).
  auto send_keys = [&](const std::string& head, const std::vector<flow_key>& keys) {
    std::string m = head;
    for (const auto& k : keys) {
      if (!sent) return;
      if (m.size() + 1 + k.bytes().size() > list_chunk) sent = s.successor.send(std::exchange(m, head), false);
      put_key(m, k);
    }
    if (sent && m.size() > head.size()) sent = s.successor.send(std::move(m), false);
  };
  if (sent) send_keys("K", s.own.keys());
  std::map<unsigned, std::vector<flow_key>> by_tag;
  for (const auto& [k, owner] : s.predecessor_keys) {
    const unsigned tag = owner < tag_of.size() && tag_of[owner] != 0 ? tag_of[owner] : tag_of[0];
    by_tag[tag == 0 ? 1 : tag].push_back(k);
  }
  for (const auto& [tag, keys] : by_tag) send_keys(std::string("J") + static_cast<char>(tag), keys);
  for (const auto& e : extensions) {
    if (!sent) break;
    sent = s.send_extension(e);
  }
  if (sent) sent = s.successor.send(outgoing(std::string("S")), false);
  if (!sent) {
    s.successor.close();
    ::close(pair[1]);
    return tl::unexpected(sent.error());
  }
  return pair[1];
}

int flow_router::successor_fd() const noexcept { return s_->successor.fd; }

result<void> flow_router::send_extension(const extension& e) { return s_->send_extension(e); }

void flow_router::on_closing(std::function<void(int fd)> hook) { s_->closing = std::move(hook); }

void flow_router::on_extension(std::function<void(std::string_view bytes, std::vector<int> fds)> handler) {
  s_->extension_handler = std::move(handler);
}

result<void> flow_router::on_successor_readable(clock::time_point now, const deliver_fn& deliver) {
  state& s = *s_;
  for (int round = 0; round < 256 && s.successor.open(); ++round) {
    sockaddr_storage from{};
    ssize_t got;
    do got = ::recv(s.successor.fd, s.buffer.data(), s.buffer.size(), MSG_DONTWAIT | MSG_TRUNC);
    while (got < 0 && errno == EINTR);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return {};
    if (got <= 0) {
      const int err = got < 0 ? errno : 0;
      s.successor.close();
      if (err != 0) return detail::fail_errno(err, "flow channel from the next generation");
      return detail::fail(errc::channel_closed, "flow channel: the next generation closed it");
    }
    const std::string_view m(s.buffer.data(), std::min(static_cast<std::size_t>(got), s.buffer.size()));
    auto malformed = [&](const std::string& what) -> result<void> {
      s.successor.close();
      return detail::fail(errc::protocol_error, "flow channel: " + what + " from the next generation");
    };
    if (static_cast<std::size_t>(got) > s.buffer.size()) return malformed("a message too large");
    if (m.front() != 'F' || m.size() < 5) return malformed("a message that is not a forwarded datagram");
    routed_datagram d;
    d.socket = (static_cast<unsigned>(static_cast<unsigned char>(m[1])) << 8) |
               static_cast<unsigned>(static_cast<unsigned char>(m[2]));
    const std::size_t addr_len = static_cast<unsigned char>(m[3]);
    if (addr_len > sizeof from || 4 + addr_len > m.size()) return malformed("a forwarded datagram with a bad address");
    std::memcpy(&from, m.data() + 4, addr_len);
    if (addr_len < sizeof(sa_family_t) || (from.ss_family != AF_INET && from.ss_family != AF_INET6))
      return malformed("a forwarded datagram from an address that is not IP");
    if (addr_len != (from.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6)))
      return malformed("a forwarded datagram with an address of the wrong length");
    std::size_t at = 4 + addr_len;
    flow_key k;
    if (!take_key(m, at, k)) return malformed("a forwarded datagram with a malformed flow key");
    d.from = reinterpret_cast<const sockaddr*>(&from);
    d.from_length = static_cast<socklen_t>(addr_len);
    d.key = k;
    d.payload = m.substr(at);
    if (s.own.contains(k)) {
      s.own.touch(k, now);
    } else if (auto owner = s.predecessor_keys.find(k);
               s.predecessor.open() && owner != s.predecessor_keys.end() && s.forward(d, owner->second)) {
      continue;  // a flow of a generation before this one: on to it
    }
    ++s.counters.received_forwarded;
    deliver(d);
  }
  return {};
}

bool flow_router::wants_write(int fd) const noexcept {
  if (fd < 0) return false;
  if (fd == s_->successor.fd) return !s_->successor.queued.empty();
  if (fd == s_->predecessor.fd) return !s_->predecessor.queued.empty();
  return false;
}

result<void> flow_router::flush(int fd) {
  state& s = *s_;
  if (fd >= 0 && fd == s.successor.fd) {
    auto done = s.successor.flush();
    if (!done) s.successor.close();
    return done;
  }
  if (fd >= 0 && fd == s.predecessor.fd) {
    auto done = s.predecessor.flush();
    if (!done) s.lose_predecessor();
    return done;
  }
  return {};
}

void flow_router::close_successor() noexcept { s_->successor.close(); }

std::size_t flow_router::abandon() noexcept {
  state& s = *s_;
  const std::size_t left = s.own.size() + s.predecessor_keys.size();
  s.successor.close();
  s.predecessor.close();
  s.predecessor_keys.clear();
  for (auto& c : s.older) c.close();
  s.older.clear();
  s.owned_by.assign(1, 0);
  s.holding = false;
  for (const auto& k : s.own.keys()) s.own.erase(k);
  s.evicted.clear();
  return left;
}

bool flow_router::finished() const noexcept {
  return s_->own.size() == 0 && s_->predecessor_keys.empty() && s_->successor.queued.empty();
}

const flow_counters& flow_router::counters() const noexcept { return s_->counters; }

}  // namespace grace
