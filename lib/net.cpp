#include "grace/net.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "canonical_address.hpp"
#include "endpoint_index.hpp"
#include "environment_protocol.hpp"
#include "inherit.hpp"
#include "net_state.hpp"
#include "printable.hpp"
#include "sock_diag.hpp"
#include "socket_ops.hpp"
#include "spawn.hpp"
#include "startup_state.hpp"

namespace grace {
namespace {

using detail::fail;

network network_of(const detail::inherited_socket& s) {
  if (s.family == AF_UNIX)
    return s.type == SOCK_SEQPACKET ? network::unix_packet
           : s.type == SOCK_DGRAM   ? network::unixgram
                                    : network::unix_stream;
  if (s.type == SOCK_DGRAM) return s.family == AF_INET ? network::udp4 : network::udp6;
  return network::tcp;
}

// getsockname gives a path as it was bound, possibly relative to the binder's directory, which
// start_process keeps as the start-up directory of every generation.
socket_address canonical(const socket_address& address) {
  if (address.family() != AF_UNIX || address.is_abstract()) return address;
  const std::string path = address.unix_path();
  if (path.empty() || path.front() == '/') return address;
  auto absolute = resolve_unix(path, detail::startup_cwd());
  return absolute ? *absolute : address;
}

enum class kind { tcp, udp, unix_socket };

result<network> parse_network_of_kind(std::string_view text, kind k) {
  auto n = parse_network(text);
  const bool fits = n && (k == kind::tcp   ? is_tcp(*n)
                          : k == kind::udp ? is_udp(*n)
                                           : (*n == network::unix_stream || *n == network::unix_packet));
  if (!fits)
    return fail(errc::unknown_network, std::string(k == kind::tcp   ? "unknown TCP network "
                                                   : k == kind::udp ? "unknown UDP network "
                                                                    : "unknown unix network ") +
                                           detail::quoted(text) +
                                           (k == kind::tcp   ? " (expected tcp, tcp4 or tcp6)"
                                            : k == kind::udp ? " (expected udp, udp4 or udp6)"
                                                             : " (expected unix or unixpacket)"));
  return *n;
}

}  // namespace

net::net() : state_(std::make_unique<state>()) {}
net::~net() = default;

const std::string& net::startup_directory() { return detail::startup_cwd(); }

result<void> net::inherit() {
  std::lock_guard<std::mutex> lock(state_->mutex_);
  return state_->inherit_locked();
}

result<void> net::state::inherit_locked() {
  if (!inherited_read_) {
    inherited_read_ = true;
    const std::size_t first = inherited_.size();
    if (auto read = detail::take_inherited_sockets(inherited_); !read) {
      inherit_error_ = read.error();
    } else {
      inherited_source_ = "LISTEN_FDS=" + std::to_string(inherited_.size() - first);
      inherited_index_.reserve(inherited_.size());
      for (std::size_t i = first; i < inherited_.size(); ++i) file_inherited_locked(i);
    }
  }
  if (inherit_error_) return tl::unexpected(*inherit_error_);
  return {};
}

void net::state::add_inherited_locked(detail::inherited_socket s) {
  detail::inherited_slot slot;
  slot.socket = std::move(s);
  inherited_.push_back(std::move(slot));
  file_inherited_locked(inherited_.size() - 1);
}

void net::state::file_inherited_locked(std::size_t index) {
  detail::inherited_slot& slot = inherited_[index];
  // A unix path as bound may be relative: filed under its absolute form. A socket read from
  // LISTEN_FDS comes with its hash; one handed over by a takeover does not.
  if (slot.socket.family == AF_UNIX) {
    slot.socket.where = detail::endpoint_of(canonical(detail::address_of(slot.socket.where, AF_UNIX)));
    slot.hash = slot.socket.where.hash();
  } else if (slot.hash == 0) {
    slot.hash = slot.socket.where.hash();
  }
  inherited_index_.add(slot.hash, static_cast<std::uint32_t>(index));
}

std::unique_ptr<listener> net::state::show_inherited_locked(detail::inherited_slot& slot) const {
  detail::inherited_socket& s = slot.socket;
  if (s.type == 0) s.type = detail::socket_type_of(s.fd);
  const socket_address address = detail::address_of(s.where, s.family);
  return std::unique_ptr<listener>(new listener(s.fd, network_of(s), address, address.text(), s.name, true));
}

result<void> net::state::prepare_listen_locked(const listen_options& options) {
  if (!detail::valid_fd_name(options.name))
    return fail(errc::invalid_listener_name,
                "listener name " + detail::quoted(options.name) +
                    " must be at most 255 printable characters without ':' or spaces");
  if (options.backlog < 0)
    return fail(errc::invalid_argument, "listen backlog " + std::to_string(options.backlog) + " is negative");
  return inherit_locked();
}

namespace {

// A socket named by its generation ("unknown" is systemd's word for none).
bool named(const std::string& name) { return !name.empty() && name != "unknown"; }

// The same IP address, whatever the ports.
bool same_host(const socket_address& a, const socket_address& b) {
  if (a.family() != b.family()) return false;
  if (a.family() == AF_INET)
    return reinterpret_cast<const sockaddr_in*>(a.data())->sin_addr.s_addr ==
           reinterpret_cast<const sockaddr_in*>(b.data())->sin_addr.s_addr;
  if (a.family() == AF_INET6)
    return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(a.data())->sin6_addr,
                       &reinterpret_cast<const sockaddr_in6*>(b.data())->sin6_addr, sizeof(in6_addr)) == 0;
  return false;
}

}  // namespace

