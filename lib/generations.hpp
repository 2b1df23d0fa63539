#pragma once
// Which older generations are still alive (draining), passed explicitly from parent to child in
// GRACE_ANCESTORS — never guessed from getppid(), which is pid 1 once the parent of a second
// upgrade has exited (gracehttp's bug). The start time guards against a pid that was reused.
#include <sys/types.h>

#include <vector>

#include "failure.hpp"

namespace grace::detail {

struct process_identity {
  pid_t pid = 0;
  unsigned long long start_time = 0;  // field 22 of /proc/PID/stat
};

// Identity of a running process; start_time 0 when it is gone or a zombie. Reads /proc.
process_identity identify(pid_t pid);
bool still_running(const process_identity& p);
// This process's identity, read once per process (a child of fork() reads its own).
process_identity self_identity();
// True when `pid` no longer runs: gone, or a zombie nobody has reaped yet.
bool process_has_exited(pid_t pid);
// Those of `recorded` that still run (same pid, same start time), in their order.
std::vector<process_identity> still_running(const std::vector<process_identity>& recorded);

// The admission rule for a next generation, for pending_child::start and a takeover alike. Of
// `recorded` (this process's older generations, oldest first) those still running, then this
// process: what the next generation is told in GRACE_ANCESTORS. Refused
// (errc::too_many_generations, naming the older ones still draining) when the next generation
// would make more than `max_generations` processes alive at once. One /proc read per older
// process; this one's identity is read once (self_identity()).
result<std::vector<process_identity>> admit_next_generation(const std::vector<process_identity>& recorded,
                                                            unsigned max_generations);

}  // namespace grace::detail
