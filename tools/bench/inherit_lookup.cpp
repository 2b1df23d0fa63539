// grace-bench-inherit: how fast a new generation takes over N inherited listeners.
//
// The parent opens N TCP listeners on 127.0.0.1 and start_process()es itself; the child times
// grace's start-up before main (it parses the LISTEN_* variables there), reading LISTEN_FDS and
// claiming every listener by address (in reverse order, the worst case for a linear scan; the
// addresses come from the parent in a file, so nothing is looked at before the clock starts),
// and, side by side, the same claims done gracenet's way: a linear scan of the inherited list per
// listen call, and the floor: a child that only looks at each fd once. The floor and grace's
// child alternate, ROUNDS times each (this kind of machine is noisy); each figure is printed as
// the median of the rounds with their range.
//
//   grace-bench-inherit [--rounds ROUNDS] [N ...]        (default: 7 rounds of 1000 and 10000)
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "grace/grace.hpp"
#include "command_line.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point start) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
}

// Before every other start-up function of this program, grace's among them (they have no
// priority, so they run after this one).
clock_type::time_point before_startup;
__attribute__((constructor(101))) void stamp_before_startup() { before_startup = clock_type::now(); }

// One line of figures for the parent, in the file it named.
int write_result(const std::string& line) {
  std::FILE* file = std::fopen(std::getenv("GRACE_BENCH_RESULTS"), "w");
  if (file == nullptr) return 1;
  const bool written = std::fprintf(file, "%s\n", line.c_str()) > 0;
  return std::fclose(file) == 0 && written ? 0 : 1;
}

// What no inheritance can go below: one getsockname per fd, split over two threads as grace
// splits it, the helper placed on another CPU as grace places its own, in a child of its own so
// that neither run warms the other's caches.
struct floor_half {
  int first = 0;
  int last = 0;
};

void* look(void* arg) {
  const auto* half = static_cast<const floor_half*>(arg);
  for (int fd = half->first; fd < half->last; ++fd) {
    sockaddr_storage storage{};
    socklen_t len = sizeof storage;
    getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &len);
  }
  return nullptr;
}

int run_floor_child() {
  const char* count_text = std::getenv("GRACE_BENCH_COUNT");  // LISTEN_FDS is grace's, unset before main
  const int count = count_text != nullptr ? std::atoi(count_text) : 0;
  const auto start = clock_type::now();
  const int split = count >= 1024 ? 3 + count / 2 : 3 + count;
  floor_half mine{3, split}, helpers{split, 3 + count};
  cpu_set_t allowed, elsewhere;
  CPU_ZERO(&elsewhere);
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0)
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
      if (cpu != sched_getcpu() && CPU_ISSET(cpu, &allowed)) {
        CPU_SET(cpu, &elsewhere);
        break;
      }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  if (CPU_COUNT(&elsewhere) == 1) pthread_attr_setaffinity_np(&attr, sizeof elsewhere, &elsewhere);
  pthread_t helper;
  const bool helped = pthread_create(&helper, &attr, look, &helpers) == 0;
  pthread_attr_destroy(&attr);
  look(&mine);
  if (helped)
    pthread_join(helper, nullptr);
  else
    look(&helpers);
  return write_result(std::to_string(ms_since(start)));
}

std::vector<std::string> read_lines(const char* path) {
  std::vector<std::string> lines;
  std::FILE* file = path != nullptr ? std::fopen(path, "r") : nullptr;
  if (file == nullptr) return lines;
  char line[256];
  while (std::fgets(line, sizeof line, file) != nullptr) {
    std::string text(line);
    if (!text.empty() && text.back() == '\n') text.pop_back();
    lines.push_back(text);
  }
  std::fclose(file);
  return lines;
}

int run_child() {
  const double startup_ms = ms_since(before_startup);
  const std::vector<std::string> addresses = read_lines(std::getenv("GRACE_BENCH_ADDRESSES"));
  grace::net net;
  const auto start = clock_type::now();
  if (auto inherited_ok = net.inherit(); !inherited_ok) {
    std::fprintf(stderr, "inherit: %s\n", inherited_ok.error().message().c_str());
    return 1;
  }
  const double inherit_ms = ms_since(start);

  // Claimed right after the read, as a program does, in reverse order.
  const auto match_start = clock_type::now();
  std::size_t inherited = 0;
  for (auto it = addresses.rbegin(); it != addresses.rend(); ++it) {
    auto l = net.listen_tcp("tcp", *it);
    if (l && (*l)->inherited()) ++inherited;
  }
  const double match_ms = ms_since(match_start);

  // gracenet's ListenTCP: scan the inherited list for each request.
  std::vector<std::string> scan_list = addresses;
  std::vector<bool> used(scan_list.size(), false);
  const auto scan_start = clock_type::now();
  std::size_t scanned_matches = 0;
  for (auto it = addresses.rbegin(); it != addresses.rend(); ++it)
    for (std::size_t i = 0; i < scan_list.size(); ++i)
      if (!used[i] && scan_list[i] == *it) {
        used[i] = true;
        ++scanned_matches;
        break;
      }
  const double scan_ms = ms_since(scan_start);
  if (inherited != addresses.size() || scanned_matches != addresses.size()) {
    std::fprintf(stderr, "only %zu of %zu listeners were inherited (%zu found by the scan)\n", inherited,
                 addresses.size(), scanned_matches);
    return 1;
  }
  return write_result(std::to_string(startup_ms) + " " + std::to_string(inherit_ms) + " " + std::to_string(match_ms) +
                      " " + std::to_string(scan_ms));
}

