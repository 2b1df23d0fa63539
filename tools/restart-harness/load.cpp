#include "load.hpp"

#include "http_response.hpp"

#include <sys/stat.h>

#include <cstdlib>
#include <string>

namespace harness {

// One client: connect (when it has no connection), send one request, read the whole answer,
// check it, think (--think-ms), and start over. A connection the server closes while no request
// is outstanding is simply reopened; one closed under a request loses that request, in the
// category that says how (outcome).
class client {
 public:
  client(load_generator& g, unsigned index) : gen_(g), index_(index) {
    uv_timer_init(g.loop_, &timer_);
    timer_.data = this;
  }
  ~client() = default;
  void begin();
  void shutdown() {
    close_connection();
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
  }
  // A client with no request in flight stops here (its back-off timer too); true if it did.
  bool halt_if_idle() {
    if (outstanding_) return false;
    uv_timer_stop(&timer_);
    return true;
  }

 private:
  void connect();
  void send_request();
  // udp-echo: a connected UDP socket per client, a datagram per request.
  void open_udp();
  void send_datagram();
  void send_sent();  // sent_, as one datagram
  void on_datagram(ssize_t nread, const uv_buf_t* buf);
  // udp-session: HELLO, DATA n = 1, 2, 3 ..., BYE after --session-ms; a socket per session.
  void send_session_datagram();
  void on_session_answer(const std::string& got);
  // No answer (a timeout, or a refusal): for udp-session the session breaks, or never opened.
  void give_up(outcome o);
  void on_read(ssize_t nread, const uv_buf_t* buf);
  void finish(outcome o, pid_t served_by, bool keep_connection);
  void close_connection();
  // Before any answer byte: how the connection ended, and whether it had carried an answer.
  outcome ended_before_answer(bool reset) const {
    if (reused_) return reset ? outcome::reused_reset : outcome::reused_closed;
    return reset ? outcome::new_reset : outcome::new_closed;
  }

  load_generator& gen_;
  uv_timer_t timer_{};
  uv_any_handle* conn_ = nullptr;
  uv_udp_t* udp_ = nullptr;
  std::uint64_t sequence_ = 0;  // udp-echo: the number in the datagram now outstanding
  uv_connect_t connect_req_{};
  bool outstanding_ = false;
  bool reused_ = false;  // the request went out on a connection that had carried an answer
  connection_key key_ = 0;  // once connected: see connection_key
  unsigned answers_on_connection_ = 0;
  std::uint64_t start_us_ = 0;
  std::string input_;
  std::string sent_;  // echo payload
  // udp-session
  enum class step : std::uint8_t { hello, data, bye } step_ = step::hello;
  std::string sid_;           // the session's id, once SESSION named it
  std::uint64_t n_ = 0;       // the last DATA number sent in it
  std::uint64_t opened_us_ = 0;
  unsigned index_ = 0;        // this client's number, in its tokens
  std::uint64_t sessions_ = 0;  // sessions this client has begun
  bool session_completed_ = false;  // the answer being recorded was BYE's
};

namespace {

// The client's local port (TCP) or its socket's inode (unix): how the referee finds the
// server's end of the connection.
connection_key connection_key_of(uv_stream_t* stream, const grace::socket_address& target,
                                 std::optional<grace::socket_address>& local_address) {
  if (target.family() == AF_UNIX) {
    uv_os_fd_t fd = -1;
    struct stat st {};
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(stream), &fd) != 0 || fstat(fd, &st) != 0) return 0;
    return static_cast<connection_key>(st.st_ino);
  }
  sockaddr_storage local{};
  int len = sizeof local;
  if (uv_tcp_getsockname(reinterpret_cast<uv_tcp_t*>(stream), reinterpret_cast<sockaddr*>(&local), &len) != 0) return 0;
  auto address = grace::socket_address::from_sockaddr(reinterpret_cast<sockaddr*>(&local), static_cast<socklen_t>(len));
  if (!address) return 0;
  if (!local_address) local_address = *address;
  return address->port();
}

std::string http_request(const options& o) {
  std::string request = o.method + " " + o.path + " HTTP/1.1\r\nHost: " + o.host + "\r\n";
  for (const auto& header : o.headers) request += header + "\r\n";
  if (o.mode == load_mode::http_close) request += "Connection: close\r\n";
  if (o.body_bytes > 0) request += "Content-Length: " + std::to_string(o.body_bytes) + "\r\n";
  request += "\r\n";
  request.append(o.body_bytes, 'x');
  return request;
}

