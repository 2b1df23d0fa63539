// The upgrader's use of the service manager's fd store (upgrader_options::fd_store).
#include <algorithm>
#include <string>

#include "grace/uv/upgrader.hpp"
#include "service_notifier.hpp"

namespace grace::uv {
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

void upgrader::keep_listeners_in_fd_store() {
  // Given but not used by this generation: out of the store, and closed.
  for (const grace::listener* unused : net_.unused_inherited()) {
    // A message of its own, never merged with another: each names what it removes.
    notifier_->send_with_fds("FDSTOREREMOVE=1\nFDNAME=" + store_name(*unused), {});
    log(event_kind::warning, "the listener " + unused->address() + " (" + unused->name() +
                                 ") is not used by this generation: taken out of the fd store and closed");
  }
  net_.close_unused_inherited();
  // Bound by this generation: into the store. Inherited ones are there already (from the store,
  // or stored by the generation that bound them).
  for (const grace::listener* l : net_.active_listeners())
    if (!l->inherited()) notifier_->send_with_fds("FDSTORE=1\nFDNAME=" + store_name(*l), {l->fd()});
}

}  // namespace grace::uv
