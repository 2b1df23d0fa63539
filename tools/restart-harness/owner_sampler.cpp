#include "owner_sampler.hpp"

#include <algorithm>

#include "process_tree.hpp"

namespace harness {
namespace {

// Between two looks that nobody waits for: a look walks every fd of every server process, and
// on a small machine a thread doing that without pause takes a core from the server.
constexpr auto look_spacing = std::chrono::milliseconds(10);

}  // namespace

owner_sampler::owner_sampler(uv_loop_t* loop, connection_owners& owners, pid_t root, bool include_root,
                             std::function<void(owner_sample)> on_sample)
    : owners_(owners), root_(root), include_root_(include_root), on_sample_(std::move(on_sample)) {
  wake_ = new uv_async_t{};
  uv_async_init(loop, wake_, [](uv_async_t* a) { static_cast<owner_sampler*>(a->data)->deliver(); });
  wake_->data = this;
  thread_ = std::thread([this] { run(); });
}

owner_sampler::~owner_sampler() { stop(); }

std::uint64_t owner_sampler::request(bool fresh_tree, bool recheck, client_ports ours) {
  std::lock_guard<std::mutex> lock(mutex_);
  ours_ = std::move(ours);
  pending_ = true;
  fresh_ = fresh_ || fresh_tree;
  recheck_ = recheck_ || recheck;
  asked_.notify_one();
  return ++requested_;
}

void owner_sampler::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    asked_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
  if (wake_ != nullptr)
    uv_close(reinterpret_cast<uv_handle_t*>(wake_), [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
  wake_ = nullptr;
}

void owner_sampler::run() {
  std::vector<pid_t> tree;
  std::uint64_t tree_at_us = 0;
  for (;;) {
    bool fresh = false, recheck = false;
    std::uint64_t sequence = 0;
    client_ports ours;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      asked_.wait(lock, [this] { return pending_ || stopping_; });
      // A look asked for with a fresh tree is awaited (a restart waits for it): at once.
      if (!fresh_) asked_.wait_for(lock, look_spacing, [this] { return stopping_ || fresh_; });
      if (stopping_) return;
      fresh = fresh_;
      recheck = recheck_;
      sequence = requested_;
      ours = ours_;
      pending_ = fresh_ = recheck_ = false;
    }
    const std::uint64_t now = now_us();
    if (fresh || now - tree_at_us > 10000) {
      tree = descendants_of(root_);
      if (include_root_) tree.push_back(root_);
      tree_at_us = now;
    }
    owner_sample sample{sequence, tree, {}, {}};
    if (owners_.datagrams()) sample.holders = owners_.datagram_holders(tree);
    else sample.owners = owners_.sample(tree, recheck, ours);
    // Processes found serving outside the tree are the server's too.
    for (pid_t pid : owners_.found_elsewhere())
      if (std::find(sample.tree.begin(), sample.tree.end(), pid) == sample.tree.end()) sample.tree.push_back(pid);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      latest_ = std::move(sample);
    }
    uv_async_send(wake_);
  }
}

void owner_sampler::deliver() {
  std::optional<owner_sample> sample;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    sample.swap(latest_);
  }
  if (sample) on_sample_(std::move(*sample));
}

}  // namespace harness