result<listener*> net::state::take_inherited_locked(const detail::endpoint& where, network n, int family, bool wildcard,
                                                    const std::string& name) {
  // Two sockets on one address told apart by their names: one named otherwise is left for the
  // listen call that names it (or, if none does, claimed by address as before).
  if (named(name)) {
    auto same_name = take_inherited_locked(where, n, family, wildcard, name, true);
    if (!same_name || *same_name != nullptr) return same_name;
  }
  return take_inherited_locked(where, n, family, wildcard, name, false);
}

result<listener*> net::state::take_inherited_locked(const detail::endpoint& where, network n, int family, bool wildcard,
                                                    const std::string& name, bool same_name_only) {
  // Of equal candidates the one inherited first, so that a group is claimed in its order: the
  // index visits them in that order.
  detail::inherited_slot* chosen = nullptr;
  bool chosen_family_matches = false;
  std::optional<error> unfit;
  inherited_index_.for_each(where.hash(), [&](std::uint32_t index) {
    detail::inherited_slot& slot = inherited_[index];
    if (!slot.open() || !(slot.socket.where == where)) return true;
    if (same_name_only && slot.socket.name != name) return true;
    const int candidate_family = slot.socket.family;
    if (wildcard && (n == network::tcp4 || n == network::udp4) && candidate_family != AF_INET) return true;
    if (wildcard && (n == network::tcp6 || n == network::udp6) && candidate_family != AF_INET6) return true;
    const bool family_matches = candidate_family == family;
    if (chosen != nullptr && (chosen_family_matches || !family_matches)) return true;
    // Its kind is checked only now, for the sockets actually used.
    auto fits = detail::claimable_as(slot.socket, n, inherited_source_);
    if (!fits) {
      unfit = fits.error();
      return false;
    }
    if (*fits) {
      chosen = &slot;
      chosen_family_matches = family_matches;
    }
    return !chosen_family_matches;  // the first that fits in family too is the one
  });
  if (unfit) return tl::unexpected(*unfit);
  if (chosen == nullptr) return nullptr;
  return claim_slot_locked(*chosen, n);
}

result<listener*> net::state::claim_slot_locked(detail::inherited_slot& slot, network n) {
  std::unique_ptr<listener> taken = slot.shown ? std::move(slot.shown) : show_inherited_locked(slot);
  slot.socket.fd = -1;
  taken->network_ = n;
  return activate_locked(std::move(taken));
}