pid_t pid_in(const std::string& body) {
  const auto at = body.find("pid=");
  return at == std::string::npos ? 0 : static_cast<pid_t>(std::atol(body.c_str() + at + 4));
}

}  // namespace

void client::begin() {
  if (gen_.stopping_) {
    gen_.client_idle();
    return;
  }
  outstanding_ = true;
  reused_ = conn_ != nullptr && answers_on_connection_ > 0;
  start_us_ = now_us();
  input_.clear();
  uv_timer_start(&timer_,
                 [](uv_timer_t* t) {
                   static_cast<client*>(t->data)->give_up(outcome::timeout);
                 },
                 static_cast<std::uint64_t>(gen_.options_.timeout_s * 1000), 0);
  if (gen_.options_.mode == load_mode::udp_echo || gen_.options_.mode == load_mode::udp_session) {
    if (udp_ == nullptr) {
      step_ = step::hello;
      open_udp();
    }
    if (udp_ == nullptr) return;
    if (gen_.options_.mode == load_mode::udp_session) send_session_datagram();
    else send_datagram();
    return;
  }
  if (conn_ == nullptr) connect();
  else send_request();
}

void client::open_udp() {
  udp_ = new uv_udp_t;
  uv_udp_init(gen_.loop_, udp_);
  udp_->data = this;
  if (uv_udp_connect(udp_, gen_.options_.target.data()) != 0) {
    close_connection();
    return give_up(outcome::refused);
  }
  uv_udp_recv_start(
      udp_,
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        static thread_local char chunk[65536];
        *buf = uv_buf_init(chunk, sizeof chunk);
      },
      [](uv_udp_t* handle, ssize_t nread, const uv_buf_t* buf, const sockaddr*, unsigned) {
        static_cast<client*>(handle->data)->on_datagram(nread, buf);
      });
}

void client::send_datagram() {
  // The sequence number first, so that a late answer to a datagram given up on is told apart.
  ++sequence_;
  std::uniform_int_distribution<int> length(1, 512), byte(0, 255);
  sent_.assign(reinterpret_cast<const char*>(&sequence_), sizeof sequence_);
  sent_.resize(sizeof sequence_ + static_cast<std::size_t>(length(gen_.random_)));
  for (std::size_t i = sizeof sequence_; i < sent_.size(); ++i) sent_[i] = static_cast<char>(byte(gen_.random_));
  send_sent();
}

void client::send_sent() {
  const uv_buf_t buf = uv_buf_init(sent_.data(), static_cast<unsigned>(sent_.size()));
  // Loopback datagrams go out at once or not at all; one that cannot is lost by a timeout.
  if (uv_udp_try_send(udp_, &buf, 1, nullptr) < 0) {
    auto* req = new uv_udp_send_t;
    auto* copy = new std::string(sent_);
    req->data = copy;
    const uv_buf_t again = uv_buf_init(copy->data(), static_cast<unsigned>(copy->size()));
    if (uv_udp_send(req, udp_, &again, 1, nullptr, [](uv_udp_send_t* r, int) {
          delete static_cast<std::string*>(r->data);
          delete r;
        }) != 0) {
      delete copy;
      delete req;
    }
  }
}

void client::on_datagram(ssize_t nread, const uv_buf_t* buf) {
  if (nread == 0 || !outstanding_) return;  // nothing, or a late answer to one given up on
  if (nread < 0) {
    // ECONNREFUSED: an ICMP port unreachable, nobody has the socket.
    if (nread == UV_ECONNREFUSED) give_up(outcome::refused);
    return;
  }
  const std::string got(buf->base, static_cast<std::size_t>(nread));
  if (gen_.options_.mode == load_mode::udp_session) return on_session_answer(got);
  if (got.size() >= sizeof sequence_ && got.compare(0, sizeof sequence_, sent_, 0, sizeof sequence_) != 0) return;
  finish(got == sent_ ? outcome::ok : outcome::wrong, 0, got == sent_);
}

void client::give_up(outcome o) {
  if (outstanding_ && gen_.options_.mode == load_mode::udp_session) {
    auto& counts = gen_.record_.sessions;
    ++(step_ == step::hello ? counts.hello_failed : counts.broken_no_answer);
  }
  finish(o, 0, false);
}

