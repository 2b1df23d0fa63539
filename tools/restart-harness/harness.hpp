#pragma once
// restart-harness: drives a server under load while restarting it, and proves that no request
// was lost. The pieces: options (command line), load (libuv clients), server_control (start,
// signal, follow generations), report (summary, JSON, SVG timeline).
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "grace/address.hpp"

namespace harness {

enum class load_mode { http_keepalive, http_close, echo, udp_echo, udp_session };
inline bool is_http(load_mode m) { return m == load_mode::http_keepalive || m == load_mode::http_close; }

struct options {
  std::string target_text;
  grace::socket_address target;
  bool udp = false;  // udp://HOST:PORT
  // udp-session: a client ends its session (BYE) this long after its HELLO was answered, and
  // opens a new one, so that sessions span restarts and old generations can finish.
  double session_ms = 1500;
  bool session_ms_set = false;
  unsigned clients = 32;
  load_mode mode = load_mode::http_keepalive;
  unsigned restarts = 10;
  std::optional<double> interval_s;  // none: as soon as the previous generation has taken over
  std::string signal_name = "USR2";
  int signal_number = 0;
  std::string restart_cmd;
  std::string pidfile;
  pid_t attach_pid = 0;
  std::vector<std::string> server_command;
  double duration_s = 0;        // 0: until the restarts are done (plus settle time)
  double hard_cap_s = 300;      // never run longer than this
  // Answers after which a client closes its connection and opens a new one; 0 for never.
  // Echo has no way for a server to end a connection between requests, so echo clients
  // rotate (default 100), as real clients eventually do; HTTP servers say "Connection: close".
  unsigned requests_per_connection = 0;
  bool requests_per_connection_set = false;
  double timeout_s = 5;         // a request without an answer after this long is lost
  std::string server_log;       // where the started server's output goes, kept; empty: a temporary file
  double stall_ms = 1000;       // an answer slower than this is a stall (reported, not lost)
  double startup_timeout_s = 10;
  double restart_timeout_s = 30;
  double settle_s = 0.5;        // load before the first and after the last restart
  std::string json_file;
  std::string plot_file;
  bool progress = true;         // only shown on a terminal
  // Keep-alive clients sit idle this long between requests (a random value in [min, max]), as
  // browsers and connection pools do, so that a server closing idle connections is exercised.
  double think_min_ms = 0, think_max_ms = 0;
  // The HTTP request.
  std::string method = "GET";
  std::string path = "/";
  std::string host = "harness";
  std::vector<std::string> headers;  // "Name: value"
  std::size_t body_bytes = 0;        // a body of this many bytes, with its Content-Length
};

inline constexpr double min_timeout_s = 0.01;

// Parses the command line; exits with the help text (0) or a usage error (2).
options parse_options(int argc, char** argv);

// Every request ends in one of these. Only `ok` is an answer; the strict verdict counts all the
// others as lost. "Closed" is a FIN, "reset" an RST; a connection is "reused" once it has
// carried an answer.
enum class outcome : std::uint8_t {
  ok,
  refused,          // connect refused: nobody listened
  new_closed,       // a new connection closed (FIN) before any answer byte
  new_reset,        // a new connection reset before any answer byte
  reused_closed,    // a reused keep-alive connection closed before any answer byte: the idle-close race
  reused_reset,     // the same, with a reset
  partial,          // the connection ended after part of an answer
  timeout,          // no complete answer within --timeout
  wrong,            // a complete answer that was wrong (status, body, echo bytes)
  count
};
const char* outcome_name(outcome o);  // for people: "reset on a new connection"
const char* outcome_key(outcome o);   // for programs: "new_reset"
// A request whose connection failed before any answer byte on a reused HTTP keep-alive
// connection: RFC 9112 section 9.3.1 lets a client retry an idempotent request then.
bool retryable(outcome o, load_mode mode);

struct request_record {
  std::uint64_t end_us;      // since the start of the run
  std::uint32_t latency_us;
  outcome result;
  pid_t served_by;           // pid named in an HTTP answer, 0 when unknown
  bool broke_session = false;  // udp-session: this datagram's session broke (whatever its answer)
};

struct restart_record {
  unsigned index = 0;
  std::uint64_t signal_us = 0;
  std::uint64_t new_answer_us = 0;  // first answer from the new generation (0: never)
  std::uint64_t old_exit_us = 0;    // old generation gone (0: never seen)
  pid_t old_pid = 0;
  pid_t new_pid = 0;
  // The processes that were serving when the signal went out, and when each was gone (0: not).
  std::vector<std::pair<pid_t, std::uint64_t>> old_serving;
  // udp-session: the generation this restart replaced (the one answering HELLOs before it);
  // its answers after new_answer_us are a draining generation's.
  pid_t replaced_pid = 0;
  bool completed = false;
  std::string failure;
};

// udp-session: what became of the sessions. A session is broken by an UNKNOWN or REPLAY answer,
// by no answer within --timeout (or a refusal: nobody held the socket), or by a wrong answer.
struct session_counts {
  std::uint64_t opened = 0;     // HELLO answered with SESSION
  std::uint64_t completed = 0;  // BYE answered with BYE
  std::uint64_t broken_unknown = 0, broken_replay = 0, broken_no_answer = 0, broken_wrong = 0;
  std::uint64_t hello_failed = 0;  // a HELLO without a SESSION answer: no session to break, a datagram lost
  std::uint64_t broken() const { return broken_unknown + broken_replay + broken_no_answer + broken_wrong; }
};

struct run_record {
  std::uint64_t start_us = 0;
  std::uint64_t end_us = 0;
  std::vector<request_record> requests;
  std::vector<restart_record> restarts;
  std::vector<std::string> notes;  // things a person should know (server exited, ...)
  bool aborted = false;
  // http-keepalive: connections the server ended, which cost a client a new connection but no
  // request: while idle, or after an answer that said "Connection: close".
  std::uint64_t server_ended_idle = 0;
  std::uint64_t server_ended_after_answer = 0;
  session_counts sessions;  // udp-session
};

std::uint64_t now_us();  // monotonic

// What identifies one of our connections to the server: the client's local port for TCP, the
// client socket's inode for a unix socket.
using connection_key = std::uint64_t;

}  // namespace harness
