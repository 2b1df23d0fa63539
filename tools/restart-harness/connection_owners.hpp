#pragma once
// Which process served a connection, learnt without the server's help: on loopback the server
// side of each of our TCP connections is a socket (sock_diag gives its inode) held by some
// process of the server's tree (its /proc/PID/fd names the inode).
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <vector>

#include "grace/address.hpp"

namespace harness {

class connection_owners {
 public:
  explicit connection_owners(const grace::socket_address& target) : target_(target) {}
  // False for targets this cannot follow (unix sockets): the referee falls back on pid hints.
  bool supported() const noexcept { return target_.family() != AF_UNIX; }
  // One look: our client port -> the pid among `tree` holding the server side of that
  // connection right now. Connections the server has already closed are not in it.
  std::map<std::uint16_t, pid_t> sample(const std::vector<pid_t>& tree);

 private:
  grace::socket_address target_;
  std::map<unsigned long, pid_t> owner_by_inode_;
};

}  // namespace harness
