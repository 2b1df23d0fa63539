// grace-listen: holds the sockets while the application restarts. It binds each socket once,
// runs the command with them (systemd's socket-activation protocol), and runs it again when it
// exits, on SIGHUP, on `grace-listen --reload`, or when a watched path changes; a client that
// connects meanwhile waits in the kernel's backlog instead of being refused. With --overlap the
// next command starts while the current one serves (supervisor.hpp).
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "control.hpp"
#include "grace/grace.hpp"
#include "notify_inbox.hpp"
#include "options.hpp"
#include "supervisor.hpp"

namespace {

[[noreturn]] void fail(const std::string& why) {
  std::fprintf(stderr, "grace-listen: %s\n", why.c_str());
  std::exit(1);
}

// A datagram socket bound to `address` (grace::net listens on stream sockets only).
int bind_udp(const std::string& address) {
  auto candidates = grace::resolve_tcp(grace::network::tcp, address);
  if (!candidates) fail("udp:" + address + ": " + candidates.error().message());
  std::string last_error = "no address";
  for (const auto& a : *candidates) {
    const int fd = socket(a.family(), SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    const int on = 1, off = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (a.family() == AF_INET6 && a.is_wildcard()) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    if (bind(fd, a.data(), a.size()) == 0) return fd;
    last_error = std::string("bind ") + a.text() + ": " + std::strerror(errno);
    close(fd);
  }
  fail("udp:" + address + ": " + last_error);
}

}  // namespace

int main(int argc, char** argv) {
  const auto line = grace_listen::parse_command_line(argc, argv);
  if (line.reload) return grace_listen::reload_and_wait(line.reload->target);
  const auto& options = line.run;
  // Orphans of the command (a generation that re-executes itself and exits, a worker whose master
  // died) become this process's children, to be reaped and watched here: PID 1 is that already.
  if (getpid() != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
    std::fprintf(stderr, "grace-listen: cannot become a child subreaper: %s\n", std::strerror(errno));
  // Sockets systemd passed to grace-listen itself are taken by address, like any grace server's.
  static grace::net net;
  std::vector<grace_listen::held_socket> held;
  for (const auto& spec : options.sockets) {
    if (spec.kind == "udp") {
      held.push_back({bind_udp(spec.address), spec.name, "udp " + spec.address});
      continue;
    }
    grace::listen_options lo;
    lo.name = spec.name;
    auto l = spec.kind == "tcp" ? net.listen_tcp("tcp", spec.address, lo) : net.listen_unix("unix", spec.address, lo);
    if (!l) fail(spec.kind + ":" + spec.address + ": " + l.error().message());
    held.push_back({(*l)->fd(), spec.name, spec.kind + " " + (*l)->address()});
  }
  std::string why;
  auto inbox = grace_listen::notify_inbox::open(why);
  if (!inbox) fail(why);
  int status = 0;
  {
    grace_listen::supervisor s(uv_default_loop(), options, std::move(held), *inbox);
    status = s.run();
  }
  inbox->remove();
  return status;
}
