#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "grace/error.hpp"

namespace grace::detail {

// notify_service_manager() to `path` (a path or "@name"; empty: nobody to tell, success). For a
// thread that may still run while the process exits: it keeps its own copy of NOTIFY_SOCKET
// instead of reading the start-up state, which static destruction may already have freed.
[[nodiscard]] result<void> notify_socket_send(const std::string& path, std::string_view state,
                                              const std::vector<int>& fds);

}  // namespace grace::detail
