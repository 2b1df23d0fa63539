#include "charge.hpp"

#include <unistd.h>

#include <algorithm>

#include "../service_notifier.hpp"

namespace grace::uv::detail {
namespace {

// The name a listener is stored under. It comes back as the listener's name in LISTEN_FDNAMES,
// so a stored listener keeps its name from one generation to the next. systemd takes at most
// 255 printable characters without ':'.
std::string store_name(const grace::listener& l) {
  if (!l.name().empty() && l.name() != "unknown") return l.name();
  std::string name = "grace-" + l.address();
  std::replace_if(name.begin(), name.end(), [](char c) { return c == ':' || c <= ' ' || c >= 127; }, '_');
  return name.substr(0, 255);
}

}  // namespace

service_charge::service_charge(uv_loop_t* loop, const std::string& pidfile, hooks h)
    : warn_(std::move(h.warn)),
      written_(std::move(h.written)),
      notifier_(std::make_unique<service_notifier>(loop, warn_)) {
  if (pidfile.empty()) return;
  // The upgrader merges MAINPID with its other notifications: the keeper writes the file only.
  pidfile_ = std::make_unique<grace::charge_keeper>(grace::charge_options{pidfile, false});
  auto watched = start_poll(written_poll_, loop, pidfile_->fd(), this, UV_READABLE,
                            [](uv_poll_t* p, int, int) { static_cast<service_charge*>(p->data)->on_written(); },
                            "pid file " + pidfile);
  // Unwatched, a finished write is noticed by idle() alone, when the process is about to exit.
  if (!watched) warn_(watched.error().message());
  // The poll keeps the loop alive only while a write is under way.
  else uv_unref(reinterpret_cast<uv_handle_t*>(written_poll_.get()));
}

service_charge::~service_charge() { written_poll_.reset(); }

void service_charge::give(pid_t pid) {
  if (!pidfile_) return;
  if (written_poll_) uv_ref(reinterpret_cast<uv_handle_t*>(written_poll_.get()));
  pidfile_->give(pid);
}

void service_charge::on_written() {
  for (const auto& failure : pidfile_->collect()) warn_(failure);
  if (pidfile_->idle() && written_poll_) uv_unref(reinterpret_cast<uv_handle_t*>(written_poll_.get()));
  if (written_) written_();
}

void service_charge::take() {
  give(getpid());
  notify("READY=1\nMAINPID=" + std::to_string(getpid()));
}

void service_charge::hand_to(pid_t pid) {
  give(pid);
  notify(grace::charge_notification(pid));
}

void service_charge::notify(const std::string& message) { notifier_->send(message); }

void service_charge::start_up_over() {
  if (pidfile_) pidfile_->start();
}

bool service_charge::idle() {
  if (!pidfile_) return true;
  // Unwatched, failures wait for collect() here, and a process must not wait for them forever.
  if (!written_poll_)
    for (const auto& failure : pidfile_->collect()) warn_(failure);
  return pidfile_->idle();
}

void service_charge::keep_listeners_in_store(grace::net& net) {
  // Given but not used by this generation: out of the store, and closed.
  for (const grace::listener* unused : net.unused_inherited()) {
    // A message of its own, never merged with another: each names what it removes.
    notifier_->send_with_fds("FDSTOREREMOVE=1\nFDNAME=" + store_name(*unused), {});
    warn_("the listener " + unused->address() + " (" + unused->name() +
          ") is not used by this generation: taken out of the fd store and closed");
  }
  net.close_unused_inherited();
  // Bound by this generation: into the store. Inherited ones are there already (from the store,
  // or stored by the generation that bound them).
  for (const grace::listener* l : net.active_listeners())
    if (!l->inherited()) notifier_->send_with_fds("FDSTORE=1\nFDNAME=" + store_name(*l), {l->fd()});
}

void service_charge::abandon() { notifier_->abandon(); }

}  // namespace grace::uv::detail
