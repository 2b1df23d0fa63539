#pragma once
// Which process served a connection, learnt without the server's help: the server side of each
// of our connections (TCP on loopback, or a unix socket) is a socket, whose inode sock_diag
// gives, held by some process of the server's tree, whose /proc/PID/fd names the inode.
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "grace/address.hpp"
#include "harness.hpp"

namespace harness {

// Our live TCP connections: with them a look asks the kernel about each one (a hash lookup)
// instead of dumping every TCP socket of the host, whose cost grows with every socket there,
// TIME_WAIT ones included (milliseconds of a core after a run of short connections).
// Up to this many connections, each is looked up; beyond, one dump costs less.
inline constexpr std::size_t max_looked_up = 1024;

struct client_ports {
  std::optional<grace::socket_address> local;  // the clients' local address (its port unused)
  std::vector<connection_key> ports;
};

class connection_owners {
 public:
  connection_owners(const grace::socket_address& target, bool datagrams) : target_(target), datagrams_(datagrams) {}
  // False for targets this cannot follow (an abstract unix socket): the referee falls back on
  // the pid file and pid hints.
  bool supported() const noexcept { return !target_.is_abstract() && !datagrams_; }
  // One look: our connection's key -> the pid among `tree` holding the server side of that
  // connection right now. Connections the server has already closed are not in it. A socket
  // can change hands (a server that migrates connections to its next generation): `recheck`
  // looks at every process again rather than trusting what an earlier look found, as does
  // a look after a process that held one of them has exited.
  std::map<connection_key, pid_t> sample(const std::vector<pid_t>& tree, bool recheck, const client_ports& ours = {});

 private:
  grace::socket_address target_;
  bool datagrams_ = false;  // UDP has no connections to follow
  std::map<unsigned long, pid_t> owner_by_inode_;
};

}  // namespace harness
