#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

#include "environment_protocol.hpp"
#include "failure.hpp"

namespace grace::detail {

struct spawn_request {
  std::string executable;  // absolute path, or one relative to `directory`
  std::vector<std::string> argv;
  std::string directory;
  // Its fds (3, 4, ... in the child) and its environment, as lay_out_child decided them;
  // LISTEN_PID, when wanted, is written here.
  child_layout child;
};

// clone(CLONE_VM | CLONE_VFORK) + exec, safe in a multi-threaded program: everything is
// allocated before the clone, and the child only makes async-signal-safe calls. The child gets
// stdin/stdout/stderr, the layout's fds at 3.., and no other fd. A failing exec is reported here
// (its errno), after the child is reaped.
result<pid_t> spawn_process(const spawn_request& request);

// exec.LookPath: a name with a slash is taken as it is (relative to `directory`); otherwise the
// first executable regular file of that name in PATH.
result<std::string> find_executable(const std::string& name, const std::string& directory);

}  // namespace grace::detail