result<listener*> net::state::take_inherited_by_file_locked(const socket_address& address, network n) {
  const std::string path = address.unix_path();
  for (auto& slot : inherited_) {
    if (!slot.open() || slot.socket.family != AF_UNIX) continue;
    if (!detail::unix_socket_bound_to(slot.socket.fd, path.c_str())) continue;
    auto fits = detail::claimable_as(slot.socket, n, inherited_source_);
    if (!fits) return tl::unexpected(fits.error());
    if (!*fits) continue;
    slot.socket.where = detail::endpoint_of(address);
    auto claimed = claim_slot_locked(slot, n);
    if (claimed && *claimed != nullptr) {
      (*claimed)->address_ = address;  // shown under the path this process asked for
      (*claimed)->text_ = address.text();
    }
    return claimed;
  }
  return nullptr;
}

// Binding with SO_REUSEPORT where another process of this user already serves the address would
// join its group: the kernel would split the traffic between two services that know nothing of
// each other (a fresh start that missed the hand-over socket: a tmpfiles clean-up, a new
// container's empty /run). Refused, naming that process. Sockets of this process (a worker
// group's members) are its own group.
result<void> net::state::refuse_foreign_group(const socket_address& candidate, int type) {
  const int protocol = type == SOCK_DGRAM ? IPPROTO_UDP : IPPROTO_TCP;
  const auto* raw = candidate.family() == AF_INET
                        ? reinterpret_cast<const unsigned char*>(&reinterpret_cast<const sockaddr_in*>(candidate.data())->sin_addr)
                        : reinterpret_cast<const unsigned char*>(&reinterpret_cast<const sockaddr_in6*>(candidate.data())->sin6_addr);
  const std::size_t length = candidate.family() == AF_INET ? 4 : 16;
  static const unsigned char zeros[16] = {};
  const bool wildcard = std::memcmp(raw, zeros, length) == 0;
  for (const auto& b : detail::sockets_on_port(candidate.family(), protocol, candidate.port())) {
    if (b.uid != geteuid()) continue;  // a group never spans users: binding fails on its own
    if (!wildcard && std::memcmp(b.address, zeros, length) != 0 && std::memcmp(b.address, raw, length) != 0) continue;
    if (detail::holds_socket(b.inode)) continue;
    const pid_t holder = detail::holder_of_socket(b.inode, b.uid);
    return fail(std::make_error_code(std::errc::address_in_use),
                "listen " + candidate.text() + " with SO_REUSEPORT: " +
                    (holder > 0 ? "pid " + std::to_string(holder) : std::string("another process")) +
                    " of this user already serves it; binding would join its group and split its traffic with a "
                    "service that knows nothing of this one. Take over from it (its hand-over socket) or stop it "
                    "first");
  }
  return {};
}

// An ephemeral port (":0") asked for by name: the inherited socket of that name, of the same
// family and host, whatever port the kernel gave it when it was bound.
result<listener*> net::state::take_named_ephemeral_locked(network n, const socket_address& asked,
                                                          const std::string& name) {
  for (auto& slot : inherited_) {
    if (!slot.open() || slot.socket.name != name || slot.socket.family != asked.family()) continue;
    if (!same_host(detail::address_of(slot.socket.where, slot.socket.family), asked)) continue;
    auto fits = detail::claimable_as(slot.socket, n, inherited_source_);
    if (!fits) return tl::unexpected(fits.error());
    if (*fits) return claim_slot_locked(slot, n);
  }
  return nullptr;
}

listener* net::state::activate_locked(std::unique_ptr<listener> l) {
  active_.push_back(std::move(l));
  return active_.back().get();
}

result<listener*> net::listen(std::string_view network_text, std::string_view address,
                              const listen_options& options) {
  auto n = parse_network(network_text);
  if (!n) return tl::unexpected(n.error());
  if (is_tcp(*n)) return listen_tcp(network_text, address, options);
  if (is_udp(*n)) return listen_udp(network_text, address, options);
  return listen_unix(network_text, address, options);
}

result<listener*> net::listen_tcp(std::string_view network_text, std::string_view address,
                                  const listen_options& options) {
  auto n = parse_network_of_kind(network_text, kind::tcp);
  if (!n) return tl::unexpected(n.error());
  return state_->listen_inet(*n, address, options);
}