struct figures {
  std::vector<double> values;
  std::string text(double scale = 1) const {
    std::vector<double> v = values;
    std::sort(v.begin(), v.end());
    char out[64];
    std::snprintf(out, sizeof out, "%.2f (%.2f-%.2f)", v[v.size() / 2] * scale, v.front() * scale, v.back() * scale);
    return out;
  }
};

std::vector<double> read_result(const char* path) {
  std::vector<double> out;
  std::FILE* file = std::fopen(path, "r");
  if (file == nullptr) return out;
  double value = 0;
  while (std::fscanf(file, "%lf", &value) == 1) out.push_back(value);
  std::fclose(file);
  return out;
}

void print(std::size_t count, int rounds, const std::vector<figures>& grace, const figures& floor) {
  std::printf("%zu listeners, median (range) of %d rounds, ms:\n", count, rounds);
  std::printf("  grace's start-up before main        %s\n", grace[0].text().c_str());
  std::printf("  read LISTEN_FDS                     %s\n", grace[1].text().c_str());
  std::printf("  claim all by address                %s, %s us each\n", grace[2].text().c_str(),
              grace[2].text(1000.0 / static_cast<double>(count)).c_str());
  std::printf("  all three                           %s\n", grace[4].text().c_str());
  std::printf("  floor: one getsockname per fd and nothing else, split as grace splits it  %s\n", floor.text().c_str());
  std::printf("  gracenet-style linear scan per claim  %s\n", grace[3].text().c_str());
}

int run_parent(std::size_t count, int rounds) {
  grace::net net;
  for (std::size_t i = 0; i < count; ++i) {
    if (auto l = net.listen_tcp("tcp", "127.0.0.1:0", {64, ""}); !l) {
      std::fprintf(stderr, "listener %zu: %s\n", i, l.error().message().c_str());
      return 1;
    }
  }
  char path[] = "/tmp/grace-bench-inherit-XXXXXX";
  const int file = mkstemp(path);
  if (file < 0) {
    std::perror("mkstemp");
    return 1;
  }
  std::string list;
  for (const auto* l : net.active_listeners()) list += l->address() + "\n";
  const bool written = write(file, list.data(), list.size()) == static_cast<ssize_t>(list.size());
  close(file);
  char results_path[] = "/tmp/grace-bench-inherit-result-XXXXXX";
  const int results_file = mkstemp(results_path);
  if (results_file >= 0) close(results_file);
  const std::string results = results_path;
  std::vector<figures> grace(5);
  figures floor;
  bool failed = !written || results_file < 0;
  if (failed) std::perror(written ? "mkstemp" : "write");
  grace::process_options options;
  options.executable = grace::process_options::executable_source::proc_self_exe;
  for (int round = 0; round < rounds && !failed; ++round) {
    for (const char* mode : {"floor", "grace"}) {
      options.extra_env = {std::string("GRACE_BENCH_CHILD=") + mode, "GRACE_BENCH_COUNT=" + std::to_string(count),
                           std::string("GRACE_BENCH_ADDRESSES=") + path, "GRACE_BENCH_RESULTS=" + results};
      auto child = net.start_process(options);
      if (!child) {
        std::fprintf(stderr, "start_process: %s\n", child.error().message().c_str());
        failed = true;
        break;
      }
      int status = 0;
      waitpid(*child, &status, 0);
      const std::vector<double> values = read_result(results.c_str());
      unlink(results.c_str());
      const bool grace_child = std::strcmp(mode, "grace") == 0;
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || values.size() != (grace_child ? 4U : 1U)) {
        std::fprintf(stderr, "the %s child failed\n", mode);
        failed = true;
        break;
      }
      if (!grace_child) {
        floor.values.push_back(values[0]);
        continue;
      }
      for (std::size_t i = 0; i < 4; ++i) grace[i].values.push_back(values[i]);
      grace[4].values.push_back(values[0] + values[1] + values[2]);
    }
  }
  unlink(path);
  if (failed) return 1;
  print(count, rounds, grace, floor);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* mode = std::getenv("GRACE_BENCH_CHILD")) return std::strcmp(mode, "floor") == 0 ? run_floor_child() : run_child();
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  bench::follow_conventions(argc, argv, "grace-bench-inherit", "usage: grace-bench-inherit [--rounds ROUNDS] [N ...]",
                            {"--rounds"});
  int rounds = 7;
  std::vector<std::size_t> counts;
  for (int i = 1; i < argc; ++i) {
    char* end = nullptr;
    if (std::strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
      const long value = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || value < 1 || value > 1000) {
        std::fprintf(stderr, "--rounds: expected 1 to 1000, not %s\n", argv[i]);
        return 2;
      }
      rounds = static_cast<int>(value);
      continue;
    }
    const unsigned long count = std::strtoul(argv[i], &end, 10);
    if (*end != '\0' || count < 1 || count > 100000) {
      std::fprintf(stderr, "usage: grace-bench-inherit [--rounds ROUNDS] [N ...] (N: 1 to 100000 listeners, not %s)\n", argv[i]);
      return 2;
    }
    counts.push_back(count);
  }
  if (counts.empty()) counts = {1000, 10000};
  for (const auto count : counts)
    if (run_parent(count, rounds) != 0) return 1;
  return 0;
}
