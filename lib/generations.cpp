#include "generations.hpp"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>

#include "read_file.hpp"

namespace grace::detail {

process_identity identify(pid_t pid) {
  // Parsed by hand: an istringstream here cost the first upgrade a locale set-up, between SIGUSR2
  // and the new generation's start.
  const std::string stat = read_small_file("/proc/" + std::to_string(pid) + "/stat").value_or("");
  const auto paren = stat.rfind(')');  // the command name may hold spaces and parentheses
  if (paren == std::string::npos || paren + 2 >= stat.size()) return {pid, 0};
  const char* field = stat.c_str() + paren + 2;  // field 3, the state
  if (*field == 'Z' || *field == 'X') return {pid, 0};
  for (int i = 3; i < 22; ++i) {
    while (*field != ' ' && *field != '\0') ++field;
    if (*field == '\0') return {pid, 0};
    ++field;
  }
  return {pid, std::strtoull(field, nullptr, 10)};  // field 22, the start time
}

bool still_running(const process_identity& p) {
  const auto now = identify(p.pid);
  return now.start_time != 0 && now.start_time == p.start_time;
}

namespace {

std::atomic<pid_t> self_read_in{0};
std::atomic<unsigned long long> self_start_time{0};

}  // namespace

process_identity self_identity() {
  // Its start time never changes. A child of fork() reads its own: the handler forgets the
  // parent's, and the pid is kept with it in case the handler could not be registered.
  static const bool forgotten_at_fork =
      pthread_atfork(nullptr, nullptr, [] { self_read_in.store(0, std::memory_order_relaxed); }) == 0;
  (void)forgotten_at_fork;
  const pid_t self = getpid();
  if (self_read_in.load(std::memory_order_acquire) == self)
    return {self, self_start_time.load(std::memory_order_relaxed)};
  const auto now = identify(self);
  if (now.start_time != 0) {
    self_start_time.store(now.start_time, std::memory_order_relaxed);
    self_read_in.store(self, std::memory_order_release);
  }
  return now;
}

bool process_has_exited(pid_t pid) { return pid <= 0 || identify(pid).start_time == 0; }

std::vector<process_identity> still_running(const std::vector<process_identity>& recorded) {
  std::vector<process_identity> alive;
  for (const auto& p : recorded)
    if (still_running(p)) alive.push_back(p);
  return alive;
}

result<std::vector<process_identity>> admit_next_generation(const std::vector<process_identity>& recorded,
                                                            unsigned max_generations) {
  auto alive = still_running(recorded);
  // The older ones, this process and the next one.
  if (alive.size() + 2 > max_generations) {
    std::string pids;
    for (const auto& p : alive) pids += " " + std::to_string(p.pid);
    return fail(errc::too_many_generations,
                std::to_string(alive.size() + 1) + " generations alive (older ones still draining:" + pids +
                    "); at most " + std::to_string(max_generations) + " at once");
  }
  const auto self = self_identity();
  if (self.start_time != 0) alive.push_back(self);
  return alive;
}

}  // namespace grace::detail
