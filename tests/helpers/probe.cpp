// grace-test-probe: a program the tests start in controlled conditions (fds at 3.., LISTEN_*
// variables) to report, one line at a time on stdout, what grace::net made of them.
//
//   grace-test-probe listen NETWORK ADDRESS [NETWORK ADDRESS ...]
//     listens on each, then reports unclaimed inherited sockets, the LISTEN_* variables and the
//     open fds, and ends with "end".
//   grace-test-probe takeover SOCKET exit|hang|ready-then-exit
//     takes the listeners over from the process serving SOCKET, reports "took N from PID" (or
//     "error MESSAGE"), then exits 7 before it is ready, hangs, or says it is ready and exits 9.
//   grace-test-probe serve-http ADDRESS N
//     a socket-activated HTTP server: takes its listener from LISTEN_FDS by address, answers N
//     requests (one per connection, "pid=<pid>"), and exits.
//   GRACE_PROBE_MODE=group (GRACE_PROBE_ADDRESS, _COUNT, _QUEUED, _NEW, _REPORT_FD)
//     listen_group(ADDRESS, COUNT) on the sockets it inherited; reports "members M steered S",
//     accepts QUEUED connections from whichever members have them ("queued a,b,c": per member),
//     says "steered", then accepts NEW more ("new a,b,c"), each line on REPORT_FD.
//   grace-test-probe stalled-handover ADDRESS MS
//     a libuv server (grace::uv::upgrader) whose connections move at a hand-over; it answers each
//     line with "pid=<pid>". Its first generation's loop stalls MS ms right after it offered its
//     connections to the next one, as a turn busy with thousands of clients does. Logs on stderr.
//   grace-test-probe reexec NETWORK ADDRESS
//     generation 1 listens, waits for "go" on stdin, start_process()es itself, closes its
//     listener and waits for the child; generation 2 inherits, reports, serves one connection.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "grace/grace.hpp"
#include "grace/uv/upgrader.hpp"
#include "support/process.hpp"

namespace {

std::string open_fds() {
  std::vector<int> fds;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd"))
    fds.push_back(std::atoi(entry.path().filename().c_str()));
  std::sort(fds.begin(), fds.end());
  // directory_iterator's own fd is closed by now, so every fd listed is real.
  std::string out;
  for (int fd : fds)
    if (fcntl(fd, F_GETFD) >= 0) out += (out.empty() ? "" : ",") + std::to_string(fd);
  return out;
}

std::string env_text(const char* name) {
  const char* v = std::getenv(name);
  return std::string(name) + "=" + (v != nullptr ? v : "<unset>");
}

std::string describe(const grace::listener& l) {
  return std::string(grace::network_name(l.network())) + " " + l.address() +
         " inherited=" + (l.inherited() ? "1" : "0") + " name=" + l.name() +
         " ino=" + std::to_string(test_support::socket_inode(l.fd())) + " fd=" + std::to_string(l.fd());
}

void say(const std::string& line) { std::cout << line << std::endl; }

int run_listen(int argc, char** argv) {
  grace::net net;
  for (int i = 2; i + 1 < argc; i += 2) {
    // "tcp@web": network tcp, listener name "web".
    const std::string network = argv[i];
    const auto at = network.find('@');
    grace::listen_options options;
    if (at != std::string::npos) options.name = network.substr(at + 1);
    auto l = net.listen(network.substr(0, at), argv[i + 1], options);
    if (l) say("ok " + describe(**l));
    else say("error " + std::string(l.error().code().category().name()) + ":" + std::to_string(l.error().code().value()) + " " + l.error().message());
  }
  const auto unused = net.unused_inherited();
  std::string list;
  for (const auto* l : unused) list += " " + std::string(grace::network_name(l->network())) + ":" + l->address();
  say("unused " + std::to_string(unused.size()) + list);
  say("env " + env_text("LISTEN_FDS") + " " + env_text("LISTEN_PID") + " " + env_text("LISTEN_FDNAMES") + " " +
      env_text("GRACE_LISTEN_TYPES"));
  say("fds " + open_fds());
  say("end");
  return 0;
}

int serve_one(int listen_fd) {
  pollfd p{listen_fd, POLLIN, 0};
  if (poll(&p, 1, 10000) != 1) return 3;
  const int conn = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (conn < 0) return 4;
  const std::string reply = "served-by " + std::to_string(getpid()) + "\n";
  ssize_t ignored = write(conn, reply.data(), reply.size());
  (void)ignored;
  close(conn);
  return 0;
}

int run_reexec(int argc, char** argv) {
  if (argc < 4) return 2;
  const char* generation = std::getenv("GRACE_PROBE_GENERATION");
  grace::net net;
  if (generation != nullptr && std::string(generation) == "2") {
    // Generation 1 may have asked for port 0; the next one asks for the port it got.
    auto l = net.listen(argv[2], std::getenv("GRACE_PROBE_ADDRESS"));
    if (!l) {
      say("error " + l.error().message());
      return 1;
    }
    say("gen2 pid=" + std::to_string(getpid()) + " " + describe(**l) + " fds=" + open_fds());
    return serve_one((*l)->fd());
  }
  // Bait: an fd the application forgot to mark close-on-exec must not reach the child.
  const int bait = open("/dev/null", O_RDONLY);
  auto l = net.listen(argv[2], argv[3]);
  if (!l) {
    say("error " + l.error().message());
    return 1;
  }
  say("gen1 pid=" + std::to_string(getpid()) + " " + describe(**l) + " bait=" + std::to_string(bait));
  std::string command;
  if (!std::getline(std::cin, command) || command != "go") return 2;
  grace::process_options options;
  options.extra_env.push_back("GRACE_PROBE_GENERATION=2");
  options.extra_env.push_back("GRACE_PROBE_ADDRESS=" + (*l)->address());
  auto child = net.start_process(options);
  if (!child) {
    say("error " + child.error().message());
    return 1;
  }
  say("child " + std::to_string(*child));
  if (!net.close(*l)) return 1;
  say("closed");
  int status = 0;
  waitpid(*child, &status, 0);
  say("child-exit " + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)));
  return 0;
}

