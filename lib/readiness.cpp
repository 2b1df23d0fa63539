#include "grace/readiness.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "environment_protocol.hpp"
#include "generations.hpp"
#include "net_state.hpp"
#include "readiness_socket.hpp"

namespace grace {
namespace {

constexpr char ready_byte = 'R';
constexpr char retiring_byte = 'D';
// From a serving process to a taker it cannot signal (another pid namespace): it gave up on the
// takeover (the taker was not ready in time, or this process cannot hand over), and serves on.
constexpr char abandon_byte = 'A';

// The readiness socket, kept after notify_ready() for notify_retiring().
std::atomic<int> kept_ready_fd{-1};

bool send_byte(int fd, char byte) {
  ssize_t sent;
  do sent = send(fd, &byte, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (sent < 0 && errno == EINTR);
  return sent == 1;
}

int open_pidfd(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

bool pidfd_readable(int pid_fd, int timeout_ms) {
  pollfd p{pid_fd, POLLIN, 0};
  int n;
  do n = poll(&p, 1, timeout_ms);
  while (n < 0 && errno == EINTR);
  return n == 1;
}

}  // namespace

namespace detail {
int kept_readiness_fd() noexcept { return kept_ready_fd.load(); }
}  // namespace detail

unsigned generation() noexcept { return detail::startup_inheritance().generation; }

std::vector<pid_t> older_generations_alive() {
  std::vector<pid_t> out;
  for (const auto& p : detail::still_running(detail::startup_inheritance().ancestors)) out.push_back(p.pid);
  return out;
}

std::vector<std::string> inheritance_warnings() { return detail::startup_inheritance().warnings; }

result<ready_outcome> notify_ready() {
  auto fd = detail::take_ready_fd();
  if (!fd) return tl::unexpected(fd.error());
  if (*fd < 0) return ready_outcome::first_start;
  // A serving process that gave up on this takeover (and could not kill this process, which it
  // cannot see) said so: taking charge now would leave two processes serving.
  char word = 0;
  if (recv(*fd, &word, 1, MSG_DONTWAIT | MSG_PEEK) == 1 && word == abandon_byte) {
    ::close(*fd);
    return detail::fail(errc::takeover_refused,
                        "the serving process gave up on this takeover (this one was not ready in time, or it could "
                        "not hand over) and serves on");
  }
  // A SEQPACKET socket: send() never blocks on one byte to a fresh socket, and MSG_NOSIGNAL
  // turns a dead parent into EPIPE instead of a SIGPIPE that would kill this process.
  if (send_byte(*fd, ready_byte)) {
    kept_ready_fd.store(*fd);
    return ready_outcome::told_parent;
  }
  const int err = errno;
  ::close(*fd);
  if (err == EPIPE || err == ECONNRESET || err == ECONNREFUSED) return ready_outcome::parent_gone;
  return detail::fail_errno(err, "tell the parent generation that this one is ready (GRACE_READY_FD)");
}

bool predecessor_out_of_sight() noexcept { return detail::predecessor_out_of_sight_flag(); }

void notify_retiring() noexcept {
  const int fd = kept_ready_fd.exchange(-1);
  if (fd < 0) return;
  send_byte(fd, retiring_byte);  // a parent that is gone needs no word
  ::close(fd);
}

// The helpers of pending_child, out of its public header.
struct pending_child::impl {
  static void reap_blocking(pending_child& c) noexcept {
    if (c.own_child_) {
      while (waitpid(c.pid_, &c.status_, 0) < 0 && errno == EINTR) {
      }
    } else if (c.pid_fd_ >= 0) {
      pidfd_readable(c.pid_fd_, 5000);  // SIGKILLed already: bounded, as it is not ours to reap
    }
    c.reaped_ = true;
  }

  static void send_kill(const pending_child& c) noexcept {
    // Through the pidfd when there is one: a pid that was reused is never signalled.
    if (c.pid_fd_ >= 0 && syscall(SYS_pidfd_send_signal, c.pid_fd_, SIGKILL, nullptr, 0) == 0) return;
    if (c.pid_ > 0 && c.own_child_) {
      ::kill(c.pid_, SIGKILL);
      return;
    }
    // A taker this process cannot signal (it cannot see it): told instead, so that it does not
    // take charge once it is ready (notify_ready() fails).
    if (c.ready_fd_ >= 0) send_byte(c.ready_fd_, abandon_byte);
  }

  static void close_fds(pending_child& c) noexcept {
    if (c.ready_fd_ >= 0) ::close(c.ready_fd_);
    if (c.pid_fd_ >= 0) ::close(c.pid_fd_);
    c.ready_fd_ = c.pid_fd_ = -1;
  }

  static bool try_reap(pending_child& c) noexcept {
    if (c.reaped_) return true;
    if (!c.own_child_) {
      // Not ours to wait for: its pidfd turns readable when it exits.
      c.reaped_ = c.pid_fd_ < 0 || pidfd_readable(c.pid_fd_, 0);
      return c.reaped_;
    }
    int status = 0;
    pid_t got;
    do got = waitpid(c.pid_, &status, WNOHANG);
    while (got < 0 && errno == EINTR);
    if (got == c.pid_ || (got < 0 && errno == ECHILD)) {
      c.reaped_ = true;
      if (got == c.pid_) c.status_ = status;
    }
    return c.reaped_;
  }
};

result<pending_child> pending_child::start(net& n, process_options options, unsigned max_generations) {
  auto admitted = detail::admit_next_generation(detail::startup_inheritance().ancestors, max_generations);
  if (!admitted) return tl::unexpected(admitted.error());

  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) != 0)
    return detail::fail_errno(errno, "start the next generation: readiness socketpair");
  // The child's end goes after its listeners and extra fds; its number, and GRACE_READY_FD that
  // names it, are decided under the net's lock with the rest of the child's fds.
  detail::successor_place successor{pair[1], generation() + 1, std::move(*admitted)};
  auto pid = n.state_->start_process(options, std::move(successor));
  ::close(pair[1]);
  if (!pid) {
    ::close(pair[0]);
    return tl::unexpected(pid.error());
  }
  const int pid_fd = open_pidfd(*pid);
  if (pid_fd >= 0) fcntl(pid_fd, F_SETFD, FD_CLOEXEC);
  return pending_child(*pid, pair[0], pid_fd);
}

result<pending_child> pending_child::adopt(pid_t pid, int ready_fd) {
  if (pid <= 0) {
    // In a pid namespace this process cannot see: watched through its readiness connection
    // alone (it says ready, or hangs up), never signalled.
    pending_child unseen(0, ready_fd, -1);
    unseen.own_child_ = false;
    return unseen;
  }
  const int pid_fd = open_pidfd(pid);
  if (pid_fd < 0) {
    const int err = errno;
    ::close(ready_fd);
    return detail::fail_errno(err, "watch pid " + std::to_string(pid) + " (pidfd_open)");
  }
  fcntl(pid_fd, F_SETFD, FD_CLOEXEC);
  pending_child adopted(pid, ready_fd, pid_fd);
  adopted.own_child_ = false;
  return adopted;
}

pending_child::pending_child(pending_child&& other) noexcept
    : pid_(other.pid_),
      ready_fd_(other.ready_fd_),
      pid_fd_(other.pid_fd_),
      outcome_(other.outcome_),
      status_(other.status_),
      reaped_(other.reaped_),
      killed_(other.killed_),
      own_child_(other.own_child_) {
  other.pid_ = -1;
  other.ready_fd_ = other.pid_fd_ = -1;
  other.outcome_ = upgrade_outcome::exited;
  other.reaped_ = true;
}

pending_child::~pending_child() {
  if (!outcome_) kill_pending();
  // A successor that took over runs on: it is not waited for.
  if (!reaped_ && pid_ > 0 && outcome_ != upgrade_outcome::ready) impl::reap_blocking(*this);
  impl::close_fds(*this);
}

std::optional<upgrade_outcome> pending_child::check() {
  if (outcome_) {
    // A successor is watched by successor_exit().
    if (outcome_ != upgrade_outcome::ready && impl::try_reap(*this)) impl::close_fds(*this);
    return outcome_;
  }
  char byte = 0;
  ssize_t got;
  do got = recv(ready_fd_, &byte, 1, MSG_DONTWAIT);
  while (got < 0 && errno == EINTR);
  if (got == 1 && byte == ready_byte) {
    // It runs on as the new generation. The socket and the pidfd stay open, so that a parent
    // still draining learns whether it retires on purpose or dies (successor_exit()).
    outcome_ = upgrade_outcome::ready;
    return outcome_;
  }
  // EOF or a reset: every end the child had is gone, so it exited or gave its end up.
  const bool socket_closed = got == 0 || (got == 1 && byte != ready_byte) ||
                             (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
  // A process this one cannot see (no pidfd: another pid namespace) tells its exit only by its
  // socket closing; check() may be called before anything arrived (upgrader's ready check).
  const bool exit_visible = own_child_ || pid_fd_ >= 0;
  if (exit_visible && impl::try_reap(*this)) {
    outcome_ = upgrade_outcome::exited;
    impl::close_fds(*this);
    return outcome_;
  }
  if (!socket_closed) return std::nullopt;
  // Its socket closes as the process exits, a moment before the exit can be reaped; a child
  // still running without a way to say it is ready never will be. Either way: SIGKILL, which
  // leaves an exit status already decided as it was.
  impl::send_kill(*this);
  killed_ = true;
  outcome_ = upgrade_outcome::exited;
  return outcome_;
}

void pending_child::kill_pending() {
  if (outcome_) return;
  impl::send_kill(*this);
  killed_ = true;
  outcome_ = upgrade_outcome::timed_out;
}

std::optional<bool> pending_child::successor_exit() {
  if (outcome_ != upgrade_outcome::ready || pid_ <= 0 || !impl::try_reap(*this)) return std::nullopt;
  // Read after the exit is known: what it said before it exited stays queued on the socket, so
  // a word sent just before the exit is never missed.
  bool retired = false;
  if (ready_fd_ >= 0) {
    char byte = 0;
    ssize_t got;
    do got = recv(ready_fd_, &byte, 1, MSG_DONTWAIT);
    while (got < 0 && errno == EINTR);
    retired = got == 1 && byte == retiring_byte;
  }
  impl::close_fds(*this);
  return retired;
}

upgrade_outcome pending_child::wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (auto outcome = check()) {
      if (*outcome != upgrade_outcome::ready && !reaped_) give_up();
      return *outcome;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return give_up();
    pollfd watched[2] = {{ready_fd_, POLLIN, 0}, {pid_fd_, POLLIN, 0}};
    // Without a pidfd (old kernels) the socket's EOF still reports the child's exit.
    poll(watched, pid_fd_ >= 0 ? 2 : 1, static_cast<int>(left.count()));
  }
}

upgrade_outcome pending_child::give_up() {
  if (outcome_ == upgrade_outcome::ready) return *outcome_;
  kill_pending();
  if (!reaped_ && pid_ > 0) {
    impl::reap_blocking(*this);
    impl::close_fds(*this);
  }
  return *outcome_;
}

}  // namespace grace
