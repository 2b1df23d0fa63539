#include "supervisor.hpp"

#include "grace/activation.hpp"

#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>

namespace grace_listen {
namespace {

using clock_type = std::chrono::steady_clock;

constexpr auto fast_failure = std::chrono::seconds(1);  // a run shorter than this failed fast
constexpr std::chrono::milliseconds first_backoff{100};
constexpr std::chrono::milliseconds max_backoff{10000};

void say(const std::string& line) {
  std::fprintf(stderr, "grace-listen: %s\n", line.c_str());
  std::fflush(stderr);
}

std::string describe_exit(int64_t status, int signal) {
  if (signal != 0) return std::string("was killed by ") + strsignal(signal);
  return "exited with status " + std::to_string(status);
}

}  // namespace

struct supervisor::handles {
  uv_signal_t hup{}, term{}, interrupt{};
  uv_timer_t backoff{}, debounce{};
  std::vector<std::unique_ptr<uv_fs_event_t>> watches;
};

supervisor::supervisor(uv_loop_t* loop, const options& o, std::vector<held_socket> sockets)
    : loop_(loop), options_(o), sockets_(std::move(sockets)), handles_(std::make_unique<handles>()) {
  auto& h = *handles_;
  for (uv_signal_t* s : {&h.hup, &h.term, &h.interrupt}) {
    uv_signal_init(loop_, s);
    s->data = this;
  }
  uv_signal_start(&h.hup, [](uv_signal_t* s, int) { static_cast<supervisor*>(s->data)->restart("SIGHUP"); }, SIGHUP);
  uv_signal_start(&h.term, [](uv_signal_t* s, int n) { static_cast<supervisor*>(s->data)->stop(n); }, SIGTERM);
  uv_signal_start(&h.interrupt, [](uv_signal_t* s, int n) { static_cast<supervisor*>(s->data)->stop(n); }, SIGINT);
  for (uv_timer_t* t : {&h.backoff, &h.debounce}) {
    uv_timer_init(loop_, t);
    t->data = this;
  }
  for (const auto& path : options_.watch) {
    auto w = std::make_unique<uv_fs_event_t>();
    uv_fs_event_init(loop_, w.get());
    w->data = this;
    const int rc = uv_fs_event_start(
        w.get(),
        [](uv_fs_event_t* e, const char*, int, int) {
          auto* self = static_cast<supervisor*>(e->data);
          char watched[4096];
          size_t size = sizeof watched;
          uv_fs_event_getpath(e, watched, &size);
          // A build writes many files: restart once things have been quiet for a moment.
          self->pending_reason_ = std::string("a change under ") + std::string(watched, size);
          uv_timer_start(&self->handles_->debounce,
                         [](uv_timer_t* t) {
                           auto* s = static_cast<supervisor*>(t->data);
                           s->restart(s->pending_reason_);
                         },
                         static_cast<uint64_t>(self->options_.debounce.count()), 0);
        },
        path.c_str(), 0);
    if (rc != 0) {
      say("cannot watch " + path + ": " + uv_strerror(rc));
      std::exit(1);
    }
    h.watches.push_back(std::move(w));
  }
}

supervisor::~supervisor() = default;

int supervisor::run() {
  std::string shown;
  for (const auto& s : sockets_) shown += (shown.empty() ? "" : ", ") + s.shown;
  say("holding " + shown);
  start("first start");
  uv_run(loop_, UV_RUN_DEFAULT);
  return exit_status_;
}

void supervisor::start(const std::string& reason) {
  grace::activation_options a;
  a.argv = options_.command;
  for (const auto& sock : sockets_) a.sockets.push_back({sock.fd, sock.name});
  started_at_ = clock_type::now();
  auto pid = grace::run_with_sockets(a);
  if (!pid) {
    say("cannot start: " + pid.error().message());
    on_exit(127, 0);
    return;
  }
  child_ = *pid;
  pid_fd_ = static_cast<int>(syscall(SYS_pidfd_open, child_, 0));
  if (pid_fd_ < 0) {
    // No pidfd (a kernel before 5.3): nothing to watch it with. Wait for it, then go on.
    say("cannot watch pid " + std::to_string(child_) + ": " + std::strerror(errno));
    int status = 0;
    waitpid(child_, &status, 0);
    on_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 0, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return;
  }
  // One poll per child: a closing handle cannot be started again.
  exit_poll_ = new uv_poll_t{};
  uv_poll_init(loop_, exit_poll_, pid_fd_);
  exit_poll_->data = this;
  uv_poll_start(exit_poll_, UV_READABLE, [](uv_poll_t* p, int, int) { static_cast<supervisor*>(p->data)->on_pidfd(); });
  running_ = true;
  say("started " + options_.command.front() + " as pid " + std::to_string(child_) + " (" + reason + ")");
}

// Its pidfd is readable once it exited: reap it (at once, it is a zombie already) and go on.
void supervisor::on_pidfd() {
  int status = 0;
  if (waitpid(child_, &status, WNOHANG) != child_) return;
  const int fd = pid_fd_;
  pid_fd_ = -1;
  uv_close(reinterpret_cast<uv_handle_t*>(std::exchange(exit_poll_, nullptr)),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
  // libuv let go of the fd in uv_close; it can be closed now.
  ::close(fd);
  on_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 0, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

void supervisor::on_exit(int64_t status, int signal) {
  running_ = false;
  const std::string how = describe_exit(status, signal);
  if (stopping_) {
    exit_status_ = signal != 0 ? 128 + signal : static_cast<int>(status);
    say("the command " + how + "; stopping");
    uv_stop(loop_);
    return;
  }
  if (!restart_reason_.empty()) {
    const std::string reason = std::exchange(restart_reason_, std::string());
    fast_failures_ = 0;
    start(reason);
    return;
  }
  const auto ran = clock_type::now() - started_at_;
  if (ran >= fast_failure) {
    fast_failures_ = 0;
    start("it " + how);
    return;
  }
  // Failing at once, again and again: wait longer each time rather than spin.
  ++fast_failures_;
  const std::chrono::milliseconds delay =
      std::min<std::chrono::milliseconds>(max_backoff, first_backoff * (1LL << std::min(fast_failures_ - 1, 10U)));
  say("the command " + how + " after " +
      std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(ran).count()) + " ms (" +
      std::to_string(fast_failures_) + " fast failure(s) in a row); starting it again in " +
      std::to_string(delay.count()) + " ms");
  pending_reason_ = "it " + how;
  uv_timer_start(&handles_->backoff,
                 [](uv_timer_t* t) {
                   auto* self = static_cast<supervisor*>(t->data);
                   self->start(self->pending_reason_);
                 },
                 static_cast<uint64_t>(delay.count()), 0);
}

void supervisor::restart(const std::string& reason) {
  if (stopping_) return;
  if (!running_) {
    // Waiting out a backoff: start now.
    uv_timer_stop(&handles_->backoff);
    fast_failures_ = 0;
    start(reason);
    return;
  }
  if (!restart_reason_.empty()) return;  // already on its way
  restart_reason_ = reason;
  say("restarting pid " + std::to_string(child_) + " (" + reason + ")");
  ::kill(child_, SIGTERM);
}

void supervisor::stop(int signal) {
  if (stopping_ && running_) {
    ::kill(child_, SIGKILL);  // asked twice
    return;
  }
  stopping_ = true;
  uv_timer_stop(&handles_->backoff);
  uv_timer_stop(&handles_->debounce);
  if (running_) {
    say(std::string("passing ") + strsignal(signal) + " to pid " + std::to_string(child_));
    ::kill(child_, signal);
    return;
  }
  exit_status_ = 128 + signal;
  uv_stop(loop_);
}

}  // namespace grace_listen
