#pragma once
// SCM_RIGHTS by hand: the fd channel and the connection-channel offer both attach fds to a
// message and collect them from one.
#include <sys/socket.h>

#include <cstddef>
#include <cstring>

namespace grace::detail {

// Makes `msg` carry `count` fds in `control`, which holds CMSG_SPACE(sizeof(int) * count) bytes.
inline void attach_fds(msghdr& msg, char* control, const int* fds, std::size_t count) {
  const std::size_t size = sizeof(int) * count;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(size);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(size);
  std::memcpy(CMSG_DATA(c), fds, size);
}

// Appends the fds of every SCM_RIGHTS header of a received `msg` to `out`, in order.
template <typename Container>
void collect_fds(msghdr& msg, Container& out) {
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t k = 0; k < count; ++k) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
      out.push_back(received);
    }
  }
}

}  // namespace grace::detail
