#pragma once
// What the samples share: their command line, opening their listener, their upgrader options.
//
//   NAME ADDRESS [--pidfile FILE] [--drain-timeout SECONDS] [--ready-timeout SECONDS]
//                [--max-generations N]
//   ADDRESS: 127.0.0.1:8080, [::1]:8080, :8080, or unix:/path/to.sock
#include <string>

#include "grace/grace.hpp"
#include "grace/uv/upgrader.hpp"

namespace sample {

struct config {
  std::string address;
  grace::uv::upgrader_options upgrade;
};

// Exits with a usage message (status 2) on a bad command line.
config parse_command_line(int argc, char** argv, const char* name);
// "unix:/path" is a unix socket, anything else TCP. Exits (status 1) with the reason on failure.
grace::listener* open_listener(grace::net& net, const std::string& address, const char* name);

}  // namespace sample
