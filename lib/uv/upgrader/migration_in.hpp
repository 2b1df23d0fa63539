#pragma once
// Connection migration, new side (grace/migration.hpp): when the generation that started this
// one offers its connections, take the channel, say hello, and serve each connection that
// arrives on a server of its address (servers of one address take turns).
#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "../handle.hpp"
#include "grace/uv/fd_channel.hpp"
#include "migration_out.hpp"
#include "server_set.hpp"

namespace grace::uv::detail {

class migration_in {
 public:
  struct hooks {
    std::function<void(const std::string&)> warn;
    std::function<void(const std::string&)> progress;  // "took N connection(s) from the previous generation"
    // The previous generation's flow channel (grace/flows.hpp), or why it will not come; unset:
    // flows are not taken.
    std::function<void(result<int>)> flow_channel;
  };
  migration_in(uv_loop_t* loop, server_set& servers, const migration_hooks& app, hooks h)
      : loop_(loop), servers_(servers), app_(app), hooks_(std::move(h)) {}
  migration_in(const migration_in&) = delete;
  migration_in& operator=(const migration_in&) = delete;

  // After telling the parent this generation is ready: wait for its offer.
  void watch_parent();
  // Before notify_retiring() closes the fd the offer would come on.
  void stop_watching_parent() { parent_poll_.reset(); }
  // This process exits.
  void close();

 private:
  void on_offer();
  void take_connection_offer();
  void on_parcel(result<parcel> p);

  uv_loop_t* loop_;
  server_set& servers_;
  const migration_hooks& app_;
  hooks hooks_;
  std::unique_ptr<fd_channel> inbound_;
  std::size_t imported_ = 0;
  // Where the time goes, said when the channel closes.
  std::chrono::steady_clock::time_point hello_at_{}, last_parcel_at_{};
  std::size_t parcels_ = 0;
  std::int64_t adopting_ns_ = 0;
  std::size_t round_robin_ = 0;
  bool expect_connections_ = false, expect_flows_ = false;
  owned_handle<uv_poll_t> parent_poll_;  // last: lets go of the fd first
};

}  // namespace grace::uv::detail
