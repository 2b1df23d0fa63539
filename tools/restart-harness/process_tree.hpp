#pragma once
// The server's processes as /proc shows them: who descends from whom, and which sockets each
// holds. The referee needs no help from the server to know which process served a connection.
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <set>
#include <vector>

namespace harness {

// When `pid` started, in clock ticks since boot (/proc/PID/stat), 0 if it is gone.
std::uint64_t start_ticks(pid_t pid);
// Now, in the same unit.
std::uint64_t boot_ticks_now();

// Every live process below `root` in the process tree (not `root` itself).
std::vector<pid_t> descendants_of(pid_t root);

// The socket inodes the processes `pids` hold open, mapped to the pid that holds each.
std::map<unsigned long, pid_t> socket_owners(const std::vector<pid_t>& pids);

// The processes holding any of `inodes`, each with the inodes it holds, among every process of
// the machine whose owner is `uid` (any owner when `uid` is -1), this one excepted: a server
// started elsewhere (systemd, a shell) whose generations are not descendants of anything we know.
// One stat per process to skip other users' processes, and the fd list of the rest.
std::map<pid_t, std::set<unsigned long>> holders_anywhere(const std::set<unsigned long>& inodes, long uid);

// The processes among `pids` holding any of `inodes`.
std::set<pid_t> holders_among(const std::vector<pid_t>& pids, const std::set<unsigned long>& inodes);

}  // namespace harness
