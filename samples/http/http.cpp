// grace-http (and grace-unix, the same protocol on a unix socket): an HTTP/1.1 keep-alive server
// whose answer to GET / names the pid and generation that served it. While draining it answers
// the next request on each connection with "Connection: close" and closes after that answer, so
// no client ever sees a reused connection closed under its request; idle connections are only
// closed at the drain deadline. See samples/common/sample.hpp for the command line.
#include <signal.h>
#include <strings.h>
#include <unistd.h>
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "../common/sample.hpp"

namespace {

struct http_connection {
  std::string input;
  bool close_after_write = false;
  unsigned writes_in_flight = 0;
};

bool g_draining = false;
unsigned g_generation = 1;

std::string_view header_value(std::string_view head, std::string_view name) {
  std::size_t at = head.find("\r\n");
  while (at != std::string_view::npos && at + 2 < head.size()) {
    const std::size_t start = at + 2;
    const std::size_t end = head.find("\r\n", start);
    const std::string_view line = head.substr(start, end - start);
    const std::size_t colon = line.find(':');
    if (colon == name.size() && strncasecmp(line.data(), name.data(), name.size()) == 0) {
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      return value;
    }
    at = end;
  }
  return {};
}

std::string response_for(std::string_view request_line, bool close) {
  const bool root = request_line.rfind("GET / ", 0) == 0 || request_line.rfind("HEAD / ", 0) == 0;
  const std::string body = root ? "pid=" + std::to_string(getpid()) + " generation=" +
                                      std::to_string(g_generation) + "\n"
                                : "not found\n";
  std::string out = root ? "HTTP/1.1 200 OK\r\n" : "HTTP/1.1 404 Not Found\r\n";
  out += "Content-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  out += close ? "Connection: close\r\n\r\n" : "Connection: keep-alive\r\n\r\n";
  if (request_line.rfind("HEAD ", 0) != 0) out += body;
  return out;
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
    auto* conn = static_cast<grace::uv::connection*>(r->handle->data);
    delete r;
    auto* st = static_cast<http_connection*>(conn->user_data);
    --st->writes_in_flight;
    if (status < 0 || (st->close_after_write && st->writes_in_flight == 0)) conn->close();
  });
}

// Answers every complete request in the buffer; returns false on a malformed one.
bool answer_requests(grace::uv::connection& c) {
  auto* state = static_cast<http_connection*>(c.user_data);
  while (!state->close_after_write) {
    const std::size_t head_end = state->input.find("\r\n\r\n");
    if (head_end == std::string::npos) return state->input.size() < 64 * 1024;
    const std::string_view head(state->input.data(), head_end + 2);
    const std::string_view length = header_value(head, "Content-Length");
    const std::size_t body = length.empty() ? 0 : std::strtoul(std::string(length).c_str(), nullptr, 10);
    if (state->input.size() < head_end + 4 + body) return true;  // the body is still coming
    const std::string_view request_line = head.substr(0, head.find("\r\n"));
    const bool http10 = request_line.size() >= 8 && request_line.substr(request_line.size() - 8) == "HTTP/1.0";
    const std::string_view connection = header_value(head, "Connection");
    const bool client_closes = http10 ? connection.empty() || strncasecmp(connection.data(), "keep-alive", 10) != 0
                                      : (!connection.empty() && strncasecmp(connection.data(), "close", 5) == 0);
    const bool close = client_closes || g_draining;
    state->close_after_write = close;
    send(c, response_for(request_line, close));
    state->input.erase(0, head_end + 4 + body);
  }
  return true;
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
        auto* c = static_cast<grace::uv::connection*>(stream->data);
        auto* state = static_cast<http_connection*>(c->user_data);
        if (nread > 0 && !state->close_after_write) state->input.append(buf->base, static_cast<size_t>(nread));
        delete[] buf->base;
        if (nread < 0 || (nread > 0 && !answer_requests(*c))) c->close();
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
  auto config = sample::parse_command_line(argc, argv, name);
#ifdef GRACE_SAMPLE_UNIX
  if (config.address.rfind("unix:", 0) != 0) {
    std::fprintf(stderr, "grace-unix: ADDRESS must be unix:/path, not \"%s\"\n", config.address.c_str());
    return 2;
  }
#endif
  grace::net net;
  grace::listener* listener = sample::open_listener(net, config.address, name);
  uv_loop_t* loop = uv_default_loop();
  grace::uv::upgrader upgrader(loop, net, config.upgrade);
  g_generation = upgrader.generation();
  // Connections that are mid-request or idle keep going; each answers its next request with
  // "Connection: close" and then ends.
  upgrader.on_drain([] { g_draining = true; });
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
