#include "options.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "grace/version.hpp"

namespace grace_listen {
namespace {

const char* const usage_text =
    "usage: grace-listen -s KIND:ADDRESS [-s ...] [--name NAME] [--watch PATH]... -- CMD [ARGS...]\n"
    "       grace-listen --reload PID|PATH\n"
    "       grace-listen --help | --version\n"
    "  Binds every socket once and runs CMD with them as LISTEN_FDS (fds 3..), LISTEN_PID and\n"
    "  LISTEN_FDNAMES (systemd's socket activation), so any socket-activatable server works.\n"
    "  CMD is started again when it exits (backing off after fast failures; a clean exit, status 0,\n"
    "  is not one), on SIGHUP, and when something changes under a --watch path. The sockets are\n"
    "  never closed: a client that connects while CMD is down waits in the backlog and is answered\n"
    "  by the next CMD. SIGTERM and SIGINT are passed to CMD; grace-listen then exits with CMD's\n"
    "  status. Each CMD gets NOTIFY_SOCKET (sd_notify: READY=1, MAINPID=) from grace-listen.\n"
    "  -s tcp:127.0.0.1:8080 | -s tcp:[::1]:8080 | -s tcp::8080 | -s unix:/run/app.sock | -s udp::9000\n"
    "  --name NAME             the LISTEN_FDNAMES name of the socket before it (default: its kind)\n"
    "  --watch PATH            upgrade when PATH (a file, or a directory's entries) changes, replaced\n"
    "                          by rename or re-created included\n"
    "  --overlap               start the next CMD while the current one serves; stop the old one\n"
    "                          (SIGTERM: it drains) only once the new one is ready, else roll back\n"
    "  --ready-after SECONDS   a CMD that never says READY=1 is ready this long after it started\n"
    "  --ready-timeout SECONDS a new CMD not ready by then is stopped and the old one serves on (60)\n"
    "  --stop-timeout SECONDS  a CMD told to stop (SIGTERM) is killed (SIGKILL) after this (60)\n"
    "  --max-generations N     CMDs alive at once, draining ones included, 2 to 1000 (4)\n"
    "  --control PATH          the socket --reload talks to (default: abstract @grace-listen-PID)\n"
    "  --reload PID|PATH       upgrade the grace-listen of that pid or --control path and wait:\n"
    "                          exit 0 once the new CMD serves, 1 (with the reason) if rolled back\n";

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "grace-listen: %s\n%s", why.c_str(), usage_text);
  std::exit(2);
}

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > 255) return false;
  for (char c : name)
    if (c <= ' ' || c >= 127 || c == ':') return false;
  return true;
}

// Seconds as a finite decimal number up to a day: no NaN, no infinity, no trailing text.
std::chrono::milliseconds seconds_arg(const std::string& option, const std::string& text, bool zero_allowed) {
  char* end = nullptr;
  const double seconds = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(seconds) || seconds < 0 || (seconds == 0 && !zero_allowed) ||
      seconds > 86400)
    usage(option + " needs a number of seconds " + (zero_allowed ? "from 0" : "above 0") + " to 86400, not \"" +
          text + "\"");
  return std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
}

unsigned generations_arg(const std::string& text) {
  char* end = nullptr;
  const unsigned long value = std::strtoul(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || text[0] < '0' || text[0] > '9' || value < 2 || value > 1000)
    usage("--max-generations needs a whole number from 2 to 1000, not \"" + text + "\"");
  return static_cast<unsigned>(value);
}

}  // namespace

command_line parse_command_line(int argc, char** argv) {
  command_line line;
  options& o = line.run;
  int i = 1;
  for (; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg == "-h" || arg == "--help") {
      std::fputs(usage_text, stdout);
      std::exit(0);
    }
    if (arg == "--version") {
      std::printf("grace-listen (grace) %s\n", GRACE_VERSION_STRING);
      std::exit(0);
    }
    if (arg == "--overlap") {
      o.overlap = true;
      continue;
    }
    const bool takes_value = arg == "-s" || arg == "--socket" || arg == "--name" || arg == "--watch" ||
                             arg == "--ready-after" || arg == "--ready-timeout" || arg == "--stop-timeout" ||
                             arg == "--max-generations" || arg == "--control" || arg == "--reload";
    if (!takes_value) {
      if (arg.rfind("-", 0) == 0) usage("unknown option \"" + arg + "\"");
      usage("unexpected argument \"" + arg + "\" (the command goes after --)");
    }
    if (i + 1 >= argc) usage(arg + " needs a value");
    const std::string value = argv[++i];
    if (arg == "-s" || arg == "--socket") {
      const auto colon = value.find(':');
      const std::string kind = value.substr(0, colon);
      if (colon == std::string::npos || (kind != "tcp" && kind != "unix" && kind != "udp") || colon + 1 == value.size())
        usage("-s \"" + value + "\": expected tcp:HOST:PORT, unix:PATH or udp:HOST:PORT");
      o.sockets.push_back({kind, value.substr(colon + 1), kind});
    } else if (arg == "--name") {
      if (o.sockets.empty()) usage("--name names the socket given before it; there is none");
      if (!valid_name(value)) usage("--name \"" + value + "\": at most 255 printable characters without ':' or blanks");
      o.sockets.back().name = value;
    } else if (arg == "--watch") {
      if (value.empty()) usage("--watch needs a path");
      o.watch.push_back(value);
    } else if (arg == "--ready-after") {
      o.ready_after = seconds_arg(arg, value, true);
    } else if (arg == "--ready-timeout") {
      o.ready_timeout = seconds_arg(arg, value, false);
    } else if (arg == "--stop-timeout") {
      o.stop_timeout = seconds_arg(arg, value, false);
    } else if (arg == "--max-generations") {
      o.max_generations = generations_arg(value);
    } else if (arg == "--control") {
      if (value.empty() || value.size() > 100) usage("--control needs a path of 1 to 100 bytes");
      o.control = value;
    } else {
      if (value.empty()) usage("--reload needs a pid or a --control path");
      line.reload = reload_request{value};
    }
  }
  for (; i < argc; ++i) o.command.push_back(argv[i]);
  if (line.reload) {
    if (!o.sockets.empty() || !o.command.empty())
      usage("--reload takes nothing else: it talks to a running grace-listen");
    return line;
  }
  if (o.sockets.empty()) usage("no socket: give at least one -s");
  if (o.command.empty()) usage("no command: give it after --");
  if (o.ready_after && *o.ready_after >= o.ready_timeout)
    usage("--ready-after must be shorter than --ready-timeout (" + std::to_string(o.ready_timeout.count()) + " ms)");
  return line;
}

}  // namespace grace_listen
