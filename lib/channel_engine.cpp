#include "channel_engine.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "failure.hpp"
#include "scm_rights.hpp"

namespace grace::detail {
namespace {

constexpr std::size_t cmsg_capacity = CMSG_SPACE(sizeof(int) * max_fds_per_message);

bool uid_allowed(uid_t uid, const channel_options& options) {
  if (options.allow_any_uid) return true;
  if (options.allowed_uids.empty()) return uid == geteuid();
  return std::find(options.allowed_uids.begin(), options.allowed_uids.end(), uid) != options.allowed_uids.end();
}

int int_option(int fd, int option) {
  int value = -1;
  socklen_t size = sizeof value;
  if (getsockopt(fd, SOL_SOCKET, option, &value, &size) < 0) return -1;
  return value;
}

}  // namespace

result<peer_credentials> check_channel_socket(int fd, const channel_options& options) {
  if (options.max_fds_per_message < 1 || options.max_fds_per_message > max_fds_per_message)
    return fail(errc::invalid_argument, "fd channel: max_fds_per_message " +
                                            std::to_string(options.max_fds_per_message) + " is not 1 to 253");
  if (options.retry_interval.count() <= 0)
    return fail(errc::invalid_argument, "fd channel: retry_interval must be positive");
  if (int_option(fd, SO_DOMAIN) != AF_UNIX) return fail(errc::invalid_argument, "fd channel: fd " + std::to_string(fd) + " is not a unix socket");
  const int type = int_option(fd, SO_TYPE);
  if (type != SOCK_STREAM && type != SOCK_SEQPACKET)
    return fail(errc::invalid_argument, "fd channel: fd " + std::to_string(fd) + " is not a stream or seqpacket socket");
  ucred cred{};
  socklen_t size = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &size) < 0)
    return fail_errno(errno, "fd channel: the peer's credentials (SO_PEERCRED)");
  // Connected or not, by the socket itself: SO_PEERCRED gives pid 0 for a peer in a pid
  // namespace this process cannot see (another container), and that peer is a real one.
  sockaddr_storage peer_address{};
  socklen_t peer_size = sizeof peer_address;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer_address), &peer_size) != 0)
    return fail(errc::invalid_argument, "fd channel: fd " + std::to_string(fd) + " is not connected");
  if (!uid_allowed(cred.uid, options))
    return fail(errc::peer_not_allowed, "fd channel: the peer, pid " + std::to_string(cred.pid) + ", runs as uid " +
                                            std::to_string(cred.uid) + ", which is not allowed");
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
    return fail_errno(errno, "fd channel: make the socket non-blocking");
  return peer_credentials{cred.pid, cred.uid, cred.gid};
}

channel_engine::channel_engine(int fd, channel_options options, peer_credentials peer, int socket_type)
    : fd_(fd), options_(std::move(options)), peer_(peer), socket_type_(socket_type) {}

channel_engine::~channel_engine() {
  *alive_ = false;
  close_received_fds();
  if (fd_ >= 0) ::close(fd_);
}

