#pragma once
// The readiness connection a new generation keeps after notify_ready(): notify_retiring() says
// its last word on it, and the connection migration reads the parent's offer from it.
namespace grace::detail {

// -1 before notify_ready() told a parent, and after notify_retiring().
int kept_readiness_fd() noexcept;

}  // namespace grace::detail
