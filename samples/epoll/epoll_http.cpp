// grace-epoll: grace-http's protocol on a plain epoll loop, with grace's core alone (no libuv).
// It is the README's "other event loops" recipe, complete: signals through a signalfd, the
// readiness hand-shake (pending_child) watched by epoll, the ready and drain deadlines as
// timerfds, the pid file and MAINPID through grace::charge_keeper (both sides of a hand-over),
// systemd notifications, and a drain that answers the next request on each connection with
// "Connection: close". Nothing here blocks the loop.
// See samples/common/command_line.hpp for the command line.
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <list>
#include <optional>
#include <string>
#include <unordered_map>

#include "../common/command_line.hpp"
#include "../http/protocol.hpp"

namespace {

// What an epoll event is about: the kind in the high bits, the fd in the low ones.
enum class kind : std::uint64_t { listener = 1, client, signals, child, reaping, ready_timer, drain_timer, charge };

std::uint64_t tag(kind k, int fd) { return (static_cast<std::uint64_t>(k) << 32) | static_cast<std::uint32_t>(fd); }

struct client {
  std::string input;
  std::string output;
  bool close_after_write = false;
};

class epoll_server {
 public:
  epoll_server(grace::net& net, grace::listener* listener, sample::command_line options)
      : net_(net), listener_(listener), options_(std::move(options)), keeper_(grace::charge_options{options_.pidfile}) {
    who_ = sample::who_body(getpid(), grace::generation());
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGUSR2, SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
    sigprocmask(SIG_BLOCK, &set, nullptr);  // delivered through the signalfd instead
    signals_ = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    ready_timer_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    drain_timer_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    watch(signals_, kind::signals, EPOLLIN);
    watch(ready_timer_, kind::ready_timer, EPOLLIN);
    watch(drain_timer_, kind::drain_timer, EPOLLIN);
    watch(keeper_.fd(), kind::charge, EPOLLIN);  // the pid file and MAINPID are written off the loop
    watch(listener_->fd(), kind::listener, EPOLLIN);
    for (const auto& warning : grace::inheritance_warnings()) log("warning: " + warning);
  }

  // This generation is ready: tell the parent, or take charge (first start, or a parent that died).
  bool ready() {
    auto told = grace::notify_ready();
    if (!told) {
      log("cannot report readiness: " + told.error().message());
      return false;
    }
    // In charge alone: the pid file and MAINPID name this process. A generation that told its
    // parent writes nothing: its parent gives it charge.
    if (*told != grace::ready_outcome::told_parent) keeper_.give(getpid());
    if (*told == grace::ready_outcome::parent_gone) log("took charge: the generation that started this one is gone");
    state_ = state::serving;
    log("serving " + listener_->address() + " as pid " + std::to_string(getpid()));
    return true;
  }

  int run() {
    epoll_event events[64];
    while (state_ != state::done) {
      const int n = epoll_wait(epoll_, events, 64, -1);
      if (n < 0 && errno != EINTR) return 1;
      for (int i = 0; i < n; ++i) dispatch(events[i]);
    }
    grace::flush_stderr_log(1000);
    return 0;
  }

 private:
  enum class state { starting, serving, draining, exiting, done };

  void log(const std::string& line) {
    grace::log_to_stderr("grace-epoll[" + std::to_string(getpid()) + "] generation " +
                         std::to_string(grace::generation()) + ": " + line);
  }

  void notify(const std::string& message) {
    // Never blocks; a lagging service manager gets EAGAIN (grace::uv::upgrader retries on a timer).
    if (auto sent = grace::notify_service_manager(message); !sent)
      log("warning: cannot notify the service manager: " + sent.error().message());
  }