int channel_engine::release() noexcept {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

void channel_engine::close_received_fds() noexcept {
  for (int fd : fds_) ::close(fd);
  fds_.clear();
  assembling_ = parcel{};
  assembling_started_ = false;
}

void channel_engine::send(outgoing_parcel p, clock::time_point deadline, send_callback done) {
  if (failed()) {
    done(tl::unexpected(*failure_));
    return;
  }
  pending_send s;
  s.parcel = std::move(p);
  s.deadline = deadline;
  s.done = std::move(done);
  s.batch_limit = options_.max_fds_per_message;
  sends_.push_back(std::move(s));
  start_next_batch();  // it goes now when nothing it must wait for is on the way
}

// Whether the rest of `s`'s parcel goes in one message (its last).
bool channel_engine::rest_in_one_message(const pending_send& s) const {
  std::size_t size = header_size + 6;
  std::size_t count = 0;
  for (std::size_t i = s.next_fd; i < s.parcel.fds.size(); ++i) {
    const std::size_t more = encoded_size(s.parcel.fds[i].description);
    if (count == s.batch_limit || (count > 0 && size + more > message_limit)) return false;
    size += more;
    ++count;
  }
  return count == 0 || size + s.parcel.note.size() <= message_limit;
}

// One message at a time, each confirmed before the next (max_messages_in_flight 1); or whole
// parcels back to back. The messages of a parcel of several never mix with others on the way:
// such a parcel starts only when nothing else awaits confirmation, and nothing else starts
// until it is through. A refused message waits for its retry, and what was queued behind it
// with it.
void channel_engine::start_next_batch() {
  auto alive = alive_;
  while (!failed()) {
    std::size_t awaiting = 0;
    std::optional<std::size_t> next;
    bool mid_parcel = false;
    for (std::size_t k = 0; k < sends_.size(); ++k) {
      const auto& s = sends_[k];
      if (s.next_fd > 0 || (s.in_flight && !s.in_flight_last)) {
        next = k;  // in the middle of a parcel of several messages: it alone goes on
        mid_parcel = true;
        break;
      }
      if (s.in_flight) {
        ++awaiting;
        continue;
      }
      if (!next) next = k;
    }
    if (!next) return;
    const auto& s = sends_[*next];
    if (s.in_flight || s.retry_at) return;
    if (!mid_parcel) {
      if (awaiting >= std::max<std::size_t>(1, options_.max_messages_in_flight)) return;
      if (awaiting > 0 && !rest_in_one_message(s)) return;
    }
    queue_batch(*next);
    if (!*alive) return;
  }
}

bool channel_engine::queue_batch(std::size_t index) {
  auto& s = sends_[index];
  const auto& fds = s.parcel.fds;
  // As many fds as the limits allow (at least one, whose own size encode_batch checks); the
  // note goes with the last of them, or alone after them when it does not fit beside them.
  std::vector<const fd_description*> descriptions;
  std::size_t size = header_size + 6;
  std::size_t i = s.next_fd;
  while (i < fds.size() && descriptions.size() < s.batch_limit) {
    const std::size_t more = encoded_size(fds[i].description);
    if (!descriptions.empty() && size + more > message_limit) break;
    size += more;
    descriptions.push_back(&fds[i].description);
    ++i;
  }
  const bool last = i == fds.size() && (descriptions.empty() || size + s.parcel.note.size() <= message_limit);
  const std::uint32_t sequence = next_sequence_++;
  auto bytes = encode_batch(sequence, last, last ? std::string_view(s.parcel.note) : std::string_view(), descriptions);
  if (!bytes) {
    auto done = std::move(s.done);
    sends_.erase(sends_.begin() + static_cast<std::ptrdiff_t>(index));
    done(tl::unexpected(bytes.error()));
    return false;  // the caller looks again, if this engine is still alive
  }
  frame f;
  f.bytes = std::move(*bytes);
  for (std::size_t k = s.next_fd; k < i; ++k) f.fds.push_back(fds[k].fd);
  s.batch_fds = i - s.next_fd;
  s.in_flight = sequence;
  s.in_flight_last = last;
  ++stats_.messages_sent;
  frames_.push_back(std::move(f));
  on_writable();
  return true;
}

void channel_engine::queue_control(std::string bytes) {
  frame f;
  f.bytes = std::move(bytes);
  frames_.push_back(std::move(f));
}

void channel_engine::on_writable() {
  while (!frames_.empty() && !failed()) {
    auto& f = frames_.front();
    iovec iov{f.bytes.data() + f.written, f.bytes.size() - f.written};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[cmsg_capacity];
    if (f.written == 0 && !f.fds.empty()) attach_fds(msg, control, f.fds.data(), f.fds.size());
    const ssize_t sent = sendmsg(fd_, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EPIPE || errno == ECONNRESET) {
        fail(hung_up());
      } else {
        fail(error(std::error_code(errno, std::system_category()),
                   std::string("fd channel: sendmsg: ") + std::strerror(errno)));
      }
      return;
    }
    f.written += static_cast<std::size_t>(sent);
    if (f.written < f.bytes.size()) continue;  // a stream socket took part of it
    frames_.pop_front();
  }
}

