#include "environment_protocol.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "printable.hpp"

extern char** environ;

namespace grace::detail {
namespace {

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

const char* const owned_variables[] = {variable::listen_fds, variable::listen_pid,
                                       variable::listen_fdnames, variable::ready_fd,
                                       variable::generation, variable::ancestors, variable::connections,
                                       variable::flows, variable::listen_types};

// Decimal digits only: no sign, no blank, no overflow.
template <typename Number>
bool parse_decimal(const std::string& text, Number& value) {
  if (text.empty() || text.front() < '0' || text.front() > '9') return false;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  return ec == std::errc() && ptr == end;
}

const std::string* find(const environment& env, const char* name) {
  const auto it = env.find(name);
  return it == env.end() ? nullptr : &it->second;
}

std::string assignment(const char* name, const std::string& value) {
  return std::string(name) + "=" + quoted(value);
}

tl::unexpected<error> malformed(const std::string& why) { return fail(errc::malformed_environment, why); }

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::string::size_type start = 0;
  while (true) {
    const auto at = text.find(separator, start);
    parts.push_back(text.substr(start, at - start));
    if (at == std::string::npos) return parts;
    start = at + 1;
  }
}

// The types a grace parent announced, or "" (then each claimed socket is looked at instead). Only
// a parent that set LISTEN_PID to this very process passed them; anything else is a warning.
std::string listen_types(const environment& env, int count, std::vector<std::string>& warnings) {
  const std::string* types = find(env, variable::listen_types);
  if (types == nullptr) return {};
  std::string why;
  if (find(env, variable::listen_pid) == nullptr)
    why = "without LISTEN_PID";
  else if (types->size() != static_cast<std::size_t>(count))
    why = "has " + std::to_string(types->size()) + " letters for LISTEN_FDS=" + std::to_string(count);
  else if (!std::all_of(types->begin(), types->end(), [](char c) { return socket_type_of_letter(c) != 0; }))
    why = "has a letter other than s, p or d";
  if (why.empty()) return *types;
  warnings.push_back(std::string(variable::listen_types) + " " + why + "; checking each socket instead");
  return {};
}

result<listen_fds> parse_listen(const environment& env, pid_t self, long max_fds,
                                std::vector<std::string>& warnings) {
  const std::string* count_text = find(env, variable::listen_fds);
  if (count_text == nullptr || count_text->empty()) return listen_fds{};
  // gracenet sets no LISTEN_PID; systemd does, and then the fds are only ours if it is our pid.
  if (const std::string* pid_text = find(env, variable::listen_pid)) {
    long long pid = 0;
    if (!parse_decimal(*pid_text, pid) || pid <= 0 || pid > INT_MAX)
      return malformed(assignment(variable::listen_pid, *pid_text) + " is not a process id");
    if (pid != self) return listen_fds{};
  }
  long long count = 0;
  if (!parse_decimal(*count_text, count))
    return malformed(assignment(variable::listen_fds, *count_text) + " is not a non-negative number");
  if (count > max_fds - first_listen_fd)
    return malformed(std::string(variable::listen_fds) + "=" + *count_text +
                     " is more fds than this process may open (" + std::to_string(max_fds) + ")");
  listen_fds out;
  out.count = static_cast<int>(count);
  if (const std::string* names = find(env, variable::listen_fdnames); names != nullptr && count > 0) {
    out.names = split(*names, ':');
    if (static_cast<long long>(out.names.size()) != count)
      return malformed(assignment(variable::listen_fdnames, *names) + " names " +
                       std::to_string(out.names.size()) + " fds but LISTEN_FDS=" + *count_text);
    // A bad name costs the socket nothing: it is served as "unknown", and the log says why.
    for (auto& name : out.names)
      if (!name.empty() && !valid_fd_name(name)) {
        warnings.push_back(std::string(variable::listen_fdnames) + ": the name " + quoted(name) +
                           " is not at most 255 printable characters without ':' or blanks;"
                           " using \"unknown\"");
        name.clear();
      }
  }
  out.names.resize(static_cast<std::size_t>(count));
  for (auto& name : out.names)
    if (name.empty()) name = "unknown";
  out.types = listen_types(env, out.count, warnings);
  return out;
}

result<int> parse_ready_fd(const environment& env, int first_free, long max_fds) {
  const std::string* text = find(env, variable::ready_fd);
  if (text == nullptr) return -1;
  long long fd = 0;
  if (!parse_decimal(*text, fd) || fd < first_free || fd >= max_fds)
    return malformed(assignment(variable::ready_fd, *text) + " is not an fd number from " +
                     std::to_string(first_free) + " (after the inherited listeners) to " +
                     std::to_string(max_fds - 1));
  return static_cast<int>(fd);
}

void parse_generation(const environment& env, inheritance& out) {
  const std::string* text = find(env, variable::generation);
  if (text == nullptr) return;
  unsigned long long value = 0;
  if (parse_decimal(*text, value) && value >= 1 && value <= max_generation) {
    out.generation = static_cast<unsigned>(value);
    return;
  }
  out.warnings.push_back(assignment(variable::generation, *text) +
                         " is not a generation from 1 to " + std::to_string(max_generation) +
                         "; counting from 1");
}

void parse_ancestors(const environment& env, inheritance& out) {
  const std::string* text = find(env, variable::ancestors);
  if (text == nullptr || text->empty()) return;
  std::size_t bad = 0;
  for (const auto& entry : split(*text, ',')) {
    const auto colon = entry.find(':');
    long long pid = 0;
    unsigned long long start = 0;
    if (colon == std::string::npos || !parse_decimal(entry.substr(0, colon), pid) || pid <= 0 ||
        pid > INT_MAX || !parse_decimal(entry.substr(colon + 1), start) || start == 0) {
      ++bad;
      continue;
    }
    out.ancestors.push_back({static_cast<pid_t>(pid), start});
  }
  if (bad > 0)
    out.warnings.push_back(assignment(variable::ancestors, *text) + ": ignored " + std::to_string(bad) +
                           " malformed entr" + (bad == 1 ? "y" : "ies") + " (expected pid:starttime)");
  if (out.ancestors.size() > max_ancestors) {
    out.warnings.push_back(std::string(variable::ancestors) + " lists " + std::to_string(out.ancestors.size()) +
                           " generations; only the newest " + std::to_string(max_ancestors) + " are checked");
    out.ancestors.erase(out.ancestors.begin(),
                        out.ancestors.end() - static_cast<std::ptrdiff_t>(max_ancestors));
  }
}

long max_fd_count() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur > INT_MAX)
    return INT_MAX;
  return static_cast<long>(limit.rlim_cur);
}

