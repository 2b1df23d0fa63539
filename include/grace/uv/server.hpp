#pragma once
// A grace listener served on the application's own libuv loop, with every accepted connection
// tracked, so that a drain knows when the last one has finished and can close what remains.
#include <uv.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <system_error>
#include <unordered_set>

#include <tl/expected.hpp>

#include "grace/listener.hpp"

namespace grace::uv {

class server;

// One accepted client: a uv_tcp_t or uv_pipe_t owned by its server. Read and write through
// stream(); end it with close() (not uv_close), which runs on_closed once the handle is closed,
// then frees the connection.
class connection {
 public:
  uv_stream_t* stream() noexcept { return &handle_.stream; }
  void close();
  bool closing() const noexcept { return closing_; }
  void* user_data = nullptr;
  std::function<void(connection&)> on_closed;

 private:
  friend class server;
  explicit connection(server* owner) : owner_(owner) {}
  uv_any_handle handle_{};
  server* owner_;  // null once the server is gone
  bool closing_ = false;
};

class server {
 public:
  using accept_callback = std::function<void(connection&)>;

  // Accepts on `l` in `loop`: uv_tcp_t for TCP, uv_pipe_t for unix sockets. libuv gets its own
  // duplicate of the fd; the listener (and so the net, and start_process) keeps the original.
  static tl::expected<std::unique_ptr<server>, std::error_code> open(uv_loop_t* loop,
                                                                     const grace::listener& l,
                                                                     accept_callback on_accept);
  // Connections still open are closed; their on_closed callbacks are not run.
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // Valid while the listener is open in its net (the upgrader closes it when it stops accepting).
  const grace::listener& listener() const noexcept { return listener_; }
  // Closes the libuv handle: no more accepts here. The socket stays open in the net.
  void stop_accepting();
  bool accepting() const noexcept { return accepting_; }
  std::size_t connection_count() const noexcept { return connections_.size(); }
  // Closes every open connection; returns how many there were.
  std::size_t close_all_connections();
  // Runs each time the number of connections drops (after a connection is freed).
  std::function<void()> on_connection_closed;

 private:
  friend class connection;
  server(uv_loop_t* loop, const grace::listener& l, accept_callback on_accept);
  void accept_one();
  void release(connection* c);

  uv_loop_t* loop_;
  const grace::listener& listener_;
  accept_callback on_accept_;
  uv_any_handle* handle_ = nullptr;  // freed by its close callback
  bool accepting_ = false;
  std::unordered_set<connection*> connections_;
};

}  // namespace grace::uv
