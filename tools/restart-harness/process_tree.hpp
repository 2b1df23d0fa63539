#pragma once
// The server's processes as /proc shows them: who descends from whom, and which sockets each
// holds. The referee needs no help from the server to know which process served a connection.
#include <sys/types.h>

#include <map>
#include <vector>

namespace harness {

// Every live process below `root` in the process tree (not `root` itself).
std::vector<pid_t> descendants_of(pid_t root);

// The socket inodes the processes `pids` hold open, mapped to the pid that holds each.
std::map<unsigned long, pid_t> socket_owners(const std::vector<pid_t>& pids);

}  // namespace harness
