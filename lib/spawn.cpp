#include "spawn.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <memory>

#include "canonical_address.hpp"
#include "environment_protocol.hpp"

namespace grace::detail {
namespace {

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

constexpr int first_passed_fd = 3;
const std::string listen_pid_prefix = std::string(variable::listen_pid) + "=";

std::vector<char*> pointers_to(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Async-signal-safe: no allocation, no locale.
void write_decimal(char* out, long value) {
  char digits[24];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value > 0);
  while (n > 0) *out++ = digits[--n];
  *out = '\0';
}

struct child_plan {
  const char* executable;
  char* const* argv;
  char* const* envp;
  char* listen_pid_digits;  // inside envp, or null
  const int* fds;
  int* sources;  // room for fd_count entries, allocated before clone
  int fd_count;
  const char* directory;
  int max_fd;
  const sigset_t* mask;
  volatile int child_errno;  // set by a child that could not exec; read by the parent after
};

// The child shares our memory and stack discipline: no allocation, no locks, no sanitizer
// bookkeeping, only async-signal-safe calls.
#define GRACE_CHILD_CODE __attribute__((no_sanitize("address", "undefined")))

[[noreturn]] GRACE_CHILD_CODE void child_fail(child_plan& plan) {
  plan.child_errno = errno != 0 ? errno : EIO;
  _exit(127);
}

[[noreturn]] GRACE_CHILD_CODE void run_child(child_plan& plan) {
  // A handler of the parent's must not run here, on the parent's memory: back to defaults (the
  // table is the child's own copy; only the memory is shared).
  for (int sig = 1; sig < NSIG; ++sig) {
    struct sigaction old {};
    if (sigaction(sig, nullptr, &old) != 0) continue;
    if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      sigaction(sig, &dfl, nullptr);
    }
  }
  const int end = first_passed_fd + plan.fd_count;
  // Placing fd i at 3+i in order clobbers only targets below 3+j for every later j, so only a
  // source sitting below its own target can be overwritten before its turn; only those move up.
  // Everything else is placed without a spare slot, so a nearly full fd table still works.
  int* source = plan.sources;
  for (int i = 0; i < plan.fd_count; ++i) {
    source[i] = plan.fds[i];
    if (source[i] < first_passed_fd + i && (source[i] = fcntl(source[i], F_DUPFD_CLOEXEC, end)) < 0)
      child_fail(plan);
  }
  for (int i = 0; i < plan.fd_count; ++i) {
    const int target = first_passed_fd + i;
    const int rc = source[i] == target ? fcntl(target, F_SETFD, 0)  // already there: keep across exec
                                       : dup2(source[i], target);   // dup2 clears FD_CLOEXEC
    if (rc < 0) child_fail(plan);
  }
  // Nothing else crosses the exec, whatever the application left without O_CLOEXEC.
  if (syscall(SYS_close_range, static_cast<unsigned>(end), ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    for (int fd = end; fd < plan.max_fd; ++fd) fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  if (plan.listen_pid_digits != nullptr) write_decimal(plan.listen_pid_digits, getpid());
  if (plan.directory[0] != '\0' && chdir(plan.directory) != 0) child_fail(plan);
  sigprocmask(SIG_SETMASK, plan.mask, nullptr);
  execve(plan.executable, plan.argv, plan.envp);
  child_fail(plan);
}

GRACE_CHILD_CODE int child_main(void* plan) { run_child(*static_cast<child_plan*>(plan)); }

int max_fd_number() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 1 << 20;
  return static_cast<int>(limit.rlim_cur > INT_MAX ? INT_MAX : limit.rlim_cur);
}

// 0 when `path` is an executable regular file, else the errno that says why not.
int executable_file_error(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return errno;
  if (!S_ISREG(st.st_mode)) return EACCES;
  return access(path.c_str(), X_OK) == 0 ? 0 : errno;
}

}  // namespace

result<pid_t> spawn_process(const spawn_request& request) {
  const auto& fds = request.child.fds;
  for (const int fd : fds)
    if (fcntl(fd, F_GETFD) < 0)
      return fail_errno(errno, "start " + request.executable + ": fd " + std::to_string(fd) +
                                   " to pass is not open");
  std::vector<std::string> argv_storage = request.argv;
  std::vector<std::string> env_storage = request.child.environment;
  const bool listen_pid = request.child.listen_pid;
  if (listen_pid) env_storage.push_back(listen_pid_prefix + std::string(23, ' '));
  std::vector<char*> argv = pointers_to(argv_storage);
  std::vector<char*> envp = pointers_to(env_storage);
  char* listen_pid_digits = listen_pid ? env_storage.back().data() + listen_pid_prefix.size() : nullptr;
  std::vector<int> sources(fds.size());
  // The child runs on this stack, in our memory, until it execs (CLONE_VM | CLONE_VFORK, as
  // posix_spawn does): no page tables to copy, no copy-on-write faults, whatever our size.
  constexpr std::size_t stack_size = 256 * 1024;
  std::unique_ptr<char[]> stack(new char[stack_size]);
  void* stack_top = stack.get() + stack_size - 64;

  // The next generation starts with no signal blocked, as a service manager would start it: a
  // server that blocks signals for a signalfd must not hand its successor a deaf mask.
  sigset_t all, old, none;
  sigfillset(&all);
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  child_plan plan{request.executable.c_str(), argv.data(), envp.data(), listen_pid_digits,
                  fds.data(), sources.data(), static_cast<int>(fds.size()),
                  request.directory.c_str(), max_fd_number(), &none, 0};
  const pid_t pid = clone(child_main, stack_top, CLONE_VM | CLONE_VFORK | SIGCHLD, &plan);
  const int clone_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return fail_errno(clone_errno, "start " + request.executable + ": clone");
  // CLONE_VFORK: we resume once the child has exec'd, or has failed and set child_errno.
  if (plan.child_errno == 0) return pid;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return fail_errno(plan.child_errno, "exec " + request.executable + " in " + request.directory);
}

result<std::string> find_executable(const std::string& name, const std::string& directory) {
  if (name.empty()) return fail_errno(ENOENT, "find the program to re-execute: argv[0] is empty");
  if (name.find('/') != std::string::npos) {
    const std::string path = name.front() == '/' ? name : normalize_absolute_path(directory, name);
    if (const int err = executable_file_error(path)) return fail_errno(err, "program " + path);
    return path;
  }
  const char* env_path = std::getenv("PATH");
  const std::string search = env_path != nullptr ? env_path : "/usr/local/bin:/usr/bin:/bin";
  std::string::size_type start = 0;
  while (start <= search.size()) {
    const auto colon = search.find(':', start);
    std::string dir = search.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (dir.empty()) dir = ".";
    const std::string candidate = normalize_absolute_path(directory, dir + "/" + name);
    if (executable_file_error(candidate) == 0) return candidate;
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return fail_errno(ENOENT, "program \"" + name + "\" in PATH=" + search);
}

}  // namespace grace::detail
