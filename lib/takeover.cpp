#include "grace/takeover.hpp"

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <thread>

#include "environment_protocol.hpp"
#include "failure.hpp"
#include "fd_table.hpp"
#include "generations.hpp"
#include "grace/net.hpp"
#include "grace/readiness.hpp"
#include "inherit.hpp"
#include "net_state.hpp"
#include "printable.hpp"

namespace grace {
namespace {

constexpr std::string_view hello_note = "grace-takeover 1";
constexpr std::string_view offer_line = "listeners";
constexpr std::string_view refusal_line = "refused";
constexpr std::string_view pid_prefix = "pid=";
constexpr std::string_view pidns_prefix = "pidns=";

using clock = std::chrono::steady_clock;

// At least `needed` fds free once this process holds `held` listeners.
result<void> check_room(const std::string& where, std::size_t needed, std::size_t held) {
  const std::size_t free_fds = detail::free_fd_count();
  if (free_fds >= needed) return {};
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  return detail::fail(std::make_error_code(std::errc::too_many_files_open),
                      where + ": only " + std::to_string(free_fds) + " fd(s) free of RLIMIT_NOFILE " +
                          std::to_string(limit.rlim_cur) +
                          (held == 0 ? std::string() : " once holding " + std::to_string(held) + " listener(s)") +
                          ", and at least " + std::to_string(needed) +
                          " are needed: raise the limit (ulimit -n, LimitNOFILE=)");
}

std::chrono::milliseconds left_until(clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
  return left.count() > 0 ? left : std::chrono::milliseconds(1);
}

// "NAME=VALUE" lines after the first; only the generation's variables are taken.
detail::environment offered_environment(std::string_view note) {
  detail::environment env;
  std::size_t at = note.find('\n');
  while (at != std::string_view::npos) {
    const std::size_t next = note.find('\n', at + 1);
    const std::string_view line = note.substr(at + 1, next == std::string_view::npos ? next : next - at - 1);
    const std::size_t equals = line.find('=');
    if (equals != std::string_view::npos) {
      const std::string name(line.substr(0, equals));
      if (name == detail::variable::generation || name == detail::variable::ancestors ||
          name == detail::variable::connections || name == detail::variable::flows)
        env[name] = std::string(line.substr(equals + 1));
    }
    at = next;
  }
  return env;
}

std::string_view first_line(std::string_view note) { return note.substr(0, note.find('\n')); }

// This process's pid namespace, "DEV:INODE" of /proc/self/ns/pid (read once); empty when unknown.
const std::string& own_pid_namespace() {
  static const std::string id = [] {
    struct stat st {};
    if (::stat("/proc/self/ns/pid", &st) != 0) return std::string();
    return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  }();
  return id;
}

// The value of the "NAME=" line of a note after its first line; nullopt when there is none.
std::optional<std::string_view> note_field(std::string_view note, std::string_view prefix) {
  std::size_t at = note.find('\n');
  while (at != std::string_view::npos) {
    const std::size_t next = note.find('\n', at + 1);
    const std::string_view line = note.substr(at + 1, next == std::string_view::npos ? next : next - at - 1);
    if (line.substr(0, prefix.size()) == prefix) return line.substr(prefix.size());
    at = next;
  }
  return std::nullopt;
}

// A socket's network namespace cookie (SO_NETNS_COOKIE, Linux 5.14), or 0 when it cannot be read.
std::uint64_t netns_cookie(int fd) {
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
  std::uint64_t cookie = 0;
  socklen_t size = sizeof cookie;
  return getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &size) == 0 ? cookie : 0;
}

// Whether the socket `fd` belongs to another network namespace than this process: by the
// namespaces' cookies (no privilege needed), else by the namespace itself (SIOCGSKNS, which
// needs CAP_NET_ADMIN).
bool in_other_network_namespace(int fd) {
  if (const std::uint64_t theirs = netns_cookie(fd); theirs != 0) {
    const int probe = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const std::uint64_t ours = probe >= 0 ? netns_cookie(probe) : 0;
    if (probe >= 0) ::close(probe);
    if (ours != 0) return theirs != ours;
  }
  const int ns = ioctl(fd, SIOCGSKNS);
  if (ns < 0) return false;
  struct stat theirs {};
  struct stat ours {};
  const bool other = ::fstat(ns, &theirs) == 0 && ::stat("/proc/self/ns/net", &ours) == 0 &&
                     (theirs.st_dev != ours.st_dev || theirs.st_ino != ours.st_ino);
  ::close(ns);
  return other;
}

// The "pid=N" line of an offer; 0 when missing or malformed.
pid_t offered_pid(std::string_view note) {
  const std::size_t at = note.find(std::string("\n") + std::string(pid_prefix));
  if (at == std::string_view::npos) return 0;
  const std::string_view digits = note.substr(at + 1 + pid_prefix.size(), note.find('\n', at + 1) - at - 1 - pid_prefix.size());
  if (digits.empty() || digits.size() > 9) return 0;
  pid_t pid = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return 0;
    pid = pid * 10 + (c - '0');
  }
  return pid;
}

}  // namespace

