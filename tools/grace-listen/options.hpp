#pragma once
// grace-listen's command line.
#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace grace_listen {

struct socket_spec {
  std::string kind;     // "tcp", "unix" or "udp"
  std::string address;  // "127.0.0.1:8080", "/run/app.sock", ":9000"
  std::string name;     // LISTEN_FDNAMES entry
};

struct options {
  std::vector<socket_spec> sockets;
  std::vector<std::string> watch;    // paths whose changes restart the command
  std::vector<std::string> command;  // CMD ARGS
  std::chrono::milliseconds debounce{200};
  // --overlap: start the next generation while the current one serves, and stop the old one
  // only once the new one is ready (else: stop, then start).
  bool overlap = false;
  // A generation is ready when it says READY=1 on its NOTIFY_SOCKET, or this long after it
  // started (--ready-after), for a command that cannot say so.
  std::optional<std::chrono::milliseconds> ready_after;
  std::chrono::milliseconds ready_timeout{60000};
  // A process told to stop (SIGTERM) is killed (SIGKILL) when it has not exited this long after.
  std::chrono::milliseconds stop_timeout{60000};
  unsigned max_generations = 4;  // processes of the command alive at once, draining ones included
  std::string control;           // --control PATH: the reload socket's path (default: @grace-listen-PID)
};

// `grace-listen --reload TARGET`: asks the grace-listen at TARGET (its pid, or its --control
// path) to upgrade, and waits for the outcome.
struct reload_request {
  std::string target;
};

struct command_line {
  std::optional<reload_request> reload;  // set: the reload client, nothing else
  options run;
};

// Exits with a usage message (status 2) on a bad command line, with the help (0) for --help.
command_line parse_command_line(int argc, char** argv);

}  // namespace grace_listen
