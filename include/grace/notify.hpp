#pragma once
// systemd's notification protocol (sd_notify), without libsystemd.
#include <string_view>

#include "grace/error.hpp"
#include "grace/export.hpp"

namespace grace {

// Sends `state` ("READY=1", "MAINPID=42\nREADY=1", ...) to the NOTIFY_SOCKET this process
// started with (a path, or "@name" for the abstract namespace). Without one there is nobody to
// tell: success. Never blocks: a service manager that is not reading (its queue full) gives
// std::errc::resource_unavailable_try_again, and the caller retries later (grace::uv::upgrader
// coalesces and retries on a timer). The variable stays set for the next generation.
[[nodiscard]] GRACE_API result<void> notify_service_manager(std::string_view state);

// CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it in MONOTONIC_USEC.
GRACE_API unsigned long long monotonic_usec();

}  // namespace grace
