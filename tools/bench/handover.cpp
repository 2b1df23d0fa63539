// grace-bench-handover: CONNECTIONS keep-alive connections handed from one generation of
// grace-http to the next, RESTARTS times (SIGUSR2). Each restart: the time from the signal until
// the old generation is gone, and whether every connection moved (its next answer comes from the
// new generation, without "Connection: close"). Where that time went comes from the two
// generations' log lines (the new one's start-up, the hello, building the parcels, sending them
// until the last confirmation, receiving, adopting into the loop, the old side's drain after the
// last confirmation; the old side times its steps from when its loop took the signal, and the
// rest is the signal reaching that loop and the process's exit), printed beside the fd
// channel's raw time for as many fds in parcels of the same size, measured in the same run, as
// ratios.
//
// Idle by default (each connection has been answered once and waits); with --busy every
// connection sends its next request as soon as it has an answer, as restart-harness's
// keep-alive clients do, and those ended with "Connection: close" are counted and reopened.
//
// --log FILE keeps the generations' log there (else it is kept only when a restart fails).
//
//   grace-bench-handover GRACE_HTTP [CONNECTIONS] [RESTARTS] [--busy] [--log FILE]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "command_line.hpp"
#include "generations.hpp"
#include "grace/fd_channel.hpp"
#include "harness_runs.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

// The migration's parcels hold at most this many connections (lib/uv/upgrader/migration_out.cpp).
constexpr std::size_t parcel_size = 128;
const std::string request = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

double ms_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// The fd channel alone: `count` fds in parcels of parcel_size, each confirmed before the next, to
// another process that takes them; the median of `rounds` (ms).
double raw_channel_ms(std::size_t count, int rounds) {
  auto ends = grace::fd_channel::pair(SOCK_SEQPACKET);
  if (!ends) {
    std::fprintf(stderr, "%s\n", ends.error().message().c_str());
    std::exit(1);
  }
  const int source = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);  // a socket, as connections are
  const pid_t child = fork();
  if (child == 0) {
    close(ends->first.release());
    for (int r = 0; r < rounds; ++r)
      for (std::size_t got = 0; got < count;) {
        auto p = ends->second.receive(60s);
        if (!p) _exit(1);
        got += p->fds.size();
      }
    _exit(0);
  }
  close(ends->second.release());
  std::vector<double> times;
  for (int r = 0; r < rounds; ++r) {
    const auto start = clock_type::now();
    for (std::size_t sent = 0; sent < count; sent += parcel_size) {
      grace::outgoing_parcel parcel;
      for (std::size_t i = sent; i < std::min(count, sent + parcel_size); ++i)
        parcel.fds.push_back({source, {grace::fd_kind::connection, grace::network::tcp, "127.0.0.1:1", "", ""}});
      if (!ends->first.send(parcel, 60s)) {
        std::fprintf(stderr, "the raw fd channel failed\n");
        std::exit(1);
      }
    }
    times.push_back(ms_between(start, clock_type::now()));
  }
  waitpid(child, nullptr, 0);
  close(source);
  return bench::median(times);
}

int pidfd_of(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  return -1;
#endif
}

// The clients: one epoll set over every connection.
struct client {
  int fd = -1;
  std::string input;
  bool waiting = false;  // a request is out
};

struct answer {
  pid_t pid = 0;
  bool closes = false;
};

class clients {
 public:
  clients(int port, bool busy) : port_(port), busy_(busy), epoll_(epoll_create1(EPOLL_CLOEXEC)) {}

  // Opens `count` connections, each answered once; false when the server does not answer.
  bool open(std::size_t count) {
    conns_.resize(count);
    for (std::size_t from = 0; from < count; from += 200) {
      const std::size_t to = std::min(count, from + 200);
      for (std::size_t i = from; i < to; ++i)
        if (!connect_one(i)) return false;
      for (std::size_t i = from; i < to; ++i) ask(i);
      if (!wait_all(10s)) return false;
    }
    return true;
  }

