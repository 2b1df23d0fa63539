#pragma once
// What the upgrader keeps while connections move between generations (upgrader_migration.cpp).
#include <sys/types.h>

#include <list>
#include <memory>
#include <string>
#include <vector>

#include "grace/uv/fd_channel.hpp"
#include "grace/uv/server.hpp"
#include "handle.hpp"
#include "upgrader_internals.hpp"

namespace grace::uv::detail {

struct migration_state {
  using moving = handed_connection;
  // Old side: the channel to the generation that took over, usable once its hello arrived.
  std::unique_ptr<fd_channel> outbound;
  bool outbound_ready = false;
  pid_t successor = 0;
  std::vector<moving> queued;                // sent with the next parcel
  std::list<std::vector<moving>> in_flight;  // sent, not confirmed yet
  std::size_t round_robin = 0;               // the next server an imported connection goes to
  // New side: the channel from the previous generation.
  std::unique_ptr<fd_channel> inbound;
  std::size_t imported = 0;
  // Declared last, so that they let go of their fds before the channels close them.
  owned_handle<uv_timer_t> hello_timer;
  owned_handle<uv_timer_t> flush_timer;
  owned_handle<uv_poll_t> parent_poll;
};

}  // namespace grace::uv::detail