bool has_prefix(const std::string& entry, const std::string& name_with_equals) {
  return entry.compare(0, name_with_equals.size(), name_with_equals) == 0;
}

std::string name_of(const std::string& entry) { return entry.substr(0, entry.find('=') + 1); }

// --- the real process ----------------------------------------------------------------------

struct startup {
  inheritance parsed;
  result<int> ready_fd = -1;  // parsed.ready_fd, checked against the real fd table
  std::atomic<bool> ready_fd_taken{false};
};

startup& startup_state() {
  static startup s;
  return s;
}

// The fd the parent named must be its readiness socket, not whatever else sits at that number
// (libuv's own pipes, once a loop exists, would be closed under it).
result<int> check_ready_fd(int fd) {
  const std::string where = std::string(variable::ready_fd) + "=" + std::to_string(fd);
  int type = 0, family = 0, listening = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
    return malformed(where + ": not the readiness socket (" + std::strerror(errno) + ")");
  len = sizeof family;
  getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len);
  len = sizeof listening;
  getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len);
  if (type != SOCK_SEQPACKET || family != AF_UNIX || listening != 0)
    return malformed(where + ": not the readiness socket (a connected unix SEQPACKET socket)");
  fcntl(fd, F_SETFD, FD_CLOEXEC);  // until ready() uses it, no child of the application gets it
  return fd;
}

