#include "successor.hpp"

namespace grace::uv::detail {

successor_watch::successor_watch(uv_loop_t* loop, std::chrono::milliseconds ready_timeout,
                                 std::chrono::milliseconds watch_time, hooks h)
    : loop_(loop), ready_timeout_(ready_timeout), watch_time_(watch_time), hooks_(std::move(h)) {}

successor_watch::~successor_watch() {
  ready_poll_.reset();
  exit_poll_.reset();
  successor_poll_.reset();
  ready_timer_.reset();
  watch_timer_.reset();
  pending_.reset();  // killed and reaped, blocking
  successor_.reset();  // left running
  reaping_.clear();
}

void successor_watch::wait_for(pending_child p) {
  kill_reason_.clear();
  pending_.emplace(std::move(p));
  auto on_event = [](uv_poll_t* poll, int, int) { static_cast<successor_watch*>(poll->data)->on_pending_event(); };
  auto watched = start_poll(ready_poll_, loop_, pending_->ready_fd(), this, UV_READABLE | UV_DISCONNECT, on_event,
                            "readiness socket");
  if (watched && pending_->pid_fd() >= 0)
    watched = start_poll(exit_poll_, loop_, pending_->pid_fd(), this, UV_READABLE, on_event, "pidfd");
  if (watched)
    watched = start_timer(
        ready_timer_, loop_, this,
        [](uv_timer_t* t) {
          auto* self = static_cast<successor_watch*>(t->data);
          // One this process cannot see (another pid namespace) cannot be killed: it is told.
          self->kill_pending("was not ready within " + std::to_string(self->ready_timeout_.count()) + " ms and " +
                             (self->pending_->pid() > 0 ? "was killed"
                                                        : "was told it lost the takeover (it runs in another pid "
                                                          "namespace: it cannot be killed from here)"));
        },
        static_cast<uint64_t>(ready_timeout_.count()), 0, "ready timer");
  if (!watched) return kill_pending("could not be watched (" + watched.error().message() + ") and was killed");
  // It may be ready already: a child started on a helper thread is known here only when the
  // loop reaches the helper's word, behind every client that was ready before it; by then the
  // child has usually said it is ready. Its poll would report that behind every client again,
  // and even a 0 ms timer waits until the loop has polled (a busy loop polls for up to about 48
  // batches of 1,024 events in a row): it is looked at now. settled() may run from here.
  on_pending_event();
}

void successor_watch::on_pending_event() {
  if (auto outcome = pending_->check()) settle(*outcome);
}

void successor_watch::kill_pending(const std::string& reason) {
  if (!pending_) return;
  kill_reason_ = reason;
  pending_->kill_pending();
  settle(upgrade_outcome::timed_out);
}

void successor_watch::settle(upgrade_outcome outcome) {
  // The polls must let go of the fds before pending_child closes them.
  ready_poll_.reset();
  exit_poll_.reset();
  ready_timer_.reset();
  pending_child settled = std::move(*pending_);
  pending_.reset();
  hooks_.settled(outcome, std::move(settled), std::exchange(kill_reason_, std::string()));
}

void successor_watch::watch(pending_child successor) {
  if (successor.pid_fd() < 0) return;  // nothing to watch it with
  successor_.emplace(std::move(successor));
  auto watched = start_poll(successor_poll_, loop_, successor_->pid_fd(), this, UV_READABLE,
                            [](uv_poll_t* p, int, int) { static_cast<successor_watch*>(p->data)->on_successor_event(); },
                            "successor's pidfd");
  if (!watched) {
    successor_.reset();  // left running, unwatched: as without a pidfd
    return;
  }
  if (watch_time_.count() == 0) return;
  auto timed = start_timer(
      watch_timer_, loop_, this,
      [](uv_timer_t* t) {
        auto* self = static_cast<successor_watch*>(t->data);
        self->watch_timer_.reset();
        self->hooks_.watch_over();
      },
      static_cast<uint64_t>(watch_time_.count()), 0, "successor watch timer");
  (void)timed;  // without the timer, the watch lasts while this process drains, as with 0
}

void successor_watch::on_successor_event() {
  const pid_t pid = successor_->pid();
  uv_poll_t* poll = successor_poll_.get();
  uv_poll_stop(poll);  // before successor_exit() can close the pidfd
  auto retired = successor_->successor_exit();
  if (!retired) {
    if (uv_poll_start(poll, UV_READABLE, [](uv_poll_t* p, int, int) {
          static_cast<successor_watch*>(p->data)->on_successor_event();
        }) != 0)
      let_go();
    return;
  }
  const int status = successor_->exit_status();
  successor_poll_.reset();
  watch_timer_.reset();
  successor_.reset();
  hooks_.successor_exited(pid, status, *retired);
}

void successor_watch::let_go() {
  successor_poll_.reset();
  watch_timer_.reset();
  successor_.reset();
}

void successor_watch::reap_later(pending_child p, std::function<void(const pending_child&)> on_reaped) {
  if (p.reaped() || p.pid_fd() < 0) {
    if (!p.reaped()) p.give_up();  // no pidfd (kernel before 5.3): reap by waiting
    on_reaped(p);
    return;
  }
  reaping_.push_back(reaping{this, std::move(p), std::move(on_reaped), {}});
  auto it = std::prev(reaping_.end());
  if (!start_poll(it->exit_poll, loop_, it->child.pid_fd(), &*it, UV_READABLE, on_reapable, "pidfd")) {
    // No poll: reap by waiting, as without a pidfd.
    it->child.give_up();
    auto done = std::move(it->on_reaped);
    done(it->child);
    reaping_.erase(it);
  }
}

void successor_watch::on_reapable(uv_poll_t* p, int, int) {
  auto* r = static_cast<reaping*>(p->data);
  // The poll lets go of the pidfd before check() can close it.
  uv_poll_stop(p);
  r->child.check();
  if (!r->child.reaped() && uv_poll_start(p, UV_READABLE, on_reapable) == 0) return;
  if (!r->child.reaped()) r->child.give_up();
  r->exit_poll.reset();
  auto done = std::move(r->on_reaped);
  done(r->child);
  r->owner->reaping_.remove_if([r](const reaping& each) { return &each == r; });
}

}  // namespace grace::uv::detail
