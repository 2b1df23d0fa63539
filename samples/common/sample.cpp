#include "sample.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace sample {
namespace {

[[noreturn]] void usage(const char* name, const std::string& why) {
  std::fprintf(stderr,
               "%s: %s\n"
               "usage: %s ADDRESS [--pidfile FILE] [--drain-timeout SECONDS] [--ready-timeout SECONDS]\n"
               "                  [--max-generations N]\n"
               "  ADDRESS: 127.0.0.1:8080, [::1]:8080, :8080 or unix:/path/to.sock\n"
               "  SIGUSR2 upgrades to a new process without losing a connection; SIGTERM drains and exits.\n",
               name, why.c_str(), name);
  std::exit(2);
}

std::chrono::milliseconds seconds_arg(const char* name, const std::string& option, const char* text) {
  char* end = nullptr;
  const double seconds = std::strtod(text, &end);
  if (end == text || *end != '\0' || seconds < 0) usage(name, option + " needs a number of seconds, not \"" + text + "\"");
  return std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
}

}  // namespace

config parse_command_line(int argc, char** argv, const char* name) {
  config c;
  c.upgrade.drain_timeout = std::chrono::seconds(30);
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--pidfile" && has_value) c.upgrade.pidfile = argv[++i];
    else if (arg == "--drain-timeout" && has_value) c.upgrade.drain_timeout = seconds_arg(name, arg, argv[++i]);
    else if (arg == "--ready-timeout" && has_value) c.upgrade.ready_timeout = seconds_arg(name, arg, argv[++i]);
    else if (arg == "--max-generations" && has_value) c.upgrade.max_generations = static_cast<unsigned>(std::atoi(argv[++i]));
    else if (arg == "-h" || arg == "--help") usage(name, "zero-downtime restart sample");
    else if (!arg.empty() && arg[0] != '-' && c.address.empty()) c.address = arg;
    else usage(name, "unexpected argument \"" + arg + "\"");
  }
  if (c.address.empty()) usage(name, "missing ADDRESS");
  return c;
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
