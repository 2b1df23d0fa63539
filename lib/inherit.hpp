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

// The sockets this process inherited (systemd's protocol, captured at start-up), each checked;
// handed out to the first caller only. A malformed environment or a bad fd is an error that
// names the variable and the fd.
result<std::vector<inherited_socket>> take_inherited_sockets();
// Checks one socket handed over by `source` (named in the error): a listening stream or seqpacket
// socket, or a datagram socket, of AF_INET, AF_INET6 or AF_UNIX.
result<inherited_socket> check_inherited_socket(const std::string& source, int fd);

}  // namespace grace::detail