  // Busy: every connection asks again as soon as it is answered; idle: none asks.
  void set_busy(bool busy) {
    busy_ = busy;
    if (busy)
      for (std::size_t i = 0; i < conns_.size(); ++i)
        if (!conns_[i].waiting) ask(i);
  }

  // Runs the clients until `wake_fd` is readable (or `deadline`); false at the deadline.
  bool run_until(int wake_fd, clock_type::time_point deadline) {
    if (wake_fd >= 0) {
      epoll_event e{};
      e.events = EPOLLIN;
      e.data.u64 = UINT64_MAX;
      epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_fd, &e);
    }
    bool done = false;
    while (!done && clock_type::now() < deadline) done = step(wake_fd < 0 ? 1 : 100);
    if (wake_fd >= 0) epoll_ctl(epoll_, EPOLL_CTL_DEL, wake_fd, nullptr);
    return done;
  }

  // Every connection asks once more (after the ones out are answered); the answers are counted.
  bool ask_everyone(clock_type::duration within) {
    set_busy(false);
    if (!wait_all(within)) return false;
    answers_.clear();
    for (std::size_t i = 0; i < conns_.size(); ++i) ask(i);
    return wait_all(within);
  }

  const std::vector<answer>& answers() const { return answers_; }
  std::size_t reopened() const { return reopened_; }
  std::size_t closed_by_server() const { return closed_; }
  void reset_counts() { reopened_ = closed_ = 0; answers_.clear(); }
  void close_all() {
    for (auto& c : conns_)
      if (c.fd >= 0) close(c.fd);
    conns_.clear();
  }

 private:
  bool connect_one(std::size_t i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    in.sin_port = htons(static_cast<uint16_t>(port_));
    if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&in), sizeof in) != 0) {
      std::perror("connect");
      if (fd >= 0) close(fd);
      return false;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u64 = i;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &e);
    conns_[i] = client{fd, {}, false};
    return true;
  }

  void ask(std::size_t i) {
    client& c = conns_[i];
    if (write(c.fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) return reopen(i);
    c.waiting = true;
  }

  void reopen(std::size_t i) {
    close(conns_[i].fd);
    ++reopened_;
    if (connect_one(i)) ask(i);
  }

  bool wait_all(clock_type::duration within) {
    const auto deadline = clock_type::now() + within;
    auto out = [this] {
      return std::any_of(conns_.begin(), conns_.end(), [](const client& c) { return c.waiting; });
    };
    while (out()) {
      if (clock_type::now() > deadline) return false;
      step(100);
    }
    return true;
  }

  // One epoll round; true when the pidfd fired.
  bool step(int timeout_ms) {
    epoll_event events[512];
    const int n = epoll_wait(epoll_, events, 512, timeout_ms);
    bool fired = false;
    for (int k = 0; k < n; ++k) {
      if (events[k].data.u64 == UINT64_MAX) {
        fired = true;
        continue;
      }
      readable(static_cast<std::size_t>(events[k].data.u64));
    }
    return fired;
  }

  void readable(std::size_t i) {
    client& c = conns_[i];
    char buffer[4096];
    for (;;) {
      const ssize_t got = read(c.fd, buffer, sizeof buffer);
      if (got > 0) {
        c.input.append(buffer, static_cast<std::size_t>(got));
        continue;
      }
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) break;
      // Closed or reset: a lost connection (never expected), reopened.
      answers_.push_back({0, true});
      c.waiting = false;
      return reopen(i);
    }
    while (true) {
      const auto head_end = c.input.find("\r\n\r\n");
      if (head_end == std::string::npos) return;
      const auto length_at = c.input.find("Content-Length: ");
      const std::size_t length = length_at < head_end ? std::strtoul(c.input.c_str() + length_at + 16, nullptr, 10) : 0;
      if (c.input.size() < head_end + 4 + length) return;
      const std::string head = c.input.substr(0, head_end);
      const std::string body = c.input.substr(head_end + 4, length);
      c.input.erase(0, head_end + 4 + length);
      answer a;
      const auto at = body.find("pid=");
      if (at != std::string::npos) a.pid = static_cast<pid_t>(std::atol(body.c_str() + at + 4));
      a.closes = head.find("Connection: close") != std::string::npos;
      answers_.push_back(a);
      c.waiting = false;
      if (a.closes) {
        ++closed_;
        return reopen(i);  // and asks again on the new connection
      }
      if (busy_) ask(i);
    }
  }

  int port_;
  bool busy_;
  int epoll_;
  std::vector<client> conns_;
  std::vector<answer> answers_;
  std::size_t reopened_ = 0, closed_ = 0;
};