  void watch(int fd, kind k, std::uint32_t events) {
    epoll_event e{};
    e.events = events;
    e.data.u64 = tag(k, fd);
    epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &e);
  }
  void unwatch(int fd) { epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr); }

  static void arm(int timer, std::chrono::milliseconds after) {
    itimerspec spec{};
    spec.it_value.tv_sec = static_cast<time_t>(after.count() / 1000);
    spec.it_value.tv_nsec = static_cast<long>(after.count() % 1000) * 1000000L + 1;  // never 0 (disarm)
    timerfd_settime(timer, 0, &spec, nullptr);
  }
  static void disarm(int timer) {
    itimerspec none{};
    timerfd_settime(timer, 0, &none, nullptr);
  }

  void dispatch(const epoll_event& e) {
    const auto k = static_cast<kind>(e.data.u64 >> 32);
    const int fd = static_cast<int>(e.data.u64 & 0xffffffffU);
    switch (k) {
      case kind::listener: accept_all(); break;
      case kind::client: on_client(fd, e.events); break;
      case kind::signals: on_signals(); break;
      case kind::child:
        if (pending_)
          if (auto outcome = pending_->check()) settle(*outcome);
        break;
      case kind::reaping: on_reaping(fd); break;
      case kind::ready_timer:
        if (pending_) {
          pending_->kill_pending();  // reaped later, when its pidfd says it exited
          settle(grace::upgrade_outcome::timed_out, "was not ready in time and was killed");
        }
        break;
      case kind::drain_timer:
        log("drain deadline passed: closing " + std::to_string(clients_.size()) + " connection(s)");
        while (!clients_.empty()) close_client(clients_.begin()->first);
        finish();
        break;
      case kind::charge:
        log_charge_failures();
        if (state_ == state::exiting) finish();
        break;
    }
  }

  // --- serving --------------------------------------------------------------------------------
  void accept_all() {
    while (accepting_) {
      const int fd = accept4(listener_->fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN: the queue is empty (EMFILE: it stays queued)
      clients_.emplace(fd, client{});
      watch(fd, kind::client, EPOLLIN);
    }
  }

  void on_client(int fd, std::uint32_t events) {
    auto it = clients_.find(fd);
    if (it == clients_.end()) return;
    client& c = it->second;
    if (events & EPOLLIN) {
      char buffer[16384];
      const ssize_t n = read(fd, buffer, sizeof buffer);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return close_client(fd);
      if (n > 0 && !c.close_after_write) {
        c.input.append(buffer, static_cast<std::size_t>(n));
        bool close = false;
        while (!close && http_protocol::answer_one(c.input, c.output, close, state_ == state::draining, who_)) {
        }
        c.close_after_write = close;
      }
    }
    flush(fd, c);
  }

  void flush(int fd, client& c) {
    while (!c.output.empty()) {
      const ssize_t n = send(fd, c.output.data(), c.output.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EAGAIN) {
        epoll_event e{};
        e.events = EPOLLIN | EPOLLOUT;
        e.data.u64 = tag(kind::client, fd);
        epoll_ctl(epoll_, EPOLL_CTL_MOD, fd, &e);
        return;
      }
      if (n < 0) return close_client(fd);
      c.output.erase(0, static_cast<std::size_t>(n));
    }
    if (c.close_after_write) return close_client(fd);
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u64 = tag(kind::client, fd);
    epoll_ctl(epoll_, EPOLL_CTL_MOD, fd, &e);
  }

  void close_client(int fd) {
    unwatch(fd);
    close(fd);
    clients_.erase(fd);
    if (state_ == state::draining && clients_.empty()) finish();
  }

  void stop_accepting() {
    if (!accepting_) return;
    accepting_ = false;
    unwatch(listener_->fd());  // the socket stays open: its queue is the next generation's
  }

  // --- signals --------------------------------------------------------------------------------
  void on_signals() {
    signalfd_siginfo info{};
    while (read(signals_, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
      if (info.ssi_signo == SIGUSR2) upgrade();
      else if (info.ssi_signo == SIGHUP) log("SIGHUP ignored (SIGUSR2 upgrades, SIGTERM stops)");
      else shutdown();
    }
  }

  void upgrade() {
    if (state_ != state::serving) return log("upgrade refused: this generation is not serving");
    if (pending_) return log("upgrade refused: an upgrade is already in progress");
    auto child = grace::pending_child::start(net_, {}, options_.max_generations);
    if (!child) return log("upgrade refused: " + child.error().message());
    notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(grace::monotonic_usec()));
    pending_.emplace(std::move(*child));
    watch(pending_->ready_fd(), kind::child, EPOLLIN);
    if (pending_->pid_fd() >= 0) watch(pending_->pid_fd(), kind::child, EPOLLIN);
    arm(ready_timer_, options_.ready_timeout);
    log("started generation " + std::to_string(grace::generation() + 1) + " as pid " + std::to_string(pending_->pid()));
  }

  void settle(grace::upgrade_outcome outcome, const std::string& reason = {}) {
    disarm(ready_timer_);
    grace::pending_child child = std::move(*pending_);
    pending_.reset();
    unwatch(child.ready_fd());
    unwatch(child.pid_fd());
    if (outcome == grace::upgrade_outcome::ready) {
      stop_accepting();
      keeper_.give(child.pid());  // the pid file and MAINPID name the new generation
      log("pid " + std::to_string(child.pid()) + " is ready and in charge");
      return begin_drain();
    }
    const pid_t pid = child.pid();
    if (child.reaped()) {
      log("rollback: pid " + std::to_string(pid) + " exited before it was ready; still serving");
    } else {
      log("rollback: pid " + std::to_string(pid) + " " + (reason.empty() ? "gave up before it was ready" : reason) +
          "; still serving");
      reaping_.push_back(std::move(child));
      watch(reaping_.back().pid_fd(), kind::reaping, EPOLLIN);
    }
    if (state_ == state::serving) notify("READY=1");
  }

  void on_reaping(int pid_fd) {
    for (auto it = reaping_.begin(); it != reaping_.end(); ++it) {
      if (it->pid_fd() != pid_fd) continue;
      it->check();  // reaps without waiting: its exit is known
      if (it->reaped()) {
        unwatch(pid_fd);
        reaping_.erase(it);
      }
      return;
    }
  }

  void shutdown() {
    if (state_ == state::draining || state_ == state::exiting) {
      log("asked again to stop: closing " + std::to_string(clients_.size()) + " connection(s) now");
      while (!clients_.empty()) close_client(clients_.begin()->first);
      return finish();
    }
    notify("STOPPING=1");
    stop_accepting();
    // Stopping for good: new clients are refused at once.
    if (auto closed = net_.close(listener_); !closed) log("warning: " + closed.error().message());
    if (pending_) {
      pending_->kill_pending();
      settle(grace::upgrade_outcome::timed_out, "was killed because this process is shutting down");
    }
    begin_drain();
  }

  void begin_drain() {
    if (state_ == state::draining || state_ == state::exiting) return;
    state_ = state::draining;
    log("draining " + std::to_string(clients_.size()) + " connection(s)");
    arm(drain_timer_, options_.drain_timeout);
    if (clients_.empty()) finish();
  }

  // Exits once the pid file and MAINPID name the new generation: a process that left first would
  // leave them naming a pid that is gone, and the next SIGUSR2 would find nobody.
  void finish() {
    state_ = state::exiting;
    disarm(drain_timer_);
    log_charge_failures();
    if (keeper_.idle()) {
      log("drained; exiting");
      state_ = state::done;
    }
  }

  void log_charge_failures() {
    for (const auto& failure : keeper_.collect()) log("warning: " + failure);
  }

  grace::net& net_;
  grace::listener* listener_;
  sample::command_line options_;
  std::string who_;
  grace::charge_keeper keeper_;
  int epoll_ = -1, signals_ = -1, ready_timer_ = -1, drain_timer_ = -1;
  state state_ = state::starting;
  bool accepting_ = true;
  std::unordered_map<int, client> clients_;
  std::optional<grace::pending_child> pending_;
  std::list<grace::pending_child> reaping_;
};

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  const auto options = sample::parse_command_line(argc, argv, "grace-epoll");
  sample::refuse_upgrader_options(options, "grace-epoll");
  grace::net net;
  grace::listener* listener = sample::open_listener(net, options.address, "grace-epoll");
  epoll_server server(net, listener, options);
  if (!server.ready()) return 1;
  return server.run();
}
