#include "inherit.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>

#include "grace/error.hpp"

namespace grace::detail {
namespace {

constexpr int first_fd = 3;  // SD_LISTEN_FDS_START

tl::unexpected<failure> malformed(const std::string& why) {
  return fail(make_error_code(errc::malformed_environment), why);
}

tl::unexpected<failure> bad_fd(const std::string& count_text, int fd, const std::string& what) {
  return fail(make_error_code(errc::invalid_inherited_fd),
              "LISTEN_FDS=" + count_text + ": fd " + std::to_string(fd) + " " + what);
}

bool parse_decimal(const std::string& text, long long& value) {
  if (text.empty() || text.front() == '+' || text.front() == '-') return false;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  return ec == std::errc() && ptr == end;
}

long long max_fd_count() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 1 << 20;
  return static_cast<long long>(limit.rlim_cur) - first_fd;
}

std::vector<std::string> split_names(const std::string& text) {
  std::vector<std::string> names;
  std::string::size_type start = 0;
  while (true) {
    const auto colon = text.find(':', start);
    names.push_back(text.substr(start, colon - start));
    if (colon == std::string::npos) return names;
    start = colon + 1;
  }
}

std::string env_or_empty(const char* name, bool& present) {
  const char* value = std::getenv(name);
  present = value != nullptr;
  return value != nullptr ? value : "";
}

// Four system calls per fd: this runs for every inherited listener at every start.
result<inherited_socket> check_socket(const std::string& count_text, int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
    if (errno == EBADF) return bad_fd(count_text, fd, "is not open");
    return bad_fd(count_text, fd, errno == ENOTSOCK ? "is not a socket" : std::strerror(errno));
  }
  sockaddr_storage storage{};
  socklen_t address_len = sizeof storage;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &address_len) != 0)
    return bad_fd(count_text, fd, std::string("has no local address: ") + std::strerror(errno));
  const int family = storage.ss_family;
  if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
    return bad_fd(count_text, fd,
                  "is a socket of address family " + std::to_string(family) +
                      ", not AF_INET, AF_INET6 or AF_UNIX");
  if (type != SOCK_STREAM && type != SOCK_SEQPACKET && type != SOCK_DGRAM)
    return bad_fd(count_text, fd,
                  "is a socket of type " + std::to_string(type) +
                      ", not SOCK_STREAM, SOCK_SEQPACKET or SOCK_DGRAM");
  if (type != SOCK_DGRAM) {
    int listening = 0;
    len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening == 0)
      return bad_fd(count_text, fd, "is a connection-oriented socket that is not listening");
  }
  auto address = socket_address::from_sockaddr(reinterpret_cast<sockaddr*>(&storage), address_len);
  if (!address) return bad_fd(count_text, fd, "has a local address grace cannot read");
  inherited_socket out;
  out.fd = fd;
  out.type = type;
  out.family = family;
  out.address = *address;
  return out;
}

result<std::vector<inherited_socket>> read_environment() {
  bool has_count = false, has_pid = false, has_names = false;
  const std::string count_text = env_or_empty("LISTEN_FDS", has_count);
  const std::string pid_text = env_or_empty("LISTEN_PID", has_pid);
  const std::string names_text = env_or_empty("LISTEN_FDNAMES", has_names);
  if (!has_count || count_text.empty()) return std::vector<inherited_socket>{};

  // gracenet sets no LISTEN_PID; systemd does, and then the fds are only ours if it is our pid.
  if (has_pid) {
    long long pid = 0;
    if (!parse_decimal(pid_text, pid) || pid <= 0)
      return malformed("LISTEN_PID=\"" + pid_text + "\" is not a process id");
    if (pid != getpid()) return std::vector<inherited_socket>{};
  }
  long long count = 0;
  if (!parse_decimal(count_text, count))
    return malformed("LISTEN_FDS=\"" + count_text + "\" is not a non-negative number");
  if (count > max_fd_count())
    return malformed("LISTEN_FDS=" + count_text + " is more fds than this process may open (" +
                     std::to_string(max_fd_count() + first_fd) + ")");
  std::vector<std::string> names;
  if (has_names) {
    names = split_names(names_text);
    if (static_cast<long long>(names.size()) != count)
      return malformed("LISTEN_FDNAMES=\"" + names_text + "\" names " +
                       std::to_string(names.size()) + " fds but LISTEN_FDS=" + count_text);
  }

  std::vector<inherited_socket> sockets;
  sockets.reserve(static_cast<std::size_t>(count));
  for (long long i = 0; i < count; ++i) {
    const int fd = first_fd + static_cast<int>(i);
    auto socket = check_socket(count_text, fd);
    if (!socket) return tl::unexpected(socket.error());
    socket->name = names.empty() || names[i].empty() ? "unknown" : names[i];
    sockets.push_back(std::move(*socket));
  }
  for (const auto& s : sockets) fcntl(s.fd, F_SETFD, FD_CLOEXEC);  // the only fd flag there is
  return sockets;
}

}  // namespace

result<std::vector<inherited_socket>> take_inherited_sockets() {
  auto sockets = read_environment();
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDNAMES");
  return sockets;
}

}  // namespace grace::detail
