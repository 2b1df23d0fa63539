// grace-http (and grace-unix, the same protocol on a unix socket): an HTTP/1.1 keep-alive server
// whose answer to GET / names the pid and generation that served it. While draining it answers
// the next request on each connection with "Connection: close" and closes after that answer, so
// no client ever sees a reused connection closed under its request; idle connections are only
// closed at the drain deadline. See samples/common/sample.hpp for the command line.
#include <signal.h>
#include <unistd.h>
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "../common/sample.hpp"
#include "protocol.hpp"

namespace {

struct http_connection {
  std::string input;
  bool close_after_write = false;
  unsigned writes_in_flight = 0;
};

bool g_draining = false;
std::string g_who;  // the body of GET /: which process and generation answered

void send(grace::uv::connection& c, std::string text) {
  auto* state = static_cast<http_connection*>(c.user_data);
  auto* req = new uv_write_t;
  auto* owned = new std::string(std::move(text));
  req->data = owned;
  const uv_buf_t buf = uv_buf_init(owned->data(), static_cast<unsigned>(owned->size()));
  ++state->writes_in_flight;
  uv_write(req, c.stream(), &buf, 1, [](uv_write_t* r, int status) {
    delete static_cast<std::string*>(r->data);
    auto* conn = &grace::uv::connection::from(r->handle);
    delete r;
    auto* st = static_cast<http_connection*>(conn->user_data);
    --st->writes_in_flight;
    if (status < 0 || (st->close_after_write && st->writes_in_flight == 0)) conn->close();
  });
}

// Answers every complete request in the buffer (pipelined ones in order); a refused one is
// answered too, and ends the connection after its answer.
void answer_requests(grace::uv::connection& c) {
  auto* state = static_cast<http_connection*>(c.user_data);
  std::string output;
  bool close = false;
  while (!close && http_protocol::answer_one(state->input, output, close, g_draining, g_who)) {
  }
  state->close_after_write = close;
  if (!output.empty()) send(c, std::move(output));
}

void serve_http(grace::uv::connection& c) {
  c.user_data = new http_connection;
  c.on_closed = [](grace::uv::connection& closed) { delete static_cast<http_connection*>(closed.user_data); };
  uv_read_start(
      c.stream(),
      [](uv_handle_t*, size_t suggested, uv_buf_t* buf) {
        *buf = uv_buf_init(new char[suggested], static_cast<unsigned>(suggested));
      },
      [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
        grace::uv::connection& conn = grace::uv::connection::from(stream);
        auto* state = static_cast<http_connection*>(conn.user_data);
        if (nread > 0 && !state->close_after_write) state->input.append(buf->base, static_cast<size_t>(nread));
        delete[] buf->base;
        if (nread < 0) return conn.close();
        if (nread > 0 && !state->close_after_write) answer_requests(conn);
      });
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
#ifdef GRACE_SAMPLE_UNIX
  const char* name = "grace-unix";
#else
  const char* name = "grace-http";
#endif
  auto config = sample::parse_uv_command_line(argc, argv, name);
#ifdef GRACE_SAMPLE_UNIX
  if (config.address.rfind("unix:", 0) != 0) {
    std::fprintf(stderr, "grace-unix: ADDRESS must be unix:/path, not \"%s\"\n", config.address.c_str());
    return 2;
  }
#endif
  grace::net net;
  sample::take_over_if_asked(net, config, name);
  grace::listener* listener = sample::open_listener(net, config.address, name);
  uv_loop_t* loop = uv_default_loop();
  grace::uv::upgrader upgrader(loop, net, config.upgrade);
  g_who = "pid=" + std::to_string(getpid()) + " generation=" + std::to_string(upgrader.generation()) + "\n";
  // Connections that are mid-request or idle keep going; each answers its next request with
  // "Connection: close" and then ends.
  upgrader.on_drain([] { g_draining = true; });
  // The generation it handed over to died while this one drained: this one serves again.
  upgrader.on_resume([] { g_draining = false; });
  if (!upgrader.serve(listener, serve_http)) {
    std::fprintf(stderr, "%s: cannot serve %s\n", name, listener->address().c_str());
    return 1;
  }
  if (auto ready = upgrader.ready(); !ready) {
    std::fprintf(stderr, "%s: cannot report readiness: %s\n", name, ready.error().message().c_str());
    return 1;
  }
  return upgrader.run();
}
