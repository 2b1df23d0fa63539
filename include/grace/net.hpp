#pragma once
// grace::net: listeners that survive a restart. Each listen call first takes a matching listener
// inherited from the parent (systemd's LISTEN_FDS protocol: fds 3.., LISTEN_PID, LISTEN_FDNAMES)
// and only otherwise binds a fresh one; start_process() re-executes the program with every
// active listener at fd 3.., so the kernel's accept queue is never closed.
#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "grace/address.hpp"
#include "grace/error.hpp"
#include "grace/export.hpp"
#include "grace/listener.hpp"
#include "grace/takeover.hpp"

namespace grace {

class pending_child;

struct listen_options {
  // The accept queue's length for a socket bound fresh (an inherited one keeps its own).
  int backlog = SOMAXCONN;
  // Carried to the next process in LISTEN_FDNAMES; no ':' and at most 255 printable bytes.
  // Empty means "unknown" (systemd's default), or the inherited name when the socket is inherited.
  std::string name;
  // SO_REUSEPORT on a socket bound fresh, so that further sockets (of this process or another)
  // can bind the same address and share its connections. An inherited socket keeps its own.
  bool reuse_port = false;
};

// The sockets of a worker group on one address (net::listen_group), in the group's order. Only
// the first `steered` members get new connections; any further ones were inherited from a
// generation that ran a larger group and hold only what queued on them before: they stay open
// and must be served (or read) until this process hands over, so nothing queued is lost.
struct listener_group {
  std::vector<listener*> members;
  std::size_t steered = 0;
};

struct process_options {
  enum class executable_source {
    argv0_lookup,   // argv[0] as started, through PATH: a deploy that swaps a symlink runs the new binary
    proc_self_exe,  // the very binary this process runs, even if its file was replaced
  };
  executable_source executable = executable_source::argv0_lookup;
  // When not empty, run this file instead (same argv); for tools and tests.
  std::string executable_path;
  // "NAME=VALUE" entries added to (or replacing those in) the child's environment.
  std::vector<std::string> extra_env;
  // Tells the child (GRACE_CONNECTIONS=1) that this process will hand it connections once it is
  // ready (grace/migration.hpp).
  bool offer_connections = false;
  // Tells the child (GRACE_FLOWS=1) that this process will hand it its UDP flows once it is ready
  // (grace/flows.hpp).
  bool offer_flows = false;
  // Further fds for the child, placed after the listeners at 3+N, 3+N+1, ... and not counted in
  // LISTEN_FDS (a report pipe, for example). pending_child::start places the readiness socket
  // after them.
  std::vector<int> extra_fds;
};

// Thread-safe. Calls may block briefly: listen_tcp resolves host names, and every listen call
// makes a few system calls; none waits on another process.
class GRACE_API net {
 public:
  net();
  ~net();
  net(const net&) = delete;
  net& operator=(const net&) = delete;

