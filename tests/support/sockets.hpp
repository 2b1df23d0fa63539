#pragma once
// Raw sockets made without grace, as another program (a parent, systemd) would hand them over.
#include <string>

namespace test_support {

// A listening TCP socket on `host` ("127.0.0.1", "::1", "::ffff:127.0.0.1") with an ephemeral
// port; returns the fd and sets `port`.
int raw_tcp_listener(const std::string& host, int& port);
// A bound (not listening) TCP socket.
int raw_tcp_unlistening(int& port);
int raw_udp_socket(int& port);
// A listening unix socket of `type` at a path or "@abstract" name.
int raw_unix_listener(const std::string& path, int type);
// The accept-queue length the kernel holds for the TCP listener on 127.0.0.1:`port` (through
// sock_diag, as `ss -lt` shows it), or -1 when there is none.
int listen_backlog(int port);

}  // namespace test_support
