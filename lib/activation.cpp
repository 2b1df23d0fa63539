#include "grace/activation.hpp"

#include <fcntl.h>
#include <unistd.h>

#include "environment_protocol.hpp"
#include "failure.hpp"
#include "printable.hpp"
#include "spawn.hpp"
#include "startup_state.hpp"

namespace grace {

result<owned_fd> duplicate_inheritable(int fd) {
  // F_DUPFD leaves FD_CLOEXEC off the new descriptor, whatever the original has.
  const int copy = fcntl(fd, F_DUPFD, 3);
  if (copy < 0) return detail::fail_errno(errno, "duplicate fd " + std::to_string(fd));
  return owned_fd(copy);
}

result<pid_t> run_with_sockets(const activation_options& options) {
  if (options.argv.empty() || options.argv.front().empty())
    return detail::fail(errc::invalid_argument, "run with sockets: no program");
  const std::string what = "run " + detail::quoted(options.argv.front());
  detail::child_request child;
  for (const auto& s : options.sockets) {
    if (!detail::valid_fd_name(s.name))
      return detail::fail(errc::invalid_listener_name,
                          what + ": socket name " + detail::quoted(s.name) +
                              " must be at most 255 printable characters without ':' or blanks");
    if (fcntl(s.fd, F_GETFD) < 0) return detail::fail_errno(errno, what + ": socket fd " + std::to_string(s.fd));
    child.listeners.push_back({s.fd, s.name.empty() ? "unknown" : s.name, 0});
  }
  for (const auto& entry : options.extra_env)
    if (auto ok = detail::check_entry(entry); !ok)
      return detail::fail(ok.error().code(), what + ": extra_env: " + ok.error().message());
  const std::string directory = options.directory.empty() ? detail::startup_cwd() : options.directory;
  auto executable = detail::find_executable(options.argv.front(), directory);
  if (!executable) return detail::fail(executable.error().code(), what + ": " + executable.error().message());
  detail::spawn_request request;
  request.executable = *executable;
  request.argv = options.argv;
  request.directory = options.directory;
  child.extra_env = options.extra_env;
  request.child = detail::lay_out_child(detail::current_environment(), child);
  auto pid = detail::spawn_process(request);
  if (!pid) return detail::fail(pid.error().code(), what + ": " + pid.error().message());
  return *pid;
}

}  // namespace grace
