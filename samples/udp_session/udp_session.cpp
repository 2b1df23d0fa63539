// grace-udp-session: a stateful UDP server whose sessions survive restarts. A client opens a
// session with a hello, and every later datagram carries the session id and a counter; the
// server answers only for sessions it holds. After SIGUSR2 (or a takeover, or grace-listen
// --overlap) the old generation keeps answering its own sessions until they end, forwarded by
// the new one, which opens the new sessions (grace/flows.hpp, upgrader::serve_flows).
//
//   HELLO <token>   -> SESSION <sid> <token> <pid>      (sid: 16 hex digits)
//   DATA <sid> <n>  -> OK <sid> <n> <pid>               n above the last one seen
//                      REPLAY <sid> <n> <pid>           n not above it
//                      UNKNOWN <sid> <n> <pid>          not a session this process holds
//   BYE <sid>       -> BYE <sid> <pid>, or UNKNOWN <sid> 0 <pid>
//   anything else   -> ERROR <reason> <pid>
//
// Besides the other samples' options (samples/common): --affinity off|forward|cookie (default
// forward; cookie adds the kernel path: the session id's first byte names the generation, and the
// kernel steers its datagrams to that generation's own socket; off sends every datagram to the
// newest generation, and every session in progress breaks at a restart), --session-idle-ms N (a session without a datagram for N ms ends; default 5000) and
// --max-sessions N (past it, the least recently seen session ends; default 65536).
#include <signal.h>
#include <unistd.h>
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "../common/sample.hpp"

namespace {

const char* const name = "grace-udp-session";

struct options {
  bool affinity = true;
  bool cookie = false;
  long idle_ms = 5000;
  long max_sessions = 65536;
};

// Takes this sample's own options out of argv; the rest are the common ones.
options take_own_options(int& argc, char** argv) {
  options o;
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--affinity" || arg == "--session-idle-ms" || arg == "--max-sessions") && i + 1 >= argc) {
      std::fprintf(stderr, "%s: %s needs a value\n", name, arg.c_str());
      std::exit(2);
    }
    if (arg == "--affinity") {
      const std::string v = argv[++i];
      if (v != "off" && v != "forward" && v != "cookie") {
        std::fprintf(stderr, "%s: --affinity is off, forward or cookie, not \"%s\"\n", name, v.c_str());
        std::exit(2);
      }
      o.affinity = v != "off";
      o.cookie = v == "cookie";
    } else if (arg == "--session-idle-ms") {
      char* end = nullptr;
      o.idle_ms = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || o.idle_ms < 10 || o.idle_ms > 3600000) {
        std::fprintf(stderr, "%s: --session-idle-ms is a whole number from 10 to 3600000, not \"%s\"\n", name, argv[i]);
        std::exit(2);
      }
    } else if (arg == "--max-sessions") {
      char* end = nullptr;
      o.max_sessions = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || o.max_sessions < 1 || o.max_sessions > 10000000) {
        std::fprintf(stderr, "%s: --max-sessions is a whole number from 1 to 10000000, not \"%s\"\n", name, argv[i]);
        std::exit(2);
      }
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
  argv[argc] = nullptr;
  return o;
}

// "WORD rest": the word, and the rest after one space.
std::pair<std::string_view, std::string_view> split(std::string_view s) {
  const auto space = s.find(' ');
  if (space == std::string_view::npos) return {s, {}};
  return {s.substr(0, space), s.substr(space + 1)};
}