// A figure following `after` in `line` ("... after X ms" style: the number right after `after`).
std::optional<double> number_after(const std::string& line, const std::string& after) {
  const auto at = line.find(after);
  if (at == std::string::npos) return std::nullopt;
  return std::strtod(line.c_str() + at + after.size(), nullptr);
}

std::vector<std::string> lines_of(const std::string& path, pid_t pid) {
  std::ifstream in(path);
  std::vector<std::string> out;
  const std::string prefix = "grace[" + std::to_string(pid) + "]";
  for (std::string line; std::getline(in, line);)
    if (line.rfind(prefix, 0) == 0) out.push_back(line);
  return out;
}

std::optional<std::string> line_with(const std::vector<std::string>& lines, const std::string& text) {
  for (const auto& l : lines)
    if (l.find(text) != std::string::npos) return l;
  return std::nullopt;
}

struct restart_figures {
  double gone_ms = 0;        // the signal to the old generation's exit
  double ready_ms = -1;      // the old loop's taking the signal to the new generation's readiness
  double hello_ms = -1;      // the offer to the hello
  double building_ms = -1;   // export hooks, copies, descriptions
  double sending_ms = -1;    // the first parcel sent to the last confirmed
  double confirmed_ms = -1;  // the upgrade's start to the last confirmation
  double receiving_ms = -1;  // the new side's hello to its last parcel
  double adopting_ms = -1;   // the new side's adopting into its loop
  double drain_ms = -1;      // the last confirmation to the old generation's "exiting" line
  double outside_ms = -1;    // the signal reaching the old loop, and the exit after its last line
  std::size_t moved = 0, answered = 0, closed = 0, lost = 0;
};

double median_of(const std::vector<restart_figures>& all, double restart_figures::*field) {
  std::vector<double> v;
  for (const auto& f : all)
    if (f.*field >= 0) v.push_back(f.*field);
  return v.empty() ? -1 : bench::median(v);
}

