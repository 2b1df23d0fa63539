#include "grace/net.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "grace/error.hpp"
#include "inherit.hpp"
#include "socket_ops.hpp"
#include "spawn.hpp"
#include "startup_state.hpp"

extern char** environ;

namespace grace {
namespace {

constexpr std::size_t max_name_length = 255;  // systemd's FDNAME_MAX

std::string inet_or_unix(int family) { return family == AF_UNIX ? "unix" : "inet"; }

// Two listening sockets are the same listener when type, family class and canonical address
// agree; tcp4/tcp6 then narrow a wildcard by family.
std::string match_key(int type, const socket_address& address) {
  return std::to_string(type) + "|" + inet_or_unix(address.family()) + "|" + address.match_key();
}

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

bool valid_name(const std::string& name) {
  if (name.size() > max_name_length) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return c > ' ' && c < 127 && c != ':'; });
}

bool starts_with_any_key(const char* entry, const std::vector<std::string>& keys) {
  return std::any_of(keys.begin(), keys.end(), [entry](const std::string& key) {
    return std::strncmp(entry, key.c_str(), key.size()) == 0;
  });
}

std::vector<std::string> child_environment(const std::vector<std::string>& extra,
                                           std::size_t listener_count, const std::string& names) {
  std::vector<std::string> replaced = {"LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES="};
  for (const auto& entry : extra) replaced.push_back(entry.substr(0, entry.find('=') + 1));
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e)
    if (!starts_with_any_key(*e, replaced)) env.emplace_back(*e);
  env.insert(env.end(), extra.begin(), extra.end());
  env.push_back("LISTEN_FDS=" + std::to_string(listener_count));
  env.push_back("LISTEN_FDNAMES=" + names);
  return env;
}

}  // namespace

net::net() = default;
net::~net() = default;

const std::string& net::startup_directory() { return detail::startup_cwd(); }

tl::unexpected<std::error_code> net::fail_locked(std::error_code code, std::string why) {
  last_error_ = std::move(why);
  return tl::unexpected(code);
}

std::string net::last_error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_error_;
}

tl::expected<void, std::error_code> net::inherit() {
  std::lock_guard<std::mutex> lock(mutex_);
  return inherit_locked();
}

tl::expected<void, std::error_code> net::inherit_locked() {
  if (!inherited_read_) {
    inherited_read_ = true;
    auto sockets = detail::take_inherited_sockets();
    if (!sockets) {
      inherit_error_ = sockets.error().code;
      inherit_error_text_ = sockets.error().why;
    } else {
      inherited_.reserve(sockets->size());
      inherited_by_key_.reserve(sockets->size());
      for (auto& s : *sockets) {
        const socket_address address = canonical(s.address);
        inherited_by_key_.emplace(match_key(s.type, address), inherited_.size());
        inherited_.push_back(std::unique_ptr<listener>(
            new listener(s.fd, network_of(s), address, address.text(), s.name, true)));
      }
    }
  }
  if (inherit_error_) return fail_locked(inherit_error_, inherit_error_text_);
  return {};
}

tl::expected<void, std::error_code> net::prepare_listen_locked(const listen_options& options) {
  if (!valid_name(options.name))
    return fail_locked(make_error_code(errc::invalid_listener_name),
                       "listener name \"" + options.name +
                           "\" must be at most 255 printable characters without ':' or spaces");
  return inherit_locked();
}

listener* net::take_inherited_locked(const std::string& key, network n, int family, bool wildcard) {
  auto [first, last] = inherited_by_key_.equal_range(key);
  auto chosen = last;
  for (auto it = first; it != last; ++it) {
    const int candidate_family = inherited_[it->second]->local_address().family();
    if (wildcard && n == network::tcp4 && candidate_family != AF_INET) continue;
    if (wildcard && n == network::tcp6 && candidate_family != AF_INET6) continue;
    if (chosen == last) chosen = it;
    if (candidate_family == family) {
      chosen = it;
      break;
    }
  }
  if (chosen == last) return nullptr;
  std::unique_ptr<listener> taken = std::move(inherited_[chosen->second]);
  inherited_by_key_.erase(chosen);
  taken->network_ = n;
  return activate_locked(std::move(taken));
}

listener* net::activate_locked(std::unique_ptr<listener> l) {
  active_.push_back(std::move(l));
  return active_.back().get();
}

tl::expected<listener*, std::error_code> net::listen(std::string_view network_name_text,
                                                     std::string_view address,
                                                     const listen_options& options) {
  auto n = parse_network(network_name_text);
  if (!n) {
    std::lock_guard<std::mutex> lock(mutex_);
    return fail_locked(n.error(), "unknown network \"" + std::string(network_name_text) +
                                      "\" (expected tcp, tcp4, tcp6, unix or unixpacket)");
  }
  if (is_tcp(*n)) return listen_tcp(network_name_text, address, options);
  return listen_unix(network_name_text, address, options);
}

tl::expected<listener*, std::error_code> net::listen_tcp(std::string_view network_name_text,
                                                         std::string_view address,
                                                         const listen_options& options) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto n = parse_network(network_name_text);
  if (!n || !is_tcp(*n))
    return fail_locked(make_error_code(errc::unknown_network),
                       "unknown TCP network \"" + std::string(network_name_text) +
                           "\" (expected tcp, tcp4 or tcp6)");
  return listen_tcp_locked(*n, address, options);
}