bool is_takeover_hello(const parcel& p) noexcept { return first_line(p.note) == hello_note && p.fds.empty(); }

outgoing_parcel takeover_hello() {
  // Exactly this, as every release has sent it: a serving process of an older release compares
  // it whole.
  outgoing_parcel p;
  p.note = std::string(hello_note);
  return p;
}

bool same_pid_namespace(const parcel& offer) noexcept {
  const auto theirs = note_field(offer.note, pidns_prefix);
  return !theirs || own_pid_namespace().empty() || *theirs == own_pid_namespace();
}

bool in_this_pid_namespace(pid_t pid) noexcept {
  if (pid <= 0) return false;  // SO_PEERCRED's word for a process this namespace cannot see
  struct stat theirs {};
  if (::stat(("/proc/" + std::to_string(pid) + "/ns/pid").c_str(), &theirs) != 0) return true;  // gone: moot
  return own_pid_namespace() == std::to_string(theirs.st_dev) + ":" + std::to_string(theirs.st_ino);
}

outgoing_parcel takeover_refusal(std::string_view why) {
  outgoing_parcel p;
  p.note = std::string(refusal_line) + "\n" + std::string(why.substr(0, 1000));
  return p;
}

result<outgoing_parcel> takeover_offer(net& n, unsigned max_generations, bool offer_connections,
                                       bool same_namespace, bool offer_flows) {
  auto admitted = detail::admit_next_generation(detail::startup_inheritance().ancestors, max_generations);
  if (!admitted) return tl::unexpected(admitted.error());
  const auto& alive = *admitted;
  outgoing_parcel p;
  // Its own pid: the peer credentials a connecting process sees are those of whoever called
  // listen() on the hand-over socket, which after a hand-over is an older generation.
  p.note = std::string(offer_line) + "\n" + std::string(pid_prefix) + std::to_string(getpid());
  if (!own_pid_namespace().empty()) p.note += "\n" + std::string(pidns_prefix) + own_pid_namespace();
  // Pids of this namespace would name unrelated processes in another: the taker is told none.
  const std::vector<detail::process_identity> none;
  for (const auto& entry : detail::generation_entries(generation() + 1, same_namespace ? alive : none))
    p.note += "\n" + entry;
  if (offer_connections) p.note += "\n" + detail::connections_entry();
  if (offer_flows) p.note += "\n" + detail::flows_entry();
  for (const listener* l : n.active_listeners()) {
    fd_description d;
    d.kind = fd_kind::listener;
    d.network = l->network();
    d.address = l->address();
    d.name = l->name();
    p.fds.push_back({l->fd(), std::move(d)});
  }
  n.mark_shared();
  return p;
}

