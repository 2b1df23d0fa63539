#pragma once
// Which process served a connection, learnt without the server's help: the server side of each
// of our connections (TCP on loopback, or a unix socket) is a socket, whose inode sock_diag
// gives, held by some process of the server's tree, whose /proc/PID/fd names the inode.
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
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
  // anywhere: the server's processes may be anywhere in the process tree (a server we did not
  // start): a connection that no process of the tree given to sample() holds is looked for
  // among every process of its owner (see holders_anywhere), and a process found so is looked
  // at from then on, with the tree, while it lives.
  connection_owners(const grace::socket_address& target, bool datagrams, bool anywhere = false)
      : target_(target), datagrams_(datagrams), anywhere_(anywhere) {}
  void search_anywhere(bool on) { anywhere_ = on; }
  // False for targets this cannot follow (an abstract unix socket): the referee falls back on
  // the pid file and pid hints.
  bool supported() const noexcept { return !target_.is_abstract(); }
  bool datagrams() const noexcept { return datagrams_; }
  // The processes found outside the tree (see `anywhere`) that still live.
  const std::set<pid_t>& found_elsewhere() const noexcept { return found_; }
  // One look: our connection's key -> the pid among `tree` holding the server side of that
  // connection right now. Connections the server has already closed are not in it. A socket
  // can change hands (a server that migrates connections to its next generation): `recheck`
  // looks at every process again rather than trusting what an earlier look found, as does
  // a look after a process that held one of them has exited.
  // Empty for UDP, which has no connections: see datagram_holders.
  std::map<connection_key, pid_t> sample(const std::vector<pid_t>& tree, bool recheck, const client_ports& ours = {});
  // UDP: the processes among `tree` (and, with `anywhere`, elsewhere) that hold a socket bound
  // to the target's port. A socket holder (grace-listen, a systemd socket unit) is among them in
  // every generation; a new generation is a holder that was not there before.
  std::set<pid_t> datagram_holders(const std::vector<pid_t>& tree);

 private:
  std::vector<pid_t> with_found(std::vector<pid_t> tree);
  template <typename Sockets>
  void search_anywhere(const Sockets& unknown, std::map<connection_key, pid_t>& owners);

  grace::socket_address target_;
  bool datagrams_ = false;  // UDP: no connections, only the processes holding the socket
  bool anywhere_ = false;
  std::map<unsigned long, pid_t> owner_by_inode_;
  std::set<pid_t> found_;                              // holders found outside the tree
  std::map<unsigned long, std::uint64_t> not_found_;   // inode -> when a search missed it
  std::uint64_t last_anywhere_us_ = 0;
};

}  // namespace harness
