#include "grace/uv/server.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace grace::uv {
namespace {

std::error_code uv_error(int code) { return {-code, std::system_category()}; }

bool is_tcp_listener(const grace::listener& l) { return l.local_address().family() != AF_UNIX; }

}  // namespace

void connection::close() {
  if (closing_) return;
  closing_ = true;
  uv_close(&handle_.handle, [](uv_handle_t* h) {
    auto* self = static_cast<connection*>(h->data);
    if (self->on_closed) self->on_closed(*self);
    if (self->owner_ != nullptr) self->owner_->release(self);
    else delete self;
  });
}

server::server(uv_loop_t* loop, const grace::listener& l, accept_callback on_accept)
    : loop_(loop), listener_(l), on_accept_(std::move(on_accept)) {}

tl::expected<std::unique_ptr<server>, std::error_code> server::open(uv_loop_t* loop,
                                                                    const grace::listener& l,
                                                                    accept_callback on_accept) {
  std::unique_ptr<server> s(new server(loop, l, std::move(on_accept)));
  const int fd = fcntl(l.fd(), F_DUPFD_CLOEXEC, 3);
  if (fd < 0) return tl::unexpected(std::error_code(errno, std::system_category()));
  auto* handle = new uv_any_handle;
  int rc = is_tcp_listener(l) ? uv_tcp_init(loop, &handle->tcp) : uv_pipe_init(loop, &handle->pipe, 0);
  if (rc != 0) {
    ::close(fd);
    delete handle;
    return tl::unexpected(uv_error(rc));
  }
  handle->handle.data = s.get();
  s->handle_ = handle;
  rc = is_tcp_listener(l) ? uv_tcp_open(&handle->tcp, fd) : uv_pipe_open(&handle->pipe, fd);
  if (rc != 0) {
    ::close(fd);
    s->stop_accepting();
    return tl::unexpected(uv_error(rc));
  }
  rc = uv_listen(&handle->stream, SOMAXCONN, [](uv_stream_t* listening, int status) {
    if (status == 0) static_cast<server*>(listening->data)->accept_one();
  });
  s->accepting_ = true;
  if (rc != 0) {
    s->stop_accepting();
    return tl::unexpected(uv_error(rc));
  }
  return s;
}

server::~server() {
  stop_accepting();
  for (auto* c : connections_) {
    c->owner_ = nullptr;
    c->on_closed = nullptr;
    c->close();
  }
}

void server::accept_one() {
  auto* c = new connection(this);
  if (is_tcp_listener(listener_)) uv_tcp_init(loop_, &c->handle_.tcp);
  else uv_pipe_init(loop_, &c->handle_.pipe, 0);
  c->handle_.handle.data = c;
  connections_.insert(c);
  if (uv_accept(&handle_->stream, c->stream()) != 0 || !on_accept_) {
    c->close();  // an empty callback would throw std::bad_function_call out of the loop
    return;
  }
  on_accept_(*c);
}

void server::release(connection* c) {
  connections_.erase(c);
  delete c;
  if (on_connection_closed) on_connection_closed();
}

void server::stop_accepting() {
  if (handle_ == nullptr) return;
  accepting_ = false;
  uv_close(&handle_->handle, [](uv_handle_t* h) { delete reinterpret_cast<uv_any_handle*>(h); });
  handle_ = nullptr;
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
