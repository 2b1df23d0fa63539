#include "command_line.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "grace/version.hpp"

namespace sample {
namespace {

void print_usage(std::FILE* out, const char* name) {
  std::fprintf(out,
               "usage: %s ADDRESS [--pidfile FILE] [--drain-timeout SECONDS] [--ready-timeout SECONDS]\n"
               "                  [--max-generations N] [--successor-watch SECONDS] [--handover-socket PATH]\n"
               "                  [--no-migrate] [--fd-store] [--workers N] [--reuse-port]\n"
               "       %s --help | --version\n"
               "  ADDRESS: 127.0.0.1:8080, [::1]:8080, :8080 or unix:/path/to.sock\n"
               "  SIGUSR2 upgrades to a new process without losing a connection; SIGTERM drains and exits;\n"
               "  SIGHUP is logged and ignored.\n"
               "  --handover-socket PATH: take the listeners over from the process serving PATH, if one does,\n"
               "  and serve PATH for the next one: starting the program again with the same PATH upgrades it.\n"
               "  Without it, GRACE_HANDOVER_SOCKET (set by grace-listen --overlap) names PATH.\n"
               "  --no-migrate: keep connections in the old generation at a hand-over (they end there as\n"
               "  a drain ends them) instead of moving the idle ones to the new generation.\n"
               "  --fd-store: keep the listeners in systemd's fd store (FDSTORE=1), so that even a crash or\n"
               "  a restart of the whole service gets them back.\n"
               "  --workers N: serve on N threads, one event loop each (grace-http, grace-udp-echo); with\n"
               "  --reuse-port each has a socket of its own (SO_REUSEPORT), else all accept from one.\n",
               name, name);
}

[[noreturn]] void usage(const char* name, const std::string& why) {
  std::fprintf(stderr, "%s: %s\n", name, why.c_str());
  print_usage(stderr, name);
  std::exit(2);
}

// Seconds as a finite decimal number up to a day: no NaN, no infinity, no trailing text.
std::chrono::milliseconds seconds_arg(const char* name, const std::string& option, const char* text, bool zero_allowed) {
  char* end = nullptr;
  const double seconds = std::strtod(text, &end);
  if (end == text || *end != '\0' || !std::isfinite(seconds) || seconds < 0 || (seconds == 0 && !zero_allowed) ||
      seconds > 86400)
    usage(name, option + " needs a number of seconds " + (zero_allowed ? "from 0" : "above 0") + " to 86400, not \"" +
                    text + "\"");
  return std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
}

unsigned workers_arg(const char* name, const char* text) {
  char* end = nullptr;
  const unsigned long value = std::strtoul(text, &end, 10);
  if (end == text || *end != '\0' || text[0] < '0' || text[0] > '9' || value < 1 || value > 64)
    usage(name, std::string("--workers needs a whole number from 1 to 64, not \"") + text + "\"");
  return static_cast<unsigned>(value);
}

unsigned generations_arg(const char* name, const char* text) {
  char* end = nullptr;
  const unsigned long value = std::strtoul(text, &end, 10);
  if (end == text || *end != '\0' || text[0] < '0' || text[0] > '9' || value < 2 || value > 1000)
    usage(name, std::string("--max-generations needs a whole number from 2 to 1000, not \"") + text + "\"");
  return static_cast<unsigned>(value);
}

}  // namespace

command_line parse_command_line(int argc, char** argv, const char* name) {
  command_line c;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool takes_value = arg == "--pidfile" || arg == "--drain-timeout" || arg == "--ready-timeout" ||
                             arg == "--max-generations" || arg == "--successor-watch" ||
                             arg == "--handover-socket" || arg == "--workers";
    if (takes_value && i + 1 >= argc) usage(name, arg + " needs a value");
    if (arg == "--pidfile") c.pidfile = argv[++i];
    else if (arg == "--drain-timeout") c.drain_timeout = seconds_arg(name, arg, argv[++i], true);
    else if (arg == "--ready-timeout") c.ready_timeout = seconds_arg(name, arg, argv[++i], false);
    else if (arg == "--max-generations") c.max_generations = generations_arg(name, argv[++i]);
    else if (arg == "--successor-watch") c.successor_watch = seconds_arg(name, arg, argv[++i], true);
    else if (arg == "--handover-socket") {
      c.handover_socket = argv[++i];
      if (c.handover_socket.empty()) usage(name, "--handover-socket needs a path");
    }
    else if (arg == "--no-migrate") c.migrate = false;
    else if (arg == "--fd-store") c.fd_store = true;
    else if (arg == "--workers") c.workers = workers_arg(name, argv[++i]);
    else if (arg == "--reuse-port") c.reuse_port = true;
    else if (arg == "-h" || arg == "--help") {
      print_usage(stdout, name);
      std::exit(0);
    }
    else if (arg == "--version") {
      std::printf("%s (grace) %s\n", name, GRACE_VERSION_STRING);
      std::exit(0);
    }
    else if (!arg.empty() && arg[0] == '-') usage(name, "unknown option \"" + arg + "\"");
    else if (c.address.empty() && !arg.empty()) c.address = arg;
    else usage(name, "unexpected argument \"" + arg + "\"");
  }
  if (c.address.empty()) usage(name, "missing ADDRESS");
  if (c.reuse_port && c.workers == 0) usage(name, "--reuse-port needs --workers");
  return c;
}

std::string who_body(pid_t pid, unsigned generation, int worker) {
  std::string body = "pid=" + std::to_string(pid) + " generation=" + std::to_string(generation);
  if (worker >= 0) body += " worker=" + std::to_string(worker);
  constexpr std::size_t length = 47;  // pid up to 7 digits, generation 10, worker 2, and room
  if (body.size() < length) body.append(length - body.size(), ' ');
  return body + "\n";
}

void refuse_upgrader_options(const command_line& c, const char* name) {
  refuse_workers(c, name);
  if (c.handover_socket.empty() && !c.fd_store && c.migrate) return;
  usage(name, "--handover-socket, --fd-store and --no-migrate need the libuv upgrader (grace-http, grace-echo)");
}

void refuse_workers(const command_line& c, const char* name) {
  if (c.workers == 0) return;
  usage(name, "--workers is for grace-http and grace-udp-echo");
}

grace::listener* open_listener(grace::net& net, const std::string& address, const char* name) {
  const bool is_unix = address.rfind("unix:", 0) == 0;
  auto l = is_unix ? net.listen_unix("unix", address.substr(5)) : net.listen_tcp("tcp", address);
  if (!l) {
    std::fprintf(stderr, "%s: cannot listen on %s: %s\n", name, address.c_str(), l.error().message().c_str());
    std::exit(1);
  }
  return *l;
}

}  // namespace sample
