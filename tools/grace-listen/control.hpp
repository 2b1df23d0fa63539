#pragma once
// "Reload and wait": `grace-listen --reload PID|PATH` connects to a running grace-listen's control
// socket (abstract @grace-listen-PID by default, or the path given with --control), asks for an
// upgrade, and waits for the answer: "ok: ..." once the new generation serves (exit 0), or
// "failed: ..." when it was refused or rolled back (exit 1). Both ends check the other: the
// server answers only its own user (or root), and the client talking to a pid checks that the
// process answering is that pid.
#include <sys/types.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <string>

namespace grace_listen {

class control_server {
 public:
  // Called for each request; the request's answer goes through answer(id, ok, line).
  using on_request = std::function<void(unsigned id)>;
  control_server(uv_loop_t* loop, on_request request);
  ~control_server();
  control_server(const control_server&) = delete;
  control_server& operator=(const control_server&) = delete;

  // Listens at `path` (a file path) or, when empty, at abstract @grace-listen-<pid>. Returns an
  // error message, or empty.
  std::string open(const std::string& path);
  const std::string& address() const noexcept { return address_; }
  // Answers request `id` with one line and hangs up; nothing when its client went away.
  void answer(unsigned id, bool ok, const std::string& line);

 private:
  struct client;
  void on_connection();
  void on_read(client* c, ssize_t n, const uv_buf_t* buf);
  void drop(client* c);
  uv_loop_t* loop_;
  on_request request_;
  uv_pipe_t* listener_ = nullptr;
  std::string address_, file_;
  unsigned next_id_ = 1;
  struct clients;
  std::unique_ptr<clients> clients_;
};

// The client: returns the exit status (0 served, 1 refused or rolled back, 2 cannot reach it).
int reload_and_wait(const std::string& target);

}  // namespace grace_listen
