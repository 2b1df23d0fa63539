#pragma once
// systemd's notification protocol (sd_notify), without libsystemd.
#include <string_view>
#include <vector>

#include "grace/error.hpp"
#include "grace/export.hpp"

namespace grace {

// Sends `state` ("READY=1", "MAINPID=42\nREADY=1", ...) to the NOTIFY_SOCKET this process
// started with (a path, or "@name" for the abstract namespace). Without one there is nobody to
// tell: success. Never blocks: a service manager that is not reading (its queue full) gives
// std::errc::resource_unavailable_try_again, and the caller retries later (grace::uv::upgrader
// coalesces and retries on a timer). The variable stays set for the next generation.
[[nodiscard]] GRACE_API result<void> notify_service_manager(std::string_view state);
// The same with `fds` attached (SCM_RIGHTS), as "FDSTORE=1\nFDNAME=web" wants them: systemd
// keeps them in the service's fd store and passes them back in LISTEN_FDS when it starts the
// service again (FileDescriptorStoreMax= must allow them).
[[nodiscard]] GRACE_API result<void> notify_service_manager(std::string_view state, const std::vector<int>& fds);

// CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it in MONOTONIC_USEC.
GRACE_API unsigned long long monotonic_usec();

}  // namespace grace
