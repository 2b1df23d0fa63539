#include "process.hpp"

#include "generations.hpp"
#include "read_file.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

extern char** environ;

namespace test_support {
namespace {

using clock = std::chrono::steady_clock;

int remaining_ms(clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

void drain_nonblocking(int fd, std::string& buffer) {
  char chunk[4096];
  while (true) {
    const ssize_t n = read(fd, chunk, sizeof chunk);
    if (n <= 0) return;
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

}  // namespace

child_process::child_process(const spawn_options& options) {
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC))
    throw std::runtime_error("pipe2 failed");
  // Everything the child needs is built before fork.
  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const auto eq = entry.find('=');
    env[entry.substr(0, eq)] = eq == std::string::npos ? "" : entry.substr(eq + 1);
  }
  for (const auto& [name, value] : options.env) {
    if (value) env[name] = *value;
    else env.erase(name);
  }
  std::vector<std::string> env_strings;
  for (const auto& [name, value] : env) env_strings.push_back(name + "=" + value);
  if (options.listen_pid_is_child) env_strings.push_back("LISTEN_PID=" + std::string(20, '\0'));
  std::vector<char*> envp, argv;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = options.argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  const int base = 100 + static_cast<int>(options.fds.size());

  pid_ = fork();
  if (pid_ == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    std::vector<int> staged;
    for (int fd : options.fds) staged.push_back(fcntl(fd, F_DUPFD_CLOEXEC, base));
    for (size_t i = 0; i < staged.size(); ++i) dup2(staged[i], 3 + static_cast<int>(i));
    // Whatever the test runner leaked to us stays out of the child.
    syscall(SYS_close_range, 3 + staged.size(), ~0U, 0);
    if (options.listen_pid_is_child) {
      char* slot = env_strings.back().data() + std::strlen("LISTEN_PID=");
      std::snprintf(slot, 20, "%d", getpid());
    }
    if (!options.directory.empty() && chdir(options.directory.c_str()) != 0) _exit(126);
    execve(options.executable.empty() ? argv[0] : options.executable.c_str(), argv.data(),
           envp.data());
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  stdin_fd_ = in[1];
  stdout_fd_ = out[0];
  stderr_fd_ = err[0];
  fcntl(stdout_fd_, F_SETFL, O_NONBLOCK);
  fcntl(stderr_fd_, F_SETFL, O_NONBLOCK);
}

child_process::~child_process() {
  if (!reaped_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  close(stdin_fd_);
  close(stdout_fd_);
  close(stderr_fd_);
}

std::optional<std::string> child_process::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  while (true) {
    const auto nl = out_buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = out_buffer_.substr(0, nl);
      out_buffer_.erase(0, nl + 1);
      return line;
    }
    pollfd p{stdout_fd_, POLLIN, 0};
    const int ready = poll(&p, 1, remaining_ms(deadline));
    if (ready <= 0) return std::nullopt;
    char chunk[4096];
    const ssize_t n = read(stdout_fd_, chunk, sizeof chunk);
    if (n == 0) return std::nullopt;
    if (n > 0) out_buffer_.append(chunk, static_cast<size_t>(n));
  }
}

std::optional<std::string> child_process::read_until(const std::string& prefix,
                                                     std::chrono::milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  while (auto line = read_line(std::chrono::milliseconds(remaining_ms(deadline))))
    if (line->rfind(prefix, 0) == 0) return line;
  return std::nullopt;
}

std::vector<std::string> child_process::collect_until(const std::string& prefix,
                                                     std::chrono::milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  std::vector<std::string> lines;
  while (auto line = read_line(std::chrono::milliseconds(remaining_ms(deadline)))) {
    lines.push_back(*line);
    if (line->rfind(prefix, 0) == 0) return lines;
  }
  return {};
}

void child_process::write_stdin(const std::string& text) {
  ssize_t ignored = write(stdin_fd_, text.data(), text.size());
  (void)ignored;
}

std::string child_process::stderr_text() {
  drain_nonblocking(stderr_fd_, err_buffer_);
  return err_buffer_;
}

std::size_t count_of(const std::string& haystack, const std::string& text) {
  std::size_t n = 0;
  for (auto at = haystack.find(text); at != std::string::npos; at = haystack.find(text, at + 1)) ++n;
  return n;
}

bool child_process::wait_stderr(const std::string& text, std::chrono::milliseconds timeout,
                                std::size_t occurrences) {
  const auto deadline = clock::now() + timeout;
  while (true) {
    drain_nonblocking(stderr_fd_, err_buffer_);
    if (count_of(err_buffer_, text) >= occurrences) return true;
    pollfd p{stderr_fd_, POLLIN, 0};
    if (poll(&p, 1, remaining_ms(deadline)) <= 0) return false;
    if ((p.revents & POLLIN) == 0) return false;  // hung up with nothing more to read
  }
}

std::optional<int> child_process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      return status;
    }
    if (r < 0 || clock::now() >= deadline) return std::nullopt;
    // A child exiting closes its stderr; wait on that rather than sleeping blindly.
    pollfd p{stderr_fd_, POLLIN, 0};
    if (poll(&p, 1, 20) > 0) drain_nonblocking(stderr_fd_, err_buffer_);
  }
}

