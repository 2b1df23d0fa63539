#pragma once
// One NETLINK_SOCK_DIAG dump: the kernel's view of sockets (their states, inodes, peers, and
// for listeners the accept-queue length), as `ss` reads it.
#include <linux/netlink.h>

#include <cstddef>
#include <functional>

namespace grace::detail {

// Sends `request` (an inet_diag_req_v2 or unix_diag_req) as a dump and calls `each` with every
// message that comes back. False when netlink could not be asked.
bool sock_diag_dump(const void* request, std::size_t size, const std::function<void(const nlmsghdr&)>& each);

// Whether the unix socket `fd` is bound to the socket file `path` names, however the path reads:
// the same file reached through a bind mount or another mount namespace's view has the same
// device and inode. One stat of `path` and one dump of the listening unix sockets.
bool unix_socket_bound_to(int fd, const char* path);

}  // namespace grace::detail
