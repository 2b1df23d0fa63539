#pragma once
// UDP flow affinity across a hand-over: while the old generation drains, the datagrams of the
// flows it owns keep reaching it, and it answers them from the same local address and port;
// new flows go to the new generation. No privilege is needed.
//
// How (the user-space path): the old generation stops reading the shared UDP sockets as soon as
// the new one is ready, and sends it the keys of the flows it owns on a channel of their own (a
// Unix socket pair, offered over the readiness connection like the connection channel,
// grace/migration.hpp). The new generation starts reading once it has them. Each datagram it
// reads is routed by its flow key: a flow of the old generation is forwarded to it over the
// channel with its source address, and the old generation answers through its own copy of the
// shared socket; any other datagram is this generation's. When the old generation's flows have
// ended (the application says so, or they stay idle past the table's idle time) it tells the new
// one, which then owns those keys; it exits once it has none left. A generation that hands over
// again before its predecessor is done forwards that predecessor's flows on: the chain holds.
//
// grace::uv::upgrader does all of this (upgrader::serve_flows); these are its parts, for other
// event loops: a flow key, a bounded flow table, and the router that decides, per datagram, who
// answers it.
#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "grace/error.hpp"
#include "grace/export.hpp"

namespace grace {

// What identifies a flow: by default the client's address and port (of_address), or bytes the
// application takes from each datagram (a session id, a QUIC connection ID), at most 64.
class GRACE_API flow_key {
 public:
  static constexpr std::size_t max_size = 64;
  flow_key() noexcept = default;
  // An error (errc::invalid_argument) for an empty key or one longer than max_size.
  [[nodiscard]] static result<flow_key> of_bytes(std::string_view bytes);
  // The family, address and port of an AF_INET or AF_INET6 address (empty for any other).
  static flow_key of_address(const sockaddr* address, socklen_t length) noexcept;
  std::string_view bytes() const noexcept { return {data_, size_}; }
  bool empty() const noexcept { return size_ == 0; }
  friend bool operator==(const flow_key& a, const flow_key& b) noexcept {
    return a.size_ == b.size_ && std::memcmp(a.data_, b.data_, a.size_) == 0;
  }
  friend bool operator!=(const flow_key& a, const flow_key& b) noexcept { return !(a == b); }
  std::size_t hash() const noexcept;

 private:
  std::uint8_t size_ = 0;
  char data_[max_size] = {};
};

struct flow_key_hash {
  std::size_t operator()(const flow_key& k) const noexcept { return k.hash(); }
};

struct flow_table_options {
  // The most flows a generation tracks; past it, the least recently seen is evicted (and ended):
  // a flood of new flows cannot grow the table.
  std::size_t max_flows = 65536;
  // A flow that sees no datagram for this long has ended.
  std::chrono::milliseconds idle{30000};
};

// The flows one generation owns, most recently seen first.
class GRACE_API flow_table {
 public:
  using clock = std::chrono::steady_clock;
  explicit flow_table(flow_table_options options = {});
  ~flow_table();
  flow_table(flow_table&&) noexcept;
  flow_table& operator=(flow_table&&) noexcept;

  bool contains(const flow_key& key) const noexcept;
  // Adds the flow, or marks it seen now. When the table is full, the least recently seen flow
  // makes room: it is returned (it has ended).
  std::optional<flow_key> touch(const flow_key& key, clock::time_point now);
  bool erase(const flow_key& key) noexcept;
  // Removes and returns the flows idle since before now - idle.
  std::vector<flow_key> expire(clock::time_point now);
  // When the next flow turns idle, if any.
  std::optional<clock::time_point> next_expiry() const noexcept;
  std::size_t size() const noexcept;
  std::vector<flow_key> keys() const;
  const flow_table_options& options() const noexcept;
  // The memory one tracked flow costs, in bytes (the table's nodes; measured on this build).
  static std::size_t bytes_per_flow() noexcept;

 private:
  struct state;
  std::unique_ptr<state> s_;
};

// A datagram, as the router hands it to the application: `from` and `payload` point into the
// router's buffers and are valid only during the call that hands it over (copy what is kept).
struct routed_datagram {
  unsigned socket = 0;  // which of the application's UDP sockets it came on (its index)
  const sockaddr* from = nullptr;
  socklen_t from_length = 0;
  std::string_view payload;
  flow_key key;  // empty: not part of a tracked flow
};

struct flow_counters {
  std::uint64_t forwarded = 0;             // to the previous generation
  std::uint64_t forward_dropped = 0;       // could not be forwarded (its queue full, channel gone)
  std::uint64_t received_forwarded = 0;    // from the next generation, answered here
  std::uint64_t evicted = 0;               // flows ended to make room
  std::uint64_t expired = 0;               // flows ended idle
  std::uint64_t predecessor_flows_lost = 0;  // the previous generation went before they ended
  std::uint64_t untracked = 0;             // new flows past a full table: answered, not tracked
};

// One generation's routing, on plain non-blocking fds; the caller polls them and calls in.
class GRACE_API flow_router {
 public:
  using clock = flow_table::clock;
  using deliver_fn = std::function<void(const routed_datagram&)>;
  using ended_fn = std::function<void(const flow_key&)>;
  // `affinity` false: every datagram is this generation's (the behaviour without flows), and no
  // channel is offered or taken; flows are still tracked, bounded and ended when idle.
  flow_router(flow_table_options table, bool affinity = true);
  ~flow_router();
  flow_router(const flow_router&) = delete;
  flow_router& operator=(const flow_router&) = delete;

