#include "grace/migration.hpp"

#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <mutex>
#include <string_view>
#include <utility>
#include <vector>

#include "environment_protocol.hpp"
#include "failure.hpp"
#include "fd_table.hpp"
#include "grace/flows.hpp"
#include "readiness_socket.hpp"
#include "scm_rights.hpp"

namespace grace {
namespace {

// Version 2 reads a capacity in the hello; a version-1 parent (an earlier release) compares the
// hello whole, so it is sent none.
constexpr char offer_magic[] = "GRACE-CONNECTIONS 2";
constexpr char offer_magic_v1[] = "GRACE-CONNECTIONS 1";
std::atomic<bool> parent_reads_capacity{false};
constexpr std::string_view hello_note = "grace-connections 1";
constexpr std::string_view capacity_field = " capacity=";

}  // namespace

bool parent_offers_connections() noexcept { return detail::startup_inheritance().parent_offers_connections; }

bool parent_offers_flows() noexcept { return detail::startup_inheritance().parent_offers_flows; }

int parent_connection_fd() noexcept { return detail::kept_readiness_fd(); }

namespace {

// The offers that come on the readiness connection once the new generation is ready: the
// connection channel and the flow channel (grace/flows.hpp), in either order. One read may bring
// the other's: it waits here for its own receive call.
enum offer_kind { connections_offer = 0, flows_offer = 1 };
constexpr char flows_magic[] = "GRACE-FLOWS 1";
std::mutex offers_mutex;
int stashed_offer[2] = {-1, -1};

std::string offer_subject(offer_kind k) { return k == connections_offer ? "connection channel" : "flow channel"; }

// One offer from the parent; nullopt when nothing has arrived yet.
result<std::optional<std::pair<offer_kind, int>>> read_offer(int fd, offer_kind wanted) {
  const std::string what = offer_subject(wanted);
  char buffer[64];
  iovec iov{buffer, sizeof buffer};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t got;
  do got = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (got < 0 && errno == EINTR);
  if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return std::nullopt;
  if (got < 0) return detail::fail_errno(errno, what + ": read the parent's offer");
  std::vector<int> fds;
  detail::collect_fds(msg, fds);
  auto is = [&](const char* magic, std::size_t size) {
    return got == static_cast<ssize_t>(size - 1) && std::memcmp(buffer, magic, size - 1) == 0;
  };
  const bool v2 = is(offer_magic, sizeof offer_magic);
  const bool v1 = is(offer_magic_v1, sizeof offer_magic_v1);
  const bool flows = is(flows_magic, sizeof flows_magic);
  const bool well_formed = (v1 || v2 || flows) && fds.size() == 1 && !(msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC));
  if (!well_formed) {
    for (int each : fds) ::close(each);
    if (got == 0) return detail::fail(errc::channel_closed, what + ": the parent hung up before offering");
    if (msg.msg_flags & MSG_CTRUNC)
      return detail::fail(std::make_error_code(std::errc::too_many_files_open),
                          what + ": the parent's offer arrived without its socket (fd table full)");
    return detail::fail(errc::protocol_error, what + ": the parent sent something that is not its offer");
  }
  if (!flows) parent_reads_capacity.store(v2);
  return std::make_pair(flows ? flows_offer : connections_offer, fds.front());
}

result<std::optional<int>> receive_offer(offer_kind wanted) {
  std::lock_guard<std::mutex> lock(offers_mutex);
  if (stashed_offer[wanted] >= 0) return std::exchange(stashed_offer[wanted], -1);
  for (;;) {
    const int fd = detail::kept_readiness_fd();
    if (fd < 0)
      return detail::fail(errc::channel_closed, offer_subject(wanted) + ": no readiness connection to the parent");
    auto got = read_offer(fd, wanted);
    if (!got) return tl::unexpected(got.error());
    if (!*got) return std::nullopt;
    if ((*got)->first == wanted) return (*got)->second;
    int& other = stashed_offer[(*got)->first];
    if (other >= 0) ::close(other);  // offered twice: the later one counts
    other = (*got)->second;
  }
}

}  // namespace

result<std::optional<int>> receive_connection_channel() { return receive_offer(connections_offer); }

result<std::optional<int>> receive_flow_channel() { return receive_offer(flows_offer); }

result<void> offer_flow_channel(int ready_fd, int channel_fd) {
  iovec iov{const_cast<char*>(flows_magic), sizeof flows_magic - 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  detail::attach_fds(msg, control, &channel_fd, 1);
  ssize_t sent;
  do sent = sendmsg(ready_fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  const int err = errno;
  ::close(channel_fd);
  if (sent < 0) return detail::fail_errno(err, "flow channel: offer it to the new generation");
  return {};
}

result<int> offer_connection_channel(int ready_fd) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) != 0)
    return detail::fail_errno(errno, "connection channel: socketpair");
  iovec iov{const_cast<char*>(offer_magic), sizeof offer_magic - 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  detail::attach_fds(msg, control, &pair[1], 1);
  ssize_t sent;
  do sent = sendmsg(ready_fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  const int err = errno;
  ::close(pair[1]);
  if (sent < 0) {
    ::close(pair[0]);
    return detail::fail_errno(err, "connection channel: offer it to the new generation");
  }
  return pair[0];
}

outgoing_parcel connection_hello(std::size_t capacity) {
  outgoing_parcel p;
  p.note = std::string(hello_note);
  if (capacity != SIZE_MAX) p.note += std::string(capacity_field) + std::to_string(capacity);
  return p;
}

std::optional<std::size_t> hello_capacity(const parcel& p) noexcept {
  if (!p.fds.empty() || p.note.compare(0, hello_note.size(), hello_note) != 0) return std::nullopt;
  const std::string_view rest = std::string_view(p.note).substr(hello_note.size());
  if (rest.empty()) return SIZE_MAX;
  if (rest.compare(0, capacity_field.size(), capacity_field) != 0) return std::nullopt;
  const std::string_view digits = rest.substr(capacity_field.size());
  std::size_t capacity = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), capacity);
  if (ec != std::errc() || end != digits.data() + digits.size() || digits.empty()) return std::nullopt;
  return capacity;
}

bool is_connection_hello(const parcel& p) noexcept { return hello_capacity(p).has_value(); }

bool parent_reads_capacity_in_hello() noexcept { return parent_reads_capacity.load(); }

std::size_t connection_capacity() noexcept {
  const std::size_t free_entries = detail::free_fd_count();
  if (free_entries == SIZE_MAX) return SIZE_MAX;
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  const std::size_t reserve = std::clamp<std::size_t>(static_cast<std::size_t>(limit.rlim_cur) / 4, 16, 1024);
  return free_entries > reserve ? free_entries - reserve : 0;
}

}  // namespace grace