void child_process::kill(int signal) { ::kill(pid_, signal); }

bool has_exited(pid_t pid) { return grace::detail::process_has_exited(pid); }

bool wait_exited(pid_t pid, std::chrono::milliseconds timeout) {
  // A pidfd becomes readable when the process exits, whoever its parent is.
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return has_exited(pid);  // gone already (ESRCH)
  const auto deadline = clock::now() + timeout;
  bool exited = has_exited(pid);
  while (!exited) {
    pollfd p{pidfd, POLLIN, 0};
    if (poll(&p, 1, remaining_ms(deadline)) <= 0) break;
    exited = has_exited(pid) || (p.revents & POLLIN) != 0;
  }
  close(pidfd);
  return exited;
}

temp_dir::temp_dir() {
  std::string pattern = "/tmp/grace-test-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

temp_dir::~temp_dir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

unsigned long socket_inode(int fd) {
  char link[128] = {};
  const std::string proc = "/proc/self/fd/" + std::to_string(fd);
  if (readlink(proc.c_str(), link, sizeof link - 1) < 0) return 0;
  unsigned long inode = 0;
  std::sscanf(link, "socket:[%lu]", &inode);
  return inode;
}

namespace {
int connect_with_timeout(int fd, const sockaddr* sa, socklen_t len) {
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, sa, len) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}
}  // namespace

int connect_tcp(const std::string& host, int port) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (host.find(':') != std::string::npos) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr);
    len = sizeof *in6;
  } else {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    in->sin_family = AF_INET;
    in->sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, host.c_str(), &in->sin_addr);
    len = sizeof *in;
  }
  return connect_with_timeout(socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0),
                              reinterpret_cast<sockaddr*>(&ss), len);
}

int connect_unix(const std::string& path) {
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  std::strncpy(un.sun_path, path.c_str(), sizeof un.sun_path - 1);
  return connect_with_timeout(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0),
                              reinterpret_cast<sockaddr*>(&un), sizeof un);
}

std::string read_line_from(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  std::string line;
  char c = 0;
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, remaining_ms(deadline)) <= 0) return line;
    if (read(fd, &c, 1) != 1 || c == '\n') return line;
    line += c;
  }
}

std::string helper_path(const char* variable) {
  const char* value = std::getenv(variable);
  if (value == nullptr) throw std::runtime_error(std::string(variable) + " is not set by the build");
  return value;
}

}  // namespace test_support

namespace test_support {

pid_t read_pidfile(const std::string& path) {
  const auto text = grace::detail::read_small_file(path);
  return text ? static_cast<pid_t>(std::atol(text->c_str())) : 0;
}

pid_t wait_pidfile(const std::string& path, const std::function<bool(pid_t)>& accept,
                   std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const std::string dir = path.substr(0, path.rfind('/') == std::string::npos ? 0 : path.rfind('/'));
  const int watch = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (watch >= 0) inotify_add_watch(watch, dir.empty() ? "." : dir.c_str(), IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE);
  pid_t found = 0;
  while (true) {
    const pid_t now = read_pidfile(path);  // after the watch exists: no change is missed
    if (now != 0 && accept(now)) {
      found = now;
      break;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || watch < 0) break;
    pollfd p{watch, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) > 0) {
      char events[4096];
      while (read(watch, events, sizeof events) > 0) {
      }
    }
  }
  if (watch >= 0) close(watch);
  return found;
}

}  // namespace test_support