  // network: "tcp", "tcp4", "tcp6", "unix", "unixpacket", "udp", "udp4", "udp6".
  [[nodiscard]] result<listener*> listen(std::string_view network, std::string_view address,
                                         const listen_options& options = {});
  // "host:port", "[v6]:port", ":port". "tcp" on a wildcard binds a dual-stack [::] socket
  // (IPV6_V6ONLY off), falling back to 0.0.0.0 without IPv6; "tcp6" binds IPv6 only; an explicit
  // "0.0.0.0:port" binds IPv4 only. Port 0 binds a fresh ephemeral port and never inherits.
  [[nodiscard]] result<listener*> listen_tcp(std::string_view network, std::string_view address,
                                             const listen_options& options = {});
  // The same for an address the application already holds as a sockaddr (AF_INET or AF_INET6);
  // network "tcp", "tcp4" or "tcp6".
  [[nodiscard]] result<listener*> listen_tcp(std::string_view network, const sockaddr* address,
                                             socklen_t length, const listen_options& options = {});
  // A UDP socket: network "udp", "udp4" or "udp6", the address as for listen_tcp. Inherited and
  // carried to every next generation as the stream listeners are (a listener of this net in
  // every other respect); bound fresh (SO_REUSEADDR) when nothing matches. Datagrams that
  // arrive while one generation hands over to the next wait in the socket's queue.
  [[nodiscard]] result<listener*> listen_udp(std::string_view network, std::string_view address,
                                             const listen_options& options = {});
  // The sockets for `count` workers on one TCP or UDP address, for N event loops:
  //  - count == 1 without options.reuse_port: one socket that every worker accepts from (one
  //    queue: an idle worker takes the next connection; every worker wakes for each);
  //  - otherwise an SO_REUSEPORT group of `count` sockets, one per worker (the kernel spreads
  //    connections, and a worker's queue waits while it is busy).
  // Every inherited socket of the address joins the group, in the order the previous generation
  // had them, and fresh SO_REUSEPORT members are bound up to `count`. When more were inherited
  // than `count` (the previous generation ran more workers), the kernel is told to send new
  // connections to the first `count` only (a reuseport BPF program) and the rest stay members,
  // so nothing that queued on them is reset: serve every member (listener_group). An inherited
  // socket without SO_REUSEPORT cannot gain members: the group is then that socket, shared.
  // The group travels whole, in order, with every hand-over; the kernel's group never shrinks
  // while the service runs.
  [[nodiscard]] result<listener_group> listen_group(std::string_view network, std::string_view address,
                                                    std::size_t count, const listen_options& options = {});
  // A path (relative to the working directory at start-up) or "@name" for an abstract socket.
  // A stale socket file nobody listens on is replaced; a live one is EADDRINUSE.
  [[nodiscard]] result<listener*> listen_unix(std::string_view network, std::string_view path,
                                              const listen_options& options = {});

  // Starts the next generation: this program again, with every active listener at fd 3.. in the
  // order they were opened. Returns the child's pid; the caller reaps it. An exec failure is
  // returned here, never as a child that dies at once.
  [[nodiscard]] result<pid_t> start_process(const process_options& options = {});

  // Takes the sockets named by LISTEN_FDS (captured, and the LISTEN_* variables removed from
  // the environment, before main() ran) and checks each. The listen calls do this themselves;
  // call it to see a malformed environment early. Only the first net of a process inherits.
  [[nodiscard]] result<void> inherit();

  // Takes over from the process serving the hand-over socket at `path` (grace/takeover.hpp):
  // its listeners join the inherited ones, claimed by the listen calls, and notify_ready() then
  // tells that process. Call before listening. nobody_serving when no process listens there;
  // errc::takeover_refused when the serving process will not (an upgrade is already under way,
  // too many generations); a channel error when the exchange fails. Blocks up to the timeout.
  [[nodiscard]] result<takeover_result> take_over(std::string_view path, const takeover_options& options = {});

  std::vector<listener*> active_listeners() const;
  // Marks every active listener as given to another process: its unix socket file stays when
  // this process closes it.
  void mark_shared();
  // Inherited sockets that no listen call has claimed yet.
  std::vector<const listener*> unused_inherited() const;
  // Closes inherited sockets nobody claimed; returns how many. Their unix paths stay.
  std::size_t close_unused_inherited();
  // Closes an active listener. A unix socket file is removed only when this process bound it,
  // never gave it to another process, and the path still names that very socket.
  [[nodiscard]] result<void> close(listener* l);

  // The working directory when the program started: unix paths and the re-exec are relative to it.
  static const std::string& startup_directory();

 private:
  friend class pending_child;  // starts the next generation under this net's lock
  // The listeners, the inherited sockets, the lock and the work done under it: the library's
  // own (lib/net_state.hpp), so that a change there is no ABI break.
  struct GRACE_LOCAL state;
  std::unique_ptr<state> state_;
};

}  // namespace grace
