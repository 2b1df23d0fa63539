// grace-bench-bare-http: the http sample's protocol on bare libuv, without grace, as the
// yardstick for grace's steady-state overhead.
//
//   grace-bench-bare-http 127.0.0.1:PORT
#include <signal.h>
#include <unistd.h>
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "../../samples/http/protocol.hpp"
#include "command_line.hpp"

namespace {

std::string g_who;

struct connection {
  uv_tcp_t handle{};
  std::string input;
  bool close_after_write = false;
  unsigned writes_in_flight = 0;
};

void close_connection(connection* c) {
  if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&c->handle))) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&c->handle), [](uv_handle_t* h) { delete static_cast<connection*>(h->data); });
}

void send(connection* c, std::string text) {
  auto* req = new uv_write_t;
  auto* owned = new std::string(std::move(text));
  req->data = owned;
  const uv_buf_t buf = uv_buf_init(owned->data(), static_cast<unsigned>(owned->size()));
  ++c->writes_in_flight;
  uv_write(req, reinterpret_cast<uv_stream_t*>(&c->handle), &buf, 1, [](uv_write_t* r, int status) {
    delete static_cast<std::string*>(r->data);
    auto* conn = static_cast<connection*>(r->handle->data);
    delete r;
    --conn->writes_in_flight;
    if (status < 0 || (conn->close_after_write && conn->writes_in_flight == 0)) close_connection(conn);
  });
}

void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* c = static_cast<connection*>(stream->data);
  if (nread > 0 && !c->close_after_write) c->input.append(buf->base, static_cast<size_t>(nread));
  delete[] buf->base;
  if (nread < 0) return close_connection(c);
  std::string output;
  bool close = false;
  while (!close && http_protocol::answer_one(c->input, output, close, false, g_who)) {
  }
  c->close_after_write = close;
  if (!output.empty()) send(c, std::move(output));
}

}  // namespace

int main(int argc, char** argv) {
  bench::follow_conventions(argc, argv, "grace-bench-bare-http", "usage: grace-bench-bare-http 127.0.0.1:PORT");
  if (argc != 2) {
    std::fprintf(stderr, "usage: grace-bench-bare-http 127.0.0.1:PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  // As grace-http answers (sample::who_body): the same text, padded to the same 48 bytes.
  g_who = "pid=" + std::to_string(getpid()) + " generation=1";
  g_who.resize(47, ' ');
  g_who += "\n";
  const std::string address = argv[1];
  const auto colon = address.rfind(':');
  sockaddr_in in{};
  if (colon == std::string::npos || uv_ip4_addr(address.substr(0, colon).c_str(), std::atoi(address.c_str() + colon + 1), &in) != 0) {
    std::fprintf(stderr, "grace-bench-bare-http: bad address %s\n", address.c_str());
    return 2;
  }
  uv_loop_t* loop = uv_default_loop();
  uv_tcp_t server;
  uv_tcp_init(loop, &server);
  if (uv_tcp_bind(&server, reinterpret_cast<const sockaddr*>(&in), 0) != 0 ||
      uv_listen(reinterpret_cast<uv_stream_t*>(&server), SOMAXCONN, [](uv_stream_t* s, int status) {
        if (status < 0) return;
        auto* c = new connection;
        uv_tcp_init(s->loop, &c->handle);
        c->handle.data = c;
        if (uv_accept(s, reinterpret_cast<uv_stream_t*>(&c->handle)) != 0) return close_connection(c);
        uv_read_start(reinterpret_cast<uv_stream_t*>(&c->handle),
                      [](uv_handle_t*, size_t size, uv_buf_t* buf) { *buf = uv_buf_init(new char[size], static_cast<unsigned>(size)); },
                      on_read);
      }) != 0) {
    std::fprintf(stderr, "grace-bench-bare-http: cannot listen on %s\n", address.c_str());
    return 1;
  }
  uv_signal_t term;
  uv_signal_init(loop, &term);
  uv_signal_start(&term, [](uv_signal_t* s, int) { uv_stop(s->loop); }, SIGTERM);
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
