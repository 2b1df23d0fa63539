#pragma once
// What the libuv samples share: the command line (command_line.hpp) as upgrader options.
#include <string>

#include "command_line.hpp"
#include "grace/uv/upgrader.hpp"

namespace sample {

struct config {
  std::string address;
  grace::uv::upgrader_options upgrade;
  bool migrate = true;
};

config parse_uv_command_line(int argc, char** argv, const char* name);
// With --handover-socket: takes the listeners over from the process serving it, if one does
// (before the listeners are opened). Exits (status 1) with the reason when that process refuses.
void take_over_if_asked(grace::net& net, const config& c, const char* name);

}  // namespace sample
