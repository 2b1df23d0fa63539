#include "supervisor.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>

extern char** environ;

namespace grace_listen {
namespace {

using clock_type = std::chrono::steady_clock;

constexpr auto fast_failure = std::chrono::seconds(1);  // a run shorter than this failed fast
constexpr std::chrono::milliseconds first_backoff{100};
constexpr std::chrono::milliseconds max_backoff{10000};

// Sets LISTEN_PID to the shell's own pid, which exec hands on to the command: only the command
// knows its pid, and systemd's protocol wants it exactly.
const char* const exec_shim = "LISTEN_PID=$$; export LISTEN_PID; exec \"$@\"";

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
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  std::string names;
  for (const auto& s : sockets_) names += (names.empty() ? "" : ":") + s.name;
  env.push_back("LISTEN_FDS=" + std::to_string(sockets_.size()));
  env.push_back("LISTEN_FDNAMES=" + names);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_text = {"/bin/sh", "-c", exec_shim, "grace-listen"};
  argv_text.insert(argv_text.end(), options_.command.begin(), options_.command.end());
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  // stdin, stdout and stderr as ours; the sockets at 3.. in order.
  std::vector<uv_stdio_container_t> stdio(3 + sockets_.size());
  for (int fd = 0; fd < 3; ++fd) {
    stdio[static_cast<std::size_t>(fd)].flags = UV_INHERIT_FD;
    stdio[static_cast<std::size_t>(fd)].data.fd = fd;
  }
  for (std::size_t i = 0; i < sockets_.size(); ++i) {
    stdio[3 + i].flags = UV_INHERIT_FD;
    stdio[3 + i].data.fd = sockets_[i].fd;
  }
  uv_process_options_t po{};
  po.file = argv[0];
  po.args = argv.data();
  po.env = envp.data();
  po.stdio = stdio.data();
  po.stdio_count = static_cast<int>(stdio.size());
  po.exit_cb = [](uv_process_t* p, int64_t status, int signal) {
    auto* self = static_cast<supervisor*>(p->data);
    uv_close(reinterpret_cast<uv_handle_t*>(p), [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
    self->process_ = nullptr;
    self->on_exit(status, signal);
  };
  process_ = new uv_process_t{};
  process_->data = this;
  started_at_ = clock_type::now();
  const int rc = uv_spawn(loop_, process_, &po);
  if (rc != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(process_), [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
    process_ = nullptr;
    say("cannot start " + options_.command.front() + ": " + uv_strerror(rc));
    on_exit(127, 0);
    return;
  }
  running_ = true;
  say("started " + options_.command.front() + " as pid " + std::to_string(process_->pid) + " (" + reason + ")");
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
  schedule_restart("it " + how);
  uv_timer_start(&handles_->backoff,
                 [](uv_timer_t* t) {
                   auto* self = static_cast<supervisor*>(t->data);
                   self->start(self->pending_reason_);
                 },
                 static_cast<uint64_t>(delay.count()), 0);
}

void supervisor::schedule_restart(const std::string& reason) { pending_reason_ = reason; }

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
  say("restarting pid " + std::to_string(process_->pid) + " (" + reason + ")");
  uv_process_kill(process_, SIGTERM);
}

void supervisor::stop(int signal) {
  if (stopping_ && running_) {
    uv_process_kill(process_, SIGKILL);  // asked twice
    return;
  }
  stopping_ = true;
  uv_timer_stop(&handles_->backoff);
  uv_timer_stop(&handles_->debounce);
  if (running_) {
    say(std::string("passing ") + strsignal(signal) + " to pid " + std::to_string(process_->pid));
    uv_process_kill(process_, signal);
    return;
  }
  exit_status_ = 128 + signal;
  uv_stop(loop_);
}

}  // namespace grace_listen
