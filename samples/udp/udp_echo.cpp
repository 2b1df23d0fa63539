// grace-udp-echo: a UDP echo server on libuv, upgraded without losing a datagram. The socket is
// the same in every generation (inherited, or taken over), so datagrams that arrive while one
// generation hands over to the next wait in its queue; the old generation stops reading as it
// drains, and the new one reads on. See samples/common/sample.hpp for the command line.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <uv.h>

#include <cstdio>
#include <string>

#include "../common/sample.hpp"

namespace {

uv_udp_t g_socket;

struct send_request {
  uv_udp_send_t req;
  char* data;
};

void start_echoing() {
  uv_udp_recv_start(
      &g_socket,
      [](uv_handle_t*, size_t suggested, uv_buf_t* buf) {
        *buf = uv_buf_init(new char[suggested], static_cast<unsigned>(suggested));
      },
      [](uv_udp_t* socket, ssize_t nread, const uv_buf_t* buf, const sockaddr* from, unsigned) {
        if (nread < 0 || from == nullptr) {
          delete[] buf->base;
          return;
        }
        auto* send = new send_request{{}, buf->base};
        const uv_buf_t out = uv_buf_init(buf->base, static_cast<unsigned>(nread));
        if (uv_udp_send(&send->req, socket, &out, 1, from, [](uv_udp_send_t* r, int) {
              auto* done = reinterpret_cast<send_request*>(r);
              delete[] done->data;
              delete done;
            }) != 0) {
          delete[] send->data;
          delete send;
        }
      });
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  auto config = sample::parse_uv_command_line(argc, argv, "grace-udp-echo");
  grace::net net;
  sample::take_over_if_asked(net, config, "grace-udp-echo");
  auto socket = net.listen_udp("udp", config.address);
  if (!socket) {
    std::fprintf(stderr, "grace-udp-echo: %s\n", socket.error().message().c_str());
    return 1;
  }
  uv_loop_t* loop = uv_default_loop();
  grace::uv::upgrader upgrader(loop, net, config.upgrade);
  // libuv owns what it is given: it gets a duplicate, and the net keeps the socket for the next
  // generation.
  uv_udp_init(loop, &g_socket);
  if (uv_udp_open(&g_socket, fcntl((*socket)->fd(), F_DUPFD_CLOEXEC, 3)) != 0) {
    std::fprintf(stderr, "grace-udp-echo: cannot use %s\n", (*socket)->address().c_str());
    return 1;
  }
  // Stop reading once the next generation serves: what arrives from then on is its to read.
  upgrader.on_drain([] { uv_udp_recv_stop(&g_socket); });
  upgrader.on_resume(start_echoing);
  start_echoing();
  std::fprintf(stderr, "grace-udp-echo[%d]: echoing on udp %s (%s)\n", static_cast<int>(getpid()),
               (*socket)->address().c_str(), (*socket)->inherited() ? "inherited" : "new socket");
  if (auto ready = upgrader.ready(); !ready) {
    std::fprintf(stderr, "grace-udp-echo: cannot report readiness: %s\n", ready.error().message().c_str());
    return 1;
  }
  const int status = upgrader.run();
  uv_close(reinterpret_cast<uv_handle_t*>(&g_socket), nullptr);
  uv_run(loop, UV_RUN_NOWAIT);
  return status;
}
