// grace-udp-echo: a UDP echo server on libuv, upgraded without losing a datagram. The sockets are
// the same in every generation (inherited, or taken over), so datagrams that arrive while one
// generation hands over to the next wait in their queues; the old generation stops reading as it
// drains, and the new one reads on. With --workers N it reads on N threads: from one shared
// socket, or with --reuse-port from a socket each (an SO_REUSEPORT group, as QUIC servers do).
// See samples/common/sample.hpp for the command line.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <uv.h>

#include <chrono>
#include <cstdio>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "../common/sample.hpp"

namespace {

struct echoer;

struct send_request {
  uv_udp_send_t req;
  char* data;
  echoer* from;
};

// One socket of the group read on one loop.
struct echoer {
  uv_udp_t handle{};
  grace::uv::worker_group* group = nullptr;  // null: the main loop
  unsigned worker = 0;
  // An echo libuv could not send at once waits in its queue; closing the handle would drop it.
  std::size_t sends_in_flight = 0;
  bool closing = false;
  std::promise<void> closed;

  void start() {
    uv_udp_recv_start(
        &handle,
        [](uv_handle_t*, size_t suggested, uv_buf_t* buf) {
          *buf = uv_buf_init(new char[suggested], static_cast<unsigned>(suggested));
        },
        [](uv_udp_t* socket, ssize_t nread, const uv_buf_t* buf, const sockaddr* from, unsigned) {
          if (nread < 0 || from == nullptr) {
            delete[] buf->base;
            return;
          }
          auto* self = static_cast<echoer*>(socket->data);
          auto* send = new send_request{{}, buf->base, self};
          const uv_buf_t out = uv_buf_init(buf->base, static_cast<unsigned>(nread));
          if (uv_udp_send(&send->req, socket, &out, 1, from, [](uv_udp_send_t* r, int) {
                auto* done = reinterpret_cast<send_request*>(r);
                echoer* e = done->from;
                delete[] done->data;
                delete done;
                if (--e->sends_in_flight == 0 && e->closing) e->close();
              }) != 0) {
            delete[] send->data;
            delete send;
            return;
          }
          ++self->sends_in_flight;
        });
  }
  void stop() { uv_udp_recv_stop(&handle); }
  // Stops reading, and closes once every echo already read has gone out.
  void finish() {
    stop();
    closing = true;
    if (sends_in_flight == 0) close();
  }
  void close() {
    uv_close(reinterpret_cast<uv_handle_t*>(&handle),
             [](uv_handle_t* h) { static_cast<echoer*>(h->data)->closed.set_value(); });
  }
  // Runs fn on this echoer's loop; `wait` blocks until it has run.
  void on_loop(std::function<void()> fn, bool wait) {
    if (group == nullptr) return fn();
    if (wait) group->run(worker, fn);
    else group->post(worker, std::move(fn));
  }
};

std::vector<std::unique_ptr<echoer>> g_echoers;

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  const char* name = "grace-udp-echo";
  auto config = sample::parse_uv_command_line(argc, argv, name);
  grace::net net;
  sample::take_over_if_asked(net, config, name);
  grace::listen_options options;
  options.reuse_port = config.reuse_port;
  // Every socket of the address, inherited ones included, even when fewer are wanted now.
  auto sockets = net.listen_group("udp", config.address, config.reuse_port ? config.workers : 1, options);
  if (!sockets) {
    std::fprintf(stderr, "%s: %s\n", name, sockets.error().message().c_str());
    return 1;
  }
  std::unique_ptr<grace::uv::worker_group> workers = sample::start_workers(config, name);
  uv_loop_t* loop = uv_default_loop();
  grace::uv::upgrader upgrader(loop, net, config.upgrade);
  // Every member is read, those past the steered ones too, so what queued there is answered.
  const unsigned loops = workers ? workers->size() : 1;
  for (const auto& [socket, k] : grace::uv::place_group(*sockets, loops)) {
    auto e = std::make_unique<echoer>();
    e->group = workers.get();
    e->worker = k;
    bool opened = false;
    // libuv owns what it is given: it gets a duplicate, and the net keeps the socket for the next
    // generation.
    e->on_loop([&, socket = socket] {
      uv_udp_init(workers ? workers->loop(e->worker) : loop, &e->handle);
      e->handle.data = e.get();
      opened = uv_udp_open(&e->handle, fcntl(socket->fd(), F_DUPFD_CLOEXEC, 3)) == 0;
      if (opened) e->start();
    }, true);
    if (!opened) {
      std::fprintf(stderr, "%s: cannot use %s\n", name, socket->address().c_str());
      return 1;
    }
    g_echoers.push_back(std::move(e));
  }
  if (workers) upgrader.serving_elsewhere();
  // Stop reading once the next generation serves: what arrives from then on is its to read.
  upgrader.on_drain([] {
    for (auto& e : g_echoers) e->on_loop([p = e.get()] { p->stop(); }, false);
  });
  upgrader.on_resume([] {
    for (auto& e : g_echoers) e->on_loop([p = e.get()] { p->start(); }, false);
  });
  std::fprintf(stderr, "%s[%d]: echoing on udp %s: %zu socket(s) (%s), %u loop(s)\n", name,
               static_cast<int>(getpid()), sockets->members.front()->address().c_str(), sockets->members.size(),
               sockets->members.front()->inherited() ? "inherited" : "new", loops);
  if (auto ready = upgrader.ready(); !ready) {
    std::fprintf(stderr, "%s: %s\n", name, ready.error().message().c_str());  // the error names its subject
    return 1;
  }
  const int status = upgrader.run();
  // Every datagram read is answered before its socket closes (at most 1 s more).
  for (auto& e : g_echoers) e->on_loop([p = e.get()] { p->finish(); }, true);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (auto& e : g_echoers) {
    auto closed = e->closed.get_future();
    while (closed.wait_for(std::chrono::seconds(0)) != std::future_status::ready &&
           std::chrono::steady_clock::now() < deadline) {
      if (workers) closed.wait_until(deadline);
      else uv_run(loop, UV_RUN_NOWAIT);
    }
    if (closed.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      std::fprintf(stderr, "%s: echoes still unsent after 1 s; exiting without them\n", name);
      return status;  // the handles are still in use: leave them to the exit
    }
  }
  g_echoers.clear();
  return status;
}
