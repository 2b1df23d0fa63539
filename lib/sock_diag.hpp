#pragma once
// One NETLINK_SOCK_DIAG dump: the kernel's view of sockets (their states, inodes, peers, and
// for listeners the accept-queue length), as `ss` reads it.
#include <linux/netlink.h>

#include <sys/types.h>

#include <cstddef>
#include <vector>
#include <functional>

namespace grace::detail {

// Sends `request` (an inet_diag_req_v2 or unix_diag_req) as a dump and calls `each` with every
// message that comes back. False when netlink could not be asked.
bool sock_diag_dump(const void* request, std::size_t size, const std::function<void(const nlmsghdr&)>& each);

// Whether the unix socket `fd` is bound to the socket file `path` names, however the path reads:
// the same file reached through a bind mount or another mount namespace's view has the same
// device and inode. One stat of `path` and one dump of the listening unix sockets.
bool unix_socket_bound_to(int fd, const char* path);

// Sockets of `protocol` (IPPROTO_TCP listening, IPPROTO_UDP bound) on `port` of `family`: their
// local address (16 bytes, IPv4 in the first 4), inode and owner.
struct bound_socket {
  unsigned char address[16] = {};
  unsigned long inode = 0;
  unsigned uid = 0;
};
std::vector<bound_socket> sockets_on_port(int family, int protocol, unsigned short port);

// The pid of a process of `uid` other than this one holding socket `inode`; 0 when none is found.
pid_t holder_of_socket(unsigned long inode, unsigned uid);
// Whether this process holds socket `inode`.
bool holds_socket(unsigned long inode);

}  // namespace grace::detail