std::string fd_kind(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return "closed";
  if (S_ISFIFO(st.st_mode)) return "pipe";
  int listening = 0;
  socklen_t len = sizeof listening;
  if (S_ISSOCK(st.st_mode) && getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0)
    return listening ? "listening" : "socket";
  return "other";
}

// The environment as the process was started (grace removes LISTEN_* and GRACE_* from environ
// before main; /proc/self/environ keeps the original).
std::map<std::string, std::string> environment_at_start() {
  std::map<std::string, std::string> out;
  std::ifstream in("/proc/self/environ");
  std::string entry;
  while (std::getline(in, entry, '\0')) {
    const auto equals = entry.find('=');
    if (equals != std::string::npos) out[entry.substr(0, equals)] = entry.substr(equals + 1);
  }
  return out;
}

// Started by a test's start_process() with a report pipe as the first extra fd: says what it got,
// into that pipe.
int run_describe() {
  const auto start_env = environment_at_start();
  const char* count = start_env.count("LISTEN_FDS") ? start_env.at("LISTEN_FDS").c_str() : nullptr;
  const char* names = start_env.count("LISTEN_FDNAMES") ? start_env.at("LISTEN_FDNAMES").c_str() : nullptr;
  const char* pid = start_env.count("LISTEN_PID") ? start_env.at("LISTEN_PID").c_str() : nullptr;
  const int listeners = count != nullptr ? std::atoi(count) : 0;
  const int report_fd = 3 + listeners;
  std::string line = std::string("describe LISTEN_FDS=") + (count ? count : "<unset>") +
                     " LISTEN_FDNAMES=" + (names ? names : "<unset>") +
                     " pid_matches=" + (pid && std::atoi(pid) == getpid() ? "1" : "0") +
                     " fds=" + open_fds();
  for (int fd = 3; fd <= report_fd; ++fd) line += " fd" + std::to_string(fd) + "=" + fd_kind(fd);
  line += "\n";
  return write(report_fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) ? 0 : 1;
}