bool valid_sid(std::string_view sid) {
  return sid.size() == 16 && sid.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

struct server {
  grace::uv::upgrader* upgrader = nullptr;
  std::unordered_map<std::string, std::uint64_t> sessions;  // sid -> the last counter seen
  std::mt19937_64 random{std::random_device{}()};
  const std::string pid = std::to_string(getpid());

  // The flow a datagram belongs to: its session, for DATA and BYE; a hello starts one.
  static grace::flow_key key_of(std::string_view payload) {
    const auto [verb, rest] = split(payload);
    if (verb != "DATA" && verb != "BYE") return {};
    const std::string_view sid = split(rest).first;
    if (!valid_sid(sid)) return {};
    auto key = grace::flow_key::of_bytes(sid);
    return key ? *key : grace::flow_key{};
  }

  void answer(const grace::routed_datagram& d) {
    const auto [verb, rest] = split(d.payload);
    std::string reply;
    if (verb == "HELLO" && !rest.empty() && rest.size() <= 32 &&
        rest.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") ==
            std::string_view::npos) {
      // With the kernel path the id's first byte is this generation's cookie: its datagrams come
      // straight to this process's own socket, whichever generation reads the shared one.
      char sid[17];
      std::snprintf(sid, sizeof sid, "%02x%014llx", upgrader->flow_cookie() & 0xffu,
                    static_cast<unsigned long long>(random() >> 8));
      sessions[sid] = 0;
      // Tracked at once: a flood of hellos ends the least recently seen sessions (on_flow_end)
      // rather than growing without bound.
      if (auto key = grace::flow_key::of_bytes(sid)) upgrader->flow_began(*key);
      reply = "SESSION " + std::string(sid) + " " + std::string(rest) + " " + pid;
    } else if (verb == "DATA") {
      const auto [sid, number] = split(rest);
      char* end = nullptr;
      const std::string n(number);
      const unsigned long long counter = std::strtoull(n.c_str(), &end, 10);
      if (!valid_sid(sid) || n.empty() || *end != '\0') {
        reply = "ERROR malformed-data " + pid;
      } else if (auto s = sessions.find(std::string(sid)); s == sessions.end()) {
        reply = "UNKNOWN " + std::string(sid) + " " + n + " " + pid;
        upgrader->flow_ended(d.key);  // not ours: a newer generation may own the key
      } else if (counter <= s->second) {
        reply = "REPLAY " + std::string(sid) + " " + n + " " + pid;
      } else {
        s->second = counter;
        reply = "OK " + std::string(sid) + " " + n + " " + pid;
      }
    } else if (verb == "BYE" && valid_sid(rest)) {
      const bool held = sessions.erase(std::string(rest)) != 0;
      reply = held ? "BYE " + std::string(rest) + " " + pid : "UNKNOWN " + std::string(rest) + " 0 " + pid;
      upgrader->flow_ended(d.key);
    } else {
      reply = "ERROR unknown-request " + pid;
    }
    upgrader->reply(d, reply);
  }
};

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  const options own = take_own_options(argc, argv);
  auto config = sample::parse_uv_command_line(argc, argv, name);
  grace::net net;
  sample::take_over_if_asked(net, config, name);
  grace::listen_options listen;
  listen.reuse_port = own.cookie;  // the kernel path adds a socket per generation to its group
  auto socket = net.listen_udp("udp", config.address, listen);
  if (!socket) {
    std::fprintf(stderr, "%s: %s\n", name, socket.error().message().c_str());
    return 1;
  }
  uv_loop_t* loop = uv_default_loop();
  grace::uv::upgrader upgrader(loop, net, config.upgrade);
  server s;
  s.upgrader = &upgrader;

  grace::uv::flow_options flows;
  flows.affinity = own.affinity;
  flows.table.idle = std::chrono::milliseconds(own.idle_ms);
  flows.table.max_flows = static_cast<std::size_t>(own.max_sessions);
  // "DATA <sid> <n>": the cookie is the sid's first two hex digits, at offset 5.
  if (own.cookie) flows.cookie = grace::uv::flow_options::cookie_format{5, true, "DATA "};
  flows.key = [](const sockaddr*, socklen_t, std::string_view payload) { return server::key_of(payload); };
  // A session idle past its time ends here, as the client would have given up on it.
  flows.on_flow_end = [&s](const grace::flow_key& key) { s.sessions.erase(std::string(key.bytes())); };
  if (auto served = upgrader.serve_flows({*socket}, flows, [&s](const grace::routed_datagram& d) { s.answer(d); });
      !served) {
    std::fprintf(stderr, "%s: %s\n", name, served.error().message().c_str());
    return 1;
  }
  std::fprintf(stderr, "%s[%d]: sessions on udp %s (%s), affinity %s\n", name, static_cast<int>(getpid()),
               (*socket)->address().c_str(), (*socket)->inherited() ? "inherited" : "new",
               own.cookie ? "cookie" : own.affinity ? "forward" : "off");
  if (auto ready = upgrader.ready(); !ready) {
    std::fprintf(stderr, "%s: %s\n", name, ready.error().message().c_str());
    return 1;
  }
  const int status = upgrader.run();
  const auto c = upgrader.flow_statistics();
  std::fprintf(stderr,
               "%s[%d]: exiting with %zu session(s); %llu datagram(s) forwarded to the previous generation "
               "(%llu dropped), %llu answered for the next one\n",
               name, static_cast<int>(getpid()), s.sessions.size(), static_cast<unsigned long long>(c.forwarded),
               static_cast<unsigned long long>(c.forward_dropped),
               static_cast<unsigned long long>(c.received_forwarded));
  return status;
}
