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

#include <algorithm>
#include <cstring>
#include <iterator>
#include <set>
#include <utility>

#include "generations.hpp"
#include "process_tree.hpp"
#include "sock_diag.hpp"

namespace harness {
namespace {

constexpr unsigned held_states = (1U << 1) | (1U << 8);  // TCP_ESTABLISHED, TCP_CLOSE_WAIT

struct server_socket {
  connection_key key;   // the client's port, or its socket's inode (unix)
  unsigned long inode;  // of the server's end
  long uid;             // its owner's, -1 when the kernel does not say
};

// (client port, inode) of every server-side socket of `target` that a process holds.
std::vector<server_socket> tcp_server_sockets(const grace::socket_address& target) {
  std::vector<server_socket> out;
  inet_diag_req_v2 request{};
  request.sdiag_family = static_cast<std::uint8_t>(target.family());
  request.sdiag_protocol = IPPROTO_TCP;
  request.idiag_states = held_states;
  grace::detail::sock_diag_dump(&request, sizeof request, [&](const nlmsghdr& h) {
    const auto* msg = static_cast<const inet_diag_msg*>(NLMSG_DATA(&h));
    if (ntohs(msg->id.idiag_sport) == target.port() && msg->idiag_inode != 0)
      out.push_back({ntohs(msg->id.idiag_dport), msg->idiag_inode, static_cast<long>(msg->idiag_uid)});
  });
  return out;
}

// (client port, inode) of the server side of each of our connections, each found by its four
// addresses: the server's end is local `target`, remote `ours.local` at the client's port. Empty
// when none is found (a dual-stack server whose end of an IPv4 connection is an IPv6 socket is
// filed under the other family): the caller dumps instead.
std::vector<server_socket> tcp_server_sockets_of(const grace::socket_address& target, const client_ports& ours) {
  std::vector<server_socket> out;
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
        out.push_back({port, msg->idiag_inode, static_cast<long>(msg->idiag_uid)});
    }
  }
  close(fd);
  return out;
}

// (client socket inode, server socket inode) of every connected unix socket pair: the dump
// lists both ends, each with its peer; the harness's own end is the key.
std::vector<server_socket> unix_server_sockets() {
  std::vector<server_socket> out;
  unix_diag_req request{};
  request.sdiag_family = AF_UNIX;
  request.udiag_states = 1U << 1;  // TCP_ESTABLISHED: connected
  request.udiag_show = UDIAG_SHOW_PEER;
  grace::detail::sock_diag_dump(&request, sizeof request, [&](const nlmsghdr& h) {
    const auto* msg = static_cast<const unix_diag_msg*>(NLMSG_DATA(&h));
    auto attributes = static_cast<int>(h.nlmsg_len - NLMSG_LENGTH(sizeof *msg));
    for (auto* a = reinterpret_cast<const rtattr*>(msg + 1); RTA_OK(a, attributes); a = RTA_NEXT(a, attributes))
      if (a->rta_type == UNIX_DIAG_PEER) out.push_back({*static_cast<const std::uint32_t*>(RTA_DATA(a)), msg->udiag_ino, -1});
  });
  return out;
}

// The inode and owner of every UDP socket bound to `target`'s port, in either family (a socket
// bound to [::] receives IPv4 datagrams too).
std::vector<server_socket> udp_server_sockets(const grace::socket_address& target) {
  std::vector<server_socket> out;
  for (const int family : {AF_INET, AF_INET6}) {
    inet_diag_req_v2 request{};
    request.sdiag_family = static_cast<std::uint8_t>(family);
    request.sdiag_protocol = IPPROTO_UDP;
    request.idiag_states = ~0U;
    grace::detail::sock_diag_dump(&request, sizeof request, [&](const nlmsghdr& h) {
      const auto* msg = static_cast<const inet_diag_msg*>(NLMSG_DATA(&h));
      if (ntohs(msg->id.idiag_sport) == target.port() && msg->idiag_inode != 0)
        out.push_back({0, msg->idiag_inode, static_cast<long>(msg->idiag_uid)});
    });
  }
  return out;
}

