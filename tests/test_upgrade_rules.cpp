// The upgrader's decisions (lib/uv/upgrader/rules.hpp), in process: no loop, no processes.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>

#include <cstring>
#include <string>

#include "uv/upgrader/rules.hpp"

namespace d = grace::uv::detail;
using d::phase;

namespace {

int exited(int code) { return (code & 0xff) << 8; }  // a waitpid status, as W_EXITCODE makes it
int killed_by(int signal) { return signal & 0x7f; }

}  // namespace

namespace {

d::hand_over_view view(phase at) {
  d::hand_over_view v;
  v.at = at;
  return v;
}

}  // namespace

TEST_CASE("an upgrade is refused until this generation serves, and while one is under way") {
  CHECK(d::upgrade_refusal(view(phase::starting)) == "not serving yet");
  CHECK(d::upgrade_refusal(view(phase::draining)) == "this generation is draining; signal the newest one");
  CHECK(d::upgrade_refusal(view(phase::exiting)) == "this generation is draining; signal the newest one");
  auto v = view(phase::serving);
  CHECK_FALSE(d::upgrade_refusal(v));
  v.pending = true;
  v.pending_pid = 42;
  CHECK(d::upgrade_refusal(v) == "an upgrade is already in progress (pid 42)");
  // A taker in a pid namespace this one cannot see is pending all the same.
  v.pending_pid = 0;
  CHECK(d::upgrade_refusal(v) == "an upgrade is already in progress (a process in another pid namespace)");
  v = view(phase::serving);
  v.starting = true;
  CHECK(d::upgrade_refusal(v) == "an upgrade is already in progress (starting the next generation)");
  v = view(phase::serving);
  v.taking_over = true;
  v.taking_over_pid = 77;
  CHECK(d::upgrade_refusal(v) == "pid 77 is taking over through the hand-over socket");
  v.taking_over_pid = 0;
  CHECK(d::upgrade_refusal(v) == "a process in another pid namespace is taking over through the hand-over socket");
  // PID 1 of a pid namespace: its exit would take the new generation down; the refusal names
  // the fix.
  v = view(phase::serving);
  v.pid_one = true;
  const auto pid_one = d::upgrade_refusal(v);
  REQUIRE(pid_one);
  CHECK(pid_one->find("PID 1 of its pid namespace") != std::string::npos);
  CHECK(pid_one->find("grace-listen --overlap") != std::string::npos);
}

TEST_CASE("a takeover is refused while this generation cannot hand over; its own candidate does not count") {
  CHECK(d::hand_over_refusal(view(phase::draining)) == "this generation is draining; the newest one serves");
  CHECK(d::hand_over_refusal(view(phase::starting)) == "this generation is draining; the newest one serves");
  auto v = view(phase::serving);
  v.pending = true;
  v.pending_pid = 9;
  CHECK(d::hand_over_refusal(v) == "an upgrade is already in progress (pid 9)");
  v = view(phase::serving);
  v.starting = true;
  CHECK(d::hand_over_refusal(v) == "an upgrade is already in progress (starting the next generation)");
  // The taker asking is the process taking over: the hand-over socket decides about a second one.
  v = view(phase::serving);
  v.taking_over = true;
  v.taking_over_pid = 77;
  CHECK_FALSE(d::hand_over_refusal(v));
  // As PID 1: a taker it can see dies with it; one it cannot see (another container) survives.
  v = view(phase::serving);
  v.pid_one = true;
  v.taker = 12;
  CHECK(d::hand_over_refusal(v).value().find("PID 1 of its pid namespace") != std::string::npos);
  v.taker = 0;
  CHECK_FALSE(d::hand_over_refusal(v));
  // Until the previous generation's UDP flows have all arrived, a hand-over would pass on part of them.
  v = view(phase::serving);
  v.flows_arriving = true;
  CHECK(d::hand_over_refusal(v) == "the previous generation's UDP flows have not all arrived yet");
  CHECK(d::upgrade_refusal(v) == "the previous generation's UDP flows have not all arrived yet");
}

TEST_CASE("a settled child: hand over when ready, else serve on, or drain when asked to stop") {
  CHECK(d::after_settle(grace::upgrade_outcome::ready, false) == d::next_step::hand_over);
  CHECK(d::after_settle(grace::upgrade_outcome::ready, true) == d::next_step::hand_over);
  CHECK(d::after_settle(grace::upgrade_outcome::exited, false) == d::next_step::serve_on);
  CHECK(d::after_settle(grace::upgrade_outcome::timed_out, false) == d::next_step::serve_on);
  CHECK(d::after_settle(grace::upgrade_outcome::exited, true) == d::next_step::drain);
  CHECK(d::after_settle(grace::upgrade_outcome::timed_out, true) == d::next_step::drain);
  CHECK(d::after_rollback(false) == "; still serving");
  CHECK(d::after_rollback(true) == "; shutting down");
}