namespace {

// "A B C" -> {"A", "B", "C"}: the protocol separates its fields by single spaces.
std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> words;
  std::size_t at = 0;
  for (;;) {
    const auto space = text.find(' ', at);
    words.push_back(text.substr(at, space == std::string::npos ? std::string::npos : space - at));
    if (space == std::string::npos) return words;
    at = space + 1;
  }
}

// A pid as a server names it: decimal digits, positive; 0 for anything else.
pid_t pid_word(const std::string& word) {
  if (word.empty() || word.size() > 9 || word.find_first_not_of("0123456789") != std::string::npos) return 0;
  return static_cast<pid_t>(std::atol(word.c_str()));
}

bool is_session_id(const std::string& word) {
  return word.size() == 16 && word.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

// One datagram of the session: HELLO <token>, DATA <sid> <n>, or BYE <sid>.
void client::send_session_datagram() {
  if (step_ == step::hello) sent_ = "HELLO c" + std::to_string(index_) + "-" + std::to_string(++sessions_);
  else if (step_ == step::data) sent_ = "DATA " + sid_ + " " + std::to_string(++n_);
  else sent_ = "BYE " + sid_;
  send_sent();
}

// Every answer is counted once: an answer the session goes on after (SESSION, OK) keeps the
// socket; one that ends it (BYE, or a break) closes it, and the client's next datagram is a
// HELLO on a new socket. UNKNOWN and REPLAY are answers (not lost datagrams) that break the session.
void client::on_session_answer(const std::string& got) {
  const auto w = words_of(got);
  const pid_t pid = w.size() >= 2 ? pid_word(w.back()) : 0;
  auto& counts = gen_.record_.sessions;
  if (step_ == step::hello) {
    if (w.size() == 4 && w[0] == "SESSION" && is_session_id(w[1]) && w[2] == sent_.substr(6) && pid != 0) {
      sid_ = w[1];
      n_ = 0;
      opened_us_ = now_us();
      step_ = step::data;
      ++counts.opened;
      // Before the answer is recorded: a new generation's first SESSION is already its own.
      if (gen_.on_session_opened) gen_.on_session_opened(pid);
      return finish(outcome::ok, pid, true);
    }
    ++counts.hello_failed;
    return finish(outcome::wrong, pid, false);
  }
  if (step_ == step::data) {
    if (w.size() == 4 && w[1] == sid_ && w[2] == std::to_string(n_) && pid != 0) {
      if (w[0] == "OK") {
        // The first sessions are cut short in steps (client k of N: (k+1)/N of --session-ms), so
        // that HELLOs come evenly rather than all at once, and a new generation gets one soon.
        const auto& o = gen_.options_;
        const double length_ms = sessions_ > 1 ? o.session_ms : o.session_ms * (index_ + 1) / o.clients;
        if (static_cast<double>(now_us() - opened_us_) >= length_ms * 1000) step_ = step::bye;
        return finish(outcome::ok, pid, true);
      }
      if (w[0] == "UNKNOWN" || w[0] == "REPLAY") {
        ++(w[0] == "UNKNOWN" ? counts.broken_unknown : counts.broken_replay);
        return finish(outcome::ok, pid, false);
      }
    }
    ++counts.broken_wrong;
    return finish(outcome::wrong, pid, false);
  }
  if (w.size() == 3 && w[0] == "BYE" && w[1] == sid_ && pid != 0) {
    ++counts.completed;
    session_completed_ = true;
    return finish(outcome::ok, pid, false);
  }
  if (w.size() == 4 && w[0] == "UNKNOWN" && w[1] == sid_ && w[2] == "0" && pid != 0) {
    ++counts.broken_unknown;
    return finish(outcome::ok, pid, false);
  }
  ++counts.broken_wrong;
  finish(outcome::wrong, pid, false);
}

void client::connect() {
  conn_ = new uv_any_handle;
  const bool unix_socket = gen_.options_.target.family() == AF_UNIX;
  if (unix_socket) uv_pipe_init(gen_.loop_, &conn_->pipe, 0);
  else {
    uv_tcp_init(gen_.loop_, &conn_->tcp);
    uv_tcp_nodelay(&conn_->tcp, 1);
  }
  conn_->handle.data = this;
  connect_req_.data = this;
  auto on_connect = [](uv_connect_t* req, int status) {
    if (status == UV_ECANCELED) return;  // we closed it ourselves
    auto* self = static_cast<client*>(req->data);
    if (status < 0) {
      const bool refused = status == UV_ECONNREFUSED || status == UV_ENOENT || status == UV_EAGAIN;
      self->finish(refused ? outcome::refused : outcome::new_reset, 0, false);
      return;
    }
    self->key_ = connection_key_of(req->handle, self->gen_.options_.target, self->gen_.local_);
    if (self->key_ != 0 && self->gen_.options_.target.family() != AF_UNIX) self->gen_.live_.insert(self->key_);
    uv_read_start(
        req->handle,
        [](uv_handle_t*, size_t, uv_buf_t* buf) {
          static thread_local char chunk[65536];
          *buf = uv_buf_init(chunk, sizeof chunk);
        },
        [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
          static_cast<client*>(stream->data)->on_read(nread, buf);
        });
    self->send_request();
  };
  if (unix_socket) {
    const std::string path = gen_.options_.target.unix_path();
    // libuv 1.44 has no abstract-namespace connect; a path is what the samples use.
    uv_pipe_connect(&connect_req_, &conn_->pipe, path.c_str(), on_connect);
  } else {
    const int rc = uv_tcp_connect(&connect_req_, &conn_->tcp, gen_.options_.target.data(), on_connect);
    if (rc != 0) finish(outcome::refused, 0, false);
  }
}

void client::send_request() {
  std::string* payload = new std::string;
  if (gen_.options_.mode == load_mode::echo) {
    std::uniform_int_distribution<int> length(1, 512), byte(0, 255);
    sent_.resize(static_cast<std::size_t>(length(gen_.random_)));
    for (auto& c : sent_) c = static_cast<char>(byte(gen_.random_));
    *payload = sent_;
  } else {
    *payload = gen_.request_;
  }
  auto* req = new uv_write_t;
  req->data = payload;
  const uv_buf_t buf = uv_buf_init(payload->data(), static_cast<unsigned>(payload->size()));
  const int rc = uv_write(req, &conn_->stream, &buf, 1, [](uv_write_t* r, int) {
    // A failed write shows up on the read side (reset or EOF) or as a timeout.
    delete static_cast<std::string*>(r->data);
    delete r;
  });
  if (rc != 0) {
    delete payload;
    delete req;
    finish(ended_before_answer(true), 0, false);
  }
}

void client::on_read(ssize_t nread, const uv_buf_t* buf) {
  if (nread > 0) {
    if (!outstanding_) return;  // nothing asked; nothing to check
    input_.append(buf->base, static_cast<std::size_t>(nread));
  }
  const bool at_eof = nread < 0;
  if (!outstanding_) {
    // The server ended an idle connection: reopen it for the next request, no loss.
    if (at_eof) {
      ++gen_.record_.server_ended_idle;
      close_connection();
    }
    return;
  }
  outcome o = outcome::ok;
  pid_t pid = 0;
  bool keep = false, complete = false;
  if (gen_.options_.mode == load_mode::echo) {
    complete = input_.size() >= sent_.size();
    if (complete) {
      o = input_.compare(0, sent_.size(), sent_) == 0 && input_.size() == sent_.size() ? outcome::ok : outcome::wrong;
      keep = o == outcome::ok;
    }
  } else {
    const http_response r = parse_http_response(input_, at_eof, gen_.options_.method == "HEAD");
    complete = r.complete;
    if (complete) {
      o = r.status_ok && !r.malformed ? outcome::ok : outcome::wrong;
      pid = pid_in(r.body);
      // Anything after the answer was not asked for: the connection cannot be trusted further.
      keep = !r.malformed && !r.server_closes && r.consumed == input_.size() &&
             gen_.options_.mode == load_mode::http_keepalive;
      if (r.server_closes && gen_.options_.mode == load_mode::http_keepalive) ++gen_.record_.server_ended_after_answer;
    }
  }
  if (complete) return finish(o, pid, keep && !at_eof);
  // UV_EOF is the server's FIN; anything else (ECONNRESET) is a reset.
  if (at_eof) finish(input_.empty() ? ended_before_answer(nread != UV_EOF) : outcome::partial, 0, false);
}

void client::finish(outcome o, pid_t served_by, bool keep_connection) {
  if (!outstanding_) return;
  outstanding_ = false;
  uv_timer_stop(&timer_);
  // Without a pid in the answer, the process the referee saw holding this connection.
  if (served_by == 0 && o == outcome::ok && key_ != 0 && gen_.owner_of_port) served_by = gen_.owner_of_port(key_);
  // udp-session: a session that does not go on after this datagram, other than by a BYE
  // answered (or a HELLO that opened none: no session to break), broke here.
  const bool broke = gen_.options_.mode == load_mode::udp_session && !keep_connection && step_ != step::hello &&
                     !(o == outcome::ok && session_completed_);
  session_completed_ = false;
  gen_.record(start_us_, o, served_by, broke);
  if (o == outcome::ok) {
    ++answers_on_connection_;
    if (key_ != 0 && gen_.on_answer_at_port) gen_.on_answer_at_port(key_);
  }
  const unsigned limit = gen_.options_.requests_per_connection;
  if (keep_connection && limit != 0 && answers_on_connection_ >= limit) keep_connection = false;
  if (!keep_connection) close_connection();
  if (gen_.stopping_) {
    gen_.client_idle();
    return;
  }
  if (o == outcome::refused) {
    // Back off a moment: a server that is down would otherwise be hammered in a hot loop.
    uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<client*>(t->data)->begin(); }, 1, 0);
    return;
  }
  const auto& opts = gen_.options_;
  if ((keep_connection || opts.mode == load_mode::udp_session) && opts.think_max_ms > 0) {
    // Idle on the open connection, as a browser or a pool would: a server may close it now.
    // udp-session: idle between datagrams, which a server's idle timeout must allow for.
    std::uniform_real_distribution<double> think(opts.think_min_ms, opts.think_max_ms);
    uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<client*>(t->data)->begin(); },
                   static_cast<std::uint64_t>(think(gen_.random_)), 0);
    return;
  }
  begin();
}

