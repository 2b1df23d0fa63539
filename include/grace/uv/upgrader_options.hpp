#pragma once
// What the upgrader (grace/uv/upgrader.hpp) reports and how it is set up. No libuv here: the
// upgrader's rules (lib/uv/upgrader/rules.hpp) and the application's configuration code use
// these types alone.
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>

#include "grace/fd_channel.hpp"
#include "grace/flows.hpp"
#include "grace/net.hpp"

namespace grace::uv {

enum class event_kind {
  serving,           // this generation serves (after ready())
  took_charge,       // the parent died before this generation was ready: in charge alone
  upgrade_started,   // a child was started
  upgrade_refused,   // an upgrade was asked for but not started (why in message)
  child_ready,       // the child took over; this process drains next
  rollback,          // the child failed (why in message); this process serves on
  rollback_after_takeover,  // the child took over, then died while this process drained: serving again
  draining,          // stopped accepting; count = connections still open
  drain_progress,    // count = connections still open
  forced_close,      // the drain deadline passed; count = connections closed by force
  exiting,           // drained; run() returns
  reload,            // SIGHUP
  warning,           // something failed that did not stop the lifecycle (pid file, notify)
};

struct event {
  event_kind kind;
  std::string message;  // one line a person can read
  pid_t child = 0;      // for upgrade events
  std::size_t count = 0;
};

// UDP flow affinity (upgrader::serve_flows, grace/flows.hpp).
struct flow_options {
  // The table's bound and idle time: a flow idle this long has ended (set it to the protocol's
  // own idle timeout); past max_flows the least recently seen flow ends.
  flow_table_options table;
  // false: no affinity; every datagram goes to the newest generation, as without flows.
  bool affinity = true;
  // The flow a datagram belongs to (a session id, a QUIC connection ID); unset, the client's
  // address and port. An empty key: a datagram of no flow yet (a hello that starts one), which
  // the generation that reads it answers.
  std::function<flow_key(const sockaddr* from, socklen_t from_length, std::string_view payload)> key;
  // A flow ended by itself here (idle, or evicted to make room): the application drops its state.
  std::function<void(const flow_key&)> on_flow_end;
  // The kernel path, for protocols that can carry it: each datagram of an established flow carries
  // a one-byte cookie naming the generation that owns it (upgrader::flow_cookie(); a QUIC server
  // puts it in its connection IDs), at `offset` of the payload, as one raw byte or as two
  // lowercase hex digits, in datagrams that start with `prefix`. Each generation then has a socket
  // of its own in the shared socket's SO_REUSEPORT group, and a classic BPF program on the group
  // (SO_ATTACH_REUSEPORT_CBPF, no privilege) sends a flow's datagrams straight to the generation
  // that owns it: old flows cost nothing extra during a drain. Datagrams without a cookie go to
  // the shared socket and the user-space path, which stays the fallback. One UDP socket, bound
  // with listen_options::reuse_port.
  struct cookie_format {
    std::size_t offset = 0;
    bool hex = false;
    std::string prefix;
  };
  std::optional<cookie_format> cookie;
  // How long a new generation waits for the previous one's flows before it reads anyway.
  std::chrono::milliseconds wait_for_predecessor{3000};
};

struct upgrader_options {
  std::chrono::milliseconds ready_timeout{60000};
  std::chrono::milliseconds drain_timeout{30000};
  // After handing over, this process keeps its listening sockets (not accepting) and watches the
  // new generation while it drains, and at least this long: if the new one dies meanwhile
  // without having handed over or stopped on purpose, this one serves again. 0: only while it
  // drains, which under load ends within milliseconds. A release that may crash on its first
  // requests wants a few seconds here; the old process then lingers that long (and counts
  // towards max_generations).
  std::chrono::milliseconds successor_watch{0};
  // Processes of this service alive at once, the one being started included (at least 2).
  // Older generations still draining count, so long-lived connections cannot pile up
  // generations without bound.
  unsigned max_generations = 4;
  std::string pidfile;          // rewritten atomically when a generation takes charge
  // A unix socket path (or "@name") on which this process hands its listeners to a process
  // started independently that calls net::take_over() with the same path, with the same
  // guarantees as SIGUSR2: rollback, one takeover at a time, the generation cap, pid file,
  // MAINPID. Opened by ready(): taken over or inherited when the previous generation had it,
  // else bound fresh (0600, in a directory only this user may write to). Empty: none.
  std::string handover_socket;
  // Who may take over through it: by default processes of this effective uid only.
  channel_options handover_peers;
  // With a service manager (NOTIFY_SOCKET): keep the listeners in its fd store (FDSTORE=1), so
  // that starting the whole service again (a crash and Restart=, or systemctl restart with
  // FileDescriptorStorePreserve=) gives them back in LISTEN_FDS, and their accept queues survive
  // even a cold restart. Each generation stores, at ready(), the listeners it bound itself,
  // named by their listener name (or "grace-" and their address), and takes out of the store
  // (FDSTOREREMOVE=1) and closes those it was given but does not use. Needs
  // FileDescriptorStoreMax= and NotifyAccess=all in the unit.
  bool fd_store = false;
  bool handle_signals = true;   // SIGUSR2, SIGTERM, SIGINT, SIGHUP
  process_options process;      // how the next generation is started
  // Every lifecycle event, on the loop thread; must not block. Unset: one line per event on
  // stderr, written by a background thread from a bounded buffer (lines are dropped and counted
  // if stderr is stuck), held from start-up until shortly after ready().
  std::function<void(const event&)> on_event;
};

}  // namespace grace::uv