TEST_CASE("rollback reasons are the true ones") {
  CHECK(d::describe_status(-1) == "exited");
  CHECK(d::describe_status(exited(0)) == "exited with status 0");
  CHECK(d::describe_status(exited(3)) == "exited with status 3");
  CHECK(d::describe_status(killed_by(SIGSEGV)) == std::string("was killed by ") + strsignal(SIGSEGV));
  // Killed here because it hung up its readiness socket while it still ran.
  CHECK(d::not_ready_reason(killed_by(SIGKILL), true) == "closed its readiness socket before it was ready and was killed");
  // Killed by somebody else: that is what it says.
  CHECK(d::not_ready_reason(killed_by(SIGKILL), false) ==
        std::string("was killed by ") + strsignal(SIGKILL) + " before it was ready");
  // SIGKILL sent here, but it had exited on its own first.
  CHECK(d::not_ready_reason(exited(2), true) == "exited with status 2 before it was ready");
  CHECK(d::not_ready_reason(-1, true) == "exited before it was ready");
}

TEST_CASE("a successor's death is a rollback after takeover only while this process drains of its own accord") {
  CHECK(d::must_resume(false, false, phase::draining));
  CHECK_FALSE(d::must_resume(true, false, phase::draining));   // it handed over or stopped on purpose
  CHECK_FALSE(d::must_resume(false, true, phase::draining));   // this process was asked to stop
  CHECK_FALSE(d::must_resume(false, false, phase::exiting));   // too late: the listeners are going
  CHECK_FALSE(d::must_resume(false, false, phase::serving));
}

TEST_CASE("a drain is over only when nothing is left anywhere") {
  const d::drain_view done{phase::draining, false, false, 0, 0};
  CHECK(d::drain_complete(done));
  auto with = [&](auto change) {
    d::drain_view v = done;
    change(v);
    return d::drain_complete(v);
  };
  CHECK_FALSE(with([](d::drain_view& v) { v.at = phase::serving; }));
  CHECK_FALSE(with([](d::drain_view& v) { v.at = phase::exiting; }));
  CHECK_FALSE(with([](d::drain_view& v) { v.watching_successor = true; }));
  CHECK_FALSE(with([](d::drain_view& v) { v.workers_busy = true; }));
  CHECK_FALSE(with([](d::drain_view& v) { v.moving = 1; }));
  CHECK_FALSE(with([](d::drain_view& v) { v.connections = 1; }));
  CHECK_FALSE(with([](d::drain_view& v) { v.flows_left = true; }));
}

TEST_CASE("the serving line names what this generation serves") {
  d::serving_view v;
  v.served = {{"127.0.0.1:8080", "web", true, false}, {"[::1]:8081", "", false, false}};
  v.udp = {{"127.0.0.1:53", "dns", true, true}};
  v.workers = 2;
  v.handover_socket = "/run/app/handover.sock";
  v.pid = 1234;
  CHECK(d::serving_line(v) ==
        "serving 127.0.0.1:8080 (inherited, name web), [::1]:8081 (new socket), udp 127.0.0.1:53 (inherited) on 2 "
        "worker(s); hand-over socket /run/app/handover.sock as pid 1234");
  d::serving_view udp_only;
  udp_only.udp = {{"127.0.0.1:53", "", false, true}};
  udp_only.pid = 7;
  CHECK(d::serving_line(udp_only) == "serving udp 127.0.0.1:53 (new socket) as pid 7");
}

TEST_CASE("options out of range are refused with the option's name") {
  grace::uv::upgrader_options o;
  CHECK_FALSE(d::check_options(o));
  auto message = [](grace::uv::upgrader_options bad) { return d::check_options(bad).value().message(); };
  o.ready_timeout = std::chrono::milliseconds(0);
  CHECK(message(o).find("ready_timeout") != std::string::npos);
  o = {};
  o.drain_timeout = std::chrono::milliseconds(-1);
  CHECK(message(o).find("drain_timeout") != std::string::npos);
  o = {};
  o.max_generations = 1;
  CHECK(message(o).find("max_generations") != std::string::npos);
  o = {};
  o.successor_watch = std::chrono::milliseconds(-5);
  CHECK(message(o).find("successor_watch") != std::string::npos);
}

TEST_CASE("the default log line: routine events speak for themselves, the others carry their kind") {
  using grace::uv::event_kind;
  CHECK(d::log_line({event_kind::serving, "serving x as pid 5", 0, 0}, 5, 1) == "grace[5] generation 1: serving x as pid 5");
  CHECK(d::log_line({event_kind::rollback, "pid 9 exited", 9, 0}, 5, 3) == "grace[5] generation 3: rollback: pid 9 exited");
  CHECK(d::log_line({event_kind::rollback_after_takeover, "m", 0, 0}, 1, 2) ==
        "grace[1] generation 2: rollback after takeover: m");
  for (auto kind : {event_kind::serving, event_kind::took_charge, event_kind::upgrade_started,
                    event_kind::upgrade_refused, event_kind::child_ready, event_kind::rollback,
                    event_kind::rollback_after_takeover, event_kind::draining, event_kind::drain_progress,
                    event_kind::forced_close, event_kind::exiting, event_kind::reload, event_kind::warning})
    CHECK(std::string(d::kind_name(kind)) != "event");
}
