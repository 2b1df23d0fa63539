#pragma once
// The fd channel's protocol as a non-blocking state machine over one socket: the blocking
// grace::fd_channel and the libuv grace::uv::fd_channel both drive it, calling on_readable(),
// on_writable() and on_timer() when their poll says so.
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "channel_wire.hpp"
#include "grace/fd_channel.hpp"

namespace grace::detail {

// Checks that `fd` is a connected unix stream or seqpacket socket whose peer the options allow;
// makes it non-blocking and close-on-exec.
result<peer_credentials> check_channel_socket(int fd, const channel_options& options);

class channel_engine {
 public:
  using clock = std::chrono::steady_clock;
  using send_callback = std::function<void(result<void>)>;
  using parcel_callback = std::function<void(result<parcel>)>;

  channel_engine(int fd, channel_options options, peer_credentials peer, int socket_type);
  ~channel_engine();  // closes the socket and every fd received but not delivered
  channel_engine(const channel_engine&) = delete;
  channel_engine& operator=(const channel_engine&) = delete;

  // Queues a parcel; `done` runs once, from one of the on_* calls (or from fail()).
  void send(outgoing_parcel p, clock::time_point deadline, send_callback done);
  // Every parcel that arrives, and once, the error that ends the channel.
  void set_parcel_callback(parcel_callback cb) { on_parcel_ = std::move(cb); }

  void on_readable();
  void on_writable();
  void on_timer(clock::time_point now);
  bool wants_write() const noexcept { return !frames_.empty() && !failed(); }
  std::optional<clock::time_point> next_wakeup() const;

  bool failed() const noexcept { return failure_.has_value(); }
  // Ends the channel: every pending send fails with `e`, the parcel callback gets `e` once.
  void fail(error e);
  int fd() const noexcept { return fd_; }
  int release() noexcept;
  const peer_credentials& peer() const noexcept { return peer_; }
  const channel_stats& stats() const noexcept { return stats_; }

 private:
  struct frame {
    std::string bytes;
    std::vector<int> fds;  // borrowed from the parcel being sent; attached to the first byte
    std::size_t written = 0;
  };
  struct pending_send {
    outgoing_parcel parcel;
    clock::time_point deadline;
    send_callback done;
    std::size_t next_fd = 0;     // first fd not yet confirmed
    std::size_t batch_fds = 0;   // fds in the message in flight
    std::size_t batch_limit = 0; // fds per message; halved after each refusal
    std::optional<std::uint32_t> in_flight;  // the sequence of the message awaiting an answer
    bool in_flight_last = false;
    std::optional<clock::time_point> retry_at;
  };

  void start_next_batch();
  bool rest_in_one_message(const pending_send& s) const;
  // The next message of `s`; false when it could not be made (`s` has then been finished).
  bool queue_batch(std::size_t index);
  void handle_messages();
  void handle_batch(const header& h, std::string_view payload);
  void handle_answer(const header& h, std::string_view payload);
  void queue_control(std::string bytes);
  void close_received_fds() noexcept;
  void finish_send(std::size_t index, result<void> outcome);
  error hung_up() const;

  int fd_;
  channel_options options_;
  peer_credentials peer_;
  int socket_type_;
  channel_stats stats_;
  std::uint32_t next_sequence_ = 1;
  std::deque<frame> frames_;
  std::deque<pending_send> sends_;
  parcel_callback on_parcel_;
  std::optional<error> failure_;
  // Receiving.
  std::string input_;
  std::deque<int> fds_;         // received, not yet claimed by a batch
  bool truncated_ = false;      // fds of the batch being received were dropped by the kernel
  parcel assembling_;
  bool assembling_started_ = false;
  // Set by the destructor: a callback may destroy the engine.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace grace::detail
