#include "control.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <map>

namespace grace_listen {
namespace {

// Fills `un` for a file path or "@abstract"; the address length, 0 when too long.
socklen_t unix_address(const std::string& where, sockaddr_un& un) {
  un = sockaddr_un{};
  un.sun_family = AF_UNIX;
  if (where.empty() || where.size() >= sizeof un.sun_path) return 0;
  std::memcpy(un.sun_path, where.data(), where.size());
  if (where[0] == '@') un.sun_path[0] = '\0';
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + where.size() + (where[0] == '@' ? 0 : 1));
}

bool all_digits(const std::string& s) {
  if (s.empty() || s.size() > 10) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

}  // namespace

struct control_server::client {
  uv_pipe_t pipe{};
  control_server* owner = nullptr;
  unsigned id = 0;
  std::string input;
  bool asked = false;
};

struct control_server::clients {
  std::map<unsigned, client*> by_id;
};

control_server::control_server(uv_loop_t* loop, on_request request)
    : loop_(loop), request_(std::move(request)), clients_(std::make_unique<clients>()) {}

control_server::~control_server() {
  for (auto& [id, c] : clients_->by_id) {
    c->owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe), [](uv_handle_t* h) { delete static_cast<client*>(h->data); });
  }
  if (listener_ != nullptr)
    uv_close(reinterpret_cast<uv_handle_t*>(listener_), [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
  if (!file_.empty()) ::unlink(file_.c_str());
}

std::string control_server::open(const std::string& path) {
  address_ = path.empty() ? "@grace-listen-" + std::to_string(getpid()) : path;
  sockaddr_un un{};
  const socklen_t len = unix_address(address_, un);
  if (len == 0) return "control socket " + address_ + ": path too long";
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return std::string("control socket: ") + std::strerror(errno);
  if (!path.empty()) {
    // A file left by a grace-listen that is gone is replaced; one that answers is not.
    const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int rc = probe >= 0 ? connect(probe, reinterpret_cast<sockaddr*>(&un), len) : -1;
    const int err = errno;
    if (probe >= 0) ::close(probe);
    if (rc == 0) {
      ::close(fd);
      return "control socket " + address_ + ": another process listens there";
    }
    if (err == ECONNREFUSED) ::unlink(path.c_str());
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&un), len) != 0 || listen(fd, 16) != 0) {
    const int err = errno;
    ::close(fd);
    return "control socket " + address_ + ": " + std::strerror(err);
  }
  if (!path.empty()) {
    file_ = path;
    ::chmod(path.c_str(), 0600);
  }
  listener_ = new uv_pipe_t{};
  uv_pipe_init(loop_, listener_, 0);
  listener_->data = this;
  if (const int rc = uv_pipe_open(listener_, fd); rc != 0) {
    ::close(fd);
    return "control socket " + address_ + ": " + uv_strerror(rc);
  }
  const int rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener_), 16, [](uv_stream_t* s, int status) {
    if (status == 0) static_cast<control_server*>(s->data)->on_connection();
  });
  if (rc != 0) return "control socket " + address_ + ": " + uv_strerror(rc);
  return {};
}

void control_server::on_connection() {
  auto* c = new client;
  c->owner = this;
  c->id = next_id_++;
  uv_pipe_init(loop_, &c->pipe, 0);
  c->pipe.data = c;
  if (uv_accept(reinterpret_cast<uv_stream_t*>(listener_), reinterpret_cast<uv_stream_t*>(&c->pipe)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe), [](uv_handle_t* h) { delete static_cast<client*>(h->data); });
    return;
  }
  clients_->by_id[c->id] = c;
  uv_os_fd_t fd = -1;
  uv_fileno(reinterpret_cast<uv_handle_t*>(&c->pipe), &fd);
  ucred peer{};
  socklen_t size = sizeof peer;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0 || (peer.uid != geteuid() && peer.uid != 0))
    return answer(c->id, false, "refused: uid " + std::to_string(peer.uid) + " is neither grace-listen's nor root");
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&c->pipe),
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        static char chunk[256];
        *buf = uv_buf_init(chunk, sizeof chunk);
      },
      [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
        auto* cl = static_cast<client*>(s->data);
        if (cl->owner != nullptr) cl->owner->on_read(cl, n, buf);
      });
}

