#pragma once
// grace-listen's command line.
#include <chrono>
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
};

// Exits with a usage message (status 2) on a bad command line, with the help (0) for --help.
options parse_options(int argc, char** argv);

}  // namespace grace_listen
