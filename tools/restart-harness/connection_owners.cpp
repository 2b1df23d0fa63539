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
#include <utility>

#include "process_tree.hpp"

namespace harness {
namespace {

constexpr unsigned held_states = (1U << 1) | (1U << 8);  // TCP_ESTABLISHED, TCP_CLOSE_WAIT

// (client port, inode) of every server-side socket of `target` that a process holds.
std::vector<std::pair<connection_key, unsigned long>> tcp_server_sockets(const grace::socket_address& target) {
  std::vector<std::pair<connection_key, unsigned long>> out;
  const int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return out;
  struct {
    nlmsghdr header;
    inet_diag_req_v2 request;
  } query{};
  query.header.nlmsg_len = sizeof query;
  query.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  query.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  query.request.sdiag_family = static_cast<std::uint8_t>(target.family());
  query.request.sdiag_protocol = IPPROTO_TCP;
  query.request.idiag_states = held_states;
  query.request.id.idiag_sport = htons(target.port());
  if (send(fd, &query, sizeof query, 0) == static_cast<ssize_t>(sizeof query)) {
    alignas(nlmsghdr) char buffer[65536];
    bool done = false;
    while (!done) {
      const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) break;
      auto len = static_cast<unsigned>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(buffer); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
          done = true;
          break;
        }
        const auto* msg = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
        if (ntohs(msg->id.idiag_sport) != target.port() || msg->idiag_inode == 0) continue;
        out.emplace_back(ntohs(msg->id.idiag_dport), msg->idiag_inode);
      }
    }
  }
  close(fd);
  return out;
}

// (client socket inode, server socket inode) of every connected unix stream socket pair: the
// dump lists both ends, each with its peer; the harness's own end is the key.
std::vector<std::pair<connection_key, unsigned long>> unix_server_sockets() {
  std::vector<std::pair<connection_key, unsigned long>> out;
  const int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return out;
  struct {
    nlmsghdr header;
    unix_diag_req request;
  } query{};
  query.header.nlmsg_len = sizeof query;
  query.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  query.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  query.request.sdiag_family = AF_UNIX;
  query.request.udiag_states = 1U << 1;  // TCP_ESTABLISHED: connected
  query.request.udiag_show = UDIAG_SHOW_PEER;
  if (send(fd, &query, sizeof query, 0) == static_cast<ssize_t>(sizeof query)) {
    alignas(nlmsghdr) char buffer[65536];
    bool done = false;
    while (!done) {
      const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) break;
      auto len = static_cast<unsigned>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(buffer); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
          done = true;
          break;
        }
        const auto* msg = static_cast<const unix_diag_msg*>(NLMSG_DATA(h));
        auto attributes = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *msg));
        for (auto* a = reinterpret_cast<const rtattr*>(msg + 1); RTA_OK(a, attributes); a = RTA_NEXT(a, attributes))
          if (a->rta_type == UNIX_DIAG_PEER) {
            // This end's peer is the key of one of our connections if this end is the server's.
            const auto peer = *static_cast<const std::uint32_t*>(RTA_DATA(a));
            out.emplace_back(peer, msg->udiag_ino);
          }
      }
    }
  }
  close(fd);
  return out;
}

}  // namespace

std::map<connection_key, pid_t> connection_owners::sample(const std::vector<pid_t>& tree) {
  std::map<connection_key, pid_t> owners;
  if (!supported()) return owners;
  const auto sockets = target_.family() == AF_UNIX ? unix_server_sockets() : tcp_server_sockets(target_);
  bool refreshed = false;
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
