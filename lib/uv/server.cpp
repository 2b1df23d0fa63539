#include "grace/uv/server.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../failure.hpp"

namespace grace::uv {
namespace {

// Accepts per wake-up before other handles get their turn.
constexpr int accept_batch = 128;
// After EMFILE/ENFILE the connection stays queued in the kernel; try again after this long.
constexpr uint64_t fd_shortage_retry_ms = 50;

tl::unexpected<error> uv_failure(int code, const std::string& what) {
  return grace::detail::fail(std::error_code(-code, std::system_category()), what + ": " + uv_strerror(code));
}

}  // namespace

connection& connection::from(uv_handle_t* handle) noexcept {
  return *reinterpret_cast<slot*>(handle)->self;
}

connection& connection::from(uv_stream_t* stream) noexcept {
  return from(reinterpret_cast<uv_handle_t*>(stream));
}

void connection::close() {
  if (closing_) return;
  closing_ = true;
  uv_close(&handle_.handle.handle, [](uv_handle_t* h) {
    connection& self = connection::from(h);
    if (self.on_closed) self.on_closed(self);
    if (self.owner_ != nullptr) self.owner_->release(&self);
    else delete &self;
  });
}

server::server(uv_loop_t* loop, int fd, listener_info info, accept_callback on_accept)
    : loop_(loop), fd_(fd), info_(std::move(info)), on_accept_(std::move(on_accept)) {}

result<std::unique_ptr<server>> server::open(uv_loop_t* loop, const grace::listener& l,
                                             accept_callback on_accept) {
  const std::string where = "serve " + l.address();
  if (!on_accept) return grace::detail::fail(errc::invalid_argument, where + ": no accept callback");
  if (socket_type(l.network()) == SOCK_DGRAM)
    return grace::detail::fail(errc::invalid_argument, where + ": a datagram socket has no connections to accept");
  const int fd = fcntl(l.fd(), F_DUPFD_CLOEXEC, 3);
  if (fd < 0) return grace::detail::fail_errno(errno, where + ": dup");
  listener_info info{l.address(), l.name(), l.inherited(), l.local_address().family() == AF_UNIX};
  std::unique_ptr<server> s(new server(loop, fd, std::move(info), std::move(on_accept)));
  s->poll_ = new uv_poll_t{};
  if (const int rc = uv_poll_init(loop, s->poll_, fd); rc != 0) {
    delete s->poll_;
    s->poll_ = nullptr;
    return uv_failure(rc, where);
  }
  s->poll_->data = s.get();
  s->resume_accepting();
  return s;
}

void server::close_listening_socket() {
  stop_accepting();
  for (uv_handle_t* h : {reinterpret_cast<uv_handle_t*>(poll_), reinterpret_cast<uv_handle_t*>(retry_)})
    if (h != nullptr)
      uv_close(h, [](uv_handle_t* closed) {
        if (closed->type == UV_POLL) delete reinterpret_cast<uv_poll_t*>(closed);
        else delete reinterpret_cast<uv_timer_t*>(closed);
      });
  poll_ = nullptr;
  retry_ = nullptr;
  // uv_close has taken the fd out of the loop's epoll set, so it can go now.
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

server::~server() {
  close_listening_socket();
  for (auto* c : connections_) {
    c->owner_ = nullptr;
    c->on_closed = nullptr;
    c->close();
  }
}

void server::resume_accepting() {
  if (accepting_ || poll_ == nullptr) return;
  // A poll that cannot start (its handle closing) leaves the server not accepting, as it says.
  accepting_ = uv_poll_start(poll_, UV_READABLE, [](uv_poll_t* p, int status, int) {
                 if (status == 0) static_cast<server*>(p->data)->accept_ready();
               }) == 0;
}

void server::stop_accepting() {
  if (!accepting_) return;
  accepting_ = false;
  if (poll_ != nullptr) uv_poll_stop(poll_);
  if (retry_ != nullptr) uv_timer_stop(retry_);
}

void server::accept_ready() {
  for (int i = 0; i < accept_batch && accepting_; ++i) {
    const int fd = accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      accept_fd(fd);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      // Out of fds: the connection waits in the queue (libuv's reserve-fd trick would accept and
      // drop it). Pause, and accept again when connections may have closed.
      uv_poll_stop(poll_);
      if (retry_ == nullptr) {
        retry_ = new uv_timer_t{};
        if (uv_timer_init(loop_, retry_) != 0) {
          // No timer: accept again at the next readiness instead of never.
          delete retry_;
          retry_ = nullptr;
          accepting_ = false;
          resume_accepting();
          return;
        }
        retry_->data = this;
      }
      const int rc = uv_timer_start(retry_, [](uv_timer_t* t) {
        auto* self = static_cast<server*>(t->data);
        if (!self->accepting_) return;
        self->accepting_ = false;
        self->resume_accepting();
      }, fd_shortage_retry_ms, 0);
      if (rc != 0) {
        accepting_ = false;
        resume_accepting();
      }
    }
    return;  // EAGAIN: the queue is empty
  }
}

connection* server::open_connection(int fd) {
  auto* c = new connection(this);
  uv_handle_t* h = &c->handle_.handle.handle;
  int rc = info_.is_unix ? uv_pipe_init(loop_, &c->handle_.handle.pipe, 0) : uv_tcp_init(loop_, &c->handle_.handle.tcp);
  if (rc != 0) {
    ::close(fd);
    delete c;
    return nullptr;
  }
  connections_.insert(c);
  count_ = connections_.size();
  rc = info_.is_unix ? uv_pipe_open(&c->handle_.handle.pipe, fd) : uv_tcp_open(&c->handle_.handle.tcp, fd);
  if (rc != 0) {
    ::close(fd);
    c->close();
    return nullptr;
  }
  h->data = nullptr;
  return c;
}

void server::accept_fd(int fd) {
  if (connection* c = open_connection(fd)) on_accept_(*c);
}

result<connection*> server::adopt_connection(int fd) {
  if (fd < 0) return grace::detail::fail(errc::invalid_argument, "adopt a connection: no fd");
  if (::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 || ::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    const int err = errno;
    ::close(fd);
    return grace::detail::fail_errno(err, "adopt a connection on " + info_.address);
  }
  connection* c = open_connection(fd);
  if (c == nullptr) return grace::detail::fail(errc::invalid_argument, "adopt a connection on " + info_.address + ": libuv refused the fd");
  return c;
}

std::vector<connection*> server::connections() const {
  return std::vector<connection*>(connections_.begin(), connections_.end());
}

void server::release(connection* c) {
  connections_.erase(c);
  count_ = connections_.size();
  delete c;
  if (on_connection_closed) on_connection_closed();
}

std::size_t server::close_all_connections() {
  std::size_t open = 0;
  // close() defers the erase to the close callback, so iterating the set here is safe.
  for (auto* c : connections_)
    if (!c->closing()) {
      c->close();
      ++open;
    }
  return open;
}

}  // namespace grace::uv