// The owner the inodes share, or -1 (any owner) when they do not.
long common_uid(const std::vector<server_socket>& sockets) {
  long uid = sockets.empty() ? -1 : sockets.front().uid;
  for (const auto& s : sockets)
    if (s.uid != uid) return -1;
  return uid;
}

}  // namespace

std::vector<pid_t> connection_owners::with_found(std::vector<pid_t> tree) {
  for (auto it = found_.begin(); it != found_.end();)
    it = grace::detail::process_has_exited(*it) ? found_.erase(it) : std::next(it);
  for (pid_t pid : found_)
    if (std::find(tree.begin(), tree.end(), pid) == tree.end()) tree.push_back(pid);
  return tree;
}

std::set<pid_t> connection_owners::datagram_holders(const std::vector<pid_t>& given_tree) {
  const auto sockets = udp_server_sockets(target_);
  std::set<unsigned long> inodes;
  for (const auto& s : sockets) inodes.insert(s.inode);
  const std::vector<pid_t> tree = with_found(given_tree);
  std::set<pid_t> holders = holders_among(tree, inodes);
  // A server started elsewhere: its new generation can be anywhere; look (at most every 200 ms).
  const std::uint64_t now = now_us();
  if (anywhere_ && now - last_anywhere_us_ > 200000) {
    last_anywhere_us_ = now;
    for (const auto& [pid, held] : holders_anywhere(inodes, common_uid(sockets))) {
      holders.insert(pid);
      found_.insert(pid);
    }
  }
  return holders;
}

std::map<connection_key, pid_t> connection_owners::sample(const std::vector<pid_t>& given_tree, bool recheck,
                                                          const client_ports& ours) {
  std::map<connection_key, pid_t> owners;
  if (!supported() || datagrams_) return owners;
  const std::vector<pid_t> tree = with_found(given_tree);
  std::vector<server_socket> sockets;
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
  std::vector<server_socket> unknown;
  for (const auto& socket : sockets) {
    auto it = owner_by_inode_.find(socket.inode);
    if (it == owner_by_inode_.end() && !refreshed) {
      // Inodes are new with every connection: look again, once per sample, at who holds what.
      owner_by_inode_ = socket_owners(tree);
      refreshed = true;
      it = owner_by_inode_.find(socket.inode);
    }
    if (it != owner_by_inode_.end()) owners[socket.key] = it->second;
    else unknown.push_back(socket);
  }
  if (anywhere_ && !unknown.empty()) search_anywhere(unknown, owners);
  return owners;
}

// Connections held by no process we know of: a server started elsewhere whose new generation is
// no descendant of anything we follow. Only the processes of the sockets' owner are read, and
// an inode that such a look did not find is not looked for again for a second (a connection the
// server has not accepted yet has no inode; one of another user's processes cannot be read).
template <typename Sockets>
void connection_owners::search_anywhere(const Sockets& unknown, std::map<connection_key, pid_t>& owners) {
  const std::uint64_t now = now_us();
  for (auto it = not_found_.begin(); it != not_found_.end();)
    it = now - it->second > 1000000 ? not_found_.erase(it) : std::next(it);
  std::set<unsigned long> inodes;
  std::vector<server_socket> asked;
  for (const auto& socket : unknown)
    if (not_found_.count(socket.inode) == 0) {
      inodes.insert(socket.inode);
      asked.push_back(socket);
    }
  if (inodes.empty()) return;
  const auto holders = holders_anywhere(inodes, common_uid(asked));
  for (const auto& [pid, held] : holders) {
    found_.insert(pid);
    for (const unsigned long inode : held) owner_by_inode_[inode] = pid;
  }
  for (const auto& socket : asked) {
    const auto it = owner_by_inode_.find(socket.inode);
    if (it != owner_by_inode_.end()) owners[socket.key] = it->second;
    else not_found_[socket.inode] = now;
  }
}

}  // namespace harness