// Started by pending_child::start: behaves as GRACE_PROBE_MODE says, to exercise every outcome.
int run_upgrade_child(const std::string& mode) {
  if (mode == "exit-before-ready") return 3;
  if (mode == "notify-ready") {
    auto told = grace::notify_ready();
    if (told) say(std::string("outcome ") + (*told == grace::ready_outcome::first_start   ? "first_start"
                                             : *told == grace::ready_outcome::parent_gone ? "parent_gone"
                                                                                          : "told_parent"));
    else say("error " + std::string(told.error().code().category().name()) + ":" +
             std::to_string(told.error().code().value()) + " " + told.error().message());
    return 0;
  }
  if (mode == "hang") {
    pause();
    return 0;
  }
  grace::net net;
  const char* address = std::getenv("GRACE_PROBE_ADDRESS");
  auto l = net.listen("tcp", address != nullptr ? address : "");
  if (!l) return 4;
  if (auto told = grace::notify_ready(); !told || *told != grace::ready_outcome::told_parent) return 5;
  return serve_one((*l)->fd());
}

// Accepts `want` connections from any member (10 s at most); how many came from each.
std::vector<int> accept_from_members(const grace::listener_group& g, int want) {
  std::vector<int> per_member(g.members.size(), 0);
  std::vector<pollfd> polls;
  for (auto* l : g.members) polls.push_back(pollfd{l->fd(), POLLIN, 0});
  for (int got = 0; got < want;) {
    if (poll(polls.data(), polls.size(), 10000) <= 0) break;
    for (std::size_t i = 0; i < polls.size(); ++i) {
      if (!(polls[i].revents & POLLIN)) continue;
      const int conn = accept4(polls[i].fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (conn < 0) continue;
      close(conn);
      ++per_member[i];
      ++got;
    }
  }
  return per_member;
}

std::string joined(const std::vector<int>& counts) {
  std::string out;
  for (int n : counts) out += (out.empty() ? "" : ",") + std::to_string(n);
  return out;
}

int run_group() {
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v != nullptr ? v : "");
  };
  const int report = std::atoi(env("GRACE_PROBE_REPORT_FD").c_str());
  auto tell = [report](const std::string& line) {
    const std::string out = line + "\n";
    ssize_t ignored = write(report, out.data(), out.size());
    (void)ignored;
  };
  grace::net net;
  grace::listen_options options;
  options.reuse_port = true;
  auto g = net.listen_group("tcp", env("GRACE_PROBE_ADDRESS"), std::stoul(env("GRACE_PROBE_COUNT")), options);
  if (!g) {
    tell("error " + g.error().message());
    return 1;
  }
  tell("members " + std::to_string(g->members.size()) + " steered " + std::to_string(g->steered));
  tell("queued " + joined(accept_from_members(*g, std::atoi(env("GRACE_PROBE_QUEUED").c_str()))));
  tell("steered");
  tell("new " + joined(accept_from_members(*g, std::atoi(env("GRACE_PROBE_NEW").c_str()))));
  return 0;
}

int run_serve_http(int argc, char** argv) {
  if (argc != 4) return 2;
  grace::net net;
  auto l = net.listen("tcp", argv[2]);
  if (!l) {
    std::fprintf(stderr, "probe: %s\n", l.error().message().c_str());
    return 1;
  }
  if (!(*l)->inherited()) {
    std::fprintf(stderr, "probe: %s was not inherited\n", argv[2]);
    return 1;
  }
  const long answers = std::atol(argv[3]);
  const int fd = (*l)->fd();
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  const std::string body = "pid=" + std::to_string(getpid()) + "\n";
  const std::string reply = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                            "\r\nConnection: close\r\n\r\n" + body;
  for (long served = 0; served < answers;) {
    const int conn = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) continue;
    std::string request;
    char chunk[4096];
    ssize_t n;
    while (request.find("\r\n\r\n") == std::string::npos && (n = read(conn, chunk, sizeof chunk)) > 0)
      request.append(chunk, static_cast<std::size_t>(n));
    if (request.find("\r\n\r\n") != std::string::npos) {
      ssize_t ignored = write(conn, reply.data(), reply.size());
      (void)ignored;
      ++served;
    }
    close(conn);
  }
  return 0;
}

