// The cookie path's kernel primitive (lib/reuseport_steering.hpp) against the running kernel, in
// one process: SO_REUSEPORT groups of UDP sockets on 127.0.0.1 and ::1, a classic BPF program
// reading a cookie from each datagram, where each datagram arrives; the group's socket array as
// sockets leave and join (reuseport_layout); the program attached by a thread running as nobody
// with no capabilities (credentials are per thread in Linux; the raw syscalls change this
// thread's only, so the test stays one process).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "reuseport_steering.hpp"
#include "support/errors.hpp"

using namespace grace::detail;
using test_support::error_text;

namespace {

class unique_fd {
 public:
  explicit unique_fd(int fd = -1) : fd_(fd) {}
  ~unique_fd() { reset(); }
  unique_fd(unique_fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

struct endpoint {
  sockaddr_storage addr{};
  socklen_t len = 0;
  int family = AF_INET;
};

endpoint make_endpoint(const std::string& host, std::uint16_t port) {
  endpoint e;
  if (host.find(':') != std::string::npos) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&e.addr);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    REQUIRE(inet_pton(AF_INET6, host.c_str(), &a->sin6_addr) == 1);
    e.len = sizeof *a;
    e.family = AF_INET6;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&e.addr);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    REQUIRE(inet_pton(AF_INET, host.c_str(), &a->sin_addr) == 1);
    e.len = sizeof *a;
  }
  return e;
}

// A non-blocking UDP socket with SO_REUSEPORT bound to host:port (port 0: an ephemeral port,
// written back into `port`). Returns -1 and sets `error` on failure; touches no doctest state, so
// the unprivileged thread can call it.
int bind_member(const std::string& host, std::uint16_t& port, std::string& error) {
  endpoint e;
  const bool v6 = host.find(':') != std::string::npos;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&e.addr);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    inet_pton(AF_INET6, host.c_str(), &a->sin6_addr);
    e.len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&e.addr);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, host.c_str(), &a->sin_addr);
    e.len = sizeof *a;
  }
  const int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  const int on = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0 ||
      bind(fd, reinterpret_cast<sockaddr*>(&e.addr), e.len) != 0) {
    error = "bind " + host + " port " + std::to_string(port) + ": " + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  if (port == 0) {
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
    port = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                    : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  }
  return fd;
}

// A group of UDP sockets on one address, each known by its id: its position in `members`, the
// order it was bound in (a closed one is -1).
struct group {
  std::string host;
  std::uint16_t port = 0;
  std::vector<unique_fd> members;

  void add() {
    std::string error;
    const int fd = bind_member(host, port, error);
    REQUIRE_MESSAGE(fd >= 0, error);
    members.emplace_back(fd);
  }
  int fd(std::size_t id) const { return members.at(id).get(); }
};

group make_group(const std::string& host, std::size_t count) {
  group g;
  g.host = host;
  for (std::size_t i = 0; i < count; ++i) g.add();
  return g;
}