void channel_engine::on_readable() {
  static thread_local std::vector<char> buffer(message_limit + 1);
  auto alive = alive_;
  while (!failed()) {
    iovec iov{buffer.data(), buffer.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[cmsg_capacity];
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t got = recvmsg(fd_, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == ECONNRESET) {
        fail(hung_up());
      } else {
        fail(error(std::error_code(errno, std::system_category()),
                   std::string("fd channel: recvmsg: ") + std::strerror(errno)));
      }
      return;
    }
    collect_fds(msg, fds_);
    if (msg.msg_flags & MSG_CTRUNC) truncated_ = true;
    if (got == 0) {
      fail(hung_up());
      return;
    }
    if (socket_type_ == SOCK_SEQPACKET && (msg.msg_flags & MSG_TRUNC)) {
      fail(error(make_error_code(errc::protocol_error), "fd channel: a message longer than " +
                                                            std::to_string(message_limit) + " bytes"));
      return;
    }
    if (socket_type_ == SOCK_SEQPACKET && !input_.empty()) {
      fail(error(make_error_code(errc::protocol_error), "fd channel: a message cut short"));
      return;
    }
    input_.append(buffer.data(), static_cast<std::size_t>(got));
    handle_messages();
    if (!*alive) return;
    if (socket_type_ == SOCK_SEQPACKET && !input_.empty() && !failed()) {
      fail(error(make_error_code(errc::protocol_error), "fd channel: a message of " + std::to_string(input_.size()) +
                                                            " bytes that its header does not account for"));
      return;
    }
  }
}

void channel_engine::handle_messages() {
  auto alive = alive_;
  while (!failed() && input_.size() >= header_size) {
    auto h = decode_header(input_);
    if (!h) {
      fail(h.error());
      return;
    }
    const std::size_t total = header_size + h->payload_size;
    if (input_.size() < total) {
      if (socket_type_ == SOCK_SEQPACKET) {
        fail(error(make_error_code(errc::protocol_error),
                   "fd channel: a message of " + std::to_string(input_.size()) + " bytes announcing " +
                       std::to_string(total)));
      }
      return;
    }
    const std::string message = input_.substr(0, total);
    input_.erase(0, total);
    const std::string_view payload = std::string_view(message).substr(header_size);
    if (h->type == message_type::batch) {
      handle_batch(*h, payload);
    } else {
      handle_answer(*h, payload);
    }
    if (!*alive) return;
  }
  if (input_.size() > 0 && input_.size() < header_size && socket_type_ == SOCK_SEQPACKET && !failed())
    fail(error(make_error_code(errc::protocol_error),
               "fd channel: a message of " + std::to_string(input_.size()) + " bytes is shorter than its header"));
}

void channel_engine::handle_batch(const header& h, std::string_view payload) {
  auto b = decode_batch(payload);
  if (!b) {
    fail(b.error());
    return;
  }
  const std::size_t count = b->descriptions.size();
  if (truncated_) {
    // The kernel dropped some of this message's fds (the fd table was full, most likely): what
    // did arrive is closed, and the sender, which still holds them all, sends them again.
    const std::size_t arrived = fds_.size();
    for (int fd : fds_) ::close(fd);
    fds_.clear();
    truncated_ = false;
    refusal r;
    r.error = EMFILE;
    r.fds_arrived = static_cast<std::uint16_t>(std::min<std::size_t>(arrived, 0xffff));
    r.reason = std::to_string(arrived) + " of " + std::to_string(count) + " fds arrived (MSG_CTRUNC)";
    queue_control(encode_nack(h.sequence, r));
    on_writable();
    return;
  }
  if (fds_.size() < count || (socket_type_ == SOCK_SEQPACKET && fds_.size() != count)) {
    fail(error(make_error_code(errc::protocol_error), "fd channel: a message describing " + std::to_string(count) +
                                                          " fds came with " + std::to_string(fds_.size())));
    return;
  }
  if (assembling_.fds.size() + count > options_.max_fds_per_parcel) {
    fail(error(make_error_code(errc::protocol_error),
               "fd channel: a parcel of more than " + std::to_string(options_.max_fds_per_parcel) + " fds"));
    return;
  }
  assembling_started_ = true;
  for (auto& d : b->descriptions) {
    received_fd r;
    r.fd = owned_fd(fds_.front());
    fds_.pop_front();
    r.description = std::move(d);
    assembling_.fds.push_back(std::move(r));
  }
  queue_control(encode_ack(h.sequence));
  auto alive = alive_;
  on_writable();  // a failure there runs callbacks, which may destroy this engine
  if (!*alive || failed() || !(h.flags & flag_last)) return;
  parcel done = std::move(assembling_);
  done.note = std::move(b->note);
  assembling_ = parcel{};
  assembling_started_ = false;
  if (auto cb = on_parcel_) cb(std::move(done));
}