int run_takeover(int argc, char** argv) {
  if (argc != 4) return 2;
  grace::net net;
  auto taken = net.take_over(argv[2]);
  if (!taken) {
    say("error " + taken.error().message());
    return 1;
  }
  if (taken->what != grace::takeover_result::outcome::took_over) {
    say("nobody serving");
    return 1;
  }
  say("took " + std::to_string(taken->listeners) + " from " + std::to_string(taken->from));
  const std::string then = argv[3];
  if (then == "exit") return 7;
  if (then == "hang") {
    pause();
    return 0;
  }
  auto told = grace::notify_ready();
  say(told && *told == grace::ready_outcome::told_parent ? "told" : "not told");
  return 9;
}

}  // namespace

void answer_lines(grace::uv::connection& c) {
  uv_read_start(
      c.stream(), [](uv_handle_t*, size_t, uv_buf_t* buf) { *buf = uv_buf_init(new char[256], 256); },
      [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
        grace::uv::connection& conn = grace::uv::connection::from(stream);
        const std::string got(buf->base, nread > 0 ? static_cast<std::size_t>(nread) : 0);
        delete[] buf->base;
        if (nread < 0) return conn.close();
        for (char ch : got) {
          if (ch != '\n') continue;
          auto* text = new std::string("pid=" + std::to_string(getpid()) + "\n");
          auto* req = new uv_write_t;
          req->data = text;
          const uv_buf_t out = uv_buf_init(text->data(), static_cast<unsigned>(text->size()));
          uv_write(req, stream, &out, 1, [](uv_write_t* r, int) {
            delete static_cast<std::string*>(r->data);
            delete r;
          });
        }
      });
}

int run_stalled_handover(int argc, char** argv) {
  if (argc < 4) return 2;
  const int stall_ms = std::atoi(argv[3]);
  grace::net net;
  auto l = net.listen("tcp", argv[2]);
  if (!l) {
    std::fprintf(stderr, "probe: %s\n", l.error().message().c_str());
    return 1;
  }
  uv_loop_t* loop = uv_default_loop();
  grace::uv::upgrader_options options;
  options.drain_timeout = std::chrono::seconds(20);
  options.process.executable = grace::process_options::executable_source::proc_self_exe;
  // The stall comes at the end of the turn that offered the connections (its check phase): the
  // next turn starts with the timers, before the poll that reads the new generation's hello.
  static uv_check_t stall;
  static int stall_for_ms = 0;
  stall_for_ms = stall_ms;
  uv_check_init(loop, &stall);
  const bool stalls = grace::generation() == 1;
  options.on_event = [stalls](const grace::uv::event& e) {
    std::fprintf(stderr, "probe[%d] %s\n", static_cast<int>(getpid()), e.message.c_str());
    if (!stalls || e.kind != grace::uv::event_kind::draining) return;
    uv_check_start(&stall, [](uv_check_t* self) {
      uv_check_stop(self);
      usleep(static_cast<useconds_t>(stall_for_ms) * 1000);
    });
  };
  grace::uv::upgrader upgrader(loop, net, options);
  upgrader.on_export([](grace::uv::connection& c) -> std::optional<std::string> {
    uv_read_stop(c.stream());
    return std::string();
  });
  upgrader.on_import([](grace::uv::connection& c, std::string) { answer_lines(c); });
  if (!upgrader.serve(*l, [](grace::uv::connection& c) { answer_lines(c); })) return 1;
  if (auto ready = upgrader.ready(); !ready) {
    std::fprintf(stderr, "probe: %s\n", ready.error().message().c_str());
    return 1;
  }
  return upgrader.run();
}

int main(int argc, char** argv) {
  const char* mode = std::getenv("GRACE_PROBE_MODE");
  if (mode != nullptr && std::string(mode) == "describe") return run_describe();
  if (mode != nullptr && std::string(mode) == "group") return run_group();
  if (mode != nullptr) return run_upgrade_child(mode);
  if (argc >= 2 && std::string(argv[1]) == "listen") return run_listen(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "reexec") return run_reexec(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "takeover") return run_takeover(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "serve-http") return run_serve_http(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "stalled-handover") return run_stalled_handover(argc, argv);
  std::fprintf(stderr, "usage: grace-test-probe listen|reexec|takeover ...\n");
  return 2;
}
