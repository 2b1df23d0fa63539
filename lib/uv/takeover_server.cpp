#include "takeover_server.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "../failure.hpp"
#include "grace/takeover.hpp"

namespace grace::uv::detail {
namespace {

using namespace std::chrono_literals;

constexpr auto exchange_timeout = 10s;
constexpr auto refusal_timeout = 2s;
// A taker says hello as soon as it is connected: a peer silent for longer is no taker.
constexpr auto hello_deadline = 2s;
// Peers connected and silent at once, at most; more are hung up on at once.
constexpr std::size_t max_greeting = 8;
constexpr std::size_t max_refusing = 8;
constexpr auto peer_warning_interval = 10s;
constexpr unsigned peer_warnings_per_interval = 5;
const char* const handover_name = "grace-handover";

std::string octal(unsigned mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", mode & 07777);
  return text;
}

result<void> check_private_directory(const std::string& socket_path) {
  const std::string dir = socket_path.substr(0, socket_path.find_last_of('/'));
  const std::string shown = "hand-over socket " + socket_path + ": directory " + (dir.empty() ? "/" : dir);
  if (dir.empty()) return grace::detail::fail(errc::invalid_argument, shown + " is not one this user owns");
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT || ::mkdir(dir.c_str(), 0700) != 0 || ::stat(dir.c_str(), &st) != 0)
      return grace::detail::fail_errno(errno, shown);
  }
  if (!S_ISDIR(st.st_mode)) return grace::detail::fail(errc::invalid_argument, shown + " is not a directory");
  if (st.st_uid != geteuid() || (st.st_mode & 022) != 0)
    return grace::detail::fail(errc::invalid_argument,
                               shown + " must be owned by uid " + std::to_string(geteuid()) +
                                   " and writable by nobody else (it is owned by uid " + std::to_string(st.st_uid) +
                                   ", mode " + octal(st.st_mode) + ")");
  return {};
}

}  // namespace

result<grace::listener*> open_handover_socket(grace::net& net, const std::string& path) {
  if (path.empty()) return grace::detail::fail(errc::invalid_argument, "hand-over socket: empty path");
  std::string absolute = path;
  if (path[0] != '@' && path[0] != '/') absolute = grace::net::startup_directory() + "/" + path;
  grace::listen_options options;
  options.name = handover_name;
  options.backlog = 16;
  if (absolute[0] == '/') {
    // An inherited or taken-over socket is claimed as it is; only a fresh one needs the checks,
    // but they are cheap and say early what is wrong with the directory.
    if (auto ok = check_private_directory(absolute); !ok) return tl::unexpected(ok.error());
  }
  auto l = net.listen_unix("unixpacket", absolute, options);
  if (!l) return grace::detail::fail(l.error().code(), "hand-over socket: " + l.error().message());
  if (absolute[0] == '/' && !(*l)->inherited() && ::chmod(absolute.c_str(), 0600) != 0)
    return grace::detail::fail_errno(errno, "hand-over socket " + absolute + ": chmod 0600");
  return *l;
}

takeover_server::takeover_server(uv_loop_t* loop, grace::net& net, grace::listener* socket,
                                 grace::channel_options channel, unsigned max_generations, hooks h)
    : loop_(loop),
      net_(net),
      fd_(socket->fd()),
      address_(socket->address()),
      channel_options_(std::move(channel)),
      max_generations_(max_generations),
      hooks_(std::move(h)) {
  // A taker sends a hello and confirmations, never fds.
  channel_options_.max_fds_per_parcel = 0;
}

result<std::unique_ptr<takeover_server>> takeover_server::open(uv_loop_t* loop, grace::net& net,
                                                               grace::listener* socket,
                                                               grace::channel_options channel,
                                                               unsigned max_generations, hooks h) {
  std::unique_ptr<takeover_server> server(
      new takeover_server(loop, net, socket, std::move(channel), max_generations, std::move(h)));
  const int rc =
      server->poll_.init([&](uv_poll_t* p) { return uv_poll_init(loop, p, server->fd_); }, server.get());
  if (auto made = uv_result(rc, "hand-over socket " + server->address_ + ": poll"); !made)
    return tl::unexpected(made.error());
  return server;
}

// The handles let go of the fds before the channels close them.
takeover_server::~takeover_server() {
  poll_.reset();
  retry_timer_.reset();
  candidate_timer_.reset();
  greeting_.clear();
}

pid_t takeover_server::busy_with() const noexcept { return candidate_ ? candidate_pid_ : 0; }

