#include "sock_diag.hpp"

#include <linux/sock_diag.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace grace::detail {

bool sock_diag_dump(const void* request, std::size_t size, const std::function<void(const nlmsghdr&)>& each) {
  const int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return false;
  std::vector<char> query(NLMSG_LENGTH(size));
  auto* header = reinterpret_cast<nlmsghdr*>(query.data());
  header->nlmsg_len = static_cast<std::uint32_t>(query.size());
  header->nlmsg_type = SOCK_DIAG_BY_FAMILY;
  header->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  std::memcpy(NLMSG_DATA(header), request, size);
  const bool asked = send(fd, query.data(), query.size(), 0) == static_cast<ssize_t>(query.size());
  alignas(nlmsghdr) static thread_local char buffer[65536];
  for (bool done = !asked; !done;) {
    const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    auto len = static_cast<unsigned>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buffer); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
        done = true;
        break;
      }
      each(*h);
    }
  }
  close(fd);
  return asked;
}

}  // namespace grace::detail
