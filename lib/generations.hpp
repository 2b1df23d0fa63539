#pragma once
// Which older generations are still alive (draining), passed explicitly from parent to child in
// GRACE_ANCESTORS — never guessed from getppid(), which is pid 1 once the parent of a second
// upgrade has exited (gracehttp's bug). The start time guards against a pid that was reused.
#include <sys/types.h>

namespace grace::detail {

struct process_identity {
  pid_t pid = 0;
  unsigned long long start_time = 0;  // field 22 of /proc/PID/stat
};

// Identity of a running process; start_time 0 when it is gone or a zombie. Reads /proc.
process_identity identify(pid_t pid);
bool still_running(const process_identity& p);
// True when `pid` no longer runs: gone, or a zombie nobody has reaped yet.
bool process_has_exited(pid_t pid);

}  // namespace grace::detail
