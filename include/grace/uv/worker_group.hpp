#pragma once
// N event loops for one server: a thread per worker, each running its own libuv loop, so that a
// server uses every core. The upgrader serves a listener on a worker (upgrader::serve with a
// worker) and runs the lifecycle on its own loop; connection callbacks run on the worker's thread.
#include <uv.h>

#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "grace/error.hpp"
#include "grace/export.hpp"
#include "grace/net.hpp"

namespace grace::uv {

class GRACE_API worker_group {
 public:
  // Starts `count` threads (1 to 256), each running a loop of its own until the group is
  // destroyed. Errors: count out of range, a loop or thread that cannot be created.
  [[nodiscard]] static result<std::unique_ptr<worker_group>> start(unsigned count);
  // Runs what was posted, closes every handle still open on each loop and joins the threads.
  // Blocks until they are done; destroy the group after whatever serves on it (the upgrader).
  ~worker_group();
  worker_group(const worker_group&) = delete;
  worker_group& operator=(const worker_group&) = delete;

  unsigned size() const noexcept;
  // Worker k's loop: use it only on worker k's thread (from a posted function or a callback).
  uv_loop_t* loop(unsigned k) const noexcept;
  // Runs `fn` on worker k's thread, after what was posted there before. Thread-safe; never
  // blocks on the worker. False when k is out of range or the group is stopping (fn is dropped).
  bool post(unsigned k, std::function<void()> fn);
  // Runs `fn` on worker k's thread and waits for it to return. Blocks: for setting up, before
  // the server runs, or from another thread than worker k's own (that would wait forever: fn
  // then runs at once instead).
  bool run(unsigned k, const std::function<void()>& fn);
  // The worker whose thread calls this, or -1 on any other thread.
  static int current() noexcept;

 private:
  struct GRACE_LOCAL worker;
  GRACE_LOCAL worker_group();
  std::unique_ptr<worker[]> workers_;
  unsigned count_ = 0;
};

// Which worker serves which member of `group` (net::listen_group), as (member, worker) pairs:
// worker k takes member k (modulo the steered members when there are fewer of them than
// workers), and every member no worker took (more steered members than workers, and the
// members past `steered`) goes to the workers in turn, so that every member is served.
GRACE_API std::vector<std::pair<grace::listener*, unsigned>> place_group(const listener_group& group,
                                                                          unsigned workers);

}  // namespace grace::uv
