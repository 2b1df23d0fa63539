#pragma once
// The zero-downtime upgrade lifecycle for a libuv server, in one object:
//
//   SIGUSR2 (or upgrade())  -> start the next generation with every listener and a readiness socket
//   a process connects to the hand-over socket -> it gets every listener (grace/takeover.hpp)
//                              and is then watched as a child started by SIGUSR2 would be
//   child calls ready()     -> the parent stops accepting, drains, and run() returns 0
//   child dies / times out  -> the child is killed and reaped, the parent serves on as before
//   child dies after ready  -> while the parent still drains, it accepts again and takes charge
//   parent dies first       -> the child takes charge by itself (pid file, MAINPID, READY=1)
//   SIGTERM / SIGINT        -> stop accepting, drain, return; a second SIGTERM closes everything now
//   SIGHUP                  -> the application's reload hook; without one, logged and ignored
//
// with systemd notifications (NOTIFY_SOCKET), an optional pid file, and every event reported
// to a log callback.
//
// Nothing here blocks the loop: notifications are sent without waiting (and retried), the
// default log is written by a background thread, the pid file is written on a thread of its own,
// the next generation is started (clone, exec) on a helper thread, and children are reaped only
// once their exit is known. The calls that may block are said so below.
//
// The object is a handle on a private implementation (lib/uv/upgrader/): its layout is not part
// of the ABI, and a private change is not an ABI break.
#include <sys/types.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "grace/error.hpp"
#include "grace/export.hpp"
#include "grace/net.hpp"
#include "grace/uv/server.hpp"
#include "grace/uv/upgrader_options.hpp"
#include "grace/uv/worker_group.hpp"

namespace grace::uv {

class GRACE_API upgrader {
 public:
  upgrader(uv_loop_t* loop, grace::net& net, upgrader_options options = {});
  ~upgrader();
  upgrader(const upgrader&) = delete;
  upgrader& operator=(const upgrader&) = delete;

  // Serves a listener of `net` on the loop; its connections count for the drain.
  [[nodiscard]] result<server*> serve(grace::listener* l, server::accept_callback on_accept);
  // Serves it on worker k of `workers` instead: the server lives on that worker's loop, and its
  // accept, connection, export and import callbacks run on that worker's thread. Serve one
  // listener on several workers (one shared socket) or each member of a listener_group on its
  // own (SO_REUSEPORT); every member of a group must be served. Blocks until the worker has
  // opened the server; the group must outlive this upgrader. The drain, reload and resume
  // hooks still run on this upgrader's loop: the application tells its workers itself.
  [[nodiscard]] result<server*> serve(grace::listener* l, server::accept_callback on_accept, worker_group& workers,
                                      unsigned worker);
  // Serves every member of `group` (net::listen_group) on `workers`: with one steered socket,
  // every worker accepts from it; with a group, worker k takes member k (modulo the steered
  // members when there are fewer of them than workers). Members past `steered`, inherited from a
  // generation that ran more workers, are served by the workers in turn, so that what queued on
  // them is accepted. The servers, in the order they were opened.
  [[nodiscard]] result<std::vector<server*>> serve(const listener_group& group, server::accept_callback on_accept,
                                                   worker_group& workers);
  // The application serves on worker threads with handles of its own (UDP sockets): run() then
  // returns only once this process has drained, even with nothing left on this loop.
  void serving_elsewhere();
  // Runs once, when this process starts draining: the application's chance to finish work
  // (an HTTP server answers the next request on each connection with "Connection: close").
  void on_drain(std::function<void()> hook);
  // Runs on SIGHUP (reload the configuration, reopen logs). Without a hook SIGHUP is logged and
  // ignored: it never stops the service.
  void on_reload(std::function<void()> hook);
  // Runs when this process serves again after a rollback after takeover: the drain hook's undo
  // (an HTTP server stops answering with "Connection: close").
  void on_resume(std::function<void()> hook);