void takeover_server::start_accepting() {
  if (accepting_ || !poll_) return;
  accepting_ = true;
  if (paused_) return;  // the retry timer starts the poll again
  const int rc = uv_poll_start(poll_.get(), UV_READABLE,
                               [](uv_poll_t* p, int, int) { static_cast<takeover_server*>(p->data)->accept_ready(); });
  if (rc != 0) {
    accepting_ = false;
    hooks_.warn(uv_result(rc, "hand-over socket " + address_ + ": poll").error().message());
  }
}

void takeover_server::stop_accepting() {
  if (!accepting_) return;
  accepting_ = false;
  uv_poll_stop(poll_.get());
}

void takeover_server::warn_about_peer(const std::string& message) {
  if (allow_peer_line()) hooks_.warn(message);
}

bool takeover_server::allow_peer_line() {
  // Anyone who may connect could otherwise write this process's log at will.
  const auto now = std::chrono::steady_clock::now();
  if (now - warn_window_ >= peer_warning_interval) {
    if (not_shown_ != 0)
      hooks_.warn("hand-over socket " + address_ + ": " + std::to_string(not_shown_) +
                  " more warning(s) about peers not shown");
    warn_window_ = now;
    warned_in_window_ = 0;
    not_shown_ = 0;
  }
  if (warned_in_window_ < peer_warnings_per_interval) {
    ++warned_in_window_;
    return true;
  }
  ++not_shown_;
  return false;
}

void takeover_server::accept_ready() {
  for (int i = 0; i < 8 && accepting_; ++i) {
    const int fd = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) return pause_accepting(errno);
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
        warn_about_peer("hand-over socket " + address_ + ": accept: " + std::strerror(errno));
      if (errno == EAGAIN || errno == EWOULDBLOCK) retry_ms_ = 0;
      return;
    }
    auto c = fd_channel::adopt(loop_, fd, channel_options_);
    if (!c) {
      warn_about_peer("hand-over socket " + address_ + ": " + c.error().message());
      continue;
    }
    if (greeting_.size() >= max_greeting) {
      // The oldest silent peer goes, so that silent peers renewing themselves cannot keep a real
      // taker out: a taker says hello as soon as it is connected.
      warn_about_peer("hand-over socket " + address_ + ": " + std::to_string(max_greeting) +
                      " peers have not said hello yet; hung up on the oldest, pid " +
                      std::to_string(greeting_.front().channel->peer().pid));
      greeting_.pop_front();
    }
    greet(std::move(*c));
  }
}

// Out of fds (or memory): the connection waits in the socket's queue, and the poll, which would
// fire again at once, waits for a timer.
void takeover_server::pause_accepting(int err) {
  retry_ms_ = retry_ms_ == 0 ? 50 : std::min(retry_ms_ * 2, 1000u);
  warn_about_peer("hand-over socket " + address_ + ": accept: " + std::strerror(err) + "; trying again in " +
                  std::to_string(retry_ms_) + " ms");
  uv_poll_stop(poll_.get());
  paused_ = true;
  auto timed = start_timer(
      retry_timer_, loop_, this,
      [](uv_timer_t* t) {
        auto* self = static_cast<takeover_server*>(t->data);
        self->retry_timer_.reset();
        self->paused_ = false;
        if (!self->accepting_) return;
        self->accepting_ = false;
        self->start_accepting();
      },
      retry_ms_, 0, "accept retry timer");
  if (!timed) {
    // No timer: accept again now, as before, rather than never.
    paused_ = false;
    const bool was = std::exchange(accepting_, false);
    if (was) start_accepting();
  }
}

void takeover_server::greet(std::unique_ptr<fd_channel> c) {
  greeting_.push_back(greeting{this, std::move(c), {}});
  auto g = std::prev(greeting_.end());
  g->channel->on_parcel([this, g](result<parcel> p) { on_hello(g, std::move(p)); });
  auto timed = start_timer(
      g->deadline, loop_, &*g,
      [](uv_timer_t* t) {
        auto* silent = static_cast<greeting*>(t->data);
        silent->owner->hang_up_silent(silent);
      },
      static_cast<uint64_t>(std::chrono::milliseconds(hello_deadline).count()), 0, "hello timer");
  if (!timed) {
    warn_about_peer("hand-over socket " + address_ + ": " + timed.error().message() + "; hung up on pid " +
                    std::to_string(g->channel->peer().pid));
    greeting_.erase(g);
  }
}