void channel_engine::handle_answer(const header& h, std::string_view payload) {
  // Answers come in the order the messages went: to the oldest one awaiting an answer (a
  // message sent again after a refusal may have gone behind parcels queued after it).
  std::size_t index = sends_.size();
  std::uint32_t oldest = 0;
  for (std::size_t k = 0; k < sends_.size(); ++k) {
    if (!sends_[k].in_flight || (index != sends_.size() && *sends_[k].in_flight >= oldest)) continue;
    index = k;
    oldest = *sends_[k].in_flight;
  }
  if (index == sends_.size() || oldest != h.sequence) {
    fail(error(make_error_code(errc::protocol_error),
               "fd channel: an answer to message " + std::to_string(h.sequence) + ", which is not awaiting one"));
    return;
  }
  auto& s = sends_[index];
  s.in_flight.reset();
  if (h.type == message_type::ack) {
    if (!payload.empty()) {
      fail(error(make_error_code(errc::protocol_error), "fd channel: an acknowledgement with a payload"));
      return;
    }
    s.next_fd += s.batch_fds;
    if (s.in_flight_last) {
      finish_send(index, {});
    } else {
      start_next_batch();
    }
    return;
  }
  auto r = decode_nack(payload);
  if (!r) {
    fail(r.error());
    return;
  }
  if (r->error != EMFILE && r->error != ENFILE) {
    fail(error(make_error_code(errc::protocol_error), "fd channel: the receiver refused a message: " + r->reason));
    return;
  }
  ++stats_.messages_refused;
  // Kept every fd; try again shortly, with fewer at a time so that a nearly full table still
  // takes some.
  s.batch_limit = std::max<std::size_t>(1, s.batch_fds / 2);
  s.retry_at = clock::now() + options_.retry_interval;
}

error channel_engine::hung_up() const {
  const bool mid_parcel = assembling_started_ || !input_.empty();
  return error(make_error_code(errc::channel_closed), "fd channel: the peer (pid " + std::to_string(peer_.pid) +
                                                          ") hung up" + (mid_parcel ? " in the middle of a parcel" : ""));
}

void channel_engine::finish_send(std::size_t index, result<void> outcome) {
  auto done = std::move(sends_[index].done);
  sends_.erase(sends_.begin() + static_cast<std::ptrdiff_t>(index));
  auto alive = alive_;
  if (done) done(std::move(outcome));
  if (!*alive) return;
  start_next_batch();
}

std::optional<channel_engine::clock::time_point> channel_engine::next_wakeup() const {
  if (sends_.empty() || failed()) return std::nullopt;
  std::optional<clock::time_point> wake;
  for (const auto& s : sends_) {
    const auto at = s.retry_at ? std::min(*s.retry_at, s.deadline) : s.deadline;
    if (!wake || at < *wake) wake = at;
  }
  return wake;
}

void channel_engine::on_timer(clock::time_point now) {
  if (sends_.empty() || failed()) return;
  bool retry = false;
  for (auto& s : sends_) {
    if (now >= s.deadline) {
      fail(error(std::make_error_code(std::errc::timed_out),
                 "fd channel: the peer (pid " + std::to_string(peer_.pid) + ") did not take " +
                     std::to_string(s.parcel.fds.size() - s.next_fd) + " fds in time"));
      return;
    }
    if (s.retry_at && now >= *s.retry_at) {
      s.retry_at.reset();
      retry = true;
    }
  }
  if (retry) start_next_batch();
}

void channel_engine::fail(error e) {
  if (failed()) return;
  failure_ = e;
  frames_.clear();
  close_received_fds();
  auto alive = alive_;
  auto sends = std::move(sends_);
  sends_.clear();
  for (auto& s : sends) {
    if (s.done) s.done(tl::unexpected(e));
    if (!*alive) return;
  }
  if (auto cb = on_parcel_) cb(tl::unexpected(e));
}

}  // namespace grace::detail
