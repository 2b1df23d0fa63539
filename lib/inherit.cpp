#include "inherit.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>

#include "environment_protocol.hpp"
#include "helper_thread.hpp"

namespace grace::detail {
namespace {

tl::unexpected<error> bad_fd(const std::string& source, int fd, const std::string& what) {
  return fail(errc::invalid_inherited_fd, source + ": fd " + std::to_string(fd) + " " + what);
}

std::atomic<bool> taken{false};

}  // namespace

// Three system calls: for a socket handed over by a takeover, which are few.
result<inherited_socket> check_inherited_socket(const std::string& source, int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
    if (errno == EBADF) return bad_fd(source, fd, "is not open");
    return bad_fd(source, fd, errno == ENOTSOCK ? "is not a socket" : std::strerror(errno));
  }
  sockaddr_storage storage{};
  socklen_t address_len = sizeof storage;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &address_len) != 0)
    return bad_fd(source, fd, std::string("has no local address: ") + std::strerror(errno));
  const int family = storage.ss_family;
  if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
    return bad_fd(source, fd,
                  "is a socket of address family " + std::to_string(family) +
                      ", not AF_INET, AF_INET6 or AF_UNIX");
  if (type != SOCK_STREAM && type != SOCK_SEQPACKET && type != SOCK_DGRAM)
    return bad_fd(source, fd,
                  "is a socket of type " + std::to_string(type) +
                      ", not SOCK_STREAM, SOCK_SEQPACKET or SOCK_DGRAM");
  if (type != SOCK_DGRAM) {
    int listening = 0;
    len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening == 0)
      return bad_fd(source, fd, "is a connection-oriented socket that is not listening");
  }
  auto address = socket_address::from_sockaddr(reinterpret_cast<sockaddr*>(&storage), address_len);
  if (!address) return bad_fd(source, fd, "has a local address grace cannot read");
  inherited_socket out;
  out.fd = fd;
  out.type = type;
  out.family = family;
  out.where = endpoint_of(*address);
  return out;
}

namespace {

// Reads the local address of slots[i] (fd first_listen_fd + i) for i in [first, last): the one
// system call per fd. The error of the lowest fd that has one, if any.
std::optional<error> read_addresses(inherited_slot* slots, std::size_t first, std::size_t last,
                                    const listen_fds& listen, const std::string& source) {
  for (std::size_t i = first; i < last; ++i) {
    inherited_slot& slot = slots[i];
    inherited_socket& s = slot.socket;
    s.fd = first_listen_fd + static_cast<int>(i);
    sockaddr_storage storage{};
    socklen_t len = sizeof storage;
    if (getsockname(s.fd, reinterpret_cast<sockaddr*>(&storage), &len) != 0)
      return bad_fd(source, s.fd, errno == EBADF      ? "is not open"
                                  : errno == ENOTSOCK ? "is not a socket"
                                                      : std::string("has no local address: ") + std::strerror(errno))
          .value();
    s.family = storage.ss_family;
    if (s.family != AF_INET && s.family != AF_INET6 && s.family != AF_UNIX)
      return bad_fd(source, s.fd,
                    "is a socket of address family " + std::to_string(s.family) + ", not AF_INET, AF_INET6 or AF_UNIX")
          .value();
    auto address = socket_address::from_sockaddr(reinterpret_cast<sockaddr*>(&storage), len);
    if (!address) return bad_fd(source, s.fd, "has a local address grace cannot read").value();
    s.where = endpoint_of(*address);
    s.name = listen.names[i];
    if (!listen.types.empty()) s.type = socket_type_of_letter(listen.types[i]);
    slot.hash = s.where.hash();
  }
  return std::nullopt;
}

// Below this many, a second thread costs more than it saves.
constexpr std::size_t parallel_from = 1024;
constexpr std::size_t chunk_size = 128;

// The sockets are read in chunks that both threads take in turn, so a helper that starts late
// (its CPU busy) takes fewer of them instead of leaving this thread waiting for its fixed half.
// Shared with the helper, which may outlive the read: it touches the slots only for a chunk it
// took.
struct shared_read {
  // The helper starts before the slots exist, so that making them and starting it overlap: it
  // waits for `published`, under mutex, before reading.
  bool published = false;
  std::condition_variable published_now;
  inherited_slot* slots = nullptr;
  std::size_t count = 0;
  std::size_t chunks = 0;
  const listen_fds* listen = nullptr;
  std::string source;
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> lowest_failed{SIZE_MAX};
  std::vector<std::optional<error>> errors;  // one per chunk, written by whoever took it
  std::mutex mutex;
  std::condition_variable settled_all;
  std::size_t settled = 0;  // chunks read or skipped, under mutex
};

void read_chunks(shared_read& r) {
  for (;;) {
    const std::size_t chunk = r.next.fetch_add(1, std::memory_order_relaxed);
    if (chunk >= r.chunks) return;
    // Chunks are taken in order, so every chunk below a failed one is read by someone: the
    // error of the lowest fd is found without reading past it.
    if (chunk < r.lowest_failed.load(std::memory_order_relaxed)) {
      const std::size_t first = chunk * chunk_size;
      const std::size_t last = std::min(first + chunk_size, r.count);
      if (auto failed = read_addresses(r.slots, first, last, *r.listen, r.source)) {
        r.errors[chunk] = std::move(failed);
        std::size_t lowest = r.lowest_failed.load(std::memory_order_relaxed);
        while (chunk < lowest && !r.lowest_failed.compare_exchange_weak(lowest, chunk)) {
        }
      }
    }
    std::lock_guard<std::mutex> lock(r.mutex);
    if (++r.settled == r.chunks) r.settled_all.notify_all();
  }
}

// Without a helper (one CPU, or no thread to be had), this thread reads every chunk.
void start_helper(const std::shared_ptr<shared_read>& r) {
  try {
    start_helper_thread([r] {
      {
        std::unique_lock<std::mutex> lock(r->mutex);
        r->published_now.wait(lock, [&] { return r->published; });
      }
      read_chunks(*r);
    });
  } catch (const std::bad_alloc&) {
  }
}

}  // namespace