void takeover_server::hang_up_silent(greeting* g) {
  auto it = std::find_if(greeting_.begin(), greeting_.end(), [g](const greeting& each) { return &each == g; });
  if (it == greeting_.end()) return;
  warn_about_peer("hand-over socket " + address_ + ": pid " + std::to_string(it->channel->peer().pid) +
                  " said nothing within " + std::to_string(std::chrono::milliseconds(hello_deadline).count()) +
                  " ms; hung up on it");
  greeting_.erase(it);
}

void takeover_server::drop_candidate() {
  candidate_timer_.reset();
  candidate_.reset();
  candidate_pid_ = 0;
}

void takeover_server::on_hello(greeting_list::iterator g, result<parcel> hello) {
  std::unique_ptr<fd_channel> c = std::move(g->channel);
  const pid_t pid = c->peer().pid;
  greeting_.erase(g);  // its timer with it; `c` may be inside its own callback: allowed
  if (!hello) {
    warn_about_peer("hand-over socket " + address_ + ": pid " + std::to_string(pid) + ": " + hello.error().message());
    return;
  }
  if (!is_takeover_hello(*hello))
    return refuse(std::move(c), "this is a grace hand-over socket; the first message must be its hello");
  if (candidate_) {
    const std::string why = "another takeover (pid " + std::to_string(candidate_pid_) + ") is in progress";
    refused(pid, why);
    return refuse(std::move(c), why);
  }
  std::optional<std::string> why = hooks_.cannot_hand_over(pid);
  const bool same_namespace = in_this_pid_namespace(pid);
  std::optional<outgoing_parcel> offer;
  if (!why) {
    auto made = takeover_offer(net_, max_generations_, hooks_.offers_connections && hooks_.offers_connections(),
                               same_namespace, hooks_.offers_flows && hooks_.offers_flows());
    if (made) offer = std::move(*made);
    else why = made.error().message();
  }
  if (why) {
    refused(pid, *why);
    return refuse(std::move(c), *why);
  }
  candidate_ = std::move(c);
  candidate_pid_ = pid;
  auto timed = start_timer(
      candidate_timer_, loop_, this,
      [](uv_timer_t* t) {
        auto* self = static_cast<takeover_server*>(t->data);
        self->hooks_.warn("hand-over socket " + self->address_ + ": pid " + std::to_string(self->candidate_pid_) +
                          " did not complete its takeover within 10 s; hung up on it");
        self->drop_candidate();
      },
      static_cast<uint64_t>(std::chrono::milliseconds(exchange_timeout).count()), 0, "takeover timer");
  if (!timed) {
    hooks_.warn("hand-over socket " + address_ + ": " + timed.error().message() + "; hung up on pid " +
                std::to_string(pid));
    return drop_candidate();
  }
  candidate_->on_parcel([this, pid](result<parcel> p) {
    // Nothing more is expected before the listeners are confirmed.
    hooks_.warn("hand-over socket " + address_ + ": pid " + std::to_string(pid) + ": " +
                (p ? std::string("an unexpected message") : p.error().message()));
    drop_candidate();
  });
  candidate_->send(std::move(*offer), exchange_timeout, [this, pid, same_namespace](result<void> sent) {
    if (!sent) {
      hooks_.warn("hand-over socket " + address_ + ": pid " + std::to_string(pid) +
                  " did not take the listeners: " + sent.error().message());
      drop_candidate();
      return;
    }
    // From here the connection speaks the readiness protocol: its next word is "ready".
    const int ready_fd = candidate_->release();
    drop_candidate();
    hooks_.took_listeners(pid, ready_fd, same_namespace);
  });
}

// A refusal is logged as the peer warnings are: a few per interval, the rest counted.
void takeover_server::refused(pid_t pid, const std::string& why) {
  if (allow_peer_line()) hooks_.refused(pid, why);
}

void takeover_server::refuse(std::unique_ptr<fd_channel> c, const std::string& why) {
  if (!c) return;
  // Each refusal waits for its confirmation (2 s at most); beyond a few at once the peer just
  // hears the hang-up.
  if (refusing_.size() >= max_refusing) return;
  refusing_.push_back(std::move(c));
  auto it = std::prev(refusing_.end());
  (*it)->on_parcel([](result<parcel>) {});
  (*it)->send(takeover_refusal(why), refusal_timeout, [this, it](result<void>) { refusing_.erase(it); });
}

}  // namespace grace::uv::detail
