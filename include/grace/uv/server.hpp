#pragma once
// A grace listener served on the application's own libuv loop, with every accepted connection
// tracked, so that a drain knows when the last one has finished and can close what remains.
#include <uv.h>

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "grace/error.hpp"
#include "grace/export.hpp"
#include "grace/listener.hpp"

namespace grace::uv {

class server;

// One accepted client: a uv_tcp_t or uv_pipe_t owned by its server. Read and write through
// stream(); end it with close() (not uv_close), which runs on_closed once the handle is closed,
// then frees the connection.
//
// The handle's `data` field belongs to the application, as in any libuv program; grace finds
// the connection from the handle itself (connection::from). `user_data` is a second slot for
// the application; grace never reads, frees or changes either.
class GRACE_API connection {
 public:
  uv_stream_t* stream() noexcept { return &handle_.handle.stream; }
  // The connection a stream of this server belongs to (in a read or write callback).
  static connection& from(uv_stream_t* stream) noexcept;
  static connection& from(uv_handle_t* handle) noexcept;
  void close();
  bool closing() const noexcept { return closing_; }
  // The server it belongs to; null once that server is gone.
  server* owner() const noexcept { return owner_; }
  void* user_data = nullptr;
  std::function<void(connection&)> on_closed;

 private:
  friend class server;
  // Standard layout with the handle first, so a handle pointer converts back to its slot.
  struct slot {
    uv_any_handle handle;
    connection* self;
  };
  explicit connection(server* owner) : owner_(owner) { handle_.self = this; }
  slot handle_{};
  server* owner_;  // null once the server is gone
  bool closing_ = false;
};

// What a server shows of the listener it serves: a copy, valid whatever happens to the
// listener in its net.
struct listener_info {
  std::string address;  // canonical text, as grace::listener::address()
  std::string name;
  bool inherited = false;
  bool is_unix = false;
};

class GRACE_API server {
 public:
  using accept_callback = std::function<void(connection&)>;

  // Accepts on `l` in `loop`: uv_tcp_t connections for TCP, uv_pipe_t for unix sockets. The
  // server keeps its own duplicate of the fd, so closing the listener in its net (or the net
  // itself) never leaves the server with a dangling socket. The listening socket's backlog is
  // left as it was bound or inherited.
  [[nodiscard]] static result<std::unique_ptr<server>> open(uv_loop_t* loop, const grace::listener& l,
                                                            accept_callback on_accept);
  // Connections still open are closed; their on_closed callbacks are not run.
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  const listener_info& listener() const noexcept { return info_; }
  // Stops accepting: new connections wait in the kernel's accept queue for whoever accepts next.
  void stop_accepting();
  // Accepts again after stop_accepting().
  void resume_accepting();
  // Stops accepting for good and closes the server's own duplicate of the listening socket.
  void close_listening_socket();
  bool accepting() const noexcept { return accepting_; }
  // Thread-safe (a worker's server is counted from the upgrader's loop).
  std::size_t connection_count() const noexcept { return count_.load(); }
  // Closes every open connection; returns how many there were.
  std::size_t close_all_connections();
  // The open connections, in no particular order.
  std::vector<connection*> connections() const;
  // Serves a connection accepted elsewhere (another generation's, handed over): `fd` is a
  // connected socket of this server's kind, owned by the server from now on, even on failure.
  // The accept callback is not run: the caller sets the connection up.
  [[nodiscard]] result<connection*> adopt_connection(int fd);
  // Runs each time the number of connections drops (after a connection is freed).
  std::function<void()> on_connection_closed;

 private:
  friend class connection;
  GRACE_LOCAL server(uv_loop_t* loop, int fd, listener_info info, accept_callback on_accept);
  GRACE_LOCAL void accept_ready();
  GRACE_LOCAL void accept_fd(int fd);
  GRACE_LOCAL connection* open_connection(int fd);
  GRACE_LOCAL void release(connection* c);

  uv_loop_t* loop_;
  int fd_;  // our duplicate of the listening socket
  listener_info info_;
  accept_callback on_accept_;
  uv_poll_t* poll_ = nullptr;   // freed by its close callback
  uv_timer_t* retry_ = nullptr; // after EMFILE: accept again once fds may be free
  bool accepting_ = false;
  std::unordered_set<connection*> connections_;
  std::atomic<std::size_t> count_{0};  // connections_.size()
};

}  // namespace grace::uv
