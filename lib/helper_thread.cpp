#include "helper_thread.hpp"

#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include <memory>

namespace grace::detail {
namespace {

struct start {
  std::function<void()> work;
  bool placed = false;
  cpu_set_t allowed;  // the process's mask, given back once the thread runs where it was placed
};

void* run(void* arg) {
  std::unique_ptr<start> s(static_cast<start*>(arg));
  // Placed, it is running now; from here the scheduler may move it like any other thread, should
  // its CPU get busy.
  if (s->placed) sched_setaffinity(0, sizeof s->allowed, &s->allowed);
  s->work();
  return nullptr;
}

// The first CPU of `allowed` other than the one this thread runs on now.
bool other_cpu(const cpu_set_t& allowed, cpu_set_t& out) {
  const int current = sched_getcpu();
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (cpu == current || !CPU_ISSET(cpu, &allowed)) continue;
    CPU_ZERO(&out);
    CPU_SET(cpu, &out);
    return true;
  }
  return false;
}

// On `cpu` when given. Takes `s` on success.
bool create(std::unique_ptr<start>& s, const cpu_set_t* cpu) {
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) != 0) return false;
  pthread_t thread;
  bool created = cpu == nullptr || pthread_attr_setaffinity_np(&attr, sizeof *cpu, cpu) == 0;
  s->placed = cpu != nullptr;
  created = created && pthread_create(&thread, &attr, run, s.get()) == 0;
  pthread_attr_destroy(&attr);
  if (!created) return false;
  s.release();
  pthread_detach(thread);
  return true;
}

}  // namespace

bool start_helper_thread(std::function<void()> work) {
  std::unique_ptr<start> s(new (std::nothrow) start);
  if (!s) return false;
  s->work = std::move(work);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  CPU_ZERO(&s->allowed);
  bool started = false;
  if (sched_getaffinity(0, sizeof s->allowed, &s->allowed) != 0) {
    started = create(s, nullptr);
  } else if (cpu_set_t elsewhere; other_cpu(s->allowed, elsewhere)) {
    // The mask may shrink under us (a cpuset changed): then a thread the scheduler places.
    started = create(s, &elsewhere) || create(s, nullptr);
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return started;
}

}  // namespace grace::detail
