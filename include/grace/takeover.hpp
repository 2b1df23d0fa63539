#pragma once
// Takeover by a process started independently (by systemd, a deploy script, an operator): the
// serving process listens on a hand-over socket (a unix SOCK_SEQPACKET socket, 0600, in a
// directory it owns); a new process connects, says hello, and receives every listener over the
// fd channel, including the hand-over socket itself. It then opens its listeners (claiming the
// received ones by the same canonical-address rules as LISTEN_FDS), initialises, and says it is
// ready on the same connection, exactly as a re-executed child does on GRACE_READY_FD; only
// then does the old process stop accepting and drain. If the new process dies or is not ready
// in time, the old one kills it and serves on.
//
// The new process calls net::take_over(); the serving side is grace::uv::upgrader's
// (upgrader_options::handover_socket), built on the calls below.
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <string_view>

#include "grace/error.hpp"
#include "grace/export.hpp"
#include "grace/fd_channel.hpp"

namespace grace {

class net;

struct takeover_options {
  // For the whole exchange: connect (a full backlog is tried again until then), hello, the
  // listeners.
  std::chrono::milliseconds timeout{10000};
  channel_options channel;
  // Free fds this process must still have once it holds the listeners, for its event loop,
  // threads and first clients: with fewer, it declines the listeners (the serving process keeps
  // them and serves on) and the error names RLIMIT_NOFILE. A program with many event loops wants
  // more.
  std::size_t min_free_fds = 16;
};

struct takeover_result {
  enum class outcome {
    took_over,       // a serving process handed its listeners over; they wait to be claimed
    nobody_serving,  // nobody listens on the socket (or it does not exist): bind fresh
    inherited,       // this process was started by a grace parent and inherited already
  };
  outcome what = outcome::nobody_serving;
  pid_t from = 0;             // the process that handed over; 0 when it runs in another pid namespace
  std::size_t listeners = 0;  // how many it handed over
  // It runs in another pid namespace (another container): its pid means nothing here, and this
  // process names itself in the pid file and to its service manager once ready.
  bool other_pid_namespace = false;
  // The listeners belong to another network namespace: they serve there, on that namespace's
  // addresses, whatever this process's own network looks like.
  bool other_network_namespace = false;
};

// Serving side. The hello a new process sends first.
GRACE_API bool is_takeover_hello(const parcel& p) noexcept;
GRACE_API outgoing_parcel takeover_hello();
// Taking side: whether an offer comes from this process's pid namespace (true when it does not
// say, as from an older grace).
GRACE_API bool same_pid_namespace(const parcel& offer) noexcept;
// Serving side: whether `pid`, as the peer's credentials give it, is a process of this pid
// namespace: false for 0 (a process this namespace cannot see) and for one of a nested namespace.
GRACE_API bool in_this_pid_namespace(pid_t pid) noexcept;
// The answer: every active listener of `n` (the hand-over socket among them), with the next
// generation's number and the generations alive, or errc::too_many_generations when taking
// over would exceed `max_generations` alive at once. The fds are lent: they stay open in `n`,
// which from then on leaves their socket files in place when it closes them (they are shared).
// With `offer_connections`, the taker learns that this process will hand it connections once it
// is ready (grace/migration.hpp); with `offer_flows`, its UDP flows (grace/flows.hpp).
// A taker in another pid namespace (`same_pid_namespace` false) is not told the generations alive:
// their pids mean nothing there.
[[nodiscard]] GRACE_API result<outgoing_parcel> takeover_offer(net& n, unsigned max_generations,
                                                               bool offer_connections = false,
                                                               bool same_pid_namespace = true,
                                                               bool offer_flows = false);
// A refusal the new process reports as errc::takeover_refused with `why`.
GRACE_API outgoing_parcel takeover_refusal(std::string_view why);

}  // namespace grace