void capture() {
  environment env;
  for (const char* name : owned_variables)
    if (const char* value = std::getenv(name)) env.emplace(name, value);
  if (const char* value = std::getenv(variable::notify_socket)) env.emplace(variable::notify_socket, value);
  auto& s = startup_state();
  s.parsed = parse_inheritance(env, getpid(), max_fd_count());
  if (s.parsed.listen && s.parsed.listen->count > 0) {
    // One system call marks them all; each is checked when a listen call claims it.
    const auto first = static_cast<unsigned>(first_listen_fd);
    const auto last = first + static_cast<unsigned>(s.parsed.listen->count) - 1;
    if (syscall(SYS_close_range, first, last, CLOSE_RANGE_CLOEXEC) != 0)
      for (unsigned fd = first; fd <= last; ++fd) fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
  }
  s.ready_fd = s.parsed.ready_fd;
  if (s.ready_fd && *s.ready_fd >= 0) s.ready_fd = check_ready_fd(*s.ready_fd);
  for (const char* name : owned_variables) unsetenv(name);
}

// glibc runs .init_array entries before main(), with one thread and before any event loop.
void capture_at_startup(int, char**, char**) { capture(); }
__attribute__((used, section(".init_array"))) void (*const capture_entry)(int, char**, char**) =
    capture_at_startup;

}  // namespace

char listen_type_letter(int socket_type) {
  return socket_type == SOCK_STREAM ? 's' : socket_type == SOCK_SEQPACKET ? 'p' : socket_type == SOCK_DGRAM ? 'd' : 0;
}

int socket_type_of_letter(char letter) {
  return letter == 's' ? SOCK_STREAM : letter == 'p' ? SOCK_SEQPACKET : letter == 'd' ? SOCK_DGRAM : 0;
}

bool valid_fd_name(const std::string& name) {
  if (name.size() > max_fd_name) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return c > ' ' && c < 127 && c != ':'; });
}

inheritance parse_inheritance(const environment& env, pid_t self, long max_fds) {
  inheritance out;
  out.listen = parse_listen(env, self, max_fds, out.warnings);
  const int first_free = first_listen_fd + (out.listen ? out.listen->count : 0);
  out.ready_fd = parse_ready_fd(env, first_free, max_fds);
  parse_generation(env, out);
  parse_ancestors(env, out);
  if (const std::string* offer = find(env, variable::connections)) {
    out.parent_offers_connections = *offer == "1";
    if (*offer != "1" && *offer != "0")
      out.warnings.push_back(assignment(variable::connections, *offer) + ": not 0 or 1; taken as 0");
  }
  if (const std::string* offer = find(env, variable::flows)) {
    out.parent_offers_flows = *offer == "1";
    if (*offer != "1" && *offer != "0")
      out.warnings.push_back(assignment(variable::flows, *offer) + ": not 0 or 1; taken as 0");
  }
  if (const std::string* notify = find(env, variable::notify_socket)) out.notify_socket = *notify;
  return out;
}

const inheritance& startup_inheritance() { return startup_state().parsed; }

bool started_by_grace_parent() {
  auto& s = startup_state();
  return !s.ready_fd || *s.ready_fd >= 0;
}

namespace {
std::atomic<bool> predecessor_elsewhere{false};
}  // namespace

bool predecessor_out_of_sight_flag() { return predecessor_elsewhere.load(); }

void adopt_takeover(const environment& offered, int ready_fd, bool out_of_sight) {
  predecessor_elsewhere.store(out_of_sight);
  auto& s = startup_state();
  inheritance parsed = parse_inheritance(offered, getpid(), max_fd_count());
  s.parsed.generation = parsed.generation;
  s.parsed.ancestors = std::move(parsed.ancestors);
  s.parsed.parent_offers_connections = parsed.parent_offers_connections;
  s.parsed.parent_offers_flows = parsed.parent_offers_flows;
  for (auto& w : parsed.warnings) s.parsed.warnings.push_back("takeover: " + w);
  s.ready_fd = ready_fd;
  s.ready_fd_taken = false;
}