  // Connection migration (grace/migration.hpp). With both hooks set, a hand-over (SIGUSR2 or a
  // takeover) moves this generation's idle connections to the new one, which serves them on the
  // same TCP connection: no connection is closed, and this process exits as soon as its busy
  // connections have finished and moved too. The drain hook then runs only if the new
  // generation does not take connections.
  //
  // Old side, as soon as the new generation is ready (before it has said it takes connections:
  // what it does not take comes back through the import hook): for each open connection, stop
  // reading from it and return the bytes the next generation needs to go on (the application's
  // state and input read but not consumed); nullopt keeps it here (busy: hand it over later with
  // migrate(), or let it end).
  void on_export(std::function<std::optional<std::string>(connection&)> hook);
  // New side: a connection handed over with its bytes; set it up and read from it. Also runs in
  // the old process for a connection that stays: one whose move failed (the new generation died,
  // did not take connections, or had less room in its fd table than was exported; a new
  // connection object), and one exported that cannot travel (its bytes are more than
  // connection_state_limit, or the new generation's fd table has no more room; the same
  // connection object, its user_data as the export hook left it).
  void on_import(std::function<void(connection&, std::string)> hook);
  // Connections may leave for a newer generation now (from its readiness until it has no more
  // room or the move ends). Thread-safe.
  bool can_migrate() const noexcept;
  // Moves `c` (no write in flight) to the newer generation with `state`; call it on the thread of
  // the loop `c` is served on. False when none takes connections (the caller ends it its own
  // way), or when `state` is more than connection_state_limit (grace/migration.hpp). `c` is
  // closed at once (on_closed runs) while a copy of its socket travels: the
  // application must not touch `c` afterwards. If the new generation cannot take it, it comes
  // back as a new connection through the import hook, on the same loop.
  bool migrate(connection& c, std::string bytes);
  // UDP flow affinity (grace/flows.hpp): grace reads `sockets` (UDP listeners of `net`) on this
  // loop and calls `on_datagram` for each datagram this generation answers; answer with reply().
  // At a hand-over (SIGUSR2, a takeover, grace-listen --overlap) this generation stops reading,
  // and the datagrams of its flows keep coming to it, forwarded by the new generation, until they
  // end (flow_ended(), or idle past options.table.idle): then it exits, or at the drain deadline.
  // New flows go to the new generation. Call it once, before ready(); the sockets' order is the
  // `socket` index of each datagram, and must be the same in every generation. Errors: called
  // twice, no socket, a socket that is not UDP, a libuv handle that could not be made.
  [[nodiscard]] result<void> serve_flows(const std::vector<grace::listener*>& sockets, flow_options options,
                                         std::function<void(const routed_datagram&)> on_datagram);
  // The application's word that a flow begins here before any datagram carries its key (a hello
  // answered with a new session id): tracked, and bounded by the table, from now on.
  void flow_began(const flow_key& key);
  // The application's word that a flow ended here (a goodbye, a session it does not hold): a
  // newer generation owns its key from now on.
  void flow_ended(const flow_key& key);
  // Answers `d` (a datagram given to on_datagram, during that call) from the socket it came on:
  // the same local address and port, whichever generation read it. False when it could not be
  // sent.
  bool reply(const routed_datagram& d, std::string_view bytes);
  flow_counters flow_statistics() const;
  // This generation's cookie for the kernel path (flow_options::cookie): 1-255 once it has its
  // socket in the group (a new generation: once the previous one's flows have arrived, before it
  // answers anything); 0 without the kernel path.
  unsigned flow_cookie() const noexcept;

  // This generation is ready: tells the parent that started it, or (first start, or a parent
  // that died meanwhile) takes charge itself: pid file and READY=1/MAINPID. Call after opening
  // every listener and initialising. Errors: the options are out of range; a libuv handle could
  // not be made (the signal handlers, say); GRACE_READY_FD was malformed; the hand-over socket
  // could not be opened (its error starts with "hand-over socket").
  [[nodiscard]] result<void> ready();

  // What SIGUSR2 does. Returns at once: the next generation is started on a helper thread, and
  // its outcome (an upgrade_started or a rollback event) comes on a later turn of the loop.
  void upgrade();
  void shutdown();  // what SIGTERM does
  void reload();    // what SIGHUP does
  // Runs the loop until this process has drained; returns the exit status (0). At the end it
  // waits up to 1 s for the default log to reach stderr.
  int run();

  unsigned generation() const noexcept;
  bool draining() const noexcept;
  // From SIGUSR2 (or a takeover) until the new generation is ready or rolled back.
  bool upgrading() const noexcept;
  // Thread-safe.
  std::size_t connection_count() const noexcept;

 private:
  struct GRACE_LOCAL impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace grace::uv