void client::close_connection() {
  if (udp_ != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(udp_), [](uv_handle_t* h) { delete reinterpret_cast<uv_udp_t*>(h); });
    udp_ = nullptr;
  }
  if (conn_ == nullptr) return;
  uv_close(&conn_->handle, [](uv_handle_t* h) { delete reinterpret_cast<uv_any_handle*>(h); });
  conn_ = nullptr;
  answers_on_connection_ = 0;
  if (key_ != 0) gen_.live_.erase(key_);
  if (key_ != 0 && gen_.on_port_closed) gen_.on_port_closed(key_);
  key_ = 0;
}

load_generator::load_generator(uv_loop_t* loop, const options& o, run_record& record)
    : loop_(loop), options_(o), record_(record) {}

load_generator::~load_generator() = default;

client_ports load_generator::live_ports() const {
  client_ports ours;
  ours.local = local_;
  if (live_.size() <= max_looked_up) ours.ports.assign(live_.begin(), live_.end());  // else: a dump
  return ours;
}

void load_generator::start() {
  request_ = http_request(options_);
  for (unsigned i = 0; i < options_.clients; ++i) clients_.push_back(std::make_unique<client>(*this, i));
  for (auto& c : clients_) c->begin();
}

void load_generator::stop(std::function<void()> done) {
  stopping_ = true;
  on_stopped_ = std::move(done);
  idle_clients_ = 0;
  for (auto& c : clients_)
    if (c->halt_if_idle()) ++idle_clients_;
  finish_if_stopped();
}

void load_generator::client_idle() {
  ++idle_clients_;
  finish_if_stopped();
}

void load_generator::finish_if_stopped() {
  if (idle_clients_ < clients_.size() || !on_stopped_) return;
  for (auto& c : clients_) c->shutdown();
  auto done = std::move(on_stopped_);
  on_stopped_ = nullptr;
  done();
}

void load_generator::record(std::uint64_t start_us, outcome o, pid_t served_by, bool broke_session) {
  const std::uint64_t end = now_us();
  record_.requests.push_back({end - record_.start_us, static_cast<std::uint32_t>(end - start_us), o, served_by, broke_session});
  if (o == outcome::ok) ++answered_;
  else ++lost_;
  if (served_by != 0 && on_served_by) on_served_by(served_by);
}

}  // namespace harness