result<listener*> net::listen_tcp(std::string_view network_text, const sockaddr* address,
                                  socklen_t length, const listen_options& options) {
  auto n = parse_network_of_kind(network_text, kind::tcp);
  if (!n) return tl::unexpected(n.error());
  auto parsed = socket_address::from_sockaddr(address, length);
  if (!parsed) return tl::unexpected(parsed.error());
  const int family = parsed->family();
  if (family == AF_UNIX || (*n == network::tcp4 && family != AF_INET) ||
      (*n == network::tcp6 && family != AF_INET6))
    return fail(errc::invalid_address, "address " + parsed->text() + " is not a " +
                                           std::string(network_name(*n)) + " address");
  std::lock_guard<std::mutex> lock(state_->mutex_);
  return state_->listen_inet_locked(*n, &*parsed, 1, options);
}

result<listener*> net::listen_unix(std::string_view network_text, std::string_view path,
                                   const listen_options& options) {
  auto n = parse_network_of_kind(network_text, kind::unix_socket);
  if (!n) return tl::unexpected(n.error());
  std::lock_guard<std::mutex> lock(state_->mutex_);
  return state_->listen_unix_locked(*n, path, options);
}

result<listener*> net::state::listen_inet(network n, std::string_view address, const listen_options& options) {
  if (const auto numeric = detail::numeric_inet_address(n, address)) {
    std::lock_guard<std::mutex> lock(mutex_);
    return listen_inet_locked(n, &*numeric, 1, options);
  }
  auto candidates = resolve_tcp(n, address);  // outside the lock: it may wait for DNS
  if (!candidates) return tl::unexpected(candidates.error());
  std::lock_guard<std::mutex> lock(mutex_);
  return listen_inet_locked(n, candidates->data(), candidates->size(), options);
}

// TCP and UDP alike: an inherited socket of the same type and address, else a fresh one.
result<listener*> net::state::listen_inet_locked(network n, const socket_address* candidates, std::size_t count,
                                          const listen_options& options) {
  if (auto ready = prepare_listen_locked(options); !ready) return tl::unexpected(ready.error());
  auto claimed = claim_inherited_inet_locked(n, candidates, count, options);
  if (!claimed || *claimed != nullptr) return claimed;
  return bind_inet_locked(n, candidates, count, options);
}

result<listener*> net::state::claim_inherited_inet_locked(network n, const socket_address* candidates, std::size_t count,
                                                   const listen_options& options) {
  if (inherited_index_.empty()) return nullptr;
  // An ephemeral port is a new socket, unless it is asked for by the name its socket was given.
  if (candidates[0].port() == 0) {
    if (!named(options.name)) return nullptr;
    for (std::size_t i = 0; i < count; ++i) {
      auto l = take_named_ephemeral_locked(n, candidates[i], options.name);
      if (!l || *l != nullptr) return l;
    }
    return nullptr;
  }
  for (std::size_t i = 0; i < count; ++i) {
    const socket_address& candidate = candidates[i];
    auto l = take_inherited_locked(detail::endpoint_of(candidate), n, candidate.family(), candidate.is_wildcard(),
                                   options.name);
    if (!l || *l == nullptr) {
      if (!l) return l;
      continue;
    }
    if (!options.name.empty()) (*l)->name_ = options.name;
    return l;
  }
  return nullptr;
}

result<listener*> net::state::bind_inet_locked(network n, const socket_address* candidates, std::size_t count,
                                        const listen_options& options) {
  const int type = socket_type(n);
  error last_failure;
  for (std::size_t i = 0; i < count; ++i) {
    const socket_address& candidate = candidates[i];
    const bool v6only = n == network::tcp6 || n == network::udp6;
    if (options.reuse_port && candidate.port() != 0)
      if (auto alone = refuse_foreign_group(candidate, type); !alone) return tl::unexpected(alone.error());
    auto fd = type == SOCK_DGRAM ? detail::bind_udp_socket(candidate, v6only, options.reuse_port)
                                 : detail::bind_tcp_listener(candidate, v6only, options.backlog, options.reuse_port);
    if (!fd) {
      last_failure = fd.error();
      const int err = fd.error().code().value();
      if (err == EAFNOSUPPORT || err == EADDRNOTAVAIL) continue;  // no IPv6 here: try the next
      break;
    }
    sockaddr_storage storage{};
    socklen_t len = sizeof storage;
    getsockname(*fd, reinterpret_cast<sockaddr*>(&storage), &len);
    auto bound = socket_address::from_sockaddr(reinterpret_cast<sockaddr*>(&storage), len);
    const socket_address actual = bound ? *bound : candidate;
    return activate_locked(std::unique_ptr<listener>(new listener(
        *fd, n, actual, actual.text(), options.name.empty() ? "unknown" : options.name, false)));
  }
  return tl::unexpected(last_failure);
}