// Sends `payload` to the group from `sender` (a fresh socket when -1) and returns the id of the
// member it arrived on, or -1 if none had it within 2 s. Fails the test if the payload read back
// is not the one sent.
int arrival(const group& g, const std::string& payload, int sender = -1) {
  const endpoint to = make_endpoint(g.host, g.port);
  unique_fd own;
  if (sender < 0) {
    own = unique_fd(socket(to.family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    REQUIRE(own.get() >= 0);
    sender = own.get();
  }
  REQUIRE_MESSAGE(sendto(sender, payload.data(), payload.size(), 0, reinterpret_cast<const sockaddr*>(&to.addr),
                         to.len) == static_cast<ssize_t>(payload.size()),
                  std::strerror(errno));
  std::vector<pollfd> polled;
  std::vector<int> ids;
  for (std::size_t id = 0; id < g.members.size(); ++id) {
    if (g.fd(id) < 0) continue;
    polled.push_back({g.fd(id), POLLIN, 0});
    ids.push_back(static_cast<int>(id));
  }
  const int ready = poll(polled.data(), polled.size(), 2000);
  REQUIRE(ready >= 0);
  if (ready == 0) return -1;
  REQUIRE_MESSAGE(ready == 1, "one datagram readable on " << ready << " members");
  for (std::size_t i = 0; i < polled.size(); ++i) {
    if (!(polled[i].revents & POLLIN)) continue;
    char buf[2048];
    const ssize_t n = recv(polled[i].fd, buf, sizeof buf, MSG_DONTWAIT);
    REQUIRE(n >= 0);
    CHECK(std::string(buf, static_cast<std::size_t>(n)) == payload);
    return ids[i];
  }
  return -1;
}

std::string printable(const std::string& s) {
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return '"' + out + '"';
}

void attach(int fd, const cookie_format& format, const std::vector<std::pair<std::uint8_t, std::uint32_t>>& cookies,
            std::uint32_t default_index) {
  const auto program = steering_program(format, cookies, default_index);
  REQUIRE_MESSAGE(program, error_text(program));
  const auto attached = attach_steering(fd, *program);
  REQUIRE_MESSAGE(attached, error_text(attached));
}

const cookie_format sample_format{5, cookie_format::encoding::hex2, "DATA "};

// Datagrams in the sample's shape: "DATA " then a session id of 16 lowercase hex digits whose
// first two are the cookie.
std::string sample(const std::string& session, const std::string& rest = " 1") { return "DATA " + session + rest; }

// The index each datagram goes to in a group of four where the socket at index i is member i.
void check_cookies(const std::string& host) {
  group g = make_group(host, 4);
  // Attached through a member other than the first: the program is the group's.
  attach(g.fd(2), sample_format, {{0x3f, 1}, {0xa0, 2}, {0x07, 3}}, 0);
  CHECK(arrival(g, sample("3f0123456789abcd")) == 1);
  CHECK(arrival(g, sample("a0ffffffffffffff")) == 2);
  CHECK(arrival(g, sample("07aaaaaaaaaaaaaa")) == 3);
  CHECK(arrival(g, sample("5500000000000000")) == 0);  // a cookie no generation owns
  CHECK(arrival(g, sample("zz00000000000000")) == 0);
  CHECK(arrival(g, "DATA 3") == 0);
  CHECK(arrival(g, "") == 0);

  // Malformed cookies with default index 3, so that a datagram the program rejects is told
  // apart from one on which a load past the end ends the program (which returns 0).
  attach(g.fd(0), sample_format, {{0x3f, 1}, {0xa0, 2}, {0x07, 0}}, 3);
  const std::vector<std::string> malformed = {
      sample("3F0123456789abcd"),  // uppercase
      sample("zz00000000000000"),  // not hex
      sample("3g00000000000000"),  // second digit not hex
      sample("g300000000000000"),  // first digit not hex
      sample(":000000000000000"),  // ':' follows '9'
      sample("/000000000000000"),  // '/' precedes '0'
      sample("`000000000000000"),  // '`' precedes 'a'
      sample("3 00000000000000"),
      "DATB 3f0123456789abcd 1",   // wrong prefix
      "data 3f0123456789abcd 1",   // prefix in lowercase
      " DATA 3f0123456789abcd 1",  // prefix one byte late
      "DATA 3",                    // too short for the second digit
      "DATA ",                     // prefix only
      "DAT",                       // shorter than the prefix
      "",
  };
  for (const auto& m : malformed) CHECK_MESSAGE(arrival(g, m) == 3, printable(m));
  // Just long enough: the payload ends with the cookie's last digit (BPF_LEN is the payload's length).
  CHECK(arrival(g, "DATA 3f") == 1);
  CHECK(arrival(g, "DATA a0") == 2);
  CHECK(arrival(g, "DATA 07") == 0);
  CHECK(arrival(g, "DATA 55") == 3);  // valid, owned by nobody
  CHECK(arrival(g, sample("a0", "")) == 2);

  // A raw byte at payload offset 0 (what BPF_LD|BPF_ABS 0 reads: the first byte after the UDP
  // header), no prefix; 0x00 and 0xff are cookies like any other.
  attach(g.fd(3), cookie_format{0, cookie_format::encoding::byte, ""}, {{0x00, 1}, {0xff, 2}, {0x42, 3}}, 0);
  CHECK(arrival(g, std::string("\x00rest", 5)) == 1);
  CHECK(arrival(g, std::string(1, '\xff')) == 2);
  CHECK(arrival(g, "B") == 3);
  CHECK(arrival(g, "C") == 0);
  CHECK(arrival(g, "") == 0);

  // A byte further in, behind a prefix, default index 1.
  attach(g.fd(1), cookie_format{9, cookie_format::encoding::byte, "QUIC"}, {{0x01, 2}, {0x02, 3}, {0x03, 0}}, 1);
  CHECK(arrival(g, std::string("QUIC....." "\x01", 10)) == 2);
  CHECK(arrival(g, std::string("QUIC....." "\x02" "tail", 14)) == 3);
  CHECK(arrival(g, std::string("QUIC....." "\x03", 10)) == 0);
  CHECK(arrival(g, std::string("QUIC....." "\x04", 10)) == 1);
  CHECK(arrival(g, std::string("QUIC.....", 9)) == 1);  // one byte short
  CHECK(arrival(g, std::string("QUIX....." "\x01", 10)) == 1);
}

// A program sending cookie k to index k, for k below `count`: where each lands is the kernel's
// socket array.
std::vector<int> kernel_array(const group& g, std::size_t count, std::uint32_t probe_through_id) {
  std::vector<std::pair<std::uint8_t, std::uint32_t>> identity;
  for (std::size_t k = 0; k < count; ++k)
    identity.emplace_back(static_cast<std::uint8_t>(k), static_cast<std::uint32_t>(k));
  attach(g.fd(probe_through_id), cookie_format{0, cookie_format::encoding::byte, ""}, identity, 0);
  std::vector<int> out;
  for (std::size_t k = 0; k < count; ++k) out.push_back(arrival(g, std::string(1, static_cast<char>(k)) + "probe"));
  return out;
}

std::vector<int> as_ints(const std::vector<std::uint64_t>& ids) { return std::vector<int>(ids.begin(), ids.end()); }

bool ipv6_loopback_works() {
  std::uint16_t port = 0;
  std::string error;
  const int fd = bind_member("::1", port, error);
  if (fd < 0) {
    MESSAGE("SKIPPED: the IPv6 cases: ::1 is not usable here (" << error << ")");
    return false;
  }
  ::close(fd);
  return true;
}

std::string status_line(const std::string& status, const std::string& key) {
  const auto at = status.find("\n" + key + ":");
  if (at == std::string::npos) return "";
  const auto end = status.find('\n', at + 1);
  return status.substr(at + 1, end - at - 1);
}

}  // namespace

TEST_CASE("steering_program refuses what it cannot steer, with a clear error") {
  std::vector<std::pair<std::uint8_t, std::uint32_t>> cookies;
  for (unsigned c = 0; c < 200; ++c) cookies.emplace_back(static_cast<std::uint8_t>(c), c % 7);
  const auto most = steering_program(sample_format, cookies, 0);
  REQUIRE_MESSAGE(most, error_text(most));
  CHECK(most->size() < 1000);  // far below BPF_MAXINSNS (4096)
  cookies.emplace_back(static_cast<std::uint8_t>(200), 1);
  const auto too_many = steering_program(sample_format, cookies, 0);
  REQUIRE(!too_many);
  CHECK(too_many.error().code() == grace::errc::invalid_argument);
  CHECK(too_many.error().message() == "steering program: 201 cookies, at most 200");

  const auto twice = steering_program(sample_format, {{0x3f, 1}, {0x10, 2}, {0x3f, 2}}, 0);
  REQUIRE(!twice);
  CHECK(twice.error().message() == "steering program: cookie 0x3f is listed twice");

  const auto far_index = steering_program(sample_format, {{0x3f, 65536}}, 0);
  REQUIRE(!far_index);
  CHECK(far_index.error().message().find("goes to index 65536") != std::string::npos);
  CHECK(!steering_program(sample_format, {}, 65536));
  CHECK(steering_program(sample_format, {{0x3f, 65535}}, 65535));

  CHECK(steering_program(cookie_format{65533, cookie_format::encoding::hex2, ""}, {}, 0));
  CHECK(steering_program(cookie_format{65534, cookie_format::encoding::byte, ""}, {}, 0));
  const auto far = steering_program(cookie_format{65534, cookie_format::encoding::hex2, ""}, {}, 0);
  REQUIRE(!far);
  CHECK(far.error().message() == "steering program: the cookie at payload offset 65534 ends past byte 65535");
  CHECK(!steering_program(cookie_format{static_cast<std::size_t>(-1), cookie_format::encoding::hex2, ""}, {}, 0));

  const auto overlapping = steering_program(cookie_format{3, cookie_format::encoding::hex2, "DATA "}, {}, 0);
  REQUIRE(!overlapping);
  CHECK(overlapping.error().message() == "steering program: the prefix (5 bytes) reaches the cookie at offset 3");
  const auto long_prefix = steering_program(cookie_format{100, cookie_format::encoding::byte, std::string(65, 'x')}, {}, 0);
  REQUIRE(!long_prefix);
  CHECK(long_prefix.error().message() == "steering program: a prefix of 65 bytes, at most 64");
  // The largest program: 64 bytes of prefix, hex digits, 200 cookies.
  const auto largest = steering_program(cookie_format{64, cookie_format::encoding::hex2, std::string(64, 'x')},
                                        std::vector<std::pair<std::uint8_t, std::uint32_t>>(cookies.begin(),
                                                                                            cookies.end() - 1),
                                        0);
  REQUIRE_MESSAGE(largest, error_text(largest));

  const auto empty = attach_steering(0, {});
  REQUIRE(!empty);
  CHECK(empty.error().code() == grace::errc::invalid_argument);
}

TEST_CASE("reuseport_layout: a joining socket is appended, the last takes a leaver's index") {
  reuseport_layout layout;
  CHECK(layout.size() == 0);
  for (std::uint64_t id = 10; id < 14; ++id) {
    const auto index = layout.join(id);
    REQUIRE(index);
    CHECK(*index == id - 10);
  }
  CHECK(!layout.join(12));
  REQUIRE(layout.leave(11));
  CHECK(layout.members() == std::vector<std::uint64_t>{10, 13, 12});
  CHECK(layout.index_of(13) == 1u);
  CHECK(!layout.index_of(11));
  CHECK(!layout.leave(11));
  REQUIRE(layout.leave(12));  // the last leaves: nothing moves
  CHECK(layout.members() == std::vector<std::uint64_t>{10, 13});
  CHECK(*layout.join(14) == 2u);
  REQUIRE(layout.leave(10));
  CHECK(layout.members() == std::vector<std::uint64_t>{14, 13});
  CHECK(layout.size() == 2);
}

TEST_CASE("a cookie steers each datagram to its socket; no valid cookie goes to the default: IPv4") {
  check_cookies("127.0.0.1");
}

TEST_CASE("a cookie steers each datagram to its socket; no valid cookie goes to the default: IPv6") {
  if (!ipv6_loopback_works()) return;
  check_cookies("::1");
}

TEST_CASE("reuseport_layout follows the kernel's array as sockets close and bind; the program stays") {
  for (const std::string host : {"127.0.0.1", "::1"}) {
    if (host == "::1" && !ipv6_loopback_works()) continue;
    CAPTURE(host);
    group g = make_group(host, 4);
    reuseport_layout layout;
    for (std::uint64_t id = 0; id < 4; ++id) CHECK(*layout.join(id) == id);
    CHECK(kernel_array(g, 4, 1) == as_ints(layout.members()));

    // One of two fds of a socket closes (as when one generation closes an inherited socket): the
    // socket stays in the group, at its index.
    g.members[3] = unique_fd(dup(g.fd(3)));
    REQUIRE(g.fd(3) >= 0);
    CHECK(kernel_array(g, 4, 1) == as_ints(layout.members()));

    // A middle member closes: the last one takes its index. The probe program was attached
    // through the socket that closes: it stays with the group.
    g.members[1].reset();
    REQUIRE(layout.leave(1));
    CHECK(layout.members() == std::vector<std::uint64_t>{0, 3, 2});
    for (std::size_t k = 0; k < 3; ++k)
      CHECK(arrival(g, std::string(1, static_cast<char>(k)) + "probe") == static_cast<int>(layout.members()[k]));
    // Index 3 is past the group's end now: the kernel hashes, to some member (not index 0 as such).
    CHECK(arrival(g, std::string(1, '\x03') + "probe") >= 0);

    // A socket that binds is appended.
    g.add();
    CHECK(*layout.join(4) == 3u);
    CHECK(kernel_array(g, 4, 4) == as_ints(layout.members()));

    // The first member (grace's shared socket) closes: the last takes index 0.
    g.members[0].reset();
    REQUIRE(layout.leave(0));
    CHECK(layout.members() == std::vector<std::uint64_t>{4, 3, 2});
    CHECK(kernel_array(g, 3, 2) == as_ints(layout.members()));

    // The last member closes: nothing else moves.
    g.members[2].reset();
    REQUIRE(layout.leave(2));
    CHECK(kernel_array(g, 2, 3) == as_ints(layout.members()));

    // What grace does: each owner's cookie to its index in the layout.
    g.add();
    g.add();
    CHECK(*layout.join(5) == 2u);
    CHECK(*layout.join(6) == 3u);
    std::vector<std::pair<std::uint8_t, std::uint32_t>> owners;
    for (std::uint64_t id : layout.members())
      owners.emplace_back(static_cast<std::uint8_t>(0xc0 + id), *layout.index_of(id));
    attach(g.fd(layout.members()[0]), sample_format, owners, 0);
    for (std::uint64_t id : layout.members()) {
      char session[17];
      std::snprintf(session, sizeof session, "%02x00112233445566", static_cast<unsigned>(0xc0 + id));
      CHECK(arrival(g, sample(session)) == static_cast<int>(id));
    }
  }
}

TEST_CASE("kernel: a classic load past the payload's end ends the program with index 0") {
  // Why steering_program() compares the length first: without that, a short datagram would go
  // to index 0 whatever the default index.
  group g = make_group("127.0.0.1", 3);
  std::vector<sock_filter> program = {
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 8),
      BPF_STMT(BPF_RET | BPF_K, 2),
  };
  const auto attached = attach_steering(g.fd(1), program);
  REQUIRE_MESSAGE(attached, error_text(attached));
  CHECK(arrival(g, "123456789") == 2);
  CHECK(arrival(g, "12345678") == 0);
  CHECK(arrival(g, "") == 0);
}