double max_of(const std::vector<restart_figures>& all, double restart_figures::*field) {
  double m = -1;
  for (const auto& f : all) m = std::max(m, f.*field);
  return m;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage = "usage: grace-bench-handover GRACE_HTTP [CONNECTIONS] [RESTARTS] [--busy] [--log FILE]";
  bool busy = false;
  std::string kept_log;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--busy") == 0) busy = true;
    else if (std::strcmp(argv[i], "--log") == 0 && i + 1 < argc) kept_log = argv[++i];
    else args.push_back(argv[i]);
  }
  bench::follow_conventions(static_cast<int>(args.size()), args.data(), "grace-bench-handover", usage);
  if (args.size() < 2) {
    std::fprintf(stderr, "%s\n", usage);
    return 2;
  }
  const std::size_t count = args.size() > 2 ? std::strtoul(args[2], nullptr, 10) : 10000;
  const int restarts = args.size() > 3 ? std::atoi(args[3]) : 5;
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  if (count == 0 || restarts <= 0 || count + 256 > limit.rlim_cur) {
    std::fprintf(stderr, "%s (CONNECTIONS below the fd limit, %llu)\n", usage,
                 static_cast<unsigned long long>(limit.rlim_cur));
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);

  const double raw_ms = raw_channel_ms(count, 5);

  const int port = bench::free_port();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  const std::string base = "/tmp/grace-bench-handover-" + std::to_string(getpid());
  const std::string pidfile = base + ".pid", log = kept_log.empty() ? base + ".log" : kept_log;
  const pid_t first = fork();
  if (first == 0) {
    const int out = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    dup2(out, STDERR_FILENO);
    execl(args[1], args[1], address.c_str(), "--pidfile", pidfile.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  clients load(port, false);
  bool up = false;
  for (int i = 0; i < 2000 && !up; ++i) {
    const int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    in.sin_port = htons(static_cast<uint16_t>(port));
    up = connect(probe, reinterpret_cast<sockaddr*>(&in), sizeof in) == 0;
    close(probe);
    if (!up) usleep(1000);
  }
  if (!up || !load.open(count)) {
    std::fprintf(stderr, "grace-http did not take %zu connections on %s (log: %s)\n", count, address.c_str(),
                 log.c_str());
    kill(first, SIGKILL);
    return 1;
  }

  std::vector<restart_figures> figures;
  pid_t current = first;
  bool failed = false;
  for (int r = 0; r < restarts && !failed; ++r) {
    load.reset_counts();
    load.set_busy(busy);
    if (busy) load.run_until(-1, clock_type::now() + 200ms);  // under way before the signal
    // The exit is stamped by a thread of its own: the clients' loop may be busy when it comes.
    const int pidfd = pidfd_of(current);
    const int woken = eventfd(0, EFD_CLOEXEC);
    std::atomic<bool> gone{false};
    clock_type::time_point gone_at{};
    const auto start = clock_type::now();
    std::thread watcher([&, old = current] {
      const auto give_up = start + 30s;
      if (pidfd >= 0) {
        pollfd p{pidfd, POLLIN, 0};
        gone = poll(&p, 1, 30000) == 1;
      } else {
        while (!(gone = grace::detail::process_has_exited(old)) && clock_type::now() < give_up) usleep(200);
      }
      gone_at = clock_type::now();
      const std::uint64_t one = 1;
      (void)!write(woken, &one, sizeof one);
    });
    kill(current, SIGUSR2);
    restart_figures f;
    load.run_until(woken, start + 31s);
    watcher.join();
    close(woken);
    if (pidfd >= 0) close(pidfd);
    f.gone_ms = ms_between(start, gone_at);
    if (current == first) waitpid(first, nullptr, 0);
    if (!gone) {
      std::fprintf(stderr, "the old generation, pid %d, was still there 30 s after the signal (log: %s)\n",
                   static_cast<int>(current), log.c_str());
      failed = true;
      break;
    }
    pid_t next = 0;
    std::ifstream(pidfile) >> next;
    const std::size_t closed_while_busy = load.closed_by_server();
    if (!load.ask_everyone(10s)) {
      std::fprintf(stderr, "connections went unanswered after restart %d (log: %s)\n", r + 1, log.c_str());
      failed = true;
    }
    for (const auto& a : load.answers()) {
      ++f.answered;
      if (a.pid == 0) ++f.lost;
      else if (a.closes) ++f.closed;
      else if (a.pid == next) ++f.moved;
    }
    f.closed += closed_while_busy;
    // The new generation says what it took once the old one's channel closed; its log thread may
    // lag a little.
    std::vector<std::string> old_lines = lines_of(log, current), new_lines;
    for (int i = 0; i < 200; ++i) {
      new_lines = lines_of(log, next);
      if (line_with(new_lines, "connection(s) from the previous generation")) break;
      usleep(10000);
    }
    if (auto l = line_with(old_lines, "is ready and in charge, ")) f.ready_ms = *number_after(*l, "in charge, ");
    if (auto l = line_with(old_lines, " parcel(s): its hello came ")) {
      f.hello_ms = number_after(*l, "its hello came ").value_or(-1);
      f.building_ms = number_after(*l, "building the parcels took ").value_or(-1);
      f.sending_ms = number_after(*l, "sending them ").value_or(-1);
      f.confirmed_ms = number_after(*l, "the last confirmation, which came ").value_or(-1);
    }
    // The old generation times its steps from the moment its loop handled the signal.
    if (auto l = line_with(old_lines, "drained; exiting, ")) {
      const double exiting = number_after(*l, "drained; exiting, ").value_or(-1);
      if (exiting >= 0 && f.confirmed_ms >= 0) f.drain_ms = exiting - f.confirmed_ms;
      if (exiting >= 0) f.outside_ms = f.gone_ms - exiting;
    }
    if (auto l = line_with(new_lines, "connection(s) from the previous generation in ")) {
      f.receiving_ms = number_after(*l, "parcel(s), the last ").value_or(-1);
      f.adopting_ms = number_after(*l, "adopting them into the loop took ").value_or(-1);
    }
    std::printf("restart %d: old generation gone %.1f ms after the signal; %zu of %zu connection(s) moved, "
                "%zu ended with Connection: close, %zu lost | new generation ready %.1f ms, hello %.1f ms, "
                "building %.1f ms, sending %.1f ms (last confirmed at %.1f ms), receiving %.1f ms, adopting %.1f ms, "
                "old side's drain after the last confirmation %.1f ms | the signal reaching the old loop and its exit %.1f ms | "
                "load %s\n",
                r + 1, f.gone_ms, f.moved, count, f.closed, f.lost, f.ready_ms, f.hello_ms, f.building_ms,
                f.sending_ms, f.confirmed_ms, f.receiving_ms, f.adopting_ms, f.drain_ms, f.outside_ms,
                load_average().c_str());
    std::fflush(stdout);
    figures.push_back(f);
    current = next;
    if (next <= 0) failed = true;
  }
  load.close_all();
  if (current > 0) {
    const int pidfd = pidfd_of(current);
    kill(current, SIGTERM);
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      poll(&p, 1, 10000);
      close(pidfd);
    }
  }
  while (waitpid(-1, nullptr, WNOHANG) > 0) {
  }
  unlink(pidfile.c_str());
  std::size_t all_moved = 0, all_answered = 0;
  for (const auto& f : figures) {
    all_moved += f.moved;
    all_answered += f.answered;
  }
  const double gone = median_of(figures, &restart_figures::gone_ms);
  const double sending = median_of(figures, &restart_figures::sending_ms);
  std::printf(
      "hand-over of %zu %s keep-alive connections, median of %zu restart(s) (ms): old generation gone %.1f (max %.1f) "
      "| new generation ready %.1f, hello %.1f, building parcels %.1f, sending %.1f, receiving %.1f, adopting %.1f, "
      "old side's drain %.1f, the signal reaching the old loop and its exit %.1f | fd channel alone, %zu fds in parcels of %zu: %.1f | sending / channel alone %.2f, "
      "old generation gone / channel alone %.2f | moved %zu of %zu answers | load %s\n",
      count, busy ? "busy" : "idle", figures.size(), gone, max_of(figures, &restart_figures::gone_ms),
      median_of(figures, &restart_figures::ready_ms), median_of(figures, &restart_figures::hello_ms),
      median_of(figures, &restart_figures::building_ms), sending, median_of(figures, &restart_figures::receiving_ms),
      median_of(figures, &restart_figures::adopting_ms), median_of(figures, &restart_figures::drain_ms),
      median_of(figures, &restart_figures::outside_ms), count,
      parcel_size, raw_ms, raw_ms > 0 ? sending / raw_ms : 0, raw_ms > 0 ? gone / raw_ms : 0, all_moved,
      all_answered, load_average().c_str());
  const bool all_clean = std::all_of(figures.begin(), figures.end(),
                                     [](const restart_figures& f) { return f.closed == 0 && f.lost == 0; });
  if (failed || !all_clean || all_moved != all_answered) {
    std::fprintf(stderr, "not every connection moved (log: %s)\n", log.c_str());
    return 1;
  }
  if (kept_log.empty()) unlink(log.c_str());
  return 0;
}
