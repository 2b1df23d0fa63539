#include "takeover_server.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "../failure.hpp"

namespace grace::uv::detail {
namespace {

using namespace std::chrono_literals;

constexpr auto exchange_timeout = 10s;
constexpr auto refusal_timeout = 2s;
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
      hooks_(std::move(h)) {}

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
  candidate_timer_.reset();
}

pid_t takeover_server::busy_with() const noexcept { return candidate_ ? candidate_->peer().pid : 0; }

void takeover_server::start_accepting() {
  if (accepting_ || !poll_) return;
  const int rc = uv_poll_start(poll_.get(), UV_READABLE,
                               [](uv_poll_t* p, int, int) { static_cast<takeover_server*>(p->data)->accept_ready(); });
  if (rc != 0) return hooks_.warn(uv_result(rc, "hand-over socket " + address_ + ": poll").error().message());
  accepting_ = true;
}

void takeover_server::stop_accepting() {
  if (!accepting_) return;
  accepting_ = false;
  uv_poll_stop(poll_.get());
}

void takeover_server::accept_ready() {
  for (int i = 0; i < 8 && accepting_; ++i) {
    const int fd = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
        hooks_.warn("hand-over socket " + address_ + ": accept: " + std::strerror(errno));
      return;
    }
    auto c = fd_channel::adopt(loop_, fd, channel_options_);
    if (!c) {
      hooks_.warn("hand-over socket " + address_ + ": " + c.error().message());
      continue;
    }
    if (candidate_) {
      refuse(std::move(*c), "another takeover (pid " + std::to_string(candidate_->peer().pid) + ") is in progress");
      continue;
    }
    candidate_ = std::move(*c);
    candidate_->on_parcel([this](result<parcel> p) { on_hello(std::move(p)); });
    auto timed = start_timer(
        candidate_timer_, loop_, this,
        [](uv_timer_t* t) {
          auto* self = static_cast<takeover_server*>(t->data);
          self->hooks_.warn("hand-over socket " + self->address_ + ": pid " +
                            std::to_string(self->candidate_->peer().pid) +
                            " did not complete its takeover within 10 s; hung up on it");
          self->drop_candidate();
        },
        static_cast<uint64_t>(std::chrono::milliseconds(exchange_timeout).count()), 0, "takeover timer");
    if (!timed) {
      // Without a deadline a silent peer would hold the hand-over socket: nobody is a candidate.
      hooks_.warn("hand-over socket " + address_ + ": " + timed.error().message() + "; hung up on pid " +
                  std::to_string(candidate_->peer().pid));
      drop_candidate();
    }
  }
}

void takeover_server::drop_candidate() {
  candidate_timer_.reset();
  candidate_.reset();
}

void takeover_server::on_hello(result<parcel> hello) {
  const pid_t pid = candidate_->peer().pid;
  if (!hello) {
    hooks_.warn("hand-over socket " + address_ + ": pid " + std::to_string(pid) + ": " + hello.error().message());
    drop_candidate();
    return;
  }
  if (!is_takeover_hello(*hello)) {
    refuse(std::move(candidate_), "this is a grace hand-over socket; the first message must be its hello");
    drop_candidate();
    return;
  }
  std::optional<std::string> why = hooks_.cannot_hand_over();
  std::optional<outgoing_parcel> offer;
  if (!why) {
    auto made = takeover_offer(net_, max_generations_, hooks_.offers_connections && hooks_.offers_connections());
    if (made) offer = std::move(*made);
    else why = made.error().message();
  }
  if (why) {
    hooks_.refused(pid, *why);
    refuse(std::move(candidate_), *why);
    drop_candidate();
    return;
  }
  candidate_->on_parcel([this, pid](result<parcel> p) {
    // Nothing more is expected before the listeners are confirmed.
    hooks_.warn("hand-over socket " + address_ + ": pid " + std::to_string(pid) + ": " +
                (p ? std::string("an unexpected message") : p.error().message()));
    drop_candidate();
  });
  candidate_->send(std::move(*offer), exchange_timeout, [this, pid](result<void> sent) {
    if (!sent) {
      hooks_.warn("hand-over socket " + address_ + ": pid " + std::to_string(pid) +
                  " did not take the listeners: " + sent.error().message());
      drop_candidate();
      return;
    }
    // From here the connection speaks the readiness protocol: its next word is "ready".
    const int ready_fd = candidate_->release();
    drop_candidate();
    hooks_.took_listeners(pid, ready_fd);
  });
}

void takeover_server::refuse(std::unique_ptr<fd_channel> c, const std::string& why) {
  if (!c) return;
  refusing_.push_back(std::move(c));
  auto it = std::prev(refusing_.end());
  (*it)->on_parcel([](result<parcel>) {});
  (*it)->send(takeover_refusal(why), refusal_timeout, [this, it](result<void>) { refusing_.erase(it); });
}

}  // namespace grace::uv::detail
