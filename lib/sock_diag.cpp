#include "sock_diag.hpp"

#include <linux/sock_diag.h>
#include <linux/rtnetlink.h>
#include <linux/unix_diag.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
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

bool unix_socket_bound_to(int fd, const char* path) {
  struct stat file {};
  struct stat sock {};
  if (::stat(path, &file) != 0 || !S_ISSOCK(file.st_mode) || ::fstat(fd, &sock) != 0) return false;
  unix_diag_req request{};
  request.sdiag_family = AF_UNIX;
  request.udiag_states = 1u << 10;  // TCP_LISTEN: listening stream and seqpacket sockets
  request.udiag_show = UDIAG_SHOW_VFS;
  request.udiag_cookie[0] = request.udiag_cookie[1] = ~0u;
  bool bound = false;
  sock_diag_dump(&request, sizeof request, [&](const nlmsghdr& h) {
    const auto* m = static_cast<const unix_diag_msg*>(NLMSG_DATA(&h));
    if (bound || m->udiag_ino != sock.st_ino) return;
    int left = static_cast<int>(h.nlmsg_len) - static_cast<int>(NLMSG_LENGTH(sizeof *m));
    for (auto* a = reinterpret_cast<const rtattr*>(m + 1); RTA_OK(a, left); a = RTA_NEXT(a, left)) {
      if (a->rta_type != UNIX_DIAG_VFS || RTA_PAYLOAD(a) < sizeof(unix_diag_vfs)) continue;
      const auto* vfs = static_cast<const unix_diag_vfs*>(RTA_DATA(a));
      // The kernel's own device encoding: major in the top 12 bits, minor in the low 20.
      const dev_t dev = makedev(vfs->udiag_vfs_dev >> 20, vfs->udiag_vfs_dev & 0xfffff);
      bound = dev == file.st_dev && vfs->udiag_vfs_ino == file.st_ino;
    }
  });
  return bound;
}

std::vector<bound_socket> sockets_on_port(int family, int protocol, unsigned short port) {
  std::vector<bound_socket> out;
  inet_diag_req_v2 request{};
  request.sdiag_family = static_cast<std::uint8_t>(family);
  request.sdiag_protocol = static_cast<std::uint8_t>(protocol);
  // TCP: listening sockets; UDP: bound ones (TCP_CLOSE in the kernel's state numbers).
  request.idiag_states = protocol == IPPROTO_TCP ? (1u << 10) : (1u << 7);
  request.id.idiag_sport = htons(port);
  sock_diag_dump(&request, sizeof request, [&](const nlmsghdr& h) {
    const auto* msg = static_cast<const inet_diag_msg*>(NLMSG_DATA(&h));
    if (ntohs(msg->id.idiag_sport) != port || msg->idiag_inode == 0) return;
    bound_socket b;
    std::memcpy(b.address, msg->id.idiag_src, sizeof b.address);
    b.inode = msg->idiag_inode;
    b.uid = msg->idiag_uid;
    out.push_back(b);
  });
  return out;
}

namespace {

// Whether /proc/PID/fd (PID a number, or "self") holds socket `inode`.
bool fd_dir_holds(const std::string& pid, unsigned long inode) {
  const std::string dir = "/proc/" + pid + "/fd";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return false;
  const std::string wanted = "socket:[" + std::to_string(inode) + "]";
  char target[64];
  bool found = false;
  while (!found) {
    const dirent* e = readdir(d);
    if (e == nullptr) break;
    const ssize_t n = readlinkat(dirfd(d), e->d_name, target, sizeof target - 1);
    found = n > 0 && wanted.compare(0, wanted.size(), target, static_cast<std::size_t>(n)) == 0 &&
            static_cast<std::size_t>(n) == wanted.size();
  }
  closedir(d);
  return found;
}

}  // namespace

bool holds_socket(unsigned long inode) { return fd_dir_holds("self", inode); }

pid_t holder_of_socket(unsigned long inode, unsigned uid) {
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return 0;
  pid_t holder = 0;
  const pid_t self = getpid();
  while (holder == 0) {
    const dirent* e = readdir(proc);
    if (e == nullptr) break;
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end != '\0' || pid == self) continue;
    struct stat st {};
    if (fstatat(dirfd(proc), e->d_name, &st, 0) != 0 || st.st_uid != uid) continue;
    if (fd_dir_holds(e->d_name, inode)) holder = static_cast<pid_t>(pid);
  }
  closedir(proc);
  return holder;
}

}  // namespace grace::detail
