#pragma once
// A sample server under test and every generation it grows, followed through the stderr pipe
// they all share; whatever is left is killed at the end. Plus the small helpers the lifecycle
// tests share.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/sockets.hpp"

namespace test_support {

inline int free_port() {
  int port = 0;
  close(raw_tcp_listener("127.0.0.1", port));
  return port;
}

// A sample server and every generation it grows; whatever is left is killed at the end.
class service {
 public:
  service(const std::string& binary, std::vector<std::string> args, std::map<std::string, std::optional<std::string>> env = {},
          const std::string& executable = {}) {
    spawn_options options;
    options.argv = {binary};
    options.argv.insert(options.argv.end(), args.begin(), args.end());
    options.env = std::move(env);
    options.executable = executable;
    first_ = std::make_unique<child_process>(options);
    pids_.insert(first_->pid());
  }
  ~service() {
    for (pid_t pid : pids_) kill(pid, SIGKILL);
  }
  child_process& first() { return *first_; }
  pid_t first_pid() const { return first_->pid(); }

  bool wait_for(const std::string& text, std::chrono::milliseconds timeout = 15s, std::size_t occurrences = 1) {
    const bool seen = first_->wait_stderr(text, timeout, occurrences);
    if (!seen) MESSAGE("stderr so far:\n" << first_->stderr_text());
    return seen;
  }
  // The number written right after `marker` in the log (e.g. "as pid 123").
  pid_t number_after(const std::string& marker) {
    const std::string text = first_->stderr_text();
    const auto at = text.rfind(marker);
    if (at == std::string::npos) return 0;
    const pid_t pid = static_cast<pid_t>(std::atol(text.c_str() + at + marker.size()));
    pids_.insert(pid);
    return pid;
  }
  std::size_t count(const std::string& text) { return count_of(first_->stderr_text(), text); }
  // Sends SIGUSR2 to `pid`, waits until generation `next` serves; returns its pid.
  pid_t upgrade(pid_t pid, unsigned next) {
    const std::string started = "started generation " + std::to_string(next) + " as pid ";
    const std::size_t earlier = count(started);  // attempts that were rolled back
    REQUIRE(kill(pid, SIGUSR2) == 0);
    REQUIRE(wait_for(started, 15s, earlier + 1));
    const pid_t child = number_after(started);
    REQUIRE(wait_for("pid " + std::to_string(child) + " is ready and in charge"));
    return child;
  }

 private:
  std::unique_ptr<child_process> first_;
  std::set<pid_t> pids_;
};

inline std::string http_body_of(int fd) {
  auto r = http_get(fd);
  return r ? r->body : "<no answer>";
}

// What the HTTP samples answer to GET / (sample::who_body): padded to one length, 48 bytes, so
// that load tools do not count a longer generation number as a failure.
// grace-http's arguments for `port` with a pid file and a hand-over socket in `dir`, then `more`.
inline std::vector<std::string> http_with_handover(int port, const temp_dir& dir, std::vector<std::string> more = {}) {
  std::vector<std::string> args = {"127.0.0.1:" + std::to_string(port), "--pidfile", dir.file("http.pid"),
                                   "--handover-socket", dir.file("handover.sock")};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// `binary args...` as a child of this test, stderr followed.
inline std::unique_ptr<child_process> start_program(const std::string& binary, const std::vector<std::string>& args) {
  spawn_options options;
  options.argv = {binary};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  return std::make_unique<child_process>(options);
}

inline std::string expected_body(pid_t pid, unsigned generation, int worker = -1) {
  std::string body = "pid=" + std::to_string(pid) + " generation=" + std::to_string(generation);
  if (worker >= 0) body += " worker=" + std::to_string(worker);
  body.resize(std::max<std::size_t>(body.size(), 47), ' ');
  return body + "\n";
}

inline void write_script(const std::string& path, const std::string& body) {
  std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
  chmod(path.c_str(), 0755);
}

inline void point_link(const std::string& link, const std::string& target) {
  unlink(link.c_str());
  REQUIRE(symlink(target.c_str(), link.c_str()) == 0);
}


}  // namespace test_support
