#pragma once
#include <string>
#include <vector>

#include "failure.hpp"
#include "grace/address.hpp"

namespace grace::detail {

struct inherited_socket {
  int fd = -1;
  int type = 0;    // SOCK_STREAM, SOCK_SEQPACKET or SOCK_DGRAM
  int family = 0;  // AF_INET, AF_INET6 or AF_UNIX
  socket_address address;
  std::string name;
};

// Takes the sockets systemd's protocol hands us (LISTEN_FDS at fds 3.., LISTEN_PID,
// LISTEN_FDNAMES), checks each, marks them close-on-exec and unsets the variables so that our
// own children do not see them. Sockets meant for another pid are ignored.
result<std::vector<inherited_socket>> take_inherited_sockets();

}  // namespace grace::detail
