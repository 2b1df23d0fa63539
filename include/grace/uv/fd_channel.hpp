#pragma once
// The fd channel (grace/fd_channel.hpp) on a libuv loop: sends and receives parcels without
// ever blocking the loop, with completion callbacks. Same protocol, same guarantees: parcels
// whole and in order, fds lent by the sender until the receiver confirms, peers checked with
// SO_PEERCRED.
#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>

#include "grace/error.hpp"
#include "grace/export.hpp"
#include "grace/fd_channel.hpp"

namespace grace::uv {

class GRACE_API fd_channel {
 public:
  using send_callback = std::function<void(result<void>)>;
  // Every parcel that arrives; then, once, the error that ends the channel (the peer hung up:
  // errc::channel_closed). Runs on the loop thread; the channel may be destroyed inside it.
  using parcel_callback = std::function<void(result<parcel>)>;

  // Takes a connected unix socket (SOCK_SEQPACKET or SOCK_STREAM) and owns it from then on, even
  // when refused (see grace::fd_channel::adopt).
  [[nodiscard]] static result<std::unique_ptr<fd_channel>> adopt(uv_loop_t* loop, int fd,
                                                                 const channel_options& options = {});
  ~fd_channel();  // closes the socket; callbacks of sends still pending never run
  fd_channel(const fd_channel&) = delete;
  fd_channel& operator=(const fd_channel&) = delete;

  // Queues a parcel; `done` runs on the loop once the receiver confirmed all of it, or with the
  // error that ended the channel. The parcel's fds must stay open until then.
  void send(outgoing_parcel p, std::chrono::milliseconds timeout, send_callback done);
  void on_parcel(parcel_callback cb);

  const peer_credentials& peer() const noexcept;
  channel_stats stats() const noexcept;
  // Stops watching and hands the socket to the caller (to go on with another protocol); what
  // the peer sends after the last message this channel read stays unread in the socket. The
  // object is inert afterwards. May be called from inside its callbacks.
  int release() noexcept;

 private:
  GRACE_LOCAL fd_channel(uv_loop_t* loop, grace::fd_channel channel);
  struct GRACE_LOCAL handles;
  GRACE_LOCAL void rearm();
  grace::fd_channel channel_;
  std::unique_ptr<handles> handles_;
};

}  // namespace grace::uv
