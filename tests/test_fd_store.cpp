// systemd's fd store, against a stand-in for systemd that follows the documented protocol: it
// reads the notifications (FDSTORE=1 with the fds attached, FDNAME=, FDSTOREREMOVE=1) on its
// notify socket and, when the service is gone, starts it again with the stored fds in
// LISTEN_FDS/LISTEN_FDNAMES. A client that connects while no process of the service runs is
// answered by the next one: the accept queue survives a cold restart.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "grace/activation.hpp"
#include "scm_rights.hpp"
#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/service.hpp"
#include "support/sockets.hpp"

using namespace test_support;

namespace {

class service_manager {
 public:
  explicit service_manager(const temp_dir& dir) : path_(dir.file("notify.sock")) {
    socket_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::strncpy(un.sun_path, path_.c_str(), sizeof un.sun_path - 1);
    REQUIRE(bind(socket_, reinterpret_cast<sockaddr*>(&un), sizeof un) == 0);
  }
  ~service_manager() {
    for (pid_t pid : started_) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    for (auto& entry : store_)
      for (int fd : entry.second) close(fd);
    close(socket_);
  }

  // Starts the service with what the store holds, as systemd does.
  pid_t start(const std::vector<std::string>& argv) {
    grace::activation_options o;
    o.argv = argv;
    o.extra_env = {"NOTIFY_SOCKET=" + path_};
    for (const auto& [name, fds] : store_)
      for (int fd : fds) o.sockets.push_back({fd, name});
    auto pid = grace::run_with_sockets(o);
    REQUIRE(pid);
    started_.push_back(*pid);
    return *pid;
  }

  // Reads notifications until one holds `text` (true) or the deadline passes (false).
  bool wait_for(const std::string& text, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (const auto& m : messages_)
      if (m.find(text) != std::string::npos) return true;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{socket_, POLLIN, 0};
      if (poll(&p, 1, 100) != 1) continue;
      const std::string m = receive();
      if (m.find(text) != std::string::npos) return true;
    }
    return false;
  }

  // Reads notifications until `n` of them hold `text`.
  bool wait_count(const std::string& text, std::size_t n, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (count(text) < n && std::chrono::steady_clock::now() < deadline) {
      pollfd p{socket_, POLLIN, 0};
      if (poll(&p, 1, 100) == 1) receive();
    }
    return count(text) >= n;
  }

  std::size_t count(const std::string& text) const {
    std::size_t n = 0;
    for (const auto& m : messages_) n += m.find(text) != std::string::npos;
    return n;
  }
  const std::map<std::string, std::vector<int>>& store() const { return store_; }
  void put(const std::string& name, int fd) { store_[name].push_back(fd); }

 private:
  static std::string field(const std::string& message, const std::string& key) {
    const auto at = message.find(key + "=");
    if (at == std::string::npos || (at > 0 && message[at - 1] != '\n')) return {};
    const auto end = message.find('\n', at);
    return message.substr(at + key.size() + 1, end == std::string::npos ? end : end - at - key.size() - 1);
  }

  std::string receive() {
    char buffer[4096];
    iovec iov{buffer, sizeof buffer};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = recvmsg(socket_, &msg, MSG_CMSG_CLOEXEC);
    if (n <= 0) return {};
    std::vector<int> fds;
    grace::detail::collect_fds(msg, fds);
    std::string m(buffer, static_cast<std::size_t>(n));
    messages_.push_back(m);
    const std::string name = field(m, "FDNAME").empty() ? "stored" : field(m, "FDNAME");
    if (field(m, "FDSTOREREMOVE") == "1") {
      for (int fd : store_[name]) close(fd);
      store_.erase(name);
    }
    if (field(m, "FDSTORE") != "1") {
      for (int fd : fds) close(fd);
      return m;
    }
    // The same open file twice is kept once, as systemd does.
    for (int fd : fds) {
      bool known = false;
      struct stat incoming {};
      fstat(fd, &incoming);
      for (const auto& entry : store_)
        for (int kept : entry.second) {
          struct stat st {};
          fstat(kept, &st);
          known = known || (st.st_dev == incoming.st_dev && st.st_ino == incoming.st_ino);
        }
      if (known) close(fd);
      else store_[name].push_back(fd);
    }
    return m;
  }

  std::string path_;
  int socket_ = -1;
  std::vector<std::string> messages_;
  std::map<std::string, std::vector<int>> store_;
  std::vector<pid_t> started_;
};

}  // namespace

TEST_CASE("listeners in the fd store outlive every process of the service; a queued client is answered") {
  temp_dir dir;
  service_manager systemd(dir);
  const int port = free_port();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  const std::string stored_as = "grace-127.0.0.1_" + std::to_string(port);
  const std::vector<std::string> command = {helper_path("GRACE_HTTP"), address, "--fd-store"};
  const pid_t first = systemd.start(command);
  REQUIRE(systemd.wait_for("READY=1"));
  REQUIRE(systemd.wait_for("FDSTORE=1\nFDNAME=" + stored_as));
  REQUIRE(systemd.store().count(stored_as) == 1);
  CHECK(systemd.store().at(stored_as).size() == 1);

  // An upgrade stores nothing new: the new generation's listener is the stored one.
  REQUIRE(kill(first, SIGUSR2) == 0);
  REQUIRE(systemd.wait_count("MAINPID=", 2));
  const int c0 = connect_tcp("127.0.0.1", port);
  const std::string body = http_body_of(c0);
  close(c0);
  const pid_t second = static_cast<pid_t>(std::atol(body.c_str() + 4));
  REQUIRE(second != first);
  REQUIRE(wait_exited(first));
  CHECK(systemd.count("FDSTORE=1") == 1);

  // The service crashes: no process of it is left, but the store holds the listening socket.
  REQUIRE(kill(second, SIGKILL) == 0);
  REQUIRE(wait_exited(second));
  const int queued = connect_tcp("127.0.0.1", port);  // not refused: it waits in the backlog
  REQUIRE(queued >= 0);
  const std::string request = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
  REQUIRE(write(queued, request.data(), request.size()) == static_cast<ssize_t>(request.size()));

  // "Restart=": the service starts again, with the stored fds.
  const pid_t third = systemd.start(command);
  auto answer = http_read_response(queued);
  REQUIRE(answer);
  CHECK(answer->body == expected_body(third, 1));
  close(queued);
  CHECK(systemd.wait_for("READY=1\nMAINPID=" + std::to_string(third)));
  CHECK(systemd.count("FDSTORE=1") == 1);  // inherited from the store: not stored again
}

TEST_CASE("a stored listener the service no longer uses is taken out of the store") {
  temp_dir dir;
  service_manager systemd(dir);
  int stale_port = 0;
  systemd.put("stale", raw_tcp_listener("127.0.0.1", stale_port));
  const int port = free_port();
  const pid_t pid = systemd.start({helper_path("GRACE_HTTP"), "127.0.0.1:" + std::to_string(port), "--fd-store"});
  REQUIRE(systemd.wait_for("FDSTOREREMOVE=1\nFDNAME=stale"));
  CHECK(systemd.store().count("stale") == 0);
  REQUIRE(systemd.wait_for("FDSTORE=1\nFDNAME=grace-127.0.0.1_" + std::to_string(port)));
  CHECK(systemd.store().size() == 1);  // the listener it bound itself
  // Nobody holds the stale socket any more: its port refuses.
  CHECK(connect_tcp("127.0.0.1", stale_port) < 0);
  kill(pid, SIGTERM);
}
