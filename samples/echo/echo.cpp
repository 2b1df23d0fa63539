// grace-echo: a TCP (or unix socket) echo server on libuv that survives restarts.
//
//   grace-echo 127.0.0.1:8080 | [::1]:8080 | :8080 | unix:/path [--pidfile FILE] [--drain-timeout S]
//
// SIGUSR2 re-executes the binary with the listening socket (grace::net::start_process); this
// process then stops accepting, finishes the connections it has, and exits. Connections that
// arrive meanwhile wait in the kernel's accept queue, which never closes. SIGTERM/SIGINT stop
// accepting and drain the same way.
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <uv.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "grace/grace.hpp"

namespace {

struct server_state {
  grace::net net;
  grace::listener* listener = nullptr;
  uv_loop_t* loop = nullptr;
  uv_stream_t* server = nullptr;
  uv_signal_t on_usr2{}, on_term{}, on_int{};
  uv_timer_t drain_deadline{};
  int connections = 0;
  bool draining = false;
  double drain_timeout_s = 30;
  std::string pidfile;
};

server_state state;

void log_line(const std::string& text) {
  const std::string line = "grace-echo[" + std::to_string(getpid()) + "]: " + text + "\n";
  ssize_t ignored = write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

void write_pidfile() {
  if (state.pidfile.empty()) return;
  const std::string temp = state.pidfile + ".tmp." + std::to_string(getpid());
  FILE* f = std::fopen(temp.c_str(), "w");
  if (f == nullptr) return log_line("cannot write pid file " + temp + ": " + std::strerror(errno));
  std::fprintf(f, "%d\n", getpid());
  std::fclose(f);
  if (std::rename(temp.c_str(), state.pidfile.c_str()) != 0)
    log_line("cannot rename pid file to " + state.pidfile + ": " + std::strerror(errno));
}

void stop_everything() {
  uv_walk(state.loop, [](uv_handle_t* h, void*) { if (!uv_is_closing(h)) uv_close(h, nullptr); },
          nullptr);
}

void finish_if_drained() {
  if (state.draining && state.connections == 0) {
    log_line("drained, exiting");
    stop_everything();
  }
}

void on_connection_closed(uv_handle_t* handle) {
  delete reinterpret_cast<uv_any_handle*>(handle);
  --state.connections;
  finish_if_drained();
}

void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  if (nread > 0) {
    auto* req = new uv_write_t;
    req->data = buf->base;
    const uv_buf_t out = uv_buf_init(buf->base, static_cast<unsigned>(nread));
    uv_write(req, stream, &out, 1, [](uv_write_t* r, int) {
      delete[] static_cast<char*>(r->data);
      delete r;
    });
    return;
  }
  delete[] buf->base;
  if (nread < 0 && !uv_is_closing(reinterpret_cast<uv_handle_t*>(stream)))
    uv_close(reinterpret_cast<uv_handle_t*>(stream), on_connection_closed);
}

void on_new_connection(uv_stream_t* server, int status) {
  if (status < 0) return log_line(std::string("accept failed: ") + uv_strerror(status));
  // One allocation type for TCP and pipe clients, so that closing frees what was allocated.
  auto* handle = new uv_any_handle;
  if (server->type == UV_TCP) uv_tcp_init(state.loop, &handle->tcp);
  else uv_pipe_init(state.loop, &handle->pipe, 0);
  auto* client = reinterpret_cast<uv_stream_t*>(handle);
  ++state.connections;
  if (uv_accept(server, client) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(client), on_connection_closed);
    return;
  }
  uv_read_start(
      client,
      [](uv_handle_t*, size_t suggested, uv_buf_t* buf) {
        *buf = uv_buf_init(new char[suggested], static_cast<unsigned>(suggested));
      },
      on_read);
}

