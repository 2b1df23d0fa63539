// The fd channel between real processes: parcels arrive whole and in order (10,000 fds in one),
// a receiver whose fd table is full loses nothing, a peer of another uid is refused, and every
// malformed message is a clear error after which what had arrived is closed.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "channel_wire.hpp"
#include "scm_rights.hpp"
#include "grace/fd_channel.hpp"
#include "grace/uv/fd_channel.hpp"
#include "support/process.hpp"
#include "support/sockets.hpp"

using namespace test_support;
using namespace std::chrono_literals;

namespace {

// Runs `body` in a forked child whose exit status is body's result (a doctest check cannot run
// there); returns the pid.
pid_t run_child(const std::function<int()>& body) {
  const pid_t pid = fork();
  if (pid == 0) _exit(body());
  return pid;
}

int exit_code(pid_t pid, std::chrono::milliseconds timeout = 30s) {
  if (!wait_exited(pid, timeout)) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return -1;
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

unsigned long inode_of(int fd) {
  struct stat st {};
  return fstat(fd, &st) == 0 ? static_cast<unsigned long>(st.st_ino) : 0;
}

bool is_open(int fd) { return fcntl(fd, F_GETFD) >= 0; }

grace::fd_description described(const std::string& name, const std::string& app) {
  grace::fd_description d;
  d.kind = grace::fd_kind::other;
  d.network = grace::network::unix_stream;
  d.address = "/nowhere/" + name;
  d.name = name;
  d.application = app;
  return d;
}

// A parcel of `count` fds: dups of `distinct` pipes' write ends, each described by its index
// (name) and inode (application bytes), so the receiver can tell order and identity apart.
struct pipe_parcel {
  std::vector<int> read_ends, write_ends, lent;
  grace::outgoing_parcel parcel;
  pipe_parcel(std::size_t count, std::size_t distinct) {
    for (std::size_t i = 0; i < distinct; ++i) {
      int p[2];
      REQUIRE(pipe2(p, O_CLOEXEC) == 0);
      read_ends.push_back(p[0]);
      write_ends.push_back(p[1]);
    }
    parcel.note = "a note";
    for (std::size_t i = 0; i < count; ++i) {
      const int fd = fcntl(write_ends[i % distinct], F_DUPFD_CLOEXEC, 3);
      REQUIRE(fd >= 0);
      lent.push_back(fd);
      parcel.fds.push_back({fd, described("fd" + std::to_string(i), std::to_string(inode_of(fd)))});
    }
  }
  ~pipe_parcel() {
    for (int fd : read_ends) close(fd);
    for (int fd : write_ends) close(fd);
    for (int fd : lent) close(fd);
  }
};

// Child side: 0 when the parcel holds `count` fds in order, each the pipe its description names.
int check_parcel(const grace::parcel& p, std::size_t count) {
  if (p.note != "a note") return 10;
  if (p.fds.size() != count) return 11;
  for (std::size_t i = 0; i < count; ++i) {
    const auto& r = p.fds[i];
    if (r.description.name != "fd" + std::to_string(i)) return 12;
    if (r.description.application != std::to_string(inode_of(r.fd.get()))) return 13;
    if (r.description.address != "/nowhere/fd" + std::to_string(i)) return 14;
    if (!(fcntl(r.fd.get(), F_GETFD) & FD_CLOEXEC)) return 15;
  }
  return 0;
}

void raise_fd_limit() {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
}

// Raw bytes (and fds) sent as one message on a socket, bypassing the channel's encoder.
void send_raw(int fd, const std::string& bytes, const std::vector<int>& fds = {}) {
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
  if (!fds.empty()) grace::detail::attach_fds(msg, control, fds.data(), fds.size());
  REQUIRE(sendmsg(fd, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
}

std::string header(std::uint8_t version, std::uint8_t type, std::uint32_t sequence, std::uint32_t payload) {
  std::string h = "GRFD";
  h += static_cast<char>(version);
  h += static_cast<char>(type);
  h += '\0';
  h += '\0';
  for (int i = 0; i < 4; ++i) h += static_cast<char>((sequence >> (8 * i)) & 0xff);
  for (int i = 0; i < 4; ++i) h += static_cast<char>((payload >> (8 * i)) & 0xff);
  return h;
}

// True once every copy of the pipe's write end is closed: its read end sees EOF.
bool read_end_sees_eof(int read_end) {
  pollfd p{read_end, POLLIN, 0};
  if (poll(&p, 1, 5000) != 1) return false;
  char c;
  return read(read_end, &c, 1) == 0;
}

}  // namespace

TEST_CASE("a parcel crosses to another process whole, in order, close-on-exec") {
  for (int type : {SOCK_SEQPACKET, SOCK_STREAM}) {
    CAPTURE(type);
    auto ends = grace::fd_channel::pair(type);
    REQUIRE(ends);
    pipe_parcel parts(600, 7);
    const pid_t child = run_child([&] {
      close(ends->first.release());
      auto p = ends->second.receive(20s);
      if (!p) return 2;
      if (int bad = check_parcel(*p, 600)) return bad;
      // The received fds are the very pipes: write a byte through the first seven.
      for (std::size_t i = 0; i < 7; ++i)
        if (write(p->fds[i].fd.get(), "x", 1) != 1) return 20;
      return 0;
    });
    close(ends->second.release());
    auto sent = ends->first.send(parts.parcel, 20s);
    REQUIRE_MESSAGE(sent, (sent ? "" : sent.error().message()));
    CHECK(exit_code(child) == 0);
    char c;
    for (int r : parts.read_ends) CHECK(read(r, &c, 1) == 1);
    CHECK(ends->first.stats().messages_sent == 3);  // 253 + 253 + 94
    // The sender kept its fds: they are lent, not given away.
    for (int fd : parts.lent) CHECK(is_open(fd));
  }
}

TEST_CASE("10,000 fds in one parcel, and batching against one fd per message") {
  raise_fd_limit();
  for (std::size_t per_message : {std::size_t(253), std::size_t(1)}) {
    CAPTURE(per_message);
    grace::channel_options options;
    options.max_fds_per_message = per_message;
    const std::size_t count = per_message == 1 ? 2000 : 10000;
    auto ends = grace::fd_channel::pair(SOCK_SEQPACKET, options);
    REQUIRE(ends);
    pipe_parcel parts(count, 100);
    const pid_t child = run_child([&] {
      close(ends->first.release());
      // The fork copied the parent's fds: without closing them, 10,000 more would not fit.
      for (int fd : parts.lent) close(fd);
      auto p = ends->second.receive(60s);
      if (!p) return 2;
      return check_parcel(*p, count);
    });
    close(ends->second.release());
    auto sent = ends->first.send(parts.parcel, 60s);
    REQUIRE_MESSAGE(sent, (sent ? "" : sent.error().message()));
    CHECK(exit_code(child, 60s) == 0);
    CHECK(ends->first.stats().messages_sent == (count + per_message - 1) / per_message);
  }
}

namespace {
// Filled by the child of the EMFILE test: fds that take up its table until the alarm frees them.
int fillers[256];
int filler_count = 0;
void free_fillers(int) {
  for (int i = 0; i < filler_count; ++i) close(fillers[i]);
}
}  // namespace

TEST_CASE("a receiver whose fd table is full loses nothing: the sender keeps the fds and sends again") {
  auto ends = grace::fd_channel::pair(SOCK_SEQPACKET);
  REQUIRE(ends);
  pipe_parcel parts(40, 4);
  const pid_t child = run_child([&] {
    close(ends->first.release());
    // A real full table: RLIMIT_NOFILE, then /dev/null until EMFILE.
    rlimit limit{256, 256};
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return 3;
    for (;;) {
      const int fd = open("/dev/null", O_RDONLY);
      if (fd < 0 || filler_count == 256) break;
      fillers[filler_count++] = fd;
    }
    if (errno != EMFILE) return 4;
    // Some slots free up later, as when connections finish.
    signal(SIGALRM, free_fillers);
    itimerval later{};
    later.it_value.tv_usec = 300000;
    setitimer(ITIMER_REAL, &later, nullptr);
    auto p = ends->second.receive(20s);
    if (!p) return 2;
    return check_parcel(*p, 40);
  });
  close(ends->second.release());
  auto sent = ends->first.send(parts.parcel, 20s);
  REQUIRE_MESSAGE(sent, (sent ? "" : sent.error().message()));
  CHECK(exit_code(child) == 0);
  CHECK(ends->first.stats().messages_refused > 0);
  for (int fd : parts.lent) CHECK(is_open(fd));
}

TEST_CASE("a sender whose receiver never frees its table gives up in time and still holds every fd") {
  auto ends = grace::fd_channel::pair(SOCK_SEQPACKET);
  REQUIRE(ends);
  pipe_parcel parts(10, 2);
  const pid_t child = run_child([&] {
    close(ends->first.release());
    rlimit limit{64, 64};
    setrlimit(RLIMIT_NOFILE, &limit);
    while (open("/dev/null", O_RDONLY) >= 0) {
    }
    auto p = ends->second.receive(3s);
    return p ? 1 : 0;
  });
  close(ends->second.release());
  auto sent = ends->first.send(parts.parcel, 1s);
  REQUIRE_FALSE(sent);
  CHECK(sent.error().code() == std::errc::timed_out);
  CHECK(ends->first.stats().messages_refused > 0);
  for (int fd : parts.lent) CHECK(is_open(fd));
  close(ends->first.release());
  CHECK(exit_code(child) == 0);
}

TEST_CASE("malformed messages are clear errors, and the fds that came with them are closed") {
  struct bad_case {
    const char* what;
    std::string bytes;
    const char* expected;
  };
  const std::string fd_batch_one = [] {
    std::vector<const grace::fd_description*> ds;
    static const grace::fd_description d = described("x", "");
    ds.push_back(&d);
    ds.push_back(&d);
    return *grace::detail::encode_batch(1, true, "", ds);  // describes two fds; one is attached
  }();
  std::string wrong_version = header(2, 1, 1, 6) + std::string(6, '\0');
  std::string oversized = header(1, 1, 1, 70000) + std::string(70000, 'a');
  const std::vector<bad_case> cases = {
      {"not GRFD", "HTTP/1.1 200 OK\r\n\r\n", "does not start with \"GRFD\""},
      {"short", "GRFD", "shorter than its header"},
      {"wrong version", wrong_version, "protocol version 2; this side speaks version 1"},
      {"unknown type", header(1, 9, 1, 0), "unknown type 9"},
      {"announces more", header(1, 1, 1, 100) + "abc", "announcing 116"},
      {"too long", oversized, "longer than 65536 bytes"},
      {"fd count", fd_batch_one, "describing 2 fds came with 1"},
      {"an answer nobody awaits", header(1, 2, 7, 0), "not awaiting one"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    int pair[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) == 0);
    int pipe_fds[2];
    REQUIRE(pipe2(pipe_fds, O_CLOEXEC) == 0);
    // A 70 KiB datagram needs a larger send buffer than the default.
    int big = 256 * 1024;
    setsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    const pid_t child = run_child([&] {
      close(pair[1]);
      send_raw(pair[0], c.bytes, {pipe_fds[1]});
      char c2;
      while (read(pair[0], &c2, 1) > 0) {
      }
      return 0;
    });
    close(pair[0]);
    close(pipe_fds[1]);
    auto channel = grace::fd_channel::adopt(pair[1]);
    REQUIRE(channel);
    auto p = channel->receive(10s);
    REQUIRE_FALSE(p);
    CHECK(p.error().code() == grace::errc::protocol_error);
    CHECK_MESSAGE(p.error().message().find(c.expected) != std::string::npos, p.error().message());
    channel = tl::unexpected(grace::error());  // closes the socket: the child finishes
    CHECK(exit_code(child) == 0);
    // Both copies of the write end are gone: the child's (exited) and the one that arrived.
    CHECK(read_end_sees_eof(pipe_fds[0]));
    close(pipe_fds[0]);
  }
}

TEST_CASE("a peer that hangs up in the middle of a parcel: an error, and what arrived is closed") {
  int pair[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) == 0);
  int pipe_fds[2];
  REQUIRE(pipe2(pipe_fds, O_CLOEXEC) == 0);
  const pid_t child = run_child([&] {
    close(pair[1]);
    static const grace::fd_description d = described("x", "");
    send_raw(pair[0], *grace::detail::encode_batch(1, false, "", {&d}), {pipe_fds[1]});
    return 0;  // exits without the rest of the parcel
  });
  close(pair[0]);
  close(pipe_fds[1]);
  auto channel = grace::fd_channel::adopt(pair[1]);
  REQUIRE(channel);
  auto p = channel->receive(10s);
  REQUIRE_FALSE(p);
  CHECK(p.error().code() == grace::errc::channel_closed);
  CHECK(p.error().message().find("in the middle of a parcel") != std::string::npos);
  CHECK(exit_code(child) == 0);
  CHECK(read_end_sees_eof(pipe_fds[0]));
  close(pipe_fds[0]);
}

TEST_CASE("a peer of another uid is refused, at both ends; an allowed uid is taken") {
  temp_dir dir;
  chmod(dir.path().c_str(), 0755);
  const std::string path = dir.file("channel.sock");
  const int listener = raw_unix_listener(path, SOCK_SEQPACKET);
  REQUIRE(listener >= 0);
  chmod(path.c_str(), 0777);
  constexpr uid_t nobody = 65534;
  for (bool allow : {false, true}) {
    CAPTURE(allow);
    const pid_t child = run_child([&] {
      if (setgid(nobody) != 0 || setuid(nobody) != 0) return 3;
      grace::channel_options options;
      if (allow) options.allowed_uids = {0};
      auto c = grace::fd_channel::connect(path, options);
      if (allow) return c ? 0 : 4;
      if (c) return 5;
      return c.error().code() == grace::errc::peer_not_allowed ? 0 : 6;
    });
    const int accepted = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    REQUIRE(accepted >= 0);
    grace::channel_options options;
    if (allow) options.allowed_uids = {nobody};
    auto c = grace::fd_channel::adopt(accepted, options);
    if (allow) {
      CHECK(c);
      if (c) CHECK(c->peer().uid == nobody);
    } else {
      REQUIRE_FALSE(c);
      CHECK(c.error().code() == grace::errc::peer_not_allowed);
      CHECK(c.error().message().find("uid 65534") != std::string::npos);
    }
    CHECK(exit_code(child) == 0);
  }
  close(listener);
}

TEST_CASE("on a libuv loop: a parcel out and a parcel in, while the loop keeps running") {
  auto ends = grace::fd_channel::pair(SOCK_SEQPACKET);
  REQUIRE(ends);
  pipe_parcel out(600, 3);
  pipe_parcel back(3, 3);
  const pid_t child = run_child([&] {
    close(ends->first.release());
    // A slow peer: the parent's loop must keep turning meanwhile.
    usleep(200000);
    auto p = ends->second.receive(20s);
    if (!p) return 2;
    if (int bad = check_parcel(*p, 600)) return bad;
    if (!ends->second.send(back.parcel, 20s)) return 3;
    auto end = ends->second.receive(20s);  // the parent hangs up
    return !end && end.error().code() == grace::errc::channel_closed ? 0 : 4;
  });
  uv_loop_t loop;
  uv_loop_init(&loop);
  auto channel = grace::uv::fd_channel::adopt(&loop, ends->first.release());
  close(ends->second.release());
  REQUIRE(channel);
  std::optional<grace::result<void>> sent;
  std::optional<grace::result<grace::parcel>> arrived;
  int ticks = 0;
  uv_timer_t ticker;
  uv_timer_init(&loop, &ticker);
  ticker.data = &ticks;
  uv_timer_start(&ticker, [](uv_timer_t* t) { ++*static_cast<int*>(t->data); }, 10, 10);
  uv_timer_t guard;  // bounds the test
  uv_timer_init(&loop, &guard);
  uv_timer_start(&guard, [](uv_timer_t* t) { uv_stop(t->loop); }, 20000, 0);
  (*channel)->send(out.parcel, 20s, [&](grace::result<void> r) { sent = std::move(r); });
  (*channel)->on_parcel([&](grace::result<grace::parcel> p) {
    arrived = std::move(p);
    channel->reset();  // destroyed inside its own callback
    uv_stop(&loop);
  });
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(sent);
  CHECK(*sent);
  REQUIRE(arrived);
  REQUIRE(*arrived);
  CHECK(check_parcel(**arrived, 3) == 0);
  CHECK(ticks > 0);
  arrived.reset();
  CHECK(exit_code(child) == 0);
  uv_close(reinterpret_cast<uv_handle_t*>(&ticker), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

// max_messages_in_flight above 1: parcels that fit in one message go out back to back, without
// waiting for each confirmation, and each arrives whole; with a receiver whose fd table is full
// for a moment, the refused ones are sent again (alone) and none is lost.
TEST_CASE("pipelined parcels go out back to back and arrive whole, through a full fd table too") {
  raise_fd_limit();
  for (bool full_table : {false, true}) {
    CAPTURE(full_table);
    constexpr std::size_t parcels = 30, per_parcel = 10;
    auto ends = grace::fd_channel::pair(SOCK_SEQPACKET);
    REQUIRE(ends);
    std::vector<std::unique_ptr<pipe_parcel>> out;
    for (std::size_t i = 0; i < parcels; ++i) out.push_back(std::make_unique<pipe_parcel>(per_parcel, 2));
    const pid_t child = run_child([&] {
      close(ends->first.release());
      if (full_table) {
        // The parent's parcels, inherited, would fill the table for good.
        for (auto& each : out)
          for (const auto* fds : {&each->read_ends, &each->write_ends, &each->lent})
            for (int fd : *fds) close(fd);
        rlimit limit{256, 256};
        if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return 3;
        for (;;) {
          const int fd = open("/dev/null", O_RDONLY);
          if (fd < 0 || filler_count == 256) break;
          fillers[filler_count++] = fd;
        }
        if (errno != EMFILE) return 4;
        signal(SIGALRM, free_fillers);
        itimerval later{};
        later.it_value.tv_usec = 300000;
        setitimer(ITIMER_REAL, &later, nullptr);
      }
      for (std::size_t i = 0; i < parcels; ++i) {
        auto p = ends->second.receive(20s);
        if (!p) return 2;
        if (int bad = check_parcel(*p, per_parcel)) return bad;
      }
      return 0;
    });
    close(ends->second.release());
    grace::channel_options options;
    options.max_messages_in_flight = 8;
    uv_loop_t loop;
    uv_loop_init(&loop);
    auto channel = grace::uv::fd_channel::adopt(&loop, ends->first.release(), options);
    REQUIRE(channel);
    std::size_t confirmed = 0, failed = 0;
    for (auto& each : out)
      (*channel)->send(each->parcel, 20s, [&](grace::result<void> r) {
        (r ? confirmed : failed) += 1;
        if (confirmed + failed == parcels) uv_stop(&loop);
      });
    // Eight went out at once, before any confirmation could come.
    CHECK((*channel)->stats().messages_sent == 8);
    uv_timer_t guard;  // bounds the test
    uv_timer_init(&loop, &guard);
    uv_timer_start(&guard, [](uv_timer_t* t) { uv_stop(t->loop); }, 20000, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(confirmed == parcels);
    CHECK(failed == 0);
    CHECK(exit_code(child) == 0);
    if (full_table) CHECK((*channel)->stats().messages_refused > 0);
    for (auto& each : out)
      for (int fd : each->lent) CHECK(is_open(fd));
    channel->reset();
    uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
  }
}