result<int> take_ready_fd() {
  auto& s = startup_state();
  if (!s.ready_fd) return tl::unexpected(s.ready_fd.error());
  if (*s.ready_fd < 0 || s.ready_fd_taken.exchange(true)) return -1;
  return *s.ready_fd;
}

std::vector<std::string> generation_entries(unsigned generation,
                                            const std::vector<process_identity>& ancestors) {
  std::string list;
  const std::size_t skip = ancestors.size() > max_ancestors ? ancestors.size() - max_ancestors : 0;
  for (std::size_t i = skip; i < ancestors.size(); ++i)
    list += (list.empty() ? "" : ",") + std::to_string(ancestors[i].pid) + ":" +
            std::to_string(ancestors[i].start_time);
  return {std::string(variable::generation) + "=" + std::to_string(generation),
          std::string(variable::ancestors) + "=" + list};
}

std::string connections_entry() { return std::string(variable::connections) + "=1"; }
std::string flows_entry() { return std::string(variable::flows) + "=1"; }

result<void> check_entry(const std::string& entry) {
  const auto equals = entry.find('=');
  if (equals == std::string::npos || equals == 0 || entry.find('\0') != std::string::npos)
    return fail(errc::invalid_argument, "environment entry " + quoted(entry) + " is not NAME=VALUE");
  return {};
}

child_layout lay_out_child(const std::vector<std::string>& parent, const child_request& request) {
  child_layout out;
  const auto& listeners = request.listeners;
  out.fds.reserve(listeners.size() + request.extra_fds.size() + 1);
  for (const auto& l : listeners) out.fds.push_back(l.fd);
  out.fds.insert(out.fds.end(), request.extra_fds.begin(), request.extra_fds.end());
  int ready_fd_in_child = -1;
  if (request.successor) {
    ready_fd_in_child = first_listen_fd + static_cast<int>(out.fds.size());
    out.fds.push_back(request.successor->ready_fd);
  }

  std::vector<std::string> dropped;
  for (const char* name : owned_variables) dropped.push_back(std::string(name) + "=");
  for (const auto& entry : request.extra_env) dropped.push_back(name_of(entry));
  auto& env = out.environment;
  env.reserve(parent.size() + request.extra_env.size() + 8);
  for (const auto& entry : parent)
    if (std::none_of(dropped.begin(), dropped.end(), [&](const std::string& d) { return has_prefix(entry, d); }))
      env.push_back(entry);
  env.insert(env.end(), request.extra_env.begin(), request.extra_env.end());
  if (!listeners.empty()) {
    std::string names, types;
    for (std::size_t i = 0; i < listeners.size(); ++i) {
      if (i > 0) names += ':';
      names += listeners[i].name;
      types += listeners[i].type;
    }
    env.push_back(std::string(variable::listen_fds) + "=" + std::to_string(listeners.size()));
    env.push_back(std::string(variable::listen_fdnames) + "=" + names);
    if (types.find('\0') == std::string::npos)  // every listener's type known
      env.push_back(std::string(variable::listen_types) + "=" + types);
    out.listen_pid = true;
  }
  if (const auto& next = request.successor) {
    env.push_back(std::string(variable::ready_fd) + "=" + std::to_string(ready_fd_in_child));
    for (auto& entry : generation_entries(next->generation, next->ancestors)) env.push_back(std::move(entry));
  }
  if (request.offer_connections) env.push_back(connections_entry());
  if (request.offer_flows) env.push_back(flows_entry());
  return out;
}

std::vector<std::string> current_environment() {
  std::vector<std::string> out;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) out.emplace_back(*e);
  return out;
}

}  // namespace grace::detail
