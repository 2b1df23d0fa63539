#pragma once
// Passing file descriptors between processes over a connected unix socket (SOCK_SEQPACKET or
// SOCK_STREAM), with SCM_RIGHTS. What travels is a parcel: a short note (opaque bytes) and any
// number of fds, each with a description (kind, network, canonical address, name, opaque
// application bytes). A parcel goes out in framed, versioned messages of at most 253 fds each
// (SCM_MAX_FD); each message is confirmed by the receiver before the next one is sent, so
// parcels arrive whole and in order.
//
// Nothing is lost when the receiver's fd table is full: the kernel then delivers only part of a
// message's fds (MSG_CTRUNC); the receiver closes what arrived and says so, and the sender,
// which lends its fds to the channel and keeps them until the receiver confirms, sends the
// message again a little later. The peer's credentials (SO_PEERCRED) are checked when the
// channel is made: by default only a process of the same effective uid is accepted.
//
// The blocking calls (send, receive) are for tools and start-up code. An event loop drives the
// same channel without blocking through the non-blocking calls below; grace::uv::fd_channel does
// that for libuv.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "grace/address.hpp"
#include "grace/error.hpp"
#include "grace/export.hpp"
#include "grace/owned_fd.hpp"

namespace grace {

enum class fd_kind : std::uint8_t {
  listener = 1,    // a listening socket
  connection = 2,  // an accepted connection
  other = 3,
};

struct fd_description {
  fd_kind kind = fd_kind::listener;
  grace::network network = grace::network::tcp;
  std::string address;      // canonical address text ("127.0.0.1:8080", "/run/app.sock"); at most 4096 bytes
  std::string name;         // at most 255 bytes
  std::string application;  // opaque bytes for the receiving application
};

// An fd lent to the channel: it must stay open until the send that carries it has completed.
struct outgoing_fd {
  int fd = -1;
  fd_description description;
};

struct received_fd {
  owned_fd fd;  // close-on-exec
  fd_description description;
};

struct outgoing_parcel {
  std::string note;  // at most note_limit bytes
  std::vector<outgoing_fd> fds;
};

struct parcel {
  std::string note;
  std::vector<received_fd> fds;  // in the order they were sent
};

struct channel_options {
  // Users allowed at the other end. Empty: this process's effective uid only.
  std::vector<uid_t> allowed_uids;
  bool allow_any_uid = false;
  // 1 to 253: fds per message. Fewer only to measure what batching saves.
  std::size_t max_fds_per_message = 253;
  // After the receiver's fd table was full, the message is sent again after this long.
  std::chrono::milliseconds retry_interval{20};
  // The most fds one incoming parcel may bring; more ends the channel (its fds closed), so that
  // a peer cannot fill this process's fd table with a parcel that never ends.
  std::size_t max_fds_per_parcel = SIZE_MAX;
  // Sending: how many messages may await their confirmation at once. Above 1, the parcels queued
  // that each fit in one message go out back to back, without waiting for the receiver's turn
  // of its loop between them; a parcel of several messages, and a message sent again after a
  // refusal, still go out alone. The price: after a refusal, the parcels sent behind the refused
  // one arrive before it (each still whole). 1: one message at a time, parcels in order.
  std::size_t max_messages_in_flight = 1;
};

struct channel_stats {
  std::size_t messages_sent = 0;      // batches, retries included
  std::size_t messages_refused = 0;   // batches the receiver could not take whole (fd table full)
};

struct peer_credentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

// The largest note, and the largest description of one fd (address, name and application bytes
// together): a message is at most 64 KiB.
inline constexpr std::size_t note_limit = 60 * 1024;
inline constexpr std::size_t description_limit = 60 * 1024;

namespace detail {
class channel_engine;
struct channel_state;
}

class GRACE_API fd_channel {
 public:
  // Takes a connected unix socket (SOCK_SEQPACKET or SOCK_STREAM) and owns it from then on,
  // even when refused. Refused: not a connected unix socket, or a peer the options do not allow
  // (errc::peer_not_allowed, naming its pid and uid).
  [[nodiscard]] static result<fd_channel> adopt(int fd, const channel_options& options = {});
  // Connects to a unix SOCK_SEQPACKET socket at a path ("@name" for an abstract one). Does not wait for a peer that
  // does not accept: a full backlog is EAGAIN.
  [[nodiscard]] static result<fd_channel> connect(std::string_view path, const channel_options& options = {});
  // Two connected ends (socketpair), for a child this process starts itself.
  [[nodiscard]] static result<std::pair<fd_channel, fd_channel>> pair(int type, const channel_options& options = {});

  fd_channel(fd_channel&&) noexcept;
  fd_channel& operator=(fd_channel&&) noexcept;
  ~fd_channel();

  // Sends a parcel and waits until the receiver has confirmed all of it. On failure (timeout,
  // peer gone, a message refused) the channel is closed and the caller still holds every fd.
  [[nodiscard]] result<void> send(const outgoing_parcel& p, std::chrono::milliseconds timeout);
  // Waits for the next parcel. A malformed message, a peer that hangs up mid-parcel or the
  // timeout closes the channel; fds that had arrived are closed.
  [[nodiscard]] result<parcel> receive(std::chrono::milliseconds timeout);
  // Waits until everything queued (the confirmations of what arrived) has gone out; before
  // release(), so that the peer hears all of it.
  [[nodiscard]] result<void> flush(std::chrono::milliseconds timeout);

  // Non-blocking use from any event loop: watch fd() for readability, and for writability while
  // wants_write(); call on_readable() / on_writable() when it is, and on_timer() at
  // next_wakeup(). Callbacks run from inside those calls and may destroy the channel.
  using clock = std::chrono::steady_clock;
  // Queues a parcel; `done` runs once it is confirmed, or with the error that ended the channel.
  void send_async(outgoing_parcel p, clock::time_point deadline, std::function<void(result<void>)> done);
  // Every parcel, then once the error that ends the channel. Replaces what receive() reads from:
  // a channel with its own callback is not for receive().
  void set_parcel_callback(std::function<void(result<parcel>)> cb);
  void on_readable();
  void on_writable();
  void on_timer();
  bool wants_write() const noexcept;
  std::optional<clock::time_point> next_wakeup() const;
  // Ends the channel now, as if the peer had hung up; pending sends fail with `why`.
  void fail(error why);
  // True once the channel has ended (an error, the peer hung up, fail()): nothing more to watch.
  bool ended() const noexcept;

  const peer_credentials& peer() const noexcept;
  channel_stats stats() const noexcept;
  int fd() const noexcept;
  // Hands the socket to the caller (for a libuv channel, or another protocol); nullopt channel after.
  int release() noexcept;

 private:
  GRACE_LOCAL fd_channel() noexcept = default;  // adopt() gives it its state
  std::unique_ptr<detail::channel_state> state_;
};

}  // namespace grace
