// grace-bench-inherit: how fast a new generation takes over N inherited listeners.
//
// The parent opens N TCP listeners on 127.0.0.1 and start_process()es itself; the child times
// grace's start-up before main (it parses the LISTEN_* variables there), reading LISTEN_FDS and
// claiming every listener by address (in reverse order, the worst case for a linear scan; the
// addresses come from the parent in a file, so nothing is looked at before the clock starts),
// and, side by side, the same claims done gracenet's way: a linear scan of the inherited list per
// listen call, and the floor: a child that only looks at each fd once.
//
//   grace-bench-inherit [N ...]        (default: 1000 10000)
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "grace/grace.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point start) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
}

// Before every other start-up function of this program, grace's among them (they have no
// priority, so they run after this one).
clock_type::time_point before_startup;
__attribute__((constructor(101))) void stamp_before_startup() { before_startup = clock_type::now(); }

// What no inheritance can go below: one getsockname per fd, split over two threads as grace
// splits it, in a child of its own so that neither run warms the other's caches.
int run_floor_child() {
  const char* count_text = std::getenv("GRACE_BENCH_COUNT");  // LISTEN_FDS is grace's, unset before main
  const int count = count_text != nullptr ? std::atoi(count_text) : 0;
  const auto start = clock_type::now();
  auto look = [](int first, int last) {
    for (int fd = first; fd < last; ++fd) {
      sockaddr_storage storage{};
      socklen_t len = sizeof storage;
      getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &len);
    }
  };
  const int split = count >= 1024 ? count / 2 : count;
  std::thread helper([&] { look(3 + split, 3 + count); });
  look(3, 3 + split);
  helper.join();
  std::printf("%6d listeners: one getsockname per fd, nothing else (the floor) %7.2f ms\n", count, ms_since(start));
  return 0;
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
  std::printf("%6zu listeners: start-up before main %5.2f ms | read LISTEN_FDS %7.2f ms | claim all by address "
              "%7.2f ms (%.2f us each, %zu inherited) | all three %7.2f ms | gracenet-style linear scan %8.2f ms (%zu)\n",
              addresses.size(), startup_ms, inherit_ms, match_ms,
              addresses.empty() ? 0.0 : match_ms * 1000 / static_cast<double>(addresses.size()), inherited,
              startup_ms + inherit_ms + match_ms, scan_ms, scanned_matches);
  return inherited == addresses.size() ? 0 : 1;
}

int run_parent(std::size_t count) {
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
  if (!written) {
    unlink(path);
    std::perror("write");
    return 1;
  }
  grace::process_options options;
  options.executable = grace::process_options::executable_source::proc_self_exe;
  for (const char* mode : {"GRACE_BENCH_CHILD=floor", "GRACE_BENCH_CHILD=grace"}) {
    options.extra_env = {mode, "GRACE_BENCH_COUNT=" + std::to_string(count), std::string("GRACE_BENCH_ADDRESSES=") + path};
    auto child = net.start_process(options);
    if (!child) {
      std::fprintf(stderr, "start_process: %s\n", child.error().message().c_str());
      return 1;
    }
    int status = 0;
    waitpid(*child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      unlink(path);
      return 1;
    }
  }
  unlink(path);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* mode = std::getenv("GRACE_BENCH_CHILD")) return std::strcmp(mode, "floor") == 0 ? run_floor_child() : run_child();
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  std::vector<std::size_t> counts = {1000, 10000};
  if (argc > 1) {
    counts.clear();
    for (int i = 1; i < argc; ++i) counts.push_back(std::strtoul(argv[i], nullptr, 10));
  }
  for (const auto count : counts)
    if (run_parent(count) != 0) return 1;
  return 0;
}
