#pragma once
// systemd's notification protocol (sd_notify), without libsystemd.
#include <string_view>
#include <system_error>

#include <tl/expected.hpp>

namespace grace {

// Sends `state` ("READY=1", "MAINPID=42\nREADY=1", ...) to $NOTIFY_SOCKET (a path, or "@name" for
// the abstract namespace). Without NOTIFY_SOCKET there is nobody to tell: success. The variable
// stays set, so that a next generation can notify too (with NotifyAccess=all).
tl::expected<void, std::error_code> notify_service_manager(std::string_view state);

// CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it in MONOTONIC_USEC.
unsigned long long monotonic_usec();

}  // namespace grace
