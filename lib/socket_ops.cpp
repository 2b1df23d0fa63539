#include "socket_ops.hpp"

#include <linux/filter.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace grace::detail {
namespace {

class fd_guard {
 public:
  explicit fd_guard(int fd) : fd_(fd) {}
  ~fd_guard() {
    if (fd_ >= 0) ::close(fd_);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

// Somebody still accepts on the socket file if a connect does not get ECONNREFUSED.
bool someone_listens(const socket_address& address, int type) {
  fd_guard probe(socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (probe.get() < 0) return true;
  if (connect(probe.get(), address.data(), address.size()) == 0) return true;
  return errno != ECONNREFUSED && errno != ENOENT;
}

}  // namespace

namespace {

// A non-blocking, close-on-exec socket of `type` with SO_REUSEADDR (and IPV6_V6ONLY as asked),
// bound to `address`; `where` names it in errors.
result<int> bound_inet_socket(const socket_address& address, int type, bool v6only, bool reuse_port,
                              const std::string& where) {
  fd_guard fd(socket(address.family(), type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) return fail_errno(errno, where + ": socket");
  const int on = 1;
  if (setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0)
    return fail_errno(errno, where + ": SO_REUSEADDR");
  if (reuse_port && setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0)
    return fail_errno(errno, where + ": SO_REUSEPORT");
  if (address.family() == AF_INET6) {
    const int only = v6only ? 1 : 0;
    if (setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof only) != 0)
      return fail_errno(errno, where + ": IPV6_V6ONLY");
  }
  if (bind(fd.get(), address.data(), address.size()) != 0)
    return fail_errno(errno, where + ": bind");
  return fd.release();
}

}  // namespace

result<int> bind_tcp_listener(const socket_address& address, bool v6only, int backlog, bool reuse_port) {
  const std::string where = "listen on " + address.text();
  auto fd = bound_inet_socket(address, SOCK_STREAM, v6only, reuse_port, where);
  if (!fd) return fd;
  fd_guard guard(*fd);
  if (::listen(guard.get(), backlog) != 0) return fail_errno(errno, where + ": listen");
  return guard.release();
}

result<int> bind_udp_socket(const socket_address& address, bool v6only, bool reuse_port) {
  return bound_inet_socket(address, SOCK_DGRAM, v6only, reuse_port, "udp " + address.text());
}

bool has_reuse_port(int fd) {
  int on = 0;
  socklen_t len = sizeof on;
  return getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, &len) == 0 && on != 0;
}

result<void> steer_reuseport_group(int fd, unsigned steered) {
#ifndef SO_DETACH_REUSEPORT_BPF
  constexpr int SO_DETACH_REUSEPORT_BPF = 68;
#endif
  if (steered == 0) {
    const int unused = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &unused, sizeof unused) != 0 && errno != ENOENT)
      return fail_errno(errno, "SO_DETACH_REUSEPORT_BPF");
    return {};
  }
  // A random number modulo `steered`: the index of the member that gets this connection. An index
  // past the group's end would make the kernel fall back to its hash, so none is produced.
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<__u32>(SKF_AD_OFF + SKF_AD_RANDOM)),
      BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, steered),
      BPF_STMT(BPF_RET | BPF_A, 0),
  };
  sock_fprog program{static_cast<unsigned short>(sizeof code / sizeof code[0]), code};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &program, sizeof program) != 0)
    return fail_errno(errno, "SO_ATTACH_REUSEPORT_CBPF");
  return {};
}

result<unix_binding> bind_unix_listener(const socket_address& address, int type, int backlog) {
  const std::string path = address.unix_path();
  const std::string where = "listen on unix socket " + path;
  fd_guard fd(socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) return fail_errno(errno, where + ": socket");
  if (bind(fd.get(), address.data(), address.size()) != 0) {
    if (errno != EADDRINUSE || address.is_abstract()) return fail_errno(errno, where + ": bind");
    struct stat st {};
    if (lstat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode))
      return fail(std::error_code(EADDRINUSE, std::system_category()),
                  where + ": the path exists and is not a socket");
    if (someone_listens(address, type))
      return fail(std::error_code(EADDRINUSE, std::system_category()),
                  where + ": another process is listening on it");
    if (unlink(path.c_str()) != 0 && errno != ENOENT)
      return fail_errno(errno, where + ": removing the stale socket file");
    if (bind(fd.get(), address.data(), address.size()) != 0) return fail_errno(errno, where + ": bind");
  }
  if (::listen(fd.get(), backlog) != 0) return fail_errno(errno, where + ": listen");
  unix_binding out;
  if (!address.is_abstract()) {
    struct stat st {};
    if (stat(path.c_str(), &st) == 0) {
      out.created_file = true;
      out.dev = st.st_dev;
      out.ino = st.st_ino;
    }
  }
  out.fd = fd.release();
  return out;
}

}  // namespace grace::detail
