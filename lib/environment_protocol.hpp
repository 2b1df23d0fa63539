#pragma once
// The environment protocol between generations, in one place: every variable grace reads or
// writes, parsed once, and the child's environment built from it (tableflip's env.go seam).
//
//   LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES  systemd's socket activation: listeners at fds 3..
//   GRACE_READY_FD    the new generation's end of the readiness socket (after the listeners and
//                     any extra fds: lay_out_child)
//   GRACE_GENERATION  1 on a first start, n+1 in a process started by generation n
//   GRACE_ANCESTORS   "pid:starttime,..." older generations that may still be draining
//   NOTIFY_SOCKET     systemd's notification socket; left in the environment for children
//
// Parsing works on an `environment` map, so every malformed value has an in-process unit test;
// the real process's values are captured before main(), while it has one thread and no event
// loop, and the LISTEN_* and GRACE_* variables are removed from environ then.
#include <sys/types.h>

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "failure.hpp"
#include "generations.hpp"

namespace grace::detail {

namespace variable {
inline constexpr char listen_fds[] = "LISTEN_FDS";
inline constexpr char listen_pid[] = "LISTEN_PID";
inline constexpr char listen_fdnames[] = "LISTEN_FDNAMES";
inline constexpr char ready_fd[] = "GRACE_READY_FD";
inline constexpr char generation[] = "GRACE_GENERATION";
inline constexpr char ancestors[] = "GRACE_ANCESTORS";
inline constexpr char notify_socket[] = "NOTIFY_SOCKET";
// "1" when the parent hands its connections over after this process is ready (migration.hpp).
inline constexpr char connections[] = "GRACE_CONNECTIONS";
inline constexpr char flows[] = "GRACE_FLOWS";
// One letter per LISTEN_FDS fd, from a grace parent that checked each socket's type when it
// bound or claimed it: 's' listening stream, 'p' listening seqpacket, 'd' datagram. With it a
// claim needs no system call to learn what the socket is.
inline constexpr char listen_types[] = "GRACE_LISTEN_TYPES";
}  // namespace variable

inline constexpr int first_listen_fd = 3;          // SD_LISTEN_FDS_START
inline constexpr std::size_t max_fd_name = 255;    // systemd's FDNAME_MAX
inline constexpr std::size_t max_ancestors = 64;   // more are never needed: the cap is far lower
inline constexpr unsigned max_generation = 1000000000;

using environment = std::map<std::string, std::string>;

struct listen_fds {
  int count = 0;                   // fds first_listen_fd .. first_listen_fd + count - 1
  std::vector<std::string> names;  // one per fd; "unknown" where nobody named it
  std::string types;               // GRACE_LISTEN_TYPES, checked; empty when not told
};

// GRACE_LISTEN_TYPES's letter for a socket type (SOCK_STREAM, SOCK_SEQPACKET, SOCK_DGRAM), and back;
// 0 for anything else.
char listen_type_letter(int socket_type);
int socket_type_of_letter(char letter);

struct inheritance {
  result<listen_fds> listen;  // count 0 when nothing was passed to this process
  // The readiness socket's fd number, -1 without one. Syntax only: check_ready_fd() inspects it.
  result<int> ready_fd = -1;
  unsigned generation = 1;
  std::vector<process_identity> ancestors;  // at most max_ancestors, newest last
  bool parent_offers_connections = false;   // GRACE_CONNECTIONS=1
  bool parent_offers_flows = false;         // GRACE_FLOWS=1
  std::string notify_socket;                // empty: no service manager to tell
  // Malformed GRACE_GENERATION / GRACE_ANCESTORS: replaced by safe defaults, reported here.
  std::vector<std::string> warnings;
};

// Parses what `env` says to process `self`, which may open `max_fds` fds.
inheritance parse_inheritance(const environment& env, pid_t self, long max_fds);

// A listener name LISTEN_FDNAMES can carry: at most 255 printable bytes, no ':' and no blank.
bool valid_fd_name(const std::string& name);

// What this process inherited, captured before main().
const inheritance& startup_inheritance();
// The readiness fd, checked (a unix SEQPACKET socket that is not listening) and handed out once;
// -1 when there is none or it was taken. A bad fd is an error naming GRACE_READY_FD.
result<int> take_ready_fd();

// True when a grace parent started this process (GRACE_READY_FD, even a malformed one).
bool started_by_grace_parent();
// After a takeover: the generation and ancestors the serving process offered (GRACE_GENERATION
// and GRACE_ANCESTORS entries, parsed as from the environment) and the connection on which
// notify_ready() and notify_retiring() then speak. Start-up only, before other threads.
// `out_of_sight`: the serving process runs in another pid namespace, so this one names itself in
// the pid file and to the service manager once ready (predecessor_out_of_sight()).
void adopt_takeover(const environment& offered, int ready_fd, bool out_of_sight = false);
bool predecessor_out_of_sight_flag();

// The entries "NAME=VALUE" for a child of generation `generation` whose older generations
// still alive are `ancestors` (at most max_ancestors, newest last).
std::vector<std::string> generation_entries(unsigned generation,
                                            const std::vector<process_identity>& ancestors);
std::string connections_entry();  // "GRACE_CONNECTIONS=1"
std::string flows_entry();        // "GRACE_FLOWS=1"

// "NAME=VALUE" with a non-empty NAME free of '='; otherwise an error that quotes the entry.
result<void> check_entry(const std::string& entry);

// A socket a child gets among its LISTEN_FDS.
struct passed_listener {
  int fd = -1;
  std::string name;  // its LISTEN_FDNAMES entry
  char type = 0;     // its GRACE_LISTEN_TYPES letter (listen_type_letter); 0 when not known
};

// What makes a child the next generation: its end of the readiness socket (an fd of this
// process), its number and the older generations alive (at most max_ancestors, newest last).
struct successor_place {
  int ready_fd = -1;
  unsigned generation = 1;
  std::vector<process_identity> ancestors;
};

struct child_request {
  std::vector<passed_listener> listeners;   // at fds 3.., counted in LISTEN_FDS
  std::vector<int> extra_fds;               // after them, not counted
  std::optional<successor_place> successor;  // its readiness socket after those
  bool offer_connections = false;           // GRACE_CONNECTIONS=1
  bool offer_flows = false;                 // GRACE_FLOWS=1
  std::vector<std::string> extra_env;       // "NAME=VALUE" (check_entry)
};

struct child_layout {
  std::vector<int> fds;                  // fds[i], an fd of this process, is fd 3+i in the child
  std::vector<std::string> environment;  // "NAME=VALUE"
  // LISTEN_PID=<the child's pid> is wanted: only the spawner can write it, as only the child
  // knows its pid.
  bool listen_pid = false;
};

// The fds a child gets and the variables that name them, decided together from the same data
// (tableflip's child.go), so that they cannot drift apart. The fds: the listeners at 3.., then
// the extra fds, then a successor's readiness socket. The environment: `parent` without any
// variable this protocol owns (NOTIFY_SOCKET excepted), then `extra_env` (replacing entries of
// the same name), then LISTEN_FDS, LISTEN_FDNAMES and GRACE_LISTEN_TYPES (when every listener's
// type is known) for the listeners; GRACE_READY_FD, GRACE_GENERATION and GRACE_ANCESTORS for a
// successor; GRACE_CONNECTIONS when connections are offered. No LISTEN_* without a listener:
// LISTEN_FDS=0 with an empty LISTEN_FDNAMES would name one fd too many.
child_layout lay_out_child(const std::vector<std::string>& parent, const child_request& request);

// environ as a list of "NAME=VALUE".
std::vector<std::string> current_environment();

}  // namespace grace::detail
