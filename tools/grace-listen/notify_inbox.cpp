#include "notify_inbox.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace grace_listen {

notice parse_notice(std::string_view message) {
  notice n;
  while (!message.empty()) {
    const std::size_t nl = message.find('\n');
    const std::string_view line = message.substr(0, nl);
    message = nl == std::string_view::npos ? std::string_view() : message.substr(nl + 1);
    if (line == "READY=1") n.ready = true;
    else if (line.rfind("MAINPID=", 0) == 0) {
      const std::string_view digits = line.substr(8);
      long long pid = 0;
      bool valid = !digits.empty() && digits.size() <= 10;
      for (char c : digits) {
        if (c < '0' || c > '9') valid = false;
        else pid = pid * 10 + (c - '0');
      }
      n.main_pid = valid && pid > 0 && pid <= 0x7fffffff ? static_cast<pid_t>(pid) : 0;
    }
  }
  return n;
}

std::optional<notify_inbox> notify_inbox::open(std::string& why) {
  // A directory only this user can enter: the hand-over socket in it is then reachable by this
  // user's processes alone. $XDG_RUNTIME_DIR when it exists (tmpfs, per user), else /tmp.
  std::string base = "/tmp";
  if (const char* runtime = std::getenv("XDG_RUNTIME_DIR"); runtime != nullptr && runtime[0] == '/') {
    struct stat st {};
    if (stat(runtime, &st) == 0 && S_ISDIR(st.st_mode) && std::strlen(runtime) < 60) base = runtime;
  }
  std::string templ = base + "/grace-listen.XXXXXX";
  if (mkdtemp(templ.data()) == nullptr) {
    why = "cannot make a private directory in " + base + ": " + std::strerror(errno);
    return std::nullopt;
  }
  notify_inbox inbox;
  inbox.directory_ = templ;
  inbox.notify_path_ = templ + "/notify.sock";
  inbox.handover_path_ = templ + "/handover.sock";
  inbox.fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (inbox.fd_ < 0) {
    why = std::string("notify socket: ") + std::strerror(errno);
    return std::nullopt;
  }
  const int on = 1;
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  std::memcpy(un.sun_path, inbox.notify_path_.c_str(), inbox.notify_path_.size() + 1);
  if (setsockopt(inbox.fd_, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0 ||
      bind(inbox.fd_, reinterpret_cast<sockaddr*>(&un), sizeof un) != 0) {
    why = "notify socket " + inbox.notify_path_ + ": " + std::strerror(errno);
    return std::nullopt;
  }
  // Room for bursts: a generation's notifications must not be dropped while the loop is busy.
  const int buffer = 1 << 20;
  setsockopt(inbox.fd_, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
  return std::optional<notify_inbox>(std::move(inbox));
}

notify_inbox::notify_inbox(notify_inbox&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      directory_(std::move(other.directory_)),
      notify_path_(std::move(other.notify_path_)),
      handover_path_(std::move(other.handover_path_)) {
  other.directory_.clear();
}

notify_inbox::~notify_inbox() {
  if (fd_ >= 0) ::close(fd_);
}

std::vector<received_notice> notify_inbox::drain() {
  std::vector<received_notice> out;
  for (;;) {
    char data[4096];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
    iovec iov{data, sizeof data - 1};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = recvmsg(fd_, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      return out;  // EAGAIN: nothing more now
    }
    const ucred* cred = nullptr;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS)
        cred = reinterpret_cast<const ucred*>(CMSG_DATA(c));
      // Nobody sends fds here (FDSTORE is not offered); close any that came.
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
          ::close(fd);
        }
      }
    }
    if (cred == nullptr || cred->pid <= 0) continue;
    out.push_back({cred->pid, cred->uid, parse_notice(std::string_view(data, static_cast<std::size_t>(n)))});
  }
}

void notify_inbox::remove() noexcept {
  if (directory_.empty()) return;
  ::unlink(notify_path_.c_str());
  ::unlink(handover_path_.c_str());
  ::rmdir(directory_.c_str());
  directory_.clear();
}

}  // namespace grace_listen
