// The helper thread that reads inherited fds beside the caller: on another CPU when the process
// may use one, with every signal blocked, and not at all on one CPU.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sched.h>
#include <signal.h>

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "helper_thread.hpp"

namespace {

struct seen_by_helper {
  std::mutex mutex;
  std::condition_variable done_now;
  bool done = false;
  bool all_signals_blocked = false;
  cpu_set_t mask;
};

// Runs start_helper_thread and waits (bounded) for its work to report.
bool run_helper(seen_by_helper& seen) {
  const bool started = grace::detail::start_helper_thread([&seen] {
    sigset_t mask;
    pthread_sigmask(SIG_BLOCK, nullptr, &mask);
    std::lock_guard<std::mutex> lock(seen.mutex);
    seen.all_signals_blocked = sigismember(&mask, SIGTERM) == 1 && sigismember(&mask, SIGUSR2) == 1 &&
                               sigismember(&mask, SIGCHLD) == 1 && sigismember(&mask, SIGINT) == 1;
    sched_getaffinity(0, sizeof seen.mask, &seen.mask);
    seen.done = true;
    seen.done_now.notify_all();
  });
  if (!started) return false;
  std::unique_lock<std::mutex> lock(seen.mutex);
  return seen.done_now.wait_for(lock, std::chrono::seconds(30), [&] { return seen.done; });
}

}  // namespace

TEST_CASE("on two CPUs or more the work runs on a thread with every signal blocked and the process's CPUs") {
  cpu_set_t allowed;
  REQUIRE(sched_getaffinity(0, sizeof allowed, &allowed) == 0);
  if (CPU_COUNT(&allowed) < 2) {
    MESSAGE("this process may use one CPU only: nothing to test here");
    return;
  }
  seen_by_helper seen;
  REQUIRE(run_helper(seen));
  CHECK(seen.all_signals_blocked);
  // It was placed on one CPU to start at once, then given the process's CPUs back.
  CHECK(CPU_EQUAL(&seen.mask, &allowed));
}

TEST_CASE("on one CPU nothing is started: the caller does the work itself") {
  cpu_set_t allowed;
  REQUIRE(sched_getaffinity(0, sizeof allowed, &allowed) == 0);
  cpu_set_t one;
  CPU_ZERO(&one);
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
    if (CPU_ISSET(cpu, &allowed)) {
      CPU_SET(cpu, &one);
      break;
    }
  REQUIRE(sched_setaffinity(0, sizeof one, &one) == 0);
  bool ran = false;
  const bool started = grace::detail::start_helper_thread([&ran] { ran = true; });
  REQUIRE(sched_setaffinity(0, sizeof allowed, &allowed) == 0);
  CHECK_FALSE(started);
  CHECK_FALSE(ran);
}
