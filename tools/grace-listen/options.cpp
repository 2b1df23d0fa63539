#include "options.hpp"

#include <cstdio>
#include <cstdlib>

namespace grace_listen {
namespace {

const char* const usage_text =
    "usage: grace-listen -s KIND:ADDRESS [-s ...] [--name NAME] [--watch PATH]... -- CMD [ARGS...]\n"
    "  Binds every socket once and runs CMD with them as LISTEN_FDS (fds 3..), LISTEN_PID and\n"
    "  LISTEN_FDNAMES (systemd's socket activation), so any socket-activatable server works.\n"
    "  CMD is started again when it exits (backing off after fast failures), on SIGHUP, and when\n"
    "  something changes under a --watch path. The sockets are never closed: a client that\n"
    "  connects while CMD is down waits in the backlog and is answered by the next CMD.\n"
    "  SIGTERM and SIGINT are passed to CMD; grace-listen then exits with CMD's status.\n"
    "  -s tcp:127.0.0.1:8080 | -s tcp:[::1]:8080 | -s tcp::8080 | -s unix:/run/app.sock | -s udp::9000\n"
    "  --name NAME   the LISTEN_FDNAMES name of the socket before it (default: its kind)\n"
    "  --watch PATH  restart CMD when PATH (a file, or a directory's entries) changes\n";

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

}  // namespace

options parse_options(int argc, char** argv) {
  options o;
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
    const bool takes_value = arg == "-s" || arg == "--socket" || arg == "--name" || arg == "--watch";
    if (!takes_value) usage("unexpected argument \"" + arg + "\" (the command goes after --)");
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
    } else {
      if (value.empty()) usage("--watch needs a path");
      o.watch.push_back(value);
    }
  }
  for (; i < argc; ++i) o.command.push_back(argv[i]);
  if (o.sockets.empty()) usage("no socket: give at least one -s");
  if (o.command.empty()) usage("no command: give it after --");
  return o;
}

}  // namespace grace_listen
