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

}  // namespace grace::detail