tl::expected<listener*, std::error_code> net::listen_unix(std::string_view network_name_text,
                                                          std::string_view path,
                                                          const listen_options& options) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto n = parse_network(network_name_text);
  if (!n || is_tcp(*n))
    return fail_locked(make_error_code(errc::unknown_network),
                       "unknown unix network \"" + std::string(network_name_text) +
                           "\" (expected unix or unixpacket)");
  return listen_unix_locked(*n, path, options);
}

tl::expected<listener*, std::error_code> net::listen_tcp_locked(network n,
                                                                std::string_view address,
                                                                const listen_options& options) {
  if (auto ready = prepare_listen_locked(options); !ready) return tl::unexpected(ready.error());
  std::string why;
  auto candidates = resolve_tcp(n, address, &why);
  if (!candidates) return fail_locked(candidates.error(), why);

  // An ephemeral port is by definition a new socket.
  if (candidates->front().port() != 0) {
    for (const auto& candidate : *candidates) {
      if (listener* l = take_inherited_locked(match_key(SOCK_STREAM, candidate), n,
                                              candidate.family(), candidate.is_wildcard())) {
        if (!options.name.empty()) l->name_ = options.name;
        return l;
      }
    }
  }
  detail::failure last_failure;
  for (const auto& candidate : *candidates) {
    auto fd = detail::bind_tcp_listener(candidate, n == network::tcp6, options.backlog);
    if (!fd) {
      last_failure = fd.error();
      const int err = fd.error().code.value();
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
  return fail_locked(last_failure.code, last_failure.why);
}

tl::expected<listener*, std::error_code> net::listen_unix_locked(network n, std::string_view path,
                                                                 const listen_options& options) {
  if (auto ready = prepare_listen_locked(options); !ready) return tl::unexpected(ready.error());
  std::string why;
  auto address = resolve_unix(path, detail::startup_cwd(), &why);
  if (!address) return fail_locked(address.error(), why);
  const int type = socket_type(n);
  if (listener* l = take_inherited_locked(match_key(type, *address), n, AF_UNIX, false)) {
    if (!options.name.empty()) l->name_ = options.name;
    return l;
  }
  auto bound = detail::bind_unix_listener(*address, type, options.backlog);
  if (!bound) return fail_locked(bound.error().code, bound.error().why);
  auto l = std::unique_ptr<listener>(new listener(
      bound->fd, n, *address, address->text(), options.name.empty() ? "unknown" : options.name,
      false));
  l->owns_path_ = bound->created_file;
  l->path_dev_ = bound->dev;
  l->path_ino_ = bound->ino;
  return activate_locked(std::move(l));
}

std::vector<listener*> net::active_listeners() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<listener*> out;
  out.reserve(active_.size());
  for (const auto& l : active_) out.push_back(l.get());
  return out;
}

std::vector<const listener*> net::unused_inherited() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<const listener*> out;
  for (const auto& l : inherited_)
    if (l) out.push_back(l.get());
  return out;
}

std::size_t net::close_unused_inherited() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::size_t closed = 0;
  for (auto& l : inherited_) {
    if (l) ++closed;
    l.reset();
  }
  inherited_by_key_.clear();
  return closed;
}

tl::expected<void, std::error_code> net::close(listener* l) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = std::find_if(active_.begin(), active_.end(),
                         [l](const std::unique_ptr<listener>& p) { return p.get() == l; });
  if (it == active_.end())
    return fail_locked(make_error_code(errc::not_an_active_listener),
                       "close: the listener is not an active listener of this net");
  active_.erase(it);
  return {};
}

tl::expected<pid_t, std::error_code> net::start_process(const process_options& options) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& entry : options.extra_env)
    if (entry.find('=') == std::string::npos || entry.front() == '=')
      return fail_locked(std::error_code(EINVAL, std::system_category()),
                         "start_process: extra_env entry \"" + entry + "\" is not NAME=VALUE");
  const auto& argv = detail::startup_argv();
  std::string executable = options.executable_path;
  if (executable.empty() && options.executable == process_options::executable_source::proc_self_exe)
    executable = "/proc/self/exe";
  if (executable.empty()) {
    auto found = detail::find_executable(argv.empty() ? std::string() : argv.front(),
                                         detail::startup_cwd());
    if (!found) return fail_locked(found.error().code, "start_process: " + found.error().why);
    executable = *found;
  }

  detail::spawn_request request;
  request.executable = executable;
  request.argv = argv;
  if (request.argv.empty()) request.argv.push_back(executable);
  request.directory = detail::startup_cwd();
  std::string names;
  for (const auto& l : active_) {
    names += (request.fds.empty() ? "" : ":") + l->name();
    request.fds.push_back(l->fd());
  }
  request.fds.insert(request.fds.end(), options.extra_fds.begin(), options.extra_fds.end());
  request.environment = child_environment(options.extra_env, active_.size(), names);

  auto pid = detail::spawn_process(request);
  if (!pid) return fail_locked(pid.error().code, "start_process: " + pid.error().why);
  for (auto& l : active_) l->shared_ = true;
  return *pid;
}

}  // namespace grace
