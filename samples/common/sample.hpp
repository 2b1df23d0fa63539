#pragma once
// What the libuv samples share: the command line (command_line.hpp) as upgrader options.
#include <string>

#include "command_line.hpp"
#include "grace/uv/upgrader.hpp"

namespace sample {

struct config {
  std::string address;
  grace::uv::upgrader_options upgrade;
};

config parse_uv_command_line(int argc, char** argv, const char* name);

}  // namespace sample
