#pragma once
// The upgrader's record of what it serves, and of connections migrated on a worker's thread
// (upgrader.cpp, upgrader_migration.cpp).
#include <memory>
#include <string>

#include "grace/owned_fd.hpp"
#include "grace/uv/upgrader.hpp"

namespace grace::uv {

struct upgrader::served {
  std::unique_ptr<server> s;
  worker_group* group = nullptr;  // null: served on the upgrader's own loop
  unsigned worker = 0;
};

// A connection migrate() let go of: a copy of its socket, its bytes, and the server it came from
// (to give it back there).
namespace detail {
struct handed_connection {
  owned_fd fd;
  std::string state;
  server* from = nullptr;
};
}  // namespace detail

}  // namespace grace::uv
