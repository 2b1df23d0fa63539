#include <signal.h>
#include <string.h>
#include <time.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <cerrno>

#include "grace/net.hpp"
#include "grace/version.hpp"
#include "harness.hpp"

namespace harness {
namespace {

constexpr char help_text[] = R"(restart-harness: drive a server under load while restarting it, and prove no request was lost.

usage: restart-harness [options] -- SERVER COMMAND AND ARGS
       restart-harness [options] --attach-pid PID | --pidfile FILE

Load
  --target URL         tcp://127.0.0.1:8080, tcp://[::1]:8080, unix:/path/to.sock, or
                         udp://127.0.0.1:8080 for udp-echo and udp-session (required)
  --mode MODE          http-keepalive (default): reuse connections; a connection the server closes
                         while the client thinks (between requests) is reopened, which is not a
                         loss; one it closes as the next request goes out is (retryable)
                       http-close: a new connection per request
                       echo: random payloads that must come back byte for byte
                       udp-echo: datagrams (a sequence number and a random payload) that must
                         come back byte for byte; one unanswered within --timeout is lost
                       udp-session: stateful flows, each client a session on a UDP socket of
                         its own: HELLO <token> (answered SESSION <sid> <token> <pid>), then
                         DATA <sid> <n> with n = 1, 2, 3 ... (answered OK <sid> <n> <pid>),
                         and BYE <sid> after --session-ms (answered BYE <sid> <pid>), then a
                         new session. A session is broken by an UNKNOWN or REPLAY answer, or
                         by none within --timeout; answers are told apart by the pid they
                         name: the current generation's, or a draining one's. A restart is
                         complete once the new generation answers a HELLO; the old one may
                         live on until its sessions end, and its exit time is reported
  --clients N          concurrent clients (default 32)
  --requests-per-connection N
                       answers after which a client opens a new connection (default: never for
                         http-keepalive; 100 for echo, whose servers cannot end a connection
                         between requests)
  --think-ms N[-M]     keep-alive clients idle N ms (or a random N to M) between requests, as
                         browsers and connection pools do; udp-session clients between
                         datagrams (default 0)
  --session-ms MS      udp-session: a session ends (BYE) this long after it opened, and its
                         client opens a new one (default 1500)
  --method M, --path P, --host H, --header "Name: value" (repeatable), --body-bytes N
                       the HTTP request (default GET / with Host: harness, no body)
  --timeout S          a request unanswered after S seconds is lost (default 5, at least 0.01)
  --stall-ms MS        an answer slower than this counts as a stall, reported but not lost (default 1000)

Restarts
  --restarts R         how many restarts (default 10)
  --interval S         seconds between restarts (default: as soon as the previous generation has
                         taken over: the new one answered and the old one exited)
  --signal NAME        signal sent to the server's main pid (default USR2)
  --restart-cmd CMD    run CMD with /bin/sh instead of signalling, for servers with their own
                         reload procedure; $MAINPID holds the current main pid
  --pidfile FILE       where the server writes its main pid; followed across generations
  --attach-pid PID     referee a server that is already running (not started, not stopped by us);
                         with it or --pidfile alone, the processes serving our connections are
                         found wherever they are in the process tree
  --restart-timeout S  a restart whose new generation does not answer within S fails (default 30)
  --startup-timeout S  wait at most S for the target to accept at start (default 10)

Bounds and output
  --duration S         run at least S seconds (default: until the restarts are done)
  --hard-cap S         never run longer than S seconds (default 300); a watchdog ends the run
                         (status 1) even when the referee's loop is stuck or too busy
  --settle S           load before the first and after the last restart (default 0.5)
  --json FILE          every figure, machine-readable
  --plot FILE.svg      timeline: requests/s and errors over time, restarts marked, generations shaded
  --server-log FILE    write the output of the server we start to FILE, and keep it (default: a
                         file in $TMPDIR or /tmp, kept and named only when the run fails)
  --no-progress        no live progress line (it only shows on a terminal anyway)
  -h, --help           this text
  --version            the program's name and grace's version

Verdict: "PASS: 0 lost in N requests across R restarts" and exit status 0, or "FAIL: ..." and 1.
In udp-session mode a broken session fails the run as a lost datagram does.
A request is lost when it got no complete, correct answer. The losses are shown by category:
connect refused; closed (FIN) or reset on a new connection; closed or reset on a reused
keep-alive connection before any answer byte (the idle-close race, which RFC 9112 section 9.3.1
lets a client retry); failed after a partial answer; timeout; wrong answer. The table also says
how many a client that retries idempotent requests would still have seen.

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

// --think-ms N or N-M (milliseconds).
void parse_think(const std::string& text, options& o) {
  const auto dash = text.find('-', 1);
  const std::string low = text.substr(0, dash);
  const std::string high = dash == std::string::npos ? low : text.substr(dash + 1);
  o.think_min_ms = number("--think-ms", low.c_str());
  o.think_max_ms = number("--think-ms", high.c_str());
  if (o.think_max_ms < o.think_min_ms) usage_error("--think-ms " + text + ": the range must go up");
  if (o.think_max_ms > 3600000) usage_error("--think-ms must be at most an hour");
}

// What goes into the request line or a header must not end it early: no CR, LF or NUL.
std::string http_text(const std::string& option, const std::string& text) {
  if (text.empty() || text.find_first_of(std::string("\r\n\0", 3)) != std::string::npos)
    usage_error(option + " must be non-empty text without CR or LF");
  return text;
}

std::string http_token(const std::string& option, const std::string& text) {
  for (const char c : http_text(option, text))
    if (c <= ' ' || c >= 127 || std::string("()<>@,;:\\\"/[]?={}").find(c) != std::string::npos)
      usage_error(option + " \"" + text + "\" is not an HTTP token (a method such as GET)");
  return text;
}

std::string http_path(const std::string& text) {
  if (http_text("--path", text).front() != '/' || text.find(' ') != std::string::npos)
    usage_error("--path must start with '/' and hold no space");
  return text;
}

std::string http_header(const std::string& text) {
  const auto colon = http_text("--header", text).find(':');
  if (colon == std::string::npos || colon == 0) usage_error("--header must be \"Name: value\"");
  http_token("--header name", text.substr(0, colon));
  return text;
}

grace::socket_address parse_target(const std::string& text) {
  if (text.rfind("unix:", 0) == 0) {
    auto a = grace::resolve_unix(text.substr(5), grace::net::startup_directory());
    if (!a) usage_error("--target " + text + ": " + a.error().message());
    return *a;
  }
  if (text.rfind("udp://", 0) == 0) {
    auto a = grace::resolve_tcp(grace::network::udp, text.substr(6));
    if (!a) usage_error("--target " + text + ": " + a.error().message());
    if (a->front().is_wildcard()) usage_error("--target " + text + ": name a host to send to, not a wildcard");
    return a->front();
  }
  if (text.rfind("tcp://", 0) == 0) {
    auto a = grace::resolve_tcp(grace::network::tcp, text.substr(6));
    if (!a) usage_error("--target " + text + ": " + a.error().message());
    if (a->front().is_wildcard()) usage_error("--target " + text + ": name a host to connect to, not a wildcard");
    return a->front();
  }
  usage_error("--target \"" + text + "\" must start with tcp://, udp:// or unix:");
}

int signal_by_name(const std::string& name) {
  std::string bare = name.rfind("SIG", 0) == 0 ? name.substr(3) : name;
  for (int sig = 1; sig < NSIG; ++sig) {
    const char* abbrev = sigabbrev_np(sig);
    if (abbrev != nullptr && bare == abbrev) return sig;
  }
  usage_error("unknown signal \"" + name + "\"");
}

bool takes_value(const std::string& arg) {
  static const char* const with_value[] = {
      "--target", "--mode", "--clients", "--restarts", "--requests-per-connection", "--interval", "--signal",
      "--restart-cmd", "--pidfile", "--attach-pid", "--duration", "--hard-cap", "--timeout", "--stall-ms",
      "--startup-timeout", "--restart-timeout", "--settle", "--think-ms", "--method", "--path", "--host",
      "--header", "--body-bytes", "--json", "--plot", "--server-log", "--session-ms"};
  for (const char* name : with_value)
    if (arg == name) return true;
  return false;
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
    if (arg == "--version") {
      std::printf("restart-harness (grace) %s\n", GRACE_VERSION_STRING);
      std::exit(0);
    }
    if (arg == "--no-progress") {
      o.progress = false;
      continue;
    }
    // Unknown before "needs a value": an unknown option given last is still unknown.
    if (!takes_value(arg))
      usage_error(arg.empty() || arg[0] != '-' ? "unexpected argument \"" + arg + "\" (the server command goes after --)"
                                               : "unknown option \"" + arg + "\"");
    if (i + 1 >= argc) usage_error(arg + " needs a value");
    const char* value = argv[++i];
    if (arg == "--target") {
      o.target_text = value;
      o.target = parse_target(value);
      o.udp = std::string(value).rfind("udp://", 0) == 0;
      have_target = true;
    } else if (arg == "--mode") {
      const std::string m = value;
      if (m == "http-keepalive") o.mode = load_mode::http_keepalive;
      else if (m == "http-close") o.mode = load_mode::http_close;
      else if (m == "echo") o.mode = load_mode::echo;
      else if (m == "udp-echo") o.mode = load_mode::udp_echo;
      else if (m == "udp-session") o.mode = load_mode::udp_session;
      else usage_error("--mode must be http-keepalive, http-close, echo, udp-echo or udp-session, not \"" + m + "\"");
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
    else if (arg == "--think-ms") parse_think(value, o);
    else if (arg == "--session-ms") {
      o.session_ms = number(arg, value);
      o.session_ms_set = true;
      if (o.session_ms < 1 || o.session_ms > 3600000) usage_error("--session-ms must be 1 to 3600000 (an hour)");
    }
    else if (arg == "--method") o.method = http_token(arg, value);
    else if (arg == "--path") o.path = http_path(value);
    else if (arg == "--host") o.host = http_text(arg, value);
    else if (arg == "--header") o.headers.push_back(http_header(value));
    else if (arg == "--body-bytes") {
      const double bytes = number(arg, value);
      if (bytes > 64 * 1024 * 1024) usage_error("--body-bytes must be at most 64 MiB");
      o.body_bytes = static_cast<std::size_t>(bytes);
    }
    else if (arg == "--json") o.json_file = value;
    else if (arg == "--plot") o.plot_file = value;
    else if (arg == "--server-log") {
      o.server_log = value;
      if (o.server_log.empty()) usage_error("--server-log needs a file name");
    }
    else usage_error("unknown option \"" + arg + "\"");
  }
  for (; i < argc; ++i) o.server_command.emplace_back(argv[i]);
  if (!have_target) usage_error("--target is required");
  o.signal_number = signal_by_name(o.signal_name);
  const bool udp_mode = o.mode == load_mode::udp_echo || o.mode == load_mode::udp_session;
  if (o.udp != udp_mode)
    usage_error(o.udp ? "--target " + o.target_text + " is UDP: it needs --mode udp-echo or udp-session"
                      : std::string("--mode ") + (o.mode == load_mode::udp_echo ? "udp-echo" : "udp-session") +
                            " needs a udp://HOST:PORT target, not " + o.target_text);
  if (o.session_ms_set && o.mode != load_mode::udp_session) usage_error("--session-ms is for --mode udp-session");
  if (o.requests_per_connection_set && o.mode == load_mode::udp_session)
    usage_error("--requests-per-connection is not for udp-session: a session ends after --session-ms");
  if (!o.requests_per_connection_set && o.mode == load_mode::echo) o.requests_per_connection = 100;
  const bool has_server = !o.server_command.empty() || o.attach_pid > 0 || !o.pidfile.empty();
  if (!has_server) usage_error("name the server: a command after --, --attach-pid PID or --pidfile FILE");
  if (!o.server_command.empty() && o.attach_pid > 0) usage_error("--attach-pid and a server command exclude each other");
  // Below this a request times out before any server could answer, and the clients' timers and
  // reconnects would keep the loop spinning.
  if (o.timeout_s < min_timeout_s) usage_error("--timeout must be at least 0.01 s");
  if (!o.server_log.empty() && o.server_command.empty()) usage_error("--server-log is for a server we start (a command after --)");
  if (o.hard_cap_s <= 0) usage_error("--hard-cap must be positive");
  if (o.attach_pid > 0 && kill(o.attach_pid, 0) != 0 && errno == ESRCH)
    usage_error("--attach-pid " + std::to_string(o.attach_pid) + ": no such process");
  if (o.think_max_ms > 0 && o.mode != load_mode::http_keepalive && o.mode != load_mode::udp_session)
    usage_error("--think-ms is for http-keepalive and udp-session: other modes have no idle connection to keep");
  return o;
}

}  // namespace harness
