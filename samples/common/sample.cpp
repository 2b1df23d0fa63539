#include "sample.hpp"

namespace sample {

config parse_uv_command_line(int argc, char** argv, const char* name) {
  const command_line line = parse_command_line(argc, argv, name);
  config c;
  c.address = line.address;
  c.upgrade.pidfile = line.pidfile;
  c.upgrade.drain_timeout = line.drain_timeout;
  c.upgrade.ready_timeout = line.ready_timeout;
  c.upgrade.max_generations = line.max_generations;
  c.upgrade.successor_watch = line.successor_watch;
  return c;
}

}  // namespace sample
