#include "grace/uv/fd_channel.hpp"

#include "../failure.hpp"
#include "handle.hpp"

namespace grace::uv {

struct fd_channel::handles {
  detail::owned_handle<uv_poll_t> poll;
  detail::owned_handle<uv_timer_t> timer;
  int events = -1;  // what the poll watches now
  int init_error = 0;
};

namespace {

using clock = std::chrono::steady_clock;

// A callback run inside a step may have destroyed the channel; its handles are closing then.
bool destroyed(void* handle) { return uv_is_closing(static_cast<uv_handle_t*>(handle)) != 0; }

}  // namespace

fd_channel::fd_channel(uv_loop_t* loop, grace::fd_channel channel)
    : channel_(std::move(channel)), handles_(std::make_unique<handles>()) {
  // A handle that cannot be made stays null: adopt() reports why.
  const int poll_rc = handles_->poll.init([&](uv_poll_t* p) { return uv_poll_init(loop, p, channel_.fd()); }, this);
  const int timer_rc = handles_->timer.init([&](uv_timer_t* t) { return uv_timer_init(loop, t); }, this);
  handles_->init_error = poll_rc != 0 ? poll_rc : timer_rc;
}

result<std::unique_ptr<fd_channel>> fd_channel::adopt(uv_loop_t* loop, int fd, const channel_options& options) {
  auto channel = grace::fd_channel::adopt(fd, options);
  if (!channel) return tl::unexpected(channel.error());
  std::unique_ptr<fd_channel> c(new fd_channel(loop, std::move(*channel)));
  if (c->handles_->init_error != 0)
    return grace::detail::fail(errc::invalid_argument, "fd channel: libuv would not watch fd " + std::to_string(fd) +
                                                           ": " + uv_strerror(c->handles_->init_error));
  c->rearm();
  return c;
}

// The handles close first, so that libuv stops watching the fd before the channel closes it.
fd_channel::~fd_channel() { handles_.reset(); }

void fd_channel::send(outgoing_parcel p, std::chrono::milliseconds timeout, send_callback done) {
  if (!handles_) {
    done(grace::detail::fail(errc::channel_closed, "fd channel: released"));
    return;
  }
  auto* poll = handles_->poll.get();
  channel_.send_async(std::move(p), clock::now() + timeout, std::move(done));
  if (!destroyed(poll)) rearm();
}

int fd_channel::release() noexcept {
  handles_.reset();
  return channel_.release();
}

void fd_channel::on_parcel(parcel_callback cb) { channel_.set_parcel_callback(std::move(cb)); }

const peer_credentials& fd_channel::peer() const noexcept { return channel_.peer(); }
channel_stats fd_channel::stats() const noexcept { return channel_.stats(); }

void fd_channel::rearm() {
  if (!handles_) return;
  if (channel_.ended()) {
    uv_poll_stop(handles_->poll.get());
    uv_timer_stop(handles_->timer.get());
    handles_->events = 0;
    return;
  }
  const int events = UV_READABLE | (channel_.wants_write() ? UV_WRITABLE : 0);
  if (events != handles_->events) {
    // A poll that could not start is tried again at the next rearm (a timer or a call).
    handles_->events = uv_poll_start(handles_->poll.get(), events, [](uv_poll_t* p, int status, int ready) {
      auto* self = static_cast<fd_channel*>(p->data);
      if (status < 0) ready = UV_READABLE;  // the read says what went wrong
      if (ready & UV_READABLE) self->channel_.on_readable();
      if (destroyed(p)) return;
      if (ready & UV_WRITABLE) self->channel_.on_writable();
      if (destroyed(p)) return;
      self->rearm();
    }) == 0 ? events : -1;
  }
  if (auto wake = channel_.next_wakeup()) {
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(*wake - clock::now()).count();
    // An initialised timer always starts (only a closing one refuses, and a closing channel
    // does not rearm).
    (void)uv_timer_start(
        handles_->timer.get(),
        [](uv_timer_t* t) {
          auto* self = static_cast<fd_channel*>(t->data);
          self->channel_.on_timer();
          if (!destroyed(t)) self->rearm();
        },
        static_cast<std::uint64_t>(std::max<long long>(wait, 0)) + 1, 0);
  } else {
    uv_timer_stop(handles_->timer.get());
  }
}

}  // namespace grace::uv
