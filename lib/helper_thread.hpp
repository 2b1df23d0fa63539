#pragma once
#include <functional>

namespace grace::detail {

// Starts `work` on a detached thread with every signal blocked (a signal meant for the process is
// never run on it), placed on a CPU this process may use other than the caller's. Left to the
// scheduler, a new thread often waits behind its creator on the same CPU until the idle one pulls
// it, often longer than the work it was made for. False, with nothing started,
// when this process may use one CPU only or no thread could be started: the caller then does the
// work itself.
bool start_helper_thread(std::function<void()> work);

}  // namespace grace::detail