result<listener_group> net::listen_group(std::string_view network_text, std::string_view address,
                                         std::size_t count, const listen_options& options) {
  auto n = parse_network(network_text);
  if (!n || !(is_tcp(*n) || is_udp(*n)))
    return fail(errc::unknown_network, "listen_group: unknown network " + detail::quoted(network_text) +
                                           " (expected tcp, tcp4, tcp6, udp, udp4 or udp6)");
  if (count == 0 || count > 1024)
    return fail(errc::invalid_argument, "listen_group: " + std::to_string(count) +
                                            " sockets asked for (expected 1 to 1024)");
  auto candidates = resolve_tcp(*n, address);  // outside the lock: it may wait for DNS
  if (!candidates) return tl::unexpected(candidates.error());
  state& st = *state_;
  std::lock_guard<std::mutex> lock(st.mutex_);
  if (auto ready = st.prepare_listen_locked(options); !ready) return tl::unexpected(ready.error());
  const std::string where = "listen_group " + std::string(address);
  listener_group group;
  for (;;) {
    auto l = st.claim_inherited_inet_locked(*n, candidates->data(), candidates->size(), options);
    if (!l) return tl::unexpected(l.error());
    if (*l == nullptr) break;
    group.members.push_back(*l);
  }
  listen_options fresh = options;
  fresh.reuse_port = options.reuse_port || count > 1;
  // An inherited socket bound without SO_REUSEPORT is the only one that address can have.
  const bool can_grow = group.members.empty() || detail::has_reuse_port(group.members.front()->fd());
  while (group.members.size() < count && can_grow) {
    // Later members bind exactly where the first one is (its port, when port 0 was asked for).
    const bool first = group.members.empty();
    auto l = first ? st.bind_inet_locked(*n, candidates->data(), candidates->size(), fresh)
                   : st.bind_inet_locked(*n, &group.members.front()->local_address(), 1, fresh);
    if (!l) return fail(l.error().code(), where + ": member " + std::to_string(group.members.size() + 1) + " of " +
                                              std::to_string(count) + ": " + l.error().message());
    group.members.push_back(*l);
  }
  group.steered = std::min(count, group.members.size());
  if (detail::has_reuse_port(group.members.front()->fd())) {
    const unsigned steered = group.members.size() > count ? static_cast<unsigned>(count) : 0;
    if (auto steer = detail::steer_reuseport_group(group.members.front()->fd(), steered); !steer)
      return fail(steer.error().code(), where + ": " + steer.error().message());
  }
  return group;
}

result<listener*> net::listen_udp(std::string_view network_text, std::string_view address,
                                  const listen_options& options) {
  auto n = parse_network_of_kind(network_text, kind::udp);
  if (!n) return tl::unexpected(n.error());
  return state_->listen_inet(*n, address, options);
}

result<listener*> net::state::listen_unix_locked(network n, std::string_view path, const listen_options& options) {
  if (auto ready = prepare_listen_locked(options); !ready) return tl::unexpected(ready.error());
  auto address = resolve_unix(path, detail::startup_cwd());
  if (!address) return tl::unexpected(address.error());
  const int type = socket_type(n);
  auto inherited = take_inherited_locked(detail::endpoint_of(*address), n, AF_UNIX, false, options.name);
  if (!inherited) return inherited;
  // The same socket file reached through another path (a bind mount, another container's view
  // of a shared directory): recognised by its device and inode, and shown under this path.
  if (*inherited == nullptr && !address->is_abstract()) {
    inherited = take_inherited_by_file_locked(*address, n);
    if (!inherited) return inherited;
  }
  if (listener* l = *inherited) {
    if (!options.name.empty()) l->name_ = options.name;
    return l;
  }
  auto bound = detail::bind_unix_listener(*address, type, options.backlog);
  if (!bound) return tl::unexpected(bound.error());
  auto l = std::unique_ptr<listener>(new listener(
      bound->fd, n, *address, address->text(), options.name.empty() ? "unknown" : options.name,
      false));
  l->owns_path_ = bound->created_file;
  l->path_dev_ = bound->dev;
  l->path_ino_ = bound->ino;
  return activate_locked(std::move(l));
}

