#include "server_control.hpp"

#include "process_tree.hpp"

#include "generations.hpp"
#include "read_file.hpp"

#include <fcntl.h>
#include <map>
#include <sys/wait.h>
#include <sys/prctl.h>
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

namespace harness {
namespace {


tl::unexpected<grace::error> uv_failure(int code, const std::string& what) {
  return tl::unexpected(grace::error(std::error_code(-code, std::system_category()), what + ": " + uv_strerror(code)));
}

}  // namespace

server_control::server_control(uv_loop_t* loop, const options& o) : loop_(loop), options_(o) {
  uv_timer_init(loop_, &stop_timer_);
  stop_timer_.data = this;
  process_.data = this;
  command_.data = this;
}

grace::result<void> server_control::start(const std::string& log_path) {
  // What we start, and what it starts, is reparented to us when its parent exits, never to
  // pid 1: so we can stop every generation, and reap it.
  if (started_by_us()) prctl(PR_SET_CHILD_SUBREAPER, 1);
  if (!started_by_us()) {
    last_main_ = options_.attach_pid;
    if (last_main_ > 0) known_.insert(last_main_);
    return {};
  }
  const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  std::vector<char*> args;
  for (const auto& a : options_.server_command) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = log_fd >= 0 ? UV_INHERIT_FD : UV_IGNORE;
  stdio[1].data.fd = log_fd;
  stdio[2] = stdio[1];
  uv_process_options_t po{};
  po.file = args[0];
  po.args = args.data();
  po.stdio = stdio;
  po.stdio_count = 3;
  po.exit_cb = [](uv_process_t* p, int64_t status, int signal) {
    auto* self = static_cast<server_control*>(p->data);
    self->first_exited_ = true;
    self->first_status_ = signal != 0 ? 128 + signal : status;
    uv_close(reinterpret_cast<uv_handle_t*>(p), nullptr);
  };
  const int rc = uv_spawn(loop_, &process_, &po);
  if (log_fd >= 0) close(log_fd);
  if (rc != 0) return uv_failure(rc, "cannot start " + options_.server_command[0]);
  first_pid_ = process_.pid;
  last_main_ = first_pid_;
  known_.insert(first_pid_);
  return {};
}

pid_t server_control::main_pid() {
  if (!options_.pidfile.empty()) {
    const pid_t pid = static_cast<pid_t>(std::atol(grace::detail::read_small_file(options_.pidfile).value_or("0").c_str()));
    if (pid > 0) last_main_ = pid;
  }
  if (last_main_ > 0) known_.insert(last_main_);
  return last_main_;
}

void server_control::saw_pid(pid_t pid) {
  if (pid <= 0) return;
  if (known_.insert(pid).second && options_.pidfile.empty()) last_main_ = pid;
}

grace::result<void> server_control::trigger_restart() {
  const pid_t pid = main_pid();
  if (options_.restart_cmd.empty()) {
    if (pid <= 0)
      return tl::unexpected(grace::error(make_error_code(grace::errc::invalid_argument),
                                         "no main pid to signal (give --pidfile)"));
    if (kill(pid, options_.signal_number) != 0) {
      const int err = errno;
      return tl::unexpected(grace::error(std::error_code(err, std::system_category()),
                                         "cannot signal pid " + std::to_string(pid) + ": " + strerror(err)));
    }
    return {};
  }
  const std::string mainpid = "MAINPID=" + std::to_string(pid);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  env_strings.push_back(mainpid);
  std::vector<char*> env;
  for (auto& s : env_strings) env.push_back(s.data());
  env.push_back(nullptr);
  const char* args[] = {"/bin/sh", "-c", options_.restart_cmd.c_str(), nullptr};
  uv_stdio_container_t stdio[3];
  for (int i = 0; i < 3; ++i) {
    stdio[i].flags = i == 0 ? UV_IGNORE : UV_INHERIT_FD;
    stdio[i].data.fd = 2;
  }
  uv_process_options_t po{};
  po.file = args[0];
  po.args = const_cast<char**>(args);
  po.env = env.data();
  po.stdio = stdio;
  po.stdio_count = 3;
  po.exit_cb = [](uv_process_t* p, int64_t, int) {
    static_cast<server_control*>(p->data)->command_running_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(p), nullptr);
  };
  const int rc = uv_spawn(loop_, &command_, &po);
  if (rc != 0) return uv_failure(rc, "cannot run --restart-cmd");
  command_running_ = true;
  return {};
}

void server_control::stop_all(double grace_s, std::function<void()> done) {
  on_stopped_ = std::move(done);
  if (!started_by_us()) {
    auto callback = std::move(on_stopped_);
    callback();
    return;
  }
  main_pid();
  // Every process we started and every descendant of theirs, whoever their parent is now.
  for (pid_t pid : descendants_of(getpid())) known_.insert(pid);
  for (pid_t pid : known_)
    if (!grace::detail::process_has_exited(pid)) kill(pid, SIGTERM);
  stop_deadline_us_ = now_us() + static_cast<std::uint64_t>(grace_s * 1e6);
  // Generations that are not our children can only be watched through /proc.
  uv_timer_start(&stop_timer_,
                 [](uv_timer_t* t) {
                   auto* self = static_cast<server_control*>(t->data);
                   // Orphans of a dying generation are reparented to us (the subreaper): stop
                   // them too, and reap what is ours to reap (libuv reaps the first process).
                   for (pid_t pid : descendants_of(getpid()))
                     if (self->known_.insert(pid).second) kill(pid, self->killed_ ? SIGKILL : SIGTERM);
                   for (pid_t pid : self->known_)
                     if (pid != self->first_pid_) waitpid(pid, nullptr, WNOHANG);
                   bool all_gone = self->first_exited_;
                   for (pid_t pid : self->known_)
                     if (pid != self->first_pid_ && !grace::detail::process_has_exited(pid)) all_gone = false;
                   if (!all_gone && now_us() > self->stop_deadline_us_ && !self->killed_) {
                     self->killed_ = true;
                     for (pid_t pid : self->known_)
                       if (!grace::detail::process_has_exited(pid)) kill(pid, SIGKILL);
                   }
                   if (!all_gone) return;
                   uv_timer_stop(t);
                   uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
                   auto callback = std::move(self->on_stopped_);
                   if (callback) callback();
                 },
                 5, 5);
}

}  // namespace harness
