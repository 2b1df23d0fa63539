#pragma once
// The upgrader's decisions, apart from libuv and from any process: when an upgrade or a takeover
// is refused and why, what follows a settled child, whether a rollback after takeover is due,
// when a drain is over, and the lines a person reads. The parts (lib/uv/upgrader/) do the I/O;
// the facade asks here what to do. Tested in process by tests/test_upgrade_rules.cpp.
#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "grace/error.hpp"
#include "grace/readiness.hpp"
#include "grace/uv/upgrader_options.hpp"

namespace grace::uv::detail {

// Where this generation is in its life.
enum class phase { starting, serving, draining, exiting, done };

// What the refusals look at.
struct hand_over_view {
  phase at = phase::starting;
  bool pending = false;      // a child started or adopted and not settled yet
  pid_t pending_pid = 0;     // its pid; 0 when it runs in a pid namespace this one cannot see
  bool starting = false;     // the next generation is being started (on the helper thread)
  bool taking_over = false;  // a process between its hello and its confirmation on the hand-over socket
  pid_t taking_over_pid = 0;
  bool pid_one = false;      // this process is PID 1 of its pid namespace
  pid_t taker = 0;           // the taker asking (hand_over_refusal), as this namespace sees it
  bool flows_arriving = false;  // the previous generation's UDP flows have not all arrived yet
};

// Why SIGUSR2 (upgrade()) starts nothing now; nullopt when it may. PID 1 of a pid namespace never
// upgrades itself: when it exits after handing over, the kernel kills every process of the
// namespace, the new generation with it.
std::optional<std::string> upgrade_refusal(const hand_over_view& v);
// Why this generation cannot hand over to a taker now (the hand-over socket asks, and so does a
// taker that arrives while a child is pending); nullopt when it can. As PID 1, it hands over only
// to a taker it cannot see (pid 0: another container), which survives its exit.
std::optional<std::string> hand_over_refusal(const hand_over_view& v);

// "exited with status 3", "was killed by Killed": a waitpid status as a person reads it.
std::string describe_status(int status);
// Why a child that did not become ready is gone: `killed_by_us` when this process sent it SIGKILL
// (it closed its readiness socket while it still ran).
std::string not_ready_reason(int status, bool killed_by_us);
// What a rollback line ends with: the process serves on, or goes on shutting down.
std::string after_rollback(bool terminating);

// What follows a settled child.
enum class next_step {
  hand_over,  // it is ready: stop accepting, give it charge and connections, drain
  drain,      // it failed while this process was asked to stop: drain now
  serve_on,   // it failed: this process serves on exactly as before
};
next_step after_settle(upgrade_outcome outcome, bool terminating);

// The generation this one handed over to has exited: `retired` when it said it stopped on
// purpose. True when this process must serve again (rollback after takeover): it still drains,
// nobody asked it to stop, and the successor died without handing over.
bool must_resume(bool retired, bool terminating, phase at);

// What a drain waits for.
struct drain_view {
  phase at = phase::starting;
  bool watching_successor = false;  // the successor watch's time has not passed yet
  bool workers_busy = false;        // work posted to worker loops has not run yet
  std::size_t moving = 0;           // connections between migrate() and the new generation's ack
  std::size_t connections = 0;
  bool flows_left = false;          // UDP flows still answered here (grace/flows.hpp)
};
bool drain_complete(const drain_view& v);

// The "serving" line: what this generation serves.
struct serving_view {
  struct listener_line {
    std::string address;
    std::string name;
    bool inherited = false;
    bool datagram = false;
  };
  std::vector<listener_line> served;  // stream listeners this generation serves
  std::vector<listener_line> udp;     // datagram listeners of its net
  std::size_t workers = 0;            // worker loops serving them (0: this loop only)
  std::string handover_socket;        // empty: none
  pid_t pid = 0;
};
std::string serving_line(const serving_view& v);

// The upgrader's options, checked once; the error names the option.
std::optional<error> check_options(const upgrader_options& o);

// The default log's line for an event of generation `generation` in process `pid`.
const char* kind_name(event_kind kind);
std::string log_line(const event& e, pid_t pid, unsigned generation);

}  // namespace grace::uv::detail
