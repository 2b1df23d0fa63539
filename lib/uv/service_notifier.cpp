#include "service_notifier.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "grace/notify.hpp"

namespace grace::uv::detail {
namespace {

constexpr uint64_t first_retry_ms = 10;
constexpr uint64_t max_retry_ms = 1000;

bool is_state(const std::string& key) { return key == "READY" || key == "RELOADING" || key == "STOPPING"; }

}  // namespace

service_notifier::service_notifier(uv_loop_t* loop, std::function<void(const std::string&)> warn)
    : loop_(loop), warn_(std::move(warn)) {}

service_notifier::~service_notifier() {
  for (auto& m : with_fds_)
    for (int fd : m.fds) ::close(fd);
}

void service_notifier::send_with_fds(const std::string& message, const std::vector<int>& fds) {
  fd_message m{message, {}};
  for (int fd : fds) {
    const int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (copy < 0) {
      warn_("cannot keep fd " + std::to_string(fd) + " for the service manager (" + message + "): " + std::strerror(errno));
      for (int each : m.fds) ::close(each);
      return;
    }
    m.fds.push_back(copy);
  }
  with_fds_.push_back(std::move(m));
  if (!retry_ || uv_is_active(reinterpret_cast<uv_handle_t*>(retry_.get())) == 0) try_send();
}

void service_notifier::merge(const std::string& message) {
  std::string::size_type start = 0;
  while (start < message.size()) {
    auto end = message.find('\n', start);
    if (end == std::string::npos) end = message.size();
    const std::string line = message.substr(start, end - start);
    start = end + 1;
    const auto equals = line.find('=');
    if (equals == std::string::npos) continue;
    std::string key = line.substr(0, equals);
    std::string value = line.substr(equals + 1);
    if (is_state(key)) {
      // One state at a time; MONOTONIC_USEC belongs to the RELOADING=1 it came with.
      pending_.erase(std::remove_if(pending_.begin(), pending_.end(),
                                    [](const auto& f) { return is_state(f.first) || f.first == "MONOTONIC_USEC"; }),
                     pending_.end());
    }
    auto same = std::find_if(pending_.begin(), pending_.end(), [&](const auto& f) { return f.first == key; });
    if (same != pending_.end()) same->second = std::move(value);
    else pending_.emplace_back(std::move(key), std::move(value));
  }
  // RELOADING=1 wants its timestamp right after it; keep the pair in that order.
  auto reloading = std::find_if(pending_.begin(), pending_.end(), [](const auto& f) { return f.first == "RELOADING"; });
  auto usec = std::find_if(pending_.begin(), pending_.end(), [](const auto& f) { return f.first == "MONOTONIC_USEC"; });
  if (reloading != pending_.end() && usec != pending_.end() && usec < reloading) std::iter_swap(usec, reloading);
}

std::string service_notifier::pending_text() const {
  std::string out;
  for (const auto& [key, value] : pending_) out += (out.empty() ? "" : "\n") + key + "=" + value;
  return out;
}

void service_notifier::send(const std::string& message) {
  merge(message);
  if (!retry_ || uv_is_active(reinterpret_cast<uv_handle_t*>(retry_.get())) == 0) try_send();
}

void service_notifier::try_send() {
  // The messages with fds first, in order; a full queue stops them all until the retry.
  while (!with_fds_.empty()) {
    auto& m = with_fds_.front();
    auto sent = notify_service_manager(m.text, m.fds);
    if (!sent && sent.error().code() == std::errc::resource_unavailable_try_again) return schedule_retry(m.text);
    if (!sent) warn_("cannot notify the service manager (" + m.text + "): " + sent.error().message());
    for (int fd : m.fds) ::close(fd);
    with_fds_.pop_front();
  }
  if (pending_.empty()) return;
  const std::string text = pending_text();
  auto sent = notify_service_manager(text);
  if (sent) {
    pending_.clear();
    backoff_ms_ = 0;
    if (warned_lagging_) warn_("the service manager reads notifications again");
    warned_lagging_ = false;
    return;
  }
  if (sent.error().code() != std::errc::resource_unavailable_try_again) {
    warn_("cannot notify the service manager (" + text + "): " + sent.error().message());
    pending_.clear();
    return;
  }
  schedule_retry(text);
}

void service_notifier::schedule_retry(const std::string& text) {
  if (!warned_lagging_) {
    warned_lagging_ = true;
    warn_("the service manager is not reading notifications; retrying (" + text + ")");
  }
  backoff_ms_ = backoff_ms_ == 0 ? first_retry_ms : std::min(backoff_ms_ * 2, max_retry_ms);
  if (!retry_) {
    if (const int rc = retry_.init([&](uv_timer_t* t) { return uv_timer_init(loop_, t); }, this); rc != 0)
      return warn_(std::string("cannot retry notifications: timer: ") + uv_strerror(rc));
    uv_unref(reinterpret_cast<uv_handle_t*>(retry_.get()));  // never the reason a loop stays up
  }
  if (const int rc = uv_timer_start(retry_.get(), [](uv_timer_t* t) { static_cast<service_notifier*>(t->data)->try_send(); },
                                    backoff_ms_, 0);
      rc != 0)
    warn_(std::string("cannot retry notifications: timer: ") + uv_strerror(rc));
}

void service_notifier::abandon() {
  if (!pending_.empty()) warn_("could not notify the service manager before exiting: " + pending_text());
  pending_.clear();
  for (auto& m : with_fds_) {
    warn_("could not notify the service manager before exiting: " + m.text);
    for (int fd : m.fds) ::close(fd);
  }
  with_fds_.clear();
  retry_.reset();
}

}  // namespace grace::uv::detail
