// grace-bench-restart: how long a restart takes, beside the floor for any restart.
//
// Baseline: fork and exec a trivial C program that accepts one connection on an inherited
// listener (grace-bench-accept-one); time from fork to the client's answer.
// grace: grace-http under SIGUSR2; time from the signal to the first answer from the new
// generation (new connections, probed back to back). Then takeovers: a new grace-http started
// independently with the same --handover-socket; time from its fork to its first answer.
// Beside each, the CPU the new process used until then: on a machine whose cores are full, that
// is what a restart takes from the generation still serving, and it varies far less than wall time.
// The baseline runs once before each restart, so that both see the same machine: on a VM the
// trivial fork+exec alone swings by 2x between sittings. Each ratio is the median of those
// side-by-side pairs' ratios. Before each pair, 20 ms of service (see in_service()).
//
//   grace-bench-restart BENCH_ACCEPT_ONE GRACE_HTTP [ROUNDS]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <cstdlib>
#include <string>
#include <vector>

#include "generations.hpp"
#include "command_line.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

double ms_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

int listener_on_loopback(int& port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&in), sizeof in);
  listen(fd, 64);
  socklen_t len = sizeof in;
  getsockname(fd, reinterpret_cast<sockaddr*>(&in), &len);
  port = ntohs(in.sin_port);
  return fd;
}

