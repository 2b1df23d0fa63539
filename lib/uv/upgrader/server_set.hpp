#pragma once
// The servers of one generation: on the upgrader's loop or on worker loops, each reached on its
// own loop's thread; the listeners they serve; and whether any of them still has connections
// or work posted to it. Workers wake the upgrader's loop (a connection closed, a task ran).
#include <uv.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../handle.hpp"
#include "grace/uv/server.hpp"
#include "grace/uv/worker_group.hpp"

namespace grace::uv::detail {

class server_set {
 public:
  struct hooks {
    std::function<void()> closed;  // a connection of a server on this loop closed
    std::function<void()> woken;   // on this loop, after a worker woke it
  };
  server_set(uv_loop_t* loop, hooks h);
  ~server_set();
  // Servers on workers are destroyed on their own threads, after whatever was posted to them
  // (work that may reach the other parts): the owner calls this before it lets go of them.
  void release_workers();
  server_set(const server_set&) = delete;
  server_set& operator=(const server_set&) = delete;
  // Whether the wake-up handle could be made; an error names it.
  result<void> status() const;

  // `stopped`: the server starts without accepting (this generation drains).
  [[nodiscard]] result<server*> serve(grace::listener* l, server::accept_callback on_accept, bool stopped);
  [[nodiscard]] result<server*> serve(grace::listener* l, server::accept_callback on_accept, worker_group& workers,
                                      unsigned worker, bool stopped);
  // The loop stays alive while this process serves on workers.
  void serving_elsewhere();
  void wake() noexcept;  // any thread

  // Runs fn on the thread of the loop `s` is served on: here at once, or posted to its worker.
  // False when `s` is not one of these servers (any more).
  bool on_loop_of(const server* s, std::function<void(server&)> fn);
  // fn for every server, each on its own loop.
  void each(const std::function<void(server&)>& fn);
  // Idempotent: a hand-over stops accepting once, however many steps ask.
  void stop_accepting();
  void resume_accepting();
  // Stopping for good: every server closes its duplicate of the listening socket.
  void close_listening_sockets();
  // Closes every connection (each on its loop); how many were open.
  std::size_t close_all_connections();

  // Thread-safe.
  std::size_t connection_count() const noexcept;
  // Work posted to workers that has not run yet.
  bool workers_busy() const noexcept { return worker_tasks_.load() != 0; }
  // Distinct worker loops serving (0: this loop only).
  std::size_t worker_count() const;
  // The listeners served, in the order they were first served.
  const std::vector<grace::listener*>& listeners() const noexcept { return listeners_; }
  std::vector<grace::listener*> take_listeners() { return std::exchange(listeners_, {}); }
  // The servers of `address`; failing that, those of the same kind (unix or TCP).
  std::vector<const server*> servers_for(const std::string& address, bool is_unix) const;
  std::size_t size() const noexcept { return servers_.size(); }

 private:
  struct served {
    std::unique_ptr<server> s;
    worker_group* group = nullptr;  // null: served on this loop
    unsigned worker = 0;
  };
  served* find(const server* s);
  void post(served& each, std::function<void(server&)> fn);
  server* add(std::unique_ptr<server> s, worker_group* group, unsigned worker, grace::listener* l);

  uv_loop_t* loop_;
  hooks hooks_;
  std::vector<served> servers_;
  std::vector<grace::listener*> listeners_;
  std::atomic<int> worker_tasks_{0};
  bool accepting_ = true;
  int wake_status_ = 0;
  owned_handle<uv_async_t> wake_;
};

}  // namespace grace::uv::detail