  bool affinity() const noexcept;

  // --- New generation: the channel from the previous one (receive_flow_channel()).
  // Until its flows have arrived, this generation must not read the shared sockets (holding()).
  void attach_predecessor(int fd);
  // Waiting for the previous generation's flows: attach_predecessor() came, its list did not.
  bool holding() const noexcept;
  // Stop waiting (the offer never came, or the channel failed): every datagram is ours.
  void stop_holding() noexcept;
  int predecessor_fd() const noexcept;
  // predecessor_fd() is readable: its flow list, and flows that ended there. An error when the
  // channel failed or the peer sent something malformed; the channel is closed then, and the
  // flows it still owned are this generation's from now on (counted as lost there).
  result<void> on_predecessor_readable(clock::time_point now);
  // Flows the previous generation still owns.
  std::size_t predecessor_flows() const noexcept;

  // --- Every generation: a datagram read from one of the shared sockets.
  // Forwarded to the previous generation when the key is one of its flows (true: nothing more to
  // do), else this generation's: the flow is tracked (touched; a new one only while this
  // generation has not handed over, and while the table has room: a flood of made-up keys
  // evicts no flow, only began() does) and the caller handles it.
  bool forward_if_not_ours(const routed_datagram& d, clock::time_point now);
  // The application's word: a flow begins here (its first datagram carries no key yet, as a
  // hello that gets a session id back). Tracked from now on; when the table is full the least
  // recently seen flow ends to make room.
  void began(const flow_key& key, clock::time_point now);
  // The application's word: the flow ended here (a goodbye, an unknown session). Also tells the
  // next generation, if there is one, which then owns the key.
  void ended(const flow_key& key);
  // Flows idle past the table's idle time, and those evicted, end; `on_end` hears each one.
  void expire(clock::time_point now, const ended_fn& on_end);
  std::optional<clock::time_point> next_expiry() const noexcept;
  std::size_t owned_flows() const noexcept;

  // --- Old generation: the channel to the next one.
  // A message of the caller's own on the channel (grace's cookie path passes its sockets this
  // way): bytes, and fds that travel with it (duplicated; the caller keeps its own).
  struct extension {
    std::string bytes;
    std::vector<int> fds;
  };
  // Makes the channel, sends the list of flows owned here (and those a predecessor still owns,
  // which this one forwards on) and `extensions` before the list's end, and returns the end for
  // the next generation (offer_flow_channel). From now on this generation reads no shared socket.
  [[nodiscard]] result<int> open_successor_channel(const std::vector<extension>& extensions = {});
  // Another extension for the next generation, after the list.
  result<void> send_extension(const extension& e);
  // Runs just before the router closes predecessor_fd() or successor_fd() (a channel failed, or
  // its peer went): an event loop watching the fd stops watching it first. An epoll set keeps a
  // socket that another process still holds a copy of after this process closed its fd.
  void on_closing(std::function<void(int fd)> hook);
  // Extensions from the previous generation, as on_predecessor_readable() reads them, in order
  // with the rest; the callee owns the fds.
  void on_extension(std::function<void(std::string_view bytes, std::vector<int> fds)> handler);
  int successor_fd() const noexcept;
  // successor_fd() is readable: datagrams the next generation forwards, handed to `deliver` (or
  // forwarded on to the predecessor when they are its flows).
  result<void> on_successor_readable(clock::time_point now, const deliver_fn& deliver);
  // Output is queued (the channel was full): poll successor_fd()/predecessor_fd() for writing
  // and call flush().
  bool wants_write(int fd) const noexcept;
  result<void> flush(int fd);
  // The next generation is gone (rolled back) or done: close the channel; this generation
  // reads the shared sockets again if it serves on.
  void close_successor() noexcept;
  // This generation stops answering flows (it exits, or nobody forwards to it any more): both
  // channels close and every flow is forgotten. How many there were.
  std::size_t abandon() noexcept;
  // No flow left here nor before: an old generation can exit.
  bool finished() const noexcept;

  const flow_counters& counters() const noexcept;

 private:
  struct state;
  std::unique_ptr<state> s_;
};

// The channel's offer on the readiness connection, as for connections (grace/migration.hpp).
// New generation: whether the previous one will offer its flows (GRACE_FLOWS=1, or the takeover
// offer said so); after notify_ready(), when parent_connection_fd() is readable: the channel,
// nullopt when it has not arrived yet (a connection offer read first waits for
// receive_connection_channel()).
GRACE_API bool parent_offers_flows() noexcept;
[[nodiscard]] GRACE_API result<std::optional<int>> receive_flow_channel();
// Old generation: sends `channel_fd` (flow_router::open_successor_channel) on the new
// generation's readiness connection; the fd is closed here either way.
[[nodiscard]] GRACE_API result<void> offer_flow_channel(int ready_fd, int channel_fd);

}  // namespace grace
