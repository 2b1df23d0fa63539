#pragma once
// Learning who holds each connection costs a walk through /proc (every fd of every server
// process) and a sock_diag dump. Done on the referee's load loop, it stalls every client for as
// long: answers that arrive meanwhile are timestamped late, and the referee would report latency
// the server did not cause, in the restart windows above all, where it looks most often. So the
// looks run on a thread of their own, and their results come back to the loop.
#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "connection_owners.hpp"

namespace harness {

struct owner_sample {
  std::uint64_t sequence = 0;  // of the latest request this look answers
  std::vector<pid_t> tree;     // the server's processes at the time
  std::map<connection_key, pid_t> owners;
  std::set<pid_t> holders;     // UDP: the processes holding the target's socket
};

class owner_sampler {
 public:
  // The server's processes are `root`'s descendants (and `root` itself when include_root).
  // on_sample runs on `loop`'s thread.
  owner_sampler(uv_loop_t* loop, connection_owners& owners, pid_t root, bool include_root,
                std::function<void(owner_sample)> on_sample);
  ~owner_sampler();
  owner_sampler(const owner_sampler&) = delete;
  owner_sampler& operator=(const owner_sampler&) = delete;

  // Asks for a look, merged with one asked for and not started yet; returns its sequence
  // number. fresh_tree: list the server's processes anew (else at most every 10 ms); recheck:
  // as connection_owners::sample.
  // `ours`: the connections to look up (connection_owners::sample), the latest asked for wins.
  std::uint64_t request(bool fresh_tree, bool recheck, client_ports ours = {});
  // Joins the thread and closes the loop's handle; no sample is delivered afterwards.
  void stop();

 private:
  void run();
  void deliver();

  connection_owners& owners_;
  const pid_t root_;
  const bool include_root_;
  std::function<void(owner_sample)> on_sample_;
  uv_async_t* wake_ = nullptr;  // freed by its close callback
  std::mutex mutex_;
  std::condition_variable asked_;
  bool pending_ = false, fresh_ = false, recheck_ = false, stopping_ = false;
  std::uint64_t requested_ = 0;
  std::optional<owner_sample> latest_;
  client_ports ours_;
  std::thread thread_;
};

}  // namespace harness
