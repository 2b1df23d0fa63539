#include <signal.h>
#include <string.h>
#include <time.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "grace/net.hpp"
#include "harness.hpp"

namespace harness {
namespace {

constexpr char help_text[] = R"(restart-harness: drive a server under load while restarting it, and prove no request was lost.

usage: restart-harness [options] -- SERVER COMMAND AND ARGS
       restart-harness [options] --attach-pid PID | --pidfile FILE

Load
  --target URL         tcp://127.0.0.1:8080, tcp://[::1]:8080 or unix:/path/to.sock (required)
  --mode MODE          http-keepalive (default): reuse connections; a connection the server closes
                         between requests is reopened, which is not a loss
                       http-close: a new connection per request
                       echo: random payloads that must come back byte for byte
  --clients N          concurrent clients (default 32)
  --requests-per-connection N
                       answers after which a client opens a new connection (default: never for
                         http-keepalive; 100 for echo, whose servers cannot end a connection
                         between requests)
  --timeout S          a request unanswered after S seconds is lost (default 5)
  --stall-ms MS        an answer slower than this counts as a stall, reported but not lost (default 1000)

Restarts
  --restarts R         how many restarts (default 10)
  --interval S         seconds between restarts (default: as soon as the previous generation has
                         taken over: the new one answered and the old one exited)
  --signal NAME        signal sent to the server's main pid (default USR2)
  --restart-cmd CMD    run CMD with /bin/sh instead of signalling, for servers with their own
                         reload procedure; $MAINPID holds the current main pid
  --pidfile FILE       where the server writes its main pid; followed across generations
  --attach-pid PID     referee a server that is already running (not started, not stopped by us)
  --restart-timeout S  a restart whose new generation does not answer within S fails (default 30)
  --startup-timeout S  wait at most S for the target to accept at start (default 10)

Bounds and output
  --duration S         run at least S seconds (default: until the restarts are done)
  --hard-cap S         never run longer than S seconds (default 300)
  --settle S           load before the first and after the last restart (default 0.5)
  --json FILE          every figure, machine-readable
  --plot FILE.svg      timeline: requests/s and errors over time, restarts marked, generations shaded
  --no-progress        no live progress line (it only shows on a terminal anyway)
  -h, --help           this text

Verdict: "PASS: 0 lost in N requests across R restarts" and exit status 0, or "FAIL: ..." and 1.
A request is lost when it was refused, reset, timed out, or answered wrongly or incompletely.

Example:
  restart-harness --target tcp://127.0.0.1:8080 --clients 64 --restarts 20 \
    --pidfile /tmp/http.pid -- grace-http 127.0.0.1:8080 --pidfile /tmp/http.pid
)";

[[noreturn]] void usage_error(const std::string& why) {
  std::fprintf(stderr, "restart-harness: %s\n(restart-harness --help explains every option)\n", why.c_str());
  std::exit(2);
}

double number(const std::string& option, const char* text) {
  char* end = nullptr;
  const double value = std::strtod(text, &end);
  // NaN and infinity pass a "< 0" test and would disable every deadline, --hard-cap included.
  if (end == text || *end != '\0' || !std::isfinite(value) || value < 0)
    usage_error(option + " needs a non-negative number, not \"" + text + "\"");
  return value;
}

grace::socket_address parse_target(const std::string& text) {
  if (text.rfind("unix:", 0) == 0) {
    auto a = grace::resolve_unix(text.substr(5), grace::net::startup_directory());
    if (!a) usage_error("--target " + text + ": " + a.error().message());
    return *a;
  }
  if (text.rfind("tcp://", 0) == 0) {
    auto a = grace::resolve_tcp(grace::network::tcp, text.substr(6));
    if (!a) usage_error("--target " + text + ": " + a.error().message());
    if (a->front().is_wildcard()) usage_error("--target " + text + ": name a host to connect to, not a wildcard");
    return a->front();
  }
  usage_error("--target \"" + text + "\" must start with tcp:// or unix:");
}

int signal_by_name(const std::string& name) {
  std::string bare = name.rfind("SIG", 0) == 0 ? name.substr(3) : name;
  for (int sig = 1; sig < NSIG; ++sig) {
    const char* abbrev = sigabbrev_np(sig);
    if (abbrev != nullptr && bare == abbrev) return sig;
  }
  usage_error("unknown signal \"" + name + "\"");
}

}  // namespace

options parse_options(int argc, char** argv) {
  options o;
  bool have_target = false;
  int i = 1;
  for (; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg == "-h" || arg == "--help") {
      std::fputs(help_text, stdout);
      std::exit(0);
    }
    if (arg == "--no-progress") {
      o.progress = false;
      continue;
    }
    if (i + 1 >= argc) usage_error(arg + " needs a value");
    const char* value = argv[++i];
    if (arg == "--target") {
      o.target_text = value;
      o.target = parse_target(value);
      have_target = true;
    } else if (arg == "--mode") {
      const std::string m = value;
      if (m == "http-keepalive") o.mode = load_mode::http_keepalive;
      else if (m == "http-close") o.mode = load_mode::http_close;
      else if (m == "echo") o.mode = load_mode::echo;
      else usage_error("--mode must be http-keepalive, http-close or echo, not \"" + m + "\"");
    } else if (arg == "--clients") {
      o.clients = static_cast<unsigned>(number(arg, value));
      if (o.clients == 0 || o.clients > 10000) usage_error("--clients must be 1 to 10000");
    } else if (arg == "--restarts") o.restarts = static_cast<unsigned>(number(arg, value));
    else if (arg == "--requests-per-connection") {
      o.requests_per_connection = static_cast<unsigned>(number(arg, value));
      o.requests_per_connection_set = true;
    } else if (arg == "--interval") o.interval_s = number(arg, value);
    else if (arg == "--signal") o.signal_name = value;
    else if (arg == "--restart-cmd") o.restart_cmd = value;
    else if (arg == "--pidfile") o.pidfile = value;
    else if (arg == "--attach-pid") o.attach_pid = static_cast<pid_t>(number(arg, value));
    else if (arg == "--duration") o.duration_s = number(arg, value);
    else if (arg == "--hard-cap") o.hard_cap_s = number(arg, value);
    else if (arg == "--timeout") o.timeout_s = number(arg, value);
    else if (arg == "--stall-ms") o.stall_ms = number(arg, value);
    else if (arg == "--startup-timeout") o.startup_timeout_s = number(arg, value);
    else if (arg == "--restart-timeout") o.restart_timeout_s = number(arg, value);
    else if (arg == "--settle") o.settle_s = number(arg, value);
    else if (arg == "--json") o.json_file = value;
    else if (arg == "--plot") o.plot_file = value;
    else usage_error("unknown option \"" + arg + "\"");
  }
  for (; i < argc; ++i) o.server_command.emplace_back(argv[i]);
  if (!have_target) usage_error("--target is required");
  o.signal_number = signal_by_name(o.signal_name);
  if (!o.requests_per_connection_set && o.mode == load_mode::echo) o.requests_per_connection = 100;
  const bool has_server = !o.server_command.empty() || o.attach_pid > 0 || !o.pidfile.empty();
  if (!has_server) usage_error("name the server: a command after --, --attach-pid PID or --pidfile FILE");
  if (!o.server_command.empty() && o.attach_pid > 0) usage_error("--attach-pid and a server command exclude each other");
  if (o.timeout_s <= 0) usage_error("--timeout must be positive");
  return o;
}

}  // namespace harness