void control_server::on_read(client* c, ssize_t n, const uv_buf_t* buf) {
  if (n < 0) return drop(c);  // gone before its answer: nothing to tell
  c->input.append(buf->base, static_cast<std::size_t>(n));
  const auto nl = c->input.find('\n');
  if (c->asked || nl == std::string::npos) {
    if (c->input.size() > 64) answer(c->id, false, "unknown request");
    return;
  }
  if (c->input.substr(0, nl) != "reload") return answer(c->id, false, "unknown request (only \"reload\" is)");
  c->asked = true;
  request_(c->id);
}

void control_server::drop(client* c) {
  clients_->by_id.erase(c->id);
  c->owner = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe), [](uv_handle_t* h) { delete static_cast<client*>(h->data); });
}

void control_server::answer(unsigned id, bool ok, const std::string& line) {
  auto it = clients_->by_id.find(id);
  if (it == clients_->by_id.end()) return;
  client* c = it->second;
  clients_->by_id.erase(it);
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->pipe));
  auto* text = new std::string((ok ? "ok: " : "failed: ") + line + "\n");
  auto* req = new uv_write_t;
  req->data = text;
  const uv_buf_t b = uv_buf_init(text->data(), static_cast<unsigned>(text->size()));
  const int rc = uv_write(req, reinterpret_cast<uv_stream_t*>(&c->pipe), &b, 1, [](uv_write_t* r, int) {
    delete static_cast<std::string*>(r->data);
    uv_close(reinterpret_cast<uv_handle_t*>(r->handle), [](uv_handle_t* h) { delete static_cast<client*>(h->data); });
    delete r;
  });
  if (rc != 0) {
    delete text;
    delete req;
    uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe), [](uv_handle_t* h) { delete static_cast<client*>(h->data); });
  }
}

int reload_and_wait(const std::string& target) {
  const bool by_pid = all_digits(target);
  const std::string where = by_pid ? "@grace-listen-" + target : target;
  sockaddr_un un{};
  const socklen_t len = unix_address(where, un);
  if (len == 0) {
    std::fprintf(stderr, "grace-listen: --reload %s: path too long\n", target.c_str());
    return 2;
  }
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&un), len) != 0) {
    std::fprintf(stderr, "grace-listen: --reload: no grace-listen answers at %s: %s\n", where.c_str(),
                 std::strerror(errno));
    return 2;
  }
  ucred peer{};
  socklen_t size = sizeof peer;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0 ||
      (by_pid && std::to_string(peer.pid) != target) || (peer.uid != geteuid() && peer.uid != 0)) {
    std::fprintf(stderr, "grace-listen: --reload: %s is served by pid %d (uid %d), not the grace-listen asked for\n",
                 where.c_str(), static_cast<int>(peer.pid), static_cast<int>(peer.uid));
    return 2;
  }
  const char request[] = "reload\n";
  if (send(fd, request, sizeof request - 1, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof request - 1)) {
    std::fprintf(stderr, "grace-listen: --reload: %s\n", std::strerror(errno));
    return 2;
  }
  // The answer comes once the new generation serves or was rolled back: grace-listen's
  // --ready-timeout bounds the wait (and a service manager's timeout for its reload command).
  std::string answer;
  char chunk[512];
  for (;;) {
    const ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    answer.append(chunk, static_cast<std::size_t>(n));
  }
  ::close(fd);
  while (!answer.empty() && answer.back() == '\n') answer.pop_back();
  if (answer.rfind("ok: ", 0) == 0) {
    std::printf("grace-listen: %s\n", answer.c_str());
    return 0;
  }
  std::fprintf(stderr, "grace-listen: reload %s\n",
               answer.empty() ? "failed: grace-listen hung up without an answer" : answer.c_str());
  return 1;
}

}  // namespace grace_listen
