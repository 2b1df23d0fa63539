#include "grace/fd_channel.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>

#include "channel_engine.hpp"
#include "failure.hpp"
#include "printable.hpp"

namespace grace {

owned_fd& owned_fd::operator=(owned_fd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

owned_fd::~owned_fd() {
  if (fd_ >= 0) ::close(fd_);
}

namespace detail {

// The engine, and for the blocking calls the parcels that arrived while this side waited for
// something else. On the heap, so that the callback's pointer survives a move of the channel.
struct channel_state {
  std::unique_ptr<channel_engine> engine;
  std::deque<result<parcel>> arrived;
};

namespace {

using clock = std::chrono::steady_clock;

// Polls until `done()` or the deadline; false on timeout.
template <typename Done>
bool drive(channel_engine& engine, clock::time_point deadline, Done done) {
  while (!done()) {
    auto now = clock::now();
    engine.on_timer(now);
    if (done()) return true;
    auto wake = deadline;
    if (auto next = engine.next_wakeup()) wake = std::min(wake, *next);
    if (now >= deadline) return false;
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count() + 1;
    pollfd p{engine.fd(), static_cast<short>(POLLIN | (engine.wants_write() ? POLLOUT : 0)), 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(wait, 1000)));
    if (n < 0 && errno != EINTR) return false;
    if (n <= 0) continue;
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) engine.on_readable();
    if (done()) return true;
    if (p.revents & POLLOUT) engine.on_writable();
  }
  return true;
}

}  // namespace
}  // namespace detail

fd_channel::fd_channel(fd_channel&&) noexcept = default;
fd_channel& fd_channel::operator=(fd_channel&&) noexcept = default;
fd_channel::~fd_channel() = default;

result<fd_channel> fd_channel::adopt(int fd, const channel_options& options) {
  auto peer = detail::check_channel_socket(fd, options);
  if (!peer) {
    ::close(fd);
    return tl::unexpected(peer.error());
  }
  int type = 0;
  socklen_t size = sizeof type;
  getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size);
  auto state = std::make_unique<detail::channel_state>();
  state->engine = std::make_unique<detail::channel_engine>(fd, options, *peer, type);
  auto* raw = state.get();
  state->engine->set_parcel_callback([raw](result<parcel> p) { raw->arrived.push_back(std::move(p)); });
  fd_channel channel;
  channel.state_ = std::move(state);
  return channel;
}

result<fd_channel> fd_channel::connect(std::string_view path, const channel_options& options) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa.sun_path)
    return detail::fail(errc::invalid_address, "fd channel: socket path " + detail::quoted(path) + " is empty or too long");
  std::memcpy(sa.sun_path, path.data(), path.size());
  socklen_t length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  if (path[0] == '@') {
    sa.sun_path[0] = '\0';
    length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  }
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return detail::fail_errno(errno, "fd channel: socket");
  int rc;
  do rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&sa), length);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    const int err = errno;
    ::close(fd);
    return detail::fail_errno(err, "fd channel: connect to " + detail::quoted(path));
  }
  return adopt(fd, options);
}

result<std::pair<fd_channel, fd_channel>> fd_channel::pair(int type, const channel_options& options) {
  int fds[2];
  if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds) < 0) return detail::fail_errno(errno, "fd channel: socketpair");
  auto first = adopt(fds[0], options);
  if (!first) {
    ::close(fds[1]);
    return tl::unexpected(first.error());
  }
  auto second = adopt(fds[1], options);
  if (!second) return tl::unexpected(second.error());
  return std::pair<fd_channel, fd_channel>(std::move(*first), std::move(*second));
}

result<void> fd_channel::send(const outgoing_parcel& p, std::chrono::milliseconds timeout) {
  if (!state_) return detail::fail(errc::channel_closed, "fd channel: released");
  std::optional<result<void>> outcome;
  const auto deadline = detail::clock::now() + timeout;
  state_->engine->send(p, deadline, [&outcome](result<void> r) { outcome = std::move(r); });
  detail::drive(*state_->engine, deadline + std::chrono::milliseconds(1), [&] { return outcome.has_value(); });
  if (!outcome) return detail::fail(std::make_error_code(std::errc::timed_out), "fd channel: send timed out");
  return *outcome;
}

result<parcel> fd_channel::receive(std::chrono::milliseconds timeout) {
  if (!state_) return detail::fail(errc::channel_closed, "fd channel: released");
  auto& arrived = state_->arrived;
  auto& engine = *state_->engine;
  const auto deadline = detail::clock::now() + timeout;
  detail::drive(engine, deadline, [&] { return !arrived.empty(); });
  if (arrived.empty()) {
    engine.fail(error(std::make_error_code(std::errc::timed_out),
                        "fd channel: no parcel from pid " + std::to_string(engine.peer().pid) + " within " +
                            std::to_string(timeout.count()) + " ms"));
    auto e = std::move(arrived.front());
    arrived.pop_front();
    return e;
  }
  auto p = std::move(arrived.front());
  arrived.pop_front();
  return p;
}

result<void> fd_channel::flush(std::chrono::milliseconds timeout) {
  if (!state_) return detail::fail(errc::channel_closed, "fd channel: released");
  auto& engine = *state_->engine;
  const auto deadline = detail::clock::now() + timeout;
  if (!detail::drive(engine, deadline, [&] { return !engine.wants_write(); }))
    return detail::fail(std::make_error_code(std::errc::timed_out), "fd channel: the peer does not read");
  if (engine.failed()) return detail::fail(errc::channel_closed, "fd channel: ended before everything went out");
  return {};
}

void fd_channel::send_async(outgoing_parcel p, clock::time_point deadline, std::function<void(result<void>)> done) {
  if (!state_) {
    done(detail::fail(errc::channel_closed, "fd channel: released"));
    return;
  }
  state_->engine->send(std::move(p), deadline, std::move(done));
}

void fd_channel::set_parcel_callback(std::function<void(result<parcel>)> cb) {
  if (state_) state_->engine->set_parcel_callback(std::move(cb));
}

void fd_channel::on_readable() {
  if (state_) state_->engine->on_readable();
}

void fd_channel::on_writable() {
  if (state_) state_->engine->on_writable();
}

void fd_channel::on_timer() {
  if (state_) state_->engine->on_timer(clock::now());
}

bool fd_channel::wants_write() const noexcept { return state_ && state_->engine->wants_write(); }

std::optional<fd_channel::clock::time_point> fd_channel::next_wakeup() const {
  return state_ ? state_->engine->next_wakeup() : std::nullopt;
}

void fd_channel::fail(error why) {
  if (state_) state_->engine->fail(std::move(why));
}

bool fd_channel::ended() const noexcept { return !state_ || state_->engine->failed(); }

const peer_credentials& fd_channel::peer() const noexcept {
  static const peer_credentials none;
  return state_ ? state_->engine->peer() : none;
}

channel_stats fd_channel::stats() const noexcept { return state_ ? state_->engine->stats() : channel_stats{}; }

int fd_channel::fd() const noexcept { return state_ ? state_->engine->fd() : -1; }

int fd_channel::release() noexcept {
  if (!state_) return -1;
  const int fd = state_->engine->release();
  state_.reset();
  return fd;
}

}  // namespace grace
