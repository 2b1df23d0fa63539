// grace-echo: a TCP (or unix socket) echo server on libuv that is upgraded without losing a
// byte. See samples/common/sample.hpp for the command line.
#include <signal.h>
#include <uv.h>

#include <cstdio>

#include "../common/sample.hpp"

namespace {

void echo_back(grace::uv::connection& c) {
  uv_read_start(
      c.stream(),
      [](uv_handle_t*, size_t suggested, uv_buf_t* buf) {
        *buf = uv_buf_init(new char[suggested], static_cast<unsigned>(suggested));
      },
      [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
        grace::uv::connection& conn = grace::uv::connection::from(stream);
        if (nread <= 0) {
          delete[] buf->base;
          if (nread < 0) conn.close();
          return;
        }
        auto* req = new uv_write_t;
        req->data = buf->base;
        const uv_buf_t out = uv_buf_init(buf->base, static_cast<unsigned>(nread));
        uv_write(req, stream, &out, 1, [](uv_write_t* r, int) {
          delete[] static_cast<char*>(r->data);
          delete r;
        });
      });
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  auto config = sample::parse_uv_command_line(argc, argv, "grace-echo");
  grace::net net;
  sample::take_over_if_asked(net, config, "grace-echo");
  grace::listener* listener = sample::open_listener(net, config.address, "grace-echo");
  uv_loop_t* loop = uv_default_loop();
  grace::uv::upgrader upgrader(loop, net, config.upgrade);
  // An echo connection has no natural end: the drain waits for clients to hang up, then the
  // deadline closes the rest.
  if (!upgrader.serve(listener, echo_back)) {
    std::fprintf(stderr, "grace-echo: cannot serve %s\n", listener->address().c_str());
    return 1;
  }
  if (auto ready = upgrader.ready(); !ready) {
    std::fprintf(stderr, "grace-echo: cannot report readiness: %s\n", ready.error().message().c_str());
    return 1;
  }
  return upgrader.run();
}