void stop_accepting_and_drain(const std::string& why) {
  if (state.draining) return;
  state.draining = true;
  log_line(why + ": stopped accepting, draining " + std::to_string(state.connections) +
           " connection(s)");
  uv_close(reinterpret_cast<uv_handle_t*>(state.server), nullptr);
  state.net.close(state.listener);
  uv_timer_start(&state.drain_deadline,
                 [](uv_timer_t*) {
                   log_line("drain deadline: closing " + std::to_string(state.connections) +
                            " connection(s) still open");
                   stop_everything();
                 },
                 static_cast<uint64_t>(state.drain_timeout_s * 1000), 0);
  finish_if_drained();
}

void on_usr2(uv_signal_t*, int) {
  if (state.draining) return log_line("SIGUSR2 ignored: already handing over");
  auto child = state.net.start_process();
  if (!child) return log_line("restart failed, still serving: " + state.net.last_error());
  log_line("started pid " + std::to_string(*child));
  stop_accepting_and_drain("handed over to pid " + std::to_string(*child));
}

void on_terminate(uv_signal_t*, int signum) {
  if (state.draining && signum == SIGTERM) {
    log_line("second SIGTERM: exiting now");
    std::exit(0);
  }
  stop_accepting_and_drain(std::string("got ") + strsignal(signum));
}

int usage(const char* why) {
  std::fprintf(stderr,
               "grace-echo: %s\nusage: grace-echo ADDRESS [--pidfile FILE] [--drain-timeout S]\n"
               "  ADDRESS: 127.0.0.1:8080, [::1]:8080, :8080 or unix:/path/to.sock\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string address;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--pidfile" && i + 1 < argc) state.pidfile = argv[++i];
    else if (arg == "--drain-timeout" && i + 1 < argc) state.drain_timeout_s = std::atof(argv[++i]);
    else if (!arg.empty() && arg[0] != '-' && address.empty()) address = arg;
    else return usage(("unexpected argument " + arg).c_str());
  }
  if (address.empty()) return usage("missing ADDRESS");
  signal(SIGPIPE, SIG_IGN);

  const bool is_unix = address.rfind("unix:", 0) == 0;
  auto listened = is_unix ? state.net.listen_unix("unix", address.substr(5))
                          : state.net.listen_tcp("tcp", address);
  if (!listened) {
    log_line("cannot listen on " + address + ": " + state.net.last_error());
    return 1;
  }
  state.listener = *listened;
  state.loop = uv_default_loop();
  // libuv closes the fd it is given; the net keeps its own for start_process.
  const int fd = fcntl(state.listener->fd(), F_DUPFD_CLOEXEC, 3);
  if (is_unix) {
    auto* pipe = new uv_pipe_t;
    uv_pipe_init(state.loop, pipe, 0);
    uv_pipe_open(pipe, fd);
    state.server = reinterpret_cast<uv_stream_t*>(pipe);
  } else {
    auto* tcp = new uv_tcp_t;
    uv_tcp_init(state.loop, tcp);
    uv_tcp_open(tcp, fd);
    state.server = reinterpret_cast<uv_stream_t*>(tcp);
  }
  if (const int rc = uv_listen(state.server, SOMAXCONN, on_new_connection); rc != 0) {
    log_line(std::string("uv_listen: ") + uv_strerror(rc));
    return 1;
  }
  write_pidfile();  // before the log line, which tells watchers that everything is in place
  log_line("serving " + state.listener->address() +
           (state.listener->inherited() ? " (inherited, name " + state.listener->name() + ")"
                                        : " (new socket)"));

  uv_timer_init(state.loop, &state.drain_deadline);
  uv_signal_init(state.loop, &state.on_usr2);
  uv_signal_start(&state.on_usr2, on_usr2, SIGUSR2);
  uv_signal_init(state.loop, &state.on_term);
  uv_signal_start(&state.on_term, on_terminate, SIGTERM);
  uv_signal_init(state.loop, &state.on_int);
  uv_signal_start(&state.on_int, on_terminate, SIGINT);
  uv_run(state.loop, UV_RUN_DEFAULT);
  return 0;
}
