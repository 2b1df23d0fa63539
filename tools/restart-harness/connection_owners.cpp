#include "connection_owners.hpp"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <utility>

#include "generations.hpp"
#include "process_tree.hpp"
#include "sock_diag.hpp"

namespace harness {
namespace {

constexpr unsigned held_states = (1U << 1) | (1U << 8);  // TCP_ESTABLISHED, TCP_CLOSE_WAIT

// (client port, inode) of every server-side socket of `target` that a process holds.
std::vector<std::pair<connection_key, unsigned long>> tcp_server_sockets(const grace::socket_address& target) {
  std::vector<std::pair<connection_key, unsigned long>> out;
  inet_diag_req_v2 request{};
  request.sdiag_family = static_cast<std::uint8_t>(target.family());
  request.sdiag_protocol = IPPROTO_TCP;
  request.idiag_states = held_states;
  grace::detail::sock_diag_dump(&request, sizeof request, [&](const nlmsghdr& h) {
    const auto* msg = static_cast<const inet_diag_msg*>(NLMSG_DATA(&h));
    if (ntohs(msg->id.idiag_sport) == target.port() && msg->idiag_inode != 0)
      out.emplace_back(ntohs(msg->id.idiag_dport), msg->idiag_inode);
  });
  return out;
}

// (client port, inode) of the server side of each of our connections, each found by its four
// addresses: the server's end is local `target`, remote `ours.local` at the client's port. Empty
// when none is found (a dual-stack server whose end of an IPv4 connection is an IPv6 socket is
// filed under the other family): the caller dumps instead.
std::vector<std::pair<connection_key, unsigned long>> tcp_server_sockets_of(const grace::socket_address& target,
                                                                            const client_ports& ours) {
  std::vector<std::pair<connection_key, unsigned long>> out;
  const int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return out;
  struct {
    nlmsghdr header;
    inet_diag_req_v2 request;
  } query{};
  query.header.nlmsg_len = sizeof query;
  query.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  query.header.nlmsg_flags = NLM_F_REQUEST;
  query.request.sdiag_family = static_cast<std::uint8_t>(target.family());
  query.request.sdiag_protocol = IPPROTO_TCP;
  query.request.idiag_states = held_states;
  query.request.id.idiag_cookie[0] = query.request.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  query.request.id.idiag_sport = htons(target.port());
  if (target.family() == AF_INET) {
    std::memcpy(query.request.id.idiag_src, &reinterpret_cast<const sockaddr_in*>(target.data())->sin_addr, 4);
    std::memcpy(query.request.id.idiag_dst, &reinterpret_cast<const sockaddr_in*>(ours.local->data())->sin_addr, 4);
  } else {
    std::memcpy(query.request.id.idiag_src, &reinterpret_cast<const sockaddr_in6*>(target.data())->sin6_addr, 16);
    std::memcpy(query.request.id.idiag_dst, &reinterpret_cast<const sockaddr_in6*>(ours.local->data())->sin6_addr, 16);
  }
  alignas(nlmsghdr) char answer[8192];
  for (const connection_key port : ours.ports) {
    query.request.id.idiag_dport = htons(static_cast<std::uint16_t>(port));
    if (send(fd, &query, sizeof query, 0) != static_cast<ssize_t>(sizeof query)) break;
    const ssize_t n = recv(fd, answer, sizeof answer, 0);
    if (n <= 0) break;
    auto len = static_cast<unsigned>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(answer); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;  // NLMSG_ERROR: not there (any more)
      const auto* msg = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
      if ((held_states & (1U << msg->idiag_state)) != 0 && msg->idiag_inode != 0)
        out.emplace_back(port, msg->idiag_inode);
    }
  }
  close(fd);
  return out;
}

// (client socket inode, server socket inode) of every connected unix socket pair: the dump
// lists both ends, each with its peer; the harness's own end is the key.
std::vector<std::pair<connection_key, unsigned long>> unix_server_sockets() {
  std::vector<std::pair<connection_key, unsigned long>> out;
  unix_diag_req request{};
  request.sdiag_family = AF_UNIX;
  request.udiag_states = 1U << 1;  // TCP_ESTABLISHED: connected
  request.udiag_show = UDIAG_SHOW_PEER;
  grace::detail::sock_diag_dump(&request, sizeof request, [&](const nlmsghdr& h) {
    const auto* msg = static_cast<const unix_diag_msg*>(NLMSG_DATA(&h));
    auto attributes = static_cast<int>(h.nlmsg_len - NLMSG_LENGTH(sizeof *msg));
    for (auto* a = reinterpret_cast<const rtattr*>(msg + 1); RTA_OK(a, attributes); a = RTA_NEXT(a, attributes))
      if (a->rta_type == UNIX_DIAG_PEER) out.emplace_back(*static_cast<const std::uint32_t*>(RTA_DATA(a)), msg->udiag_ino);
  });
  return out;
}

}  // namespace

std::map<connection_key, pid_t> connection_owners::sample(const std::vector<pid_t>& tree, bool recheck,
                                                          const client_ports& ours) {
  std::map<connection_key, pid_t> owners;
  if (!supported()) return owners;
  std::vector<std::pair<connection_key, unsigned long>> sockets;
  if (target_.family() == AF_UNIX) {
    sockets = unix_server_sockets();
  } else {
    const bool look_up = ours.local && ours.local->family() == target_.family() && !ours.ports.empty() &&
                         ours.ports.size() <= max_looked_up;
    if (look_up) sockets = tcp_server_sockets_of(target_, ours);
    if (sockets.empty()) sockets = tcp_server_sockets(target_);
  }
  if (!recheck) {
    std::set<pid_t> holders;
    for (const auto& entry : owner_by_inode_) holders.insert(entry.second);
    for (pid_t pid : holders) recheck = recheck || grace::detail::process_has_exited(pid);
  }
  if (recheck) owner_by_inode_ = socket_owners(tree);
  bool refreshed = recheck;
  for (const auto& [port, inode] : sockets) {
    auto it = owner_by_inode_.find(inode);
    if (it == owner_by_inode_.end() && !refreshed) {
      // Inodes are new with every connection: look again, once per sample, at who holds what.
      owner_by_inode_ = socket_owners(tree);
      refreshed = true;
      it = owner_by_inode_.find(inode);
    }
    if (it != owner_by_inode_.end()) owners[port] = it->second;
  }
  return owners;
}

}  // namespace harness