TEST_CASE("detach_steering returns the group to the kernel's hash") {
  group g = make_group("127.0.0.1", 4);
  attach(g.fd(0), sample_format, {}, 2);  // everything to index 2
  std::vector<unique_fd> senders;
  for (int i = 0; i < 32; ++i) senders.emplace_back(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  for (int i = 0; i < 8; ++i) CHECK(arrival(g, "x", senders[static_cast<std::size_t>(i)].get()) == 2);

  const auto detached = detach_steering(g.fd(3));
  REQUIRE_MESSAGE(detached, error_text(detached));
  // 32 source ports hashed over 4 members: all on member 2 has a chance of 4^-32.
  std::set<int> seen;
  for (auto& s : senders) seen.insert(arrival(g, "x", s.get()));
  CHECK(!seen.count(-1));
  CHECK(seen.size() > 1);

  const auto again = detach_steering(g.fd(0));
  REQUIRE(!again);
  CHECK(again.error().code() == std::errc::no_such_file_or_directory);
  CHECK(again.error().message().find("SO_DETACH_REUSEPORT_BPF") != std::string::npos);
}

TEST_CASE("attach_steering on a bound socket without SO_REUSEPORT fails with EINVAL") {
  unique_fd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  const endpoint e = make_endpoint("127.0.0.1", 0);
  REQUIRE(bind(fd.get(), reinterpret_cast<const sockaddr*>(&e.addr), e.len) == 0);
  const auto program = steering_program(sample_format, {}, 0);
  REQUIRE(program);
  const auto attached = attach_steering(fd.get(), *program);
  REQUIRE(!attached);
  CHECK(attached.error().code() == std::errc::invalid_argument);
  CHECK(attached.error().message().find("SO_ATTACH_REUSEPORT_CBPF") != std::string::npos);
}

TEST_CASE("a thread running as nobody, without capabilities, builds a group and attaches the program") {
  struct outcome {
    std::string skipped, error, uid, capabilities;
    std::uint16_t port = 0;
    std::vector<int> fds;
  } out;
  const bool root = geteuid() == 0;
  std::thread unprivileged([&] {
    // Raw syscalls: glibc's wrappers would change every thread of the process.
    if (root && (syscall(SYS_setgroups, 0, nullptr) != 0 || syscall(SYS_setresgid, 65534, 65534, 65534) != 0 ||
                 syscall(SYS_setresuid, 65534, 65534, 65534) != 0)) {
      out.skipped = std::string("cannot become uid 65534: ") + std::strerror(errno);
      return;
    }
    std::ifstream status_file("/proc/thread-self/status");
    const std::string status((std::istreambuf_iterator<char>(status_file)), std::istreambuf_iterator<char>());
    out.uid = status_line(status, "Uid");
    out.capabilities = status_line(status, "CapEff");
    for (int i = 0; i < 3; ++i) {
      const int fd = bind_member("127.0.0.1", out.port, out.error);
      if (fd < 0) return;
      out.fds.push_back(fd);
    }
    const auto program = steering_program(sample_format, {{0x3f, 1}, {0xa0, 2}}, 0);
    if (!program) {
      out.error = program.error().message();
      return;
    }
    if (auto attached = attach_steering(out.fds[1], *program); !attached) out.error = attached.error().message();
  });
  unprivileged.join();
  // Changing the euid made the process undumpable; it is root's again.
  prctl(PR_SET_DUMPABLE, 1);
  group g;
  g.host = "127.0.0.1";
  g.port = out.port;
  for (int fd : out.fds) g.members.emplace_back(fd);
  if (!out.skipped.empty()) {
    MESSAGE("SKIPPED: the unprivileged attach: " << out.skipped);
    return;
  }
  if (!root) MESSAGE("not root: the test runs unprivileged as it is (" << out.uid << ")");
  REQUIRE_MESSAGE(out.error.empty(), out.error);
  if (root) {
    CHECK(out.uid == "Uid:\t65534\t65534\t65534\t65534");
    CHECK(out.capabilities == "CapEff:\t0000000000000000");
  }
  CHECK(arrival(g, sample("3f0123456789abcd")) == 1);
  CHECK(arrival(g, sample("a0ffffffffffffff")) == 2);
  CHECK(arrival(g, sample("zz00000000000000")) == 0);

  if (root) {
    // A socket of another uid (root) cannot join nobody's group.
    std::uint16_t port = g.port;
    std::string error;
    const int fd = bind_member("127.0.0.1", port, error);
    if (fd >= 0) ::close(fd);
    CHECK_MESSAGE(fd < 0, "root joined a group of uid 65534");
    CHECK(error.find(std::strerror(EADDRINUSE)) != std::string::npos);
  }
}
