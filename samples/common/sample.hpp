#pragma once
// What the libuv samples share: the command line (command_line.hpp) as upgrader options.
#include <memory>
#include <string>

#include "command_line.hpp"
#include "grace/uv/upgrader.hpp"

namespace sample {

struct config {
  std::string address;
  grace::uv::upgrader_options upgrade;
  bool migrate = true;
  unsigned workers = 0;
  bool reuse_port = false;
};

config parse_uv_command_line(int argc, char** argv, const char* name);
// With --handover-socket: takes the listeners over from the process serving it, if one does
// (before the listeners are opened). Exits (status 1) with the reason when that process refuses.
void take_over_if_asked(grace::net& net, const config& c, const char* name);
// The sockets for c.workers workers (grace::net::listen_group): one shared socket, or with
// --reuse-port one per worker; a unix address has one socket. Exits (status 1) on failure.
grace::listener_group open_listener_group(grace::net& net, const config& c, const char* name);
// With --workers N: N threads with a loop each; null without. Exits (status 1) on failure.
// Declare it before the upgrader that serves on it: it must outlive the upgrader.
std::unique_ptr<grace::uv::worker_group> start_workers(const config& c, const char* name);

}  // namespace sample
