#pragma once
// The command line every sample shares, and opening its listener; grace's core only, so the
// samples on other event loops use it too.
//
//   NAME ADDRESS [--pidfile FILE] [--drain-timeout SECONDS] [--ready-timeout SECONDS]
//                [--max-generations N] [--successor-watch SECONDS] [--handover-socket PATH]
//                [--no-migrate] [--fd-store] [--workers N] [--reuse-port]
//   ADDRESS: 127.0.0.1:8080, [::1]:8080, :8080, or unix:/path/to.sock
#include <chrono>
#include <string>
#include <sys/types.h>

#include "grace/grace.hpp"

namespace sample {

struct command_line {
  std::string address;
  std::string pidfile;
  std::chrono::milliseconds drain_timeout{30000};
  std::chrono::milliseconds ready_timeout{60000};
  unsigned max_generations = 4;
  std::chrono::milliseconds successor_watch{0};
  std::string handover_socket;  // libuv samples only
  bool migrate = true;          // libuv samples only: move idle connections at a hand-over
  bool fd_store = false;        // libuv samples only: keep the listeners in systemd's fd store
  unsigned workers = 0;         // grace-http, grace-udp-echo: 0 serves on the main loop alone
  bool reuse_port = false;      // with workers: a socket per worker (SO_REUSEPORT), not one shared
};

// The body of GET / in the HTTP samples: "pid=P generation=G" (and " worker=K" with --workers),
// padded with spaces before its newline to one length (48 bytes) whatever the numbers: load tools
// such as ab count an answer whose length differs from the first one's as a failed request.
std::string who_body(pid_t pid, unsigned generation, int worker = -1);

// Exits with a usage message (status 2) on a bad command line, with the help (0) for --help,
// with "NAME (grace) VERSION" (0) for --version.
command_line parse_command_line(int argc, char** argv, const char* name);
// For samples without grace's libuv upgrader: exits (status 2) when the command line asks for
// what only the upgrader does (--handover-socket, --fd-store, --no-migrate, --workers).
void refuse_upgrader_options(const command_line& c, const char* name);
// For samples without worker groups: exits (status 2) when the command line asks for them.
void refuse_workers(const command_line& c, const char* name);
// "unix:/path" is a unix socket, anything else TCP. Exits (status 1) with the reason on failure.
grace::listener* open_listener(grace::net& net, const std::string& address, const char* name);

}  // namespace sample
