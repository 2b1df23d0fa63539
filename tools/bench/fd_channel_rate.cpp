// grace-bench-fd-channel: fds per second through the fd channel, batched (up to 253 fds per
// message, each message confirmed) beside one fd per message, in the same run, between two
// processes. Each figure is the median of several parcels of COUNT fds.
//
//   grace-bench-fd-channel [COUNT] [ROUNDS]
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "grace/fd_channel.hpp"
#include "command_line.hpp"

namespace {

using namespace std::chrono_literals;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Seconds to pass `count` fds `rounds` times to a child that takes them (median per parcel).
double seconds_per_parcel(std::size_t count, int rounds, std::size_t per_message) {
  grace::channel_options options;
  options.max_fds_per_message = per_message;
  auto ends = grace::fd_channel::pair(SOCK_SEQPACKET, options);
  if (!ends) {
    std::fprintf(stderr, "%s\n", ends.error().message().c_str());
    std::exit(1);
  }
  const int source = open("/dev/null", O_RDONLY | O_CLOEXEC);
  grace::outgoing_parcel parcel;
  for (std::size_t i = 0; i < count; ++i) parcel.fds.push_back({source, {grace::fd_kind::other, grace::network::tcp, "", "", ""}});
  const pid_t child = fork();
  if (child == 0) {
    close(ends->first.release());
    for (int r = 0; r < rounds; ++r) {
      auto p = ends->second.receive(60s);
      if (!p || p->fds.size() != count) _exit(1);
    }
    _exit(0);
  }
  close(ends->second.release());
  std::vector<double> times;
  for (int r = 0; r < rounds; ++r) {
    const auto start = std::chrono::steady_clock::now();
    if (!ends->first.send(parcel, 60s)) {
      std::fprintf(stderr, "send failed\n");
      std::exit(1);
    }
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  int status = 0;
  waitpid(child, &status, 0);
  close(source);
  return median(times);
}

}  // namespace

// "2.0x faster", or for a ratio below 1 "2.0x slower" (0.5x faster is not faster).
std::string compared(double ratio) {
  char text[64];
  if (ratio >= 1) std::snprintf(text, sizeof text, "%.1fx faster", ratio);
  else std::snprintf(text, sizeof text, "%.1fx slower", 1 / ratio);
  return text;
}

int main(int argc, char** argv) {
  bench::follow_conventions(argc, argv, "grace-bench-fd-channel", "usage: grace-bench-fd-channel [COUNT] [ROUNDS]");
  const std::size_t count = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 10000;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 7;
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  if (count == 0 || rounds <= 0 || count + 64 > limit.rlim_cur) {
    std::fprintf(stderr, "usage: grace-bench-fd-channel [COUNT] [ROUNDS] (COUNT below the fd limit, %llu)\n",
                 static_cast<unsigned long long>(limit.rlim_cur));
    return 2;
  }
  const double batched = seconds_per_parcel(count, rounds, 253);
  const double single = seconds_per_parcel(count, rounds, 1);
  std::printf("fd channel, %zu fds per parcel, median of %d: batched (253 per message) %.2f ms, %.0f fds/s | "
              "one per message %.2f ms, %.0f fds/s | batching %s\n",
              count, rounds, batched * 1e3, static_cast<double>(count) / batched, single * 1e3,
              static_cast<double>(count) / single, compared(single / batched).c_str());
  return 0;
}