std::vector<listener*> net::active_listeners() const {
  std::lock_guard<std::mutex> lock(state_->mutex_);
  std::vector<listener*> out;
  out.reserve(state_->active_.size());
  for (const auto& l : state_->active_) out.push_back(l.get());
  return out;
}

std::vector<const listener*> net::unused_inherited() const {
  std::lock_guard<std::mutex> lock(state_->mutex_);
  std::vector<const listener*> out;
  for (auto& slot : state_->inherited_) {
    if (!slot.open()) continue;
    if (!slot.shown) slot.shown = state_->show_inherited_locked(slot);
    out.push_back(slot.shown.get());
  }
  return out;
}

std::size_t net::close_unused_inherited() {
  std::lock_guard<std::mutex> lock(state_->mutex_);
  std::size_t closed = 0;
  for (auto& slot : state_->inherited_) closed += slot.open() ? 1 : 0;
  state_->inherited_.clear();  // each slot closes what it still holds
  state_->inherited_index_.clear();
  return closed;
}

result<void> net::close(listener* l) {
  std::lock_guard<std::mutex> lock(state_->mutex_);
  auto& active = state_->active_;
  auto it = std::find_if(active.begin(), active.end(),
                         [l](const std::unique_ptr<listener>& p) { return p.get() == l; });
  if (it == active.end())
    return fail(errc::not_an_active_listener, "close: the listener is not an active listener of this net");
  active.erase(it);
  return {};
}

result<pid_t> net::start_process(const process_options& options) {
  return state_->start_process(options, std::nullopt);
}

result<pid_t> net::state::start_process(const process_options& options,
                                        std::optional<detail::successor_place> successor) {
  for (const auto& entry : options.extra_env)
    if (auto ok = detail::check_entry(entry); !ok)
      return fail(ok.error().code(), "start_process: extra_env: " + ok.error().message());
  const auto& argv = detail::startup_argv();
  std::string executable = options.executable_path;
  if (executable.empty() && options.executable == process_options::executable_source::proc_self_exe)
    executable = "/proc/self/exe";
  if (executable.empty()) {
    auto found = detail::find_executable(argv.empty() ? std::string() : argv.front(),
                                         detail::startup_cwd());
    if (!found) return fail(found.error().code(), "start_process: " + found.error().message());
    executable = *found;
  }
  detail::spawn_request request;
  request.executable = executable;
  request.argv = argv;
  if (request.argv.empty()) request.argv.push_back(executable);
  request.directory = detail::startup_cwd();
  detail::child_request child;
  child.extra_fds = options.extra_fds;
  child.successor = std::move(successor);
  child.offer_connections = options.offer_connections;
  child.offer_flows = options.offer_flows;
  child.extra_env = options.extra_env;

  // From here until the child has exec'd, no listener opens or closes: the fds it gets and the
  // variables that name them are laid out from this one view.
  std::lock_guard<std::mutex> lock(mutex_);
  // Each type was checked when its socket was bound or claimed: the child need not look again.
  child.listeners.reserve(active_.size());
  for (const auto& l : active_)
    child.listeners.push_back({l->fd(), l->name(), detail::listen_type_letter(socket_type(l->network_))});
  request.child = detail::lay_out_child(detail::current_environment(), child);
  auto pid = detail::spawn_process(request);
  if (!pid) return fail(pid.error().code(), "start_process: " + pid.error().message());
  for (auto& l : active_) l->shared_ = true;
  return *pid;
}

void net::mark_shared() {
  std::lock_guard<std::mutex> lock(state_->mutex_);
  for (auto& l : state_->active_) l->shared_ = true;
}

}  // namespace grace
