// grace-http (and grace-unix, the same protocol on a unix socket): an HTTP/1.1 keep-alive server
// whose answer to GET / names the pid and generation that served it. At a hand-over its idle
// keep-alive connections move to the new generation (with any part of a request already read),
// and each busy one moves as soon as its answer is written: no connection is closed. Should the
// new generation not take connections, it answers the next request on each with
// "Connection: close" and closes after that answer instead, so no client ever sees a reused
// connection closed under its request. See samples/common/sample.hpp for the command line.
#include <signal.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "../common/sample.hpp"
#include "protocol.hpp"

namespace {

struct http_connection {
  std::string input;
  bool close_after_write = false;
  unsigned writes_in_flight = 0;
};

std::atomic<bool> g_draining{false};
std::string g_who;  // the body of GET /: which process and generation answered
bool g_name_worker = false;  // with --workers: and which worker
unsigned g_generation = 0;
grace::uv::upgrader* g_upgrader = nullptr;

const std::string& who() {
  if (!g_name_worker) return g_who;
  thread_local const std::string with_worker =
      sample::who_body(getpid(), g_generation, static_cast<int>(grace::uv::worker_group::current()));
  return with_worker;
}

// Between requests, with nothing being written: it can move to the next generation.
bool idle(const http_connection& st) { return st.writes_in_flight == 0 && !st.close_after_write; }

// At the hand-over, also a connection whose answers are all in its socket, their write
// callbacks still to come on this loop: the client reads them from the socket wherever the
// connection is served next. Under load, most connections are in that state at any moment.
bool answered(grace::uv::connection& c, const http_connection& st) {
  return !st.close_after_write && uv_stream_get_write_queue_size(c.stream()) == 0;
}

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
    if (status < 0 || (st->close_after_write && st->writes_in_flight == 0)) return conn->close();
    // Answered while a newer generation takes connections: it moves there now.
    if (idle(*st) && g_upgrader->can_migrate()) g_upgrader->migrate(*conn, st->input);
  });
}

// Answers every complete request in the buffer (pipelined ones in order); a refused one is
// answered too, and ends the connection after its answer.
void answer_requests(grace::uv::connection& c) {
  auto* state = static_cast<http_connection*>(c.user_data);
  std::string output;
  bool close = false;
  while (!close && http_protocol::answer_one(state->input, output, close, g_draining.load(), who())) {
  }
  state->close_after_write = close;
  if (!output.empty()) send(c, std::move(output));
}

void start_reading(grace::uv::connection& c) {
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

void track(grace::uv::connection& c, std::string input) {
  auto* state = new http_connection;
  state->input = std::move(input);
  c.user_data = state;
  c.on_closed = [](grace::uv::connection& closed) { delete static_cast<http_connection*>(closed.user_data); };
}

void serve_http(grace::uv::connection& c) {
  track(c, {});
  start_reading(c);
}

// What the next generation needs to go on: the part of a request read so far.
std::optional<std::string> export_idle(grace::uv::connection& c) {
  auto* state = static_cast<http_connection*>(c.user_data);
  if (!answered(c, *state)) return std::nullopt;
  uv_read_stop(c.stream());
  return state->input;
}

// A connection from the previous generation (or given back by the next one, which failed).
void import_connection(grace::uv::connection& c, std::string input) {
  if (c.user_data == nullptr) track(c, input);
  else static_cast<http_connection*>(c.user_data)->input = input;
  if (g_upgrader->can_migrate() && g_upgrader->migrate(c, input)) return;  // this one hands over too
  start_reading(c);
  answer_requests(c);
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
  const grace::listener_group sockets = sample::open_listener_group(net, config, name);
  // Declared before the upgrader, which serves on it: it must outlive the upgrader.
  std::unique_ptr<grace::uv::worker_group> workers = sample::start_workers(config, name);
  uv_loop_t* loop = uv_default_loop();
  grace::uv::upgrader upgrader(loop, net, config.upgrade);
  g_generation = upgrader.generation();
  g_who = sample::who_body(getpid(), g_generation);
  g_name_worker = workers != nullptr;
  // Connections that are mid-request or idle keep going; each answers its next request with
  // "Connection: close" and then ends.
  upgrader.on_drain([] { g_draining = true; });
  // The generation it handed over to died while this one drained: this one serves again.
  upgrader.on_resume([] { g_draining = false; });
  g_upgrader = &upgrader;
  if (config.migrate) {
    upgrader.on_export(export_idle);
    upgrader.on_import(import_connection);
  }
  const bool served = workers ? upgrader.serve(sockets, serve_http, *workers).has_value()
                               : sockets.members.size() == 1 && upgrader.serve(sockets.members.front(), serve_http);
  if (!served) {
    std::fprintf(stderr, "%s: cannot serve %s\n", name, sockets.members.front()->address().c_str());
    return 1;
  }
  if (auto ready = upgrader.ready(); !ready) {
    std::fprintf(stderr, "%s: %s\n", name, ready.error().message().c_str());  // the error names its subject
    return 1;
  }
  return upgrader.run();
}