result<void> take_inherited_sockets(std::vector<inherited_slot>& slots) {
  if (taken.exchange(true)) return {};
  const auto& listen = startup_inheritance().listen;
  if (!listen) return tl::unexpected(listen.error());
  const auto count = static_cast<std::size_t>(listen->count);
  auto r = std::make_shared<shared_read>();
  // Each look at a socket costs about the same, whichever call it is: reaching the socket's cold
  // kernel memory. Thousands of them go faster on two cores.
  if (count >= parallel_from) start_helper(r);
  const std::size_t base = slots.size();
  slots.resize(base + count);
  {
    std::lock_guard<std::mutex> lock(r->mutex);
    r->slots = slots.data() + base;
    r->count = count;
    r->chunks = (count + chunk_size - 1) / chunk_size;
    r->listen = &*listen;
    r->source = "LISTEN_FDS=" + std::to_string(listen->count);
    r->errors.resize(r->chunks);
    r->published = true;
  }
  r->published_now.notify_all();
  read_chunks(*r);
  {
    std::unique_lock<std::mutex> lock(r->mutex);
    r->settled_all.wait(lock, [&] { return r->settled == r->chunks; });
  }
  if (const std::size_t failed = r->lowest_failed.load(); failed != SIZE_MAX) {
    // A malformed inheritance is not adopted: its fds stay as they are, closed by nobody here.
    for (std::size_t i = 0; i < count; ++i) r->slots[i].socket.fd = -1;
    auto why = std::move(*r->errors[failed]);
    slots.resize(base);
    return tl::unexpected(std::move(why));
  }
  return {};
}

result<bool> claimable_as(inherited_socket& s, network n, const std::string& source) {
  const int want = socket_type(n);
  if (s.type != 0) return s.type == want;  // checked when it arrived, here or by the grace parent
  if (is_tcp(n)) {
    // One call says both "TCP" and "listening".
    tcp_info info{};
    socklen_t len = sizeof info;
    if (getsockopt(s.fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) {
      if (errno == EOPNOTSUPP || errno == ENOPROTOOPT) return false;
      return bad_fd(source, s.fd, std::strerror(errno));
    }
    if (info.tcpi_state != TCP_LISTEN) return bad_fd(source, s.fd, "is a TCP socket that is not listening");
  } else if (is_udp(n)) {
    int protocol = 0;
    socklen_t len = sizeof protocol;
    if (getsockopt(s.fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) != 0) return bad_fd(source, s.fd, std::strerror(errno));
    if (protocol != IPPROTO_UDP) return false;
  } else {
    if (socket_type_of(s.fd) != want) return false;
    int listening = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(s.fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening == 0)
      return bad_fd(source, s.fd, "is a connection-oriented socket that is not listening");
  }
  s.type = want;
  return true;
}

int socket_type_of(int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 ? type : 0;
}

inherited_slot::inherited_slot(inherited_slot&& other) noexcept
    : socket(std::move(other.socket)), hash(other.hash), shown(std::move(other.shown)) {
  other.socket.fd = -1;
}

inherited_slot::~inherited_slot() {
  if (socket.fd >= 0 && !shown) ::close(socket.fd);
}

}  // namespace grace::detail