int connect_port(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  in.sin_port = htons(static_cast<uint16_t>(port));
  timeval bound{5, 0};  // a benchmark must not hang either
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound);
  if (connect(fd, reinterpret_cast<sockaddr*>(&in), sizeof in) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string read_all(int fd) {
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

// CPU time (ms) a live process has used, from the scheduler's precise accounting.
double cpu_ms_of(pid_t pid) {
  std::ifstream schedstat("/proc/" + std::to_string(pid) + "/schedstat");
  unsigned long long on_cpu_ns = 0;
  schedstat >> on_cpu_ns;
  return static_cast<double>(on_cpu_ns) / 1e6;
}

double ms_of(const timeval& t) { return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_usec) / 1e3; }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// The median of ours[i] / theirs[i], each pair measured one after the other.
double paired_ratio(const std::vector<double>& ours, const std::vector<double>& theirs) {
  std::vector<double> ratios;
  for (std::size_t i = 0; i < ours.size() && i < theirs.size(); ++i)
    if (theirs[i] > 0) ratios.push_back(ours[i] / theirs[i]);
  return median(ratios);
}

struct restart_sample {
  double wall_ms;
  double cpu_ms;
};

restart_sample baseline_once(const char* accept_one) {
  int port = 0;
  const int listener = listener_on_loopback(port);
  const int client = connect_port(port);  // waits in the backlog
  const auto start = clock_type::now();
  const pid_t pid = fork();
  if (pid == 0) {
    if (listener == 3) fcntl(3, F_SETFD, 0);  // dup2 onto itself would keep FD_CLOEXEC
    else dup2(listener, 3);
    execl(accept_one, accept_one, static_cast<char*>(nullptr));
    _exit(127);
  }
  const std::string answer = read_all(client);
  const auto end = clock_type::now();
  rusage usage{};
  wait4(pid, nullptr, 0, &usage);
  close(client);
  close(listener);
  if (answer != "ok\n") return {-1, -1};
  return {ms_between(start, end), ms_of(usage.ru_utime) + ms_of(usage.ru_stime)};
}

pid_t answering_pid(int port) {
  const int fd = connect_port(port);
  if (fd < 0) return 0;
  const std::string request = "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
  if (write(fd, request.data(), request.size()) < 0) return 0;
  const std::string answer = read_all(fd);
  close(fd);
  const auto at = answer.find("pid=");
  return at == std::string::npos ? 0 : static_cast<pid_t>(std::atol(answer.c_str() + at + 4));
}

// A generation is upgraded well after its start-up, and while it serves, as in a deployment: by
// then it has the thread that starts the next one waiting (started 10 ms after ready). Asked
// once a millisecond for 20 ms first (asked back to back instead, both sides of the next
// measurement were about 0.5 ms slower, the baseline too).
void in_service(int port) {
  const auto until = clock_type::now() + std::chrono::milliseconds(20);
  while (clock_type::now() < until) {
    answering_pid(port);
    usleep(1000);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bench::follow_conventions(argc, argv, "grace-bench-restart", "usage: grace-bench-restart BENCH_ACCEPT_ONE GRACE_HTTP [ROUNDS]");
  if (argc < 3) {
    std::fprintf(stderr, "usage: grace-bench-restart BENCH_ACCEPT_ONE GRACE_HTTP [ROUNDS]\n");
    return 2;
  }
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 20;
  if (rounds < 1) {
    std::fprintf(stderr, "grace-bench-restart: ROUNDS must be a positive number, not %s\n", argv[3]);
    return 2;
  }
  // Before each restart, the baseline once: [0] beside the SIGUSR2 rounds, [1] beside the takeovers.
  std::vector<double> baseline[2], baseline_cpu[2];
  auto baseline_beside = [&](int phase) {
    const auto sample = baseline_once(argv[1]);
    baseline[phase].push_back(sample.wall_ms);
    baseline_cpu[phase].push_back(sample.cpu_ms);
  };

  int port = 0;
  close(listener_on_loopback(port));
  const std::string address = "127.0.0.1:" + std::to_string(port);
  const std::string pidfile = "/tmp/grace-bench-restart-" + std::to_string(getpid()) + ".pid";
  // The hand-over socket lives in a directory only this user may write to.
  char private_dir[] = "/tmp/grace-bench-restart-XXXXXX";
  if (mkdtemp(private_dir) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string handover = std::string(private_dir) + "/handover.sock";
  const pid_t first = fork();
  if (first == 0) {
    const int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, STDERR_FILENO);  // the generations' log lines are not the figure
    execl(argv[2], argv[2], address.c_str(), "--pidfile", pidfile.c_str(), "--handover-socket", handover.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  pid_t current = 0;
  for (int i = 0; i < 2000 && (current = answering_pid(port)) == 0; ++i) usleep(1000);
  if (current == 0) {
    std::fprintf(stderr, "grace-http did not answer on %s\n", address.c_str());
    return 1;
  }
  std::vector<double> grace, grace_cpu;
  for (int i = 0; i < rounds; ++i) {
    in_service(port);
    baseline_beside(0);
    const auto start = clock_type::now();
    kill(current, SIGUSR2);
    pid_t now = current;
    const auto give_up = start + std::chrono::seconds(30);
    while (((now = answering_pid(port)) == current || now == 0) && clock_type::now() < give_up) {
    }
    if (now == current || now == 0) {
      std::fprintf(stderr, "no new generation answered within 30 s\n");
      kill(current, SIGKILL);
      return 1;
    }
    grace.push_back(ms_between(start, clock_type::now()));
    grace_cpu.push_back(cpu_ms_of(now));
    // The old generation must be gone before the next upgrade, as a deploy would wait.
    if (current == first) waitpid(first, nullptr, 0);
    else
      while (!grace::detail::process_has_exited(current)) usleep(200);
    current = now;
  }
  std::vector<double> takeover, takeover_cpu;
  for (int i = 0; i < rounds; ++i) {
    in_service(port);
    baseline_beside(1);
    const auto start = clock_type::now();
    const pid_t taker = fork();
    if (taker == 0) {
      const int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, STDERR_FILENO);
      execl(argv[2], argv[2], address.c_str(), "--pidfile", pidfile.c_str(), "--handover-socket", handover.c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    pid_t now = 0;
    const auto give_up = start + std::chrono::seconds(30);
    while ((now = answering_pid(port)) != taker && clock_type::now() < give_up) {
    }
    if (now != taker) {
      std::fprintf(stderr, "the taker did not answer within 30 s\n");
      kill(taker, SIGKILL);
      kill(current, SIGKILL);
      return 1;
    }
    takeover.push_back(ms_between(start, clock_type::now()));
    takeover_cpu.push_back(cpu_ms_of(now));
    while (!grace::detail::process_has_exited(current)) usleep(200);
    current = now;
  }
  kill(current, SIGTERM);
  while (waitpid(-1, nullptr, 0) > 0) {
  }
  unlink(pidfile.c_str());
  unlink(handover.c_str());
  rmdir(private_dir);
  // The trivial program's runs over both phases; one that failed (-1) is no figure.
  std::vector<double> all_baseline, all_baseline_cpu;
  for (int phase = 0; phase < 2; ++phase)
    for (std::size_t i = 0; i < baseline[phase].size(); ++i)
      if (baseline[phase][i] > 0) {
        all_baseline.push_back(baseline[phase][i]);
        all_baseline_cpu.push_back(baseline_cpu[phase][i]);
      }
  if (all_baseline.empty()) {
    std::fprintf(stderr, "grace-bench-restart: the trivial program never answered\n");
    return 1;
  }
  std::printf("restart latency, median of %d restarts each (ms): fork+exec of a trivial C accept-one %.2f "
              "(its %zu runs) | grace-http SIGUSR2 to first answer of the new generation %.2f (ratio %.2f) | "
              "takeover, fork of an independent grace-http to its first answer %.2f (ratio %.2f)\n",
              rounds, median(all_baseline), all_baseline.size(), median(grace), paired_ratio(grace, baseline[0]),
              median(takeover), paired_ratio(takeover, baseline[1]));
  std::printf("CPU of the new process until that answer, median (ms): trivial C accept-one %.2f | "
              "grace-http after SIGUSR2 %.2f (ratio %.2f) | takeover %.2f (ratio %.2f)\n",
              median(all_baseline_cpu), median(grace_cpu), paired_ratio(grace_cpu, baseline_cpu[0]),
              median(takeover_cpu), paired_ratio(takeover_cpu, baseline_cpu[1]));
  std::printf("each ratio is the median of the %d pairs' ratios (the trivial program run just before each "
              "restart), not a ratio of the medians above; the trivial program's own spread: %.2f-%.2f ms\n",
              rounds, *std::min_element(all_baseline.begin(), all_baseline.end()),
              *std::max_element(all_baseline.begin(), all_baseline.end()));
  return 0;
}
