#pragma once
// The load: N libuv clients, each with one request in flight at a time, recording every outcome.
#include <uv.h>

#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <unordered_set>
#include <vector>

#include "connection_owners.hpp"
#include "harness.hpp"

namespace harness {

class client;

class load_generator {
 public:
  load_generator(uv_loop_t* loop, const options& o, run_record& record);
  ~load_generator();
  void start();
  // No new requests; `done` runs once every client's last request has finished.
  void stop(std::function<void()> done);

  std::uint64_t answered() const noexcept { return answered_; }
  std::uint64_t lost() const noexcept { return lost_; }
  // Called for every answer that names the pid that served it.
  std::function<void(pid_t)> on_served_by;
  // udp-session: called for every HELLO answered with SESSION, with the pid it names, before
  // the answer is recorded.
  std::function<void(pid_t)> on_session_opened;
  // Called for every answer on a TCP connection, with the client's local port.
  std::function<void(connection_key)> on_answer_at_port;
  // The process known to hold the server side of the connection at this client port, or 0.
  std::function<pid_t(connection_key)> owner_of_port;
  // Our connection at this client port is gone: what was learnt of it no longer holds.
  std::function<void(connection_key)> on_port_closed;
  // The TCP connections open now, for looking up who holds their server side.
  client_ports live_ports() const;

 private:
  friend class client;
  void record(std::uint64_t start_us, outcome o, pid_t served_by, bool broke_session);
  void client_idle();
  void finish_if_stopped();

  uv_loop_t* loop_;
  const options& options_;
  run_record& record_;
  std::vector<std::unique_ptr<client>> clients_;
  std::mt19937 random_{12345};
  std::string request_;  // the HTTP request every client sends
  bool stopping_ = false;
  std::size_t idle_clients_ = 0;
  std::function<void()> on_stopped_;
  std::uint64_t answered_ = 0, lost_ = 0;
  std::unordered_set<connection_key> live_;       // TCP client ports connected now
  std::optional<grace::socket_address> local_;     // the clients' local address, once known
};

}  // namespace harness
