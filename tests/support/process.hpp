#pragma once
// Test-side process control, independent of grace's own spawner: start a program with chosen
// fds at 3.. and a chosen environment, read its output line by line with deadlines, reap it.
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace test_support {

using namespace std::chrono_literals;

struct spawn_options {
  std::vector<std::string> argv;
  std::string executable;  // the file to run; empty: argv[0]
  // Variables to set (value) or remove (nullopt) on top of the test's own environment.
  std::map<std::string, std::optional<std::string>> env;
  std::vector<int> fds;          // become fds 3, 4, ... in the child
  bool listen_pid_is_child = false;  // LISTEN_PID=<child pid>, as systemd sets it
  std::string directory;         // empty: the test's own
};

class child_process {
 public:
  explicit child_process(const spawn_options& options);
  ~child_process();  // kills (SIGKILL) and reaps a child that is still running
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  pid_t pid() const { return pid_; }
  // The next line of stdout (without '\n'); nullopt at EOF or when the deadline passes.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout = 10s);
  // Lines until one starts with `prefix` (returned) or EOF/deadline (nullopt).
  std::optional<std::string> read_until(const std::string& prefix,
                                        std::chrono::milliseconds timeout = 10s);
  // Every line up to and including the first that starts with `prefix` (for output of several
  // processes sharing the pipe, whose order is not fixed). Empty on EOF or deadline first.
  std::vector<std::string> collect_until(const std::string& prefix,
                                         std::chrono::milliseconds timeout = 10s);
  void write_stdin(const std::string& text);
  std::string stderr_text();  // what the child wrote to stderr so far (non-blocking)
  // Waits until stderr contains `text` at least `occurrences` times; false at EOF or when the
  // deadline passes.
  bool wait_stderr(const std::string& text, std::chrono::milliseconds timeout = 10s,
                   std::size_t occurrences = 1);
  // Exit status as from waitpid, or nullopt if it did not exit in time.
  std::optional<int> wait(std::chrono::milliseconds timeout = 10s);
  void kill(int signal);

 private:
  pid_t pid_ = -1;
  int stdin_fd_ = -1, stdout_fd_ = -1, stderr_fd_ = -1;
  std::string out_buffer_, err_buffer_;
  bool reaped_ = false;
};

// How often `text` occurs in `haystack`.
std::size_t count_of(const std::string& haystack, const std::string& text);

// True when `pid` no longer runs: gone, or a zombie nobody reaped yet.
bool has_exited(pid_t pid);
// Waits (on a pidfd, bounded) until has_exited(pid).
bool wait_exited(pid_t pid, std::chrono::milliseconds timeout = 10s);

// The pid in a pid file, 0 when there is none.
pid_t read_pidfile(const std::string& path);
// Waits (inotify on its directory, bounded) until the pid file names a pid that `accept` takes;
// returns it, or 0 when the deadline passes first. grace writes pid files off the event loop, so
// a pid file lags the log line that announces its change by a moment.
pid_t wait_pidfile(const std::string& path, const std::function<bool(pid_t)>& accept,
                   std::chrono::milliseconds timeout = 10s);
inline bool pidfile_names(const std::string& path, pid_t pid, std::chrono::milliseconds timeout = 10s) {
  return wait_pidfile(path, [pid](pid_t p) { return p == pid; }, timeout) == pid;
}

// A fresh temporary directory, removed with its contents at destruction.
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Inode of a socket fd ("socket:[N]" in /proc/self/fd).
unsigned long socket_inode(int fd);
// Connects to a TCP port on 127.0.0.1 or a unix path (blocking, bounded), -1 on failure.
int connect_tcp(const std::string& host, int port);
int connect_unix(const std::string& path);
// Reads until '\n' or EOF or the deadline.
std::string read_line_from(int fd, std::chrono::milliseconds timeout = 10s);
// Path of a helper binary named by an environment variable the build sets, else `fallback`.
std::string helper_path(const char* variable);

}  // namespace test_support
