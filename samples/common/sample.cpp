#include "sample.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <utility>

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
  // Under `grace-listen --overlap`, each generation is told where the hand-over socket is: the
  // next generation then takes over from the serving one (its listeners, which are grace-listen's
  // sockets anyway, and its connections), and the old one reports the new one's readiness as
  // MAINPID=<new> READY=1, which grace-listen takes as that generation's.
  if (const char* given = std::getenv("GRACE_HANDOVER_SOCKET"); c.upgrade.handover_socket.empty() && given && *given)
    c.upgrade.handover_socket = given;
  c.migrate = line.migrate;
  c.upgrade.fd_store = line.fd_store;
  c.workers = line.workers;
  c.reuse_port = line.reuse_port;
  return c;
}

void take_over_if_asked(grace::net& net, const config& c, const char* name) {
  if (c.upgrade.handover_socket.empty()) return;
  grace::takeover_options options;
  // Each worker's loop needs fds of its own (libuv aborts when it cannot make them).
  options.min_free_fds += 4 * static_cast<std::size_t>(c.workers);
  auto taken = net.take_over(c.upgrade.handover_socket, options);
  if (!taken) {
    std::fprintf(stderr, "%s: %s\n", name, taken.error().message().c_str());
    std::exit(1);
  }
  if (taken->what != grace::takeover_result::outcome::took_over) return;
  if (taken->other_pid_namespace)
    std::fprintf(stderr, "%s[%d]: took %zu listener(s) over from a process in another pid namespace\n", name,
                 static_cast<int>(getpid()), taken->listeners);
  else
    std::fprintf(stderr, "%s[%d]: took %zu listener(s) over from pid %d\n", name, static_cast<int>(getpid()),
                 taken->listeners, static_cast<int>(taken->from));
  if (taken->other_network_namespace)
    std::fprintf(stderr, "%s[%d]: the listeners belong to another network namespace: they serve there, on its "
                         "addresses\n", name, static_cast<int>(getpid()));
}

std::unique_ptr<grace::uv::worker_group> start_workers(const config& c, const char* name) {
  if (c.workers == 0) return nullptr;
  auto started = grace::uv::worker_group::start(c.workers);
  if (!started) {
    std::fprintf(stderr, "%s: %s\n", name, started.error().message().c_str());
    std::exit(1);
  }
  return std::move(*started);
}

namespace {

// Under grace-listen --overlap a new generation holds each of grace-listen's sockets twice: once
// from LISTEN_FDS and once from the takeover. They are one socket (one queue): serve it once.
grace::listener_group without_duplicates(grace::net& net, grace::listener_group group) {
  std::vector<grace::listener*> kept;
  std::set<std::pair<dev_t, ino_t>> seen;
  for (grace::listener* l : group.members) {
    struct stat st {};
    if (fstat(l->fd(), &st) == 0 && !seen.insert({st.st_dev, st.st_ino}).second) {
      (void)net.close(l);
      continue;
    }
    kept.push_back(l);
  }
  group.members = std::move(kept);
  group.steered = std::min(group.steered, group.members.size());
  return group;
}

}  // namespace

grace::listener_group open_listener_group(grace::net& net, const config& c, const char* name) {
  if (c.address.rfind("unix:", 0) == 0) {
    if (c.reuse_port) {
      std::fprintf(stderr, "%s: --reuse-port is for TCP addresses; unix:%s has one socket\n", name, c.address.c_str() + 5);
      std::exit(2);
    }
    return grace::listener_group{{open_listener(net, c.address, name)}, 1};
  }
  grace::listen_options options;
  options.reuse_port = c.reuse_port;
  auto group = net.listen_group("tcp", c.address, c.reuse_port ? c.workers : 1, options);
  if (!group) {
    std::fprintf(stderr, "%s: cannot listen on %s: %s\n", name, c.address.c_str(), group.error().message().c_str());
    std::exit(1);
  }
  return without_duplicates(net, *group);
}

}  // namespace sample
