#include "grace/readiness.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <string>

#include "grace/error.hpp"

namespace grace {
namespace {

constexpr char ready_variable[] = "GRACE_READY_FD";
constexpr char ready_byte = 'R';

int open_pidfd(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

void reap(pid_t pid, int& status) {
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace

tl::expected<void, std::error_code> notify_ready() {
  const char* text = std::getenv(ready_variable);
  if (text == nullptr) return {};
  const std::string value = text;
  unsetenv(ready_variable);
  int fd = -1;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), fd);
  struct stat st {};
  if (ec != std::errc() || end != value.data() + value.size() || fd < 3 ||
      fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode))
    return tl::unexpected(make_error_code(errc::malformed_environment));
  ssize_t written;
  do written = write(fd, &ready_byte, 1);
  while (written < 0 && errno == EINTR);
  const int err = errno;
  ::close(fd);
  if (written != 1) return tl::unexpected(std::error_code(err, std::system_category()));
  return {};
}

tl::expected<pending_child, std::error_code> pending_child::start(net& n, process_options options) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0)
    return tl::unexpected(std::error_code(errno, std::system_category()));
  // The child finds its end right after the listeners.
  const std::size_t listeners = n.active_listeners().size();
  options.extra_env.push_back(std::string(ready_variable) + "=" +
                              std::to_string(3 + listeners + options.extra_fds.size()));
  options.extra_fds.push_back(pipe_fds[1]);
  auto pid = n.start_process(options);
  ::close(pipe_fds[1]);
  if (!pid) {
    ::close(pipe_fds[0]);
    return tl::unexpected(pid.error());
  }
  const int pid_fd = open_pidfd(*pid);
  return pending_child(*pid, pipe_fds[0], pid_fd);
}

pending_child::pending_child(pending_child&& other) noexcept
    : pid_(other.pid_),
      ready_fd_(other.ready_fd_),
      pid_fd_(other.pid_fd_),
      outcome_(other.outcome_),
      status_(other.status_) {
  other.pid_ = -1;
  other.ready_fd_ = other.pid_fd_ = -1;
  other.outcome_ = upgrade_outcome::exited;
}

pending_child::~pending_child() {
  if (!outcome_) give_up();
  close_fds();
}

void pending_child::close_fds() noexcept {
  if (ready_fd_ >= 0) ::close(ready_fd_);
  if (pid_fd_ >= 0) ::close(pid_fd_);
  ready_fd_ = pid_fd_ = -1;
}

std::optional<upgrade_outcome> pending_child::check() {
  if (outcome_) return outcome_;
  char byte = 0;
  const ssize_t got = read(ready_fd_, &byte, 1);
  if (got == 1 && byte == ready_byte) {
    outcome_ = upgrade_outcome::ready;
    close_fds();
    return outcome_;
  }
  // EOF: every write end is gone, so the child exited or gave up its end without a word.
  const bool pipe_closed = got == 0 || (got == 1 && byte != ready_byte);
  int status = 0;
  const bool exited = waitpid(pid_, &status, WNOHANG) == pid_;
  if (exited) status_ = status;
  if (!exited && !pipe_closed) return std::nullopt;
  if (!exited) {
    ::kill(pid_, SIGKILL);
    reap(pid_, status_);
  }
  outcome_ = upgrade_outcome::exited;
  close_fds();
  return outcome_;
}

upgrade_outcome pending_child::wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (auto outcome = check()) return *outcome;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return give_up();
    pollfd watched[2] = {{ready_fd_, POLLIN, 0}, {pid_fd_, POLLIN, 0}};
    // Without a pidfd (old kernels) the pipe's EOF still reports the child's exit.
    poll(watched, pid_fd_ >= 0 ? 2 : 1, static_cast<int>(left.count()));
  }
}

upgrade_outcome pending_child::give_up() {
  if (outcome_) return *outcome_;
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    reap(pid_, status_);
  }
  outcome_ = upgrade_outcome::timed_out;
  close_fds();
  return *outcome_;
}

}  // namespace grace
