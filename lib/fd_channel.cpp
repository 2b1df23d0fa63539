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

// The engine plus what the blocking calls need: parcels that arrived while this side waited
// for something else.
class blocking_engine : public channel_engine {
 public:
  using channel_engine::channel_engine;
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

fd_channel::fd_channel(std::unique_ptr<detail::channel_engine> engine) noexcept : engine_(std::move(engine)) {}
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
  auto engine = std::make_unique<detail::blocking_engine>(fd, options, *peer, type);
  auto* raw = engine.get();
  engine->set_parcel_callback([raw](result<parcel> p) { raw->arrived.push_back(std::move(p)); });
  return fd_channel(std::move(engine));
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
  if (!engine_) return detail::fail(errc::channel_closed, "fd channel: released");
  std::optional<result<void>> outcome;
  const auto deadline = detail::clock::now() + timeout;
  engine_->send(p, deadline, [&outcome](result<void> r) { outcome = std::move(r); });
  detail::drive(*engine_, deadline + std::chrono::milliseconds(1), [&] { return outcome.has_value(); });
  if (!outcome) return detail::fail(std::make_error_code(std::errc::timed_out), "fd channel: send timed out");
  return *outcome;
}

result<parcel> fd_channel::receive(std::chrono::milliseconds timeout) {
  if (!engine_) return detail::fail(errc::channel_closed, "fd channel: released");
  auto& arrived = static_cast<detail::blocking_engine&>(*engine_).arrived;
  const auto deadline = detail::clock::now() + timeout;
  detail::drive(*engine_, deadline, [&] { return !arrived.empty(); });
  if (arrived.empty()) {
    engine_->fail(error(std::make_error_code(std::errc::timed_out),
                        "fd channel: no parcel from pid " + std::to_string(engine_->peer().pid) + " within " +
                            std::to_string(timeout.count()) + " ms"));
    auto e = std::move(arrived.front());
    arrived.pop_front();
    return e;
  }
  auto p = std::move(arrived.front());
  arrived.pop_front();
  return p;
}

const peer_credentials& fd_channel::peer() const noexcept {
  static const peer_credentials none;
  return engine_ ? engine_->peer() : none;
}

channel_stats fd_channel::stats() const noexcept { return engine_ ? engine_->stats() : channel_stats{}; }

int fd_channel::fd() const noexcept { return engine_ ? engine_->fd() : -1; }

int fd_channel::release() noexcept {
  if (!engine_) return -1;
  const int fd = engine_->release();
  engine_.reset();
  return fd;
}

}  // namespace grace
