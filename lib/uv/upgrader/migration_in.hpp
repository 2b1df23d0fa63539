#pragma once
// Connection migration, new side (grace/migration.hpp): when the generation that started this
// one offers its connections, take the channel, say hello, and serve each connection that
// arrives on a server of its address (servers of one address take turns).
#include <uv.h>

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
  void on_parcel(result<parcel> p);

  uv_loop_t* loop_;
  server_set& servers_;
  const migration_hooks& app_;
  hooks hooks_;
  std::unique_ptr<fd_channel> inbound_;
  std::size_t imported_ = 0;
  std::size_t round_robin_ = 0;
  owned_handle<uv_poll_t> parent_poll_;  // last: lets go of the fd first
};

}  // namespace grace::uv::detail