result<takeover_result> net::take_over(std::string_view path, const takeover_options& options) {
  if (detail::started_by_grace_parent()) return takeover_result{takeover_result::outcome::inherited, 0, 0};
  const std::string where = "take over from the process serving " + detail::quoted(path);
  const auto deadline = clock::now() + options.timeout;
  auto channel = fd_channel::connect(path, options.channel);
  // A full backlog (other takers, or somebody holding the socket's queue) is tried again until
  // the deadline, a little later each time.
  for (auto pause = std::chrono::milliseconds(1);
       !channel && channel.error().code() == std::errc::resource_unavailable_try_again && clock::now() + pause < deadline;
       pause = std::min(pause * 2, std::chrono::milliseconds(50))) {
    std::this_thread::sleep_for(pause);
    channel = fd_channel::connect(path, options.channel);
  }
  if (!channel) {
    const auto& code = channel.error().code();
    if (code == std::errc::no_such_file_or_directory || code == std::errc::connection_refused)
      return takeover_result{takeover_result::outcome::nobody_serving, 0, 0};
    return detail::fail(code, where + ": " + channel.error().message());
  }
  // Too few fds to hold even a listener: declined before saying hello, so nothing is sent.
  if (auto room = check_room(where, options.min_free_fds, 0); !room) return tl::unexpected(room.error());
  const pid_t from = channel->peer().pid;  // who listened first; offered_pid() says who answered
  if (auto sent = channel->send(takeover_hello(), left_until(deadline)); !sent)
    return detail::fail(sent.error().code(), where + ": " + sent.error().message());
  auto offer = channel->receive(left_until(deadline));
  if (!offer) return detail::fail(offer.error().code(), where + ": " + offer.error().message());
  const std::string_view head = first_line(offer->note);
  if (head == refusal_line) {
    const std::size_t nl = offer->note.find('\n');
    return detail::fail(errc::takeover_refused,
                        where + ": refused: " + (nl == std::string::npos ? "no reason given" : offer->note.substr(nl + 1)));
  }
  if (head != offer_line)
    return detail::fail(errc::protocol_error, where + ": an answer that is neither listeners nor a refusal: " +
                                                  detail::quoted(offer->note));
  std::vector<detail::inherited_socket> sockets;
  for (auto& received : offer->fds) {
    if (received.description.kind != fd_kind::listener)
      return detail::fail(errc::protocol_error, where + ": an fd that is not a listener among the listeners");
    auto s = detail::check_inherited_socket(where, received.fd.get());
    if (!s) return tl::unexpected(s.error());
    s->name = received.description.name.empty() ? "unknown" : received.description.name;
    sockets.push_back(std::move(*s));
  }
  // Holding the listeners with too few fds left, this process could not run its loop (libuv
  // aborts when it cannot make its own descriptors). Said before the listeners are confirmed; the
  // channel stays open until this process exits, after it has said why: the serving process takes
  // a taker's hang-up for a crash and kills it, and the reason would be lost.
  if (auto room = check_room(where, options.min_free_fds, sockets.size()); !room) {
    (void)channel->release();
    return tl::unexpected(room.error());
  }
  if (auto flushed = channel->flush(left_until(deadline)); !flushed)
    return detail::fail(flushed.error().code(), where + ": " + flushed.error().message());
  {
    std::lock_guard<std::mutex> lock(state_->mutex_);
    (void)state_->inherit_locked();  // LISTEN_FDS first (a malformed one stays reported to the listen calls)
    for (std::size_t i = 0; i < sockets.size(); ++i) {
      state_->add_inherited_locked(std::move(sockets[i]));
      offer->fds[i].fd.release();  // the net owns it now
    }
  }
  const bool other_pid_namespace = !same_pid_namespace(*offer);
  bool other_network_namespace = false;
  for (const auto& s : sockets)
    if (s.family != AF_UNIX && in_other_network_namespace(s.fd)) other_network_namespace = true;
  detail::adopt_takeover(offered_environment(offer->note), channel->release(), other_pid_namespace);
  const pid_t offered = offered_pid(offer->note);
  takeover_result taken{takeover_result::outcome::took_over, offered > 0 ? offered : from, sockets.size()};
  if (other_pid_namespace) taken.from = 0;
  taken.other_pid_namespace = other_pid_namespace;
  taken.other_network_namespace = other_network_namespace;
  return taken;
}

}  // namespace grace
