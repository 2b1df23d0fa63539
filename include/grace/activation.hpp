#pragma once
// Handing sockets to a program this process starts itself: the Linux half of .NET's
// Socket.DuplicateSocket, and systemd's socket activation for any program.
//
// Beware the leak the .NET proposal names: an inheritable fd is inherited by *every* program
// this process starts until it is closed, not only by the one it was meant for, and keeps the
// socket (and its port) alive in all of them. Close the duplicate as soon as the child has
// started, and prefer run_with_sockets(), which never makes an fd of this process inheritable.
#include <sys/types.h>

#include <string>
#include <vector>

#include "grace/error.hpp"
#include "grace/export.hpp"
#include "grace/owned_fd.hpp"

namespace grace {

// A duplicate of `fd` without close-on-exec, for a child started by other means (fork+exec,
// posix_spawn, a library): the child finds the same socket at the duplicate's number. The
// original keeps its flags.
[[nodiscard]] GRACE_API result<owned_fd> duplicate_inheritable(int fd);

struct activated_socket {
  int fd = -1;
  std::string name;  // LISTEN_FDNAMES entry: at most 255 printable bytes, no ':' or blank; empty: "unknown"
};

struct activation_options {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH unless it holds a '/'
  std::vector<activated_socket> sockets;  // at fds 3.. in this order
  std::vector<std::string> extra_env;     // "NAME=VALUE", added to (or replacing) this environment
  std::string directory;                  // where it runs; empty: here
};

// Starts argv with `sockets` at fds 3.. and LISTEN_FDS, LISTEN_PID (its own pid) and
// LISTEN_FDNAMES, systemd's socket-activation protocol, so any socket-activatable server takes
// them. Nothing else of this process is inherited beyond stdin, stdout and stderr, and this
// process's fds stay close-on-exec. Returns the child's pid (the caller reaps it); a program
// that cannot be executed is an error here, never a child that dies at once.
[[nodiscard]] GRACE_API result<pid_t> run_with_sockets(const activation_options& options);

}  // namespace grace
