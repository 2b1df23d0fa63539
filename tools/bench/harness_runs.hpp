#pragma once
// What the benchmarks that measure through restart-harness share: a free loopback port, one quiet
// run of the harness with its JSON read back, and the median of repeated figures.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace bench {

inline int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&in), sizeof in);
  socklen_t len = sizeof in;
  getsockname(fd, reinterpret_cast<sockaddr*>(&in), &len);
  close(fd);
  return ntohs(in.sin_port);
}

struct harness_result {
  bool passed = false;  // exit status 0
  std::string json;
};

// Runs `harness --json FILE ARGS...` with its output thrown away.
inline harness_result run_harness(const std::string& harness, const std::vector<std::string>& args) {
  const std::string json = "/tmp/grace-bench-" + std::to_string(getpid()) + ".json";
  const pid_t pid = fork();
  if (pid == 0) {
    const int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, STDOUT_FILENO);
    dup2(devnull, STDERR_FILENO);
    std::vector<std::string> all = {harness, "--json", json};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(harness.c_str(), argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  std::ifstream in(json);
  harness_result out;
  out.json.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  unlink(json.c_str());
  out.passed = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  return out;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace bench
