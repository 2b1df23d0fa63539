#pragma once
#include <sys/types.h>

#include "failure.hpp"
#include "grace/address.hpp"

namespace grace::detail {

// A fresh non-blocking, close-on-exec TCP listener with SO_REUSEADDR (and SO_REUSEPORT when
// asked). For AF_INET6, `v6only` chooses between IPv6 only and dual stack.
result<int> bind_tcp_listener(const socket_address& address, bool v6only, int backlog, bool reuse_port = false);

// A fresh non-blocking, close-on-exec UDP socket with SO_REUSEADDR (and SO_REUSEPORT when
// asked), bound to `address`.
result<int> bind_udp_socket(const socket_address& address, bool v6only, bool reuse_port = false);

// Whether the socket was bound with SO_REUSEPORT (it can gain group members).
bool has_reuse_port(int fd);

// Makes the kernel pick, for each new connection or datagram, one of the first `steered`
// members of the SO_REUSEPORT group `fd` belongs to (uniformly, by a classic BPF program);
// steered == 0 removes any program, which restores the kernel's hash over every member.
result<void> steer_reuseport_group(int fd, unsigned steered);

struct unix_binding {
  int fd = -1;
  bool created_file = false;  // false for abstract sockets
  dev_t dev = 0;
  ino_t ino = 0;
};

// A fresh unix listener of `type` (SOCK_STREAM or SOCK_SEQPACKET). A socket file that nobody
// listens on any more is replaced; a live one, or a path that is not a socket, is EADDRINUSE.
result<unix_binding> bind_unix_listener(const socket_address& address, int type, int backlog);

}  // namespace grace::detail
