#include "sample.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

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
  c.upgrade.handover_socket = line.handover_socket;
  c.migrate = line.migrate;
  c.upgrade.fd_store = line.fd_store;
  return c;
}

void take_over_if_asked(grace::net& net, const config& c, const char* name) {
  if (c.upgrade.handover_socket.empty()) return;
  auto taken = net.take_over(c.upgrade.handover_socket);
  if (!taken) {
    std::fprintf(stderr, "%s: %s\n", name, taken.error().message().c_str());
    std::exit(1);
  }
  if (taken->what == grace::takeover_result::outcome::took_over)
    std::fprintf(stderr, "%s[%d]: took %zu listener(s) over from pid %d\n", name, static_cast<int>(getpid()),
                 taken->listeners, static_cast<int>(taken->from));
}

}  // namespace sample
