// grace-echo: a TCP (or unix socket) echo server on libuv that is upgraded without losing a
// byte. At a hand-over every connection moves to the new generation between two messages (a
// connection with an echo still being written moves once it is written), so no connection is
// ever closed by an upgrade. See samples/common/sample.hpp for the command line.
#include <signal.h>
#include <uv.h>

#include <cstdio>
#include <optional>
#include <string>

#include "../common/sample.hpp"

namespace {

grace::uv::upgrader* g_upgrader = nullptr;

struct echo_connection {
  unsigned writes_in_flight = 0;  // echoes being written
};

unsigned& writes_in_flight(grace::uv::connection& c) { return static_cast<echo_connection*>(c.user_data)->writes_in_flight; }

void start_echoing(grace::uv::connection& c) {
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
        ++writes_in_flight(conn);
        const uv_buf_t out = uv_buf_init(buf->base, static_cast<unsigned>(nread));
        uv_write(req, stream, &out, 1, [](uv_write_t* r, int status) {
          delete[] static_cast<char*>(r->data);
          auto& written = grace::uv::connection::from(r->handle);
          delete r;
          --writes_in_flight(written);
          if (status < 0) return written.close();
          // Echoed while a newer generation takes connections: it moves there now.
          if (writes_in_flight(written) == 0 && g_upgrader->can_migrate()) g_upgrader->migrate(written, {});
        });
      });
}

void track(grace::uv::connection& c) {
  if (c.user_data != nullptr) return;
  c.user_data = new echo_connection;
  c.on_closed = [](grace::uv::connection& closed) { delete static_cast<echo_connection*>(closed.user_data); };
}

void echo_back(grace::uv::connection& c) {
  track(c);
  start_echoing(c);
}

// An echo connection carries no state between messages: idle is "nothing being written".
std::optional<std::string> export_idle(grace::uv::connection& c) {
  if (writes_in_flight(c) != 0) return std::nullopt;
  uv_read_stop(c.stream());
  return std::string();
}

void import_connection(grace::uv::connection& c, std::string) {
  track(c);
  if (g_upgrader->can_migrate() && g_upgrader->migrate(c, {})) return;
  start_echoing(c);
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  auto config = sample::parse_uv_command_line(argc, argv, "grace-echo");
  if (config.workers > 0) {
    std::fprintf(stderr, "grace-echo: --workers is for grace-http and grace-udp-echo\n");
    return 2;
  }
  grace::net net;
  sample::take_over_if_asked(net, config, "grace-echo");
  grace::listener* listener = sample::open_listener(net, config.address, "grace-echo");
  uv_loop_t* loop = uv_default_loop();
  grace::uv::upgrader upgrader(loop, net, config.upgrade);
  g_upgrader = &upgrader;
  if (config.migrate) {
    upgrader.on_export(export_idle);
    upgrader.on_import(import_connection);
  }
  // A connection that cannot move (the new generation does not take connections) has no natural
  // end: the drain waits for its client to hang up, then the deadline closes it.
  if (!upgrader.serve(listener, echo_back)) {
    std::fprintf(stderr, "grace-echo: cannot serve %s\n", listener->address().c_str());
    return 1;
  }
  if (auto ready = upgrader.ready(); !ready) {
    std::fprintf(stderr, "grace-echo: %s\n", ready.error().message().c_str());  // the error names its subject
    return 1;
  }
  return upgrader.run();
}
