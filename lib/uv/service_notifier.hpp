#pragma once
// Notifications to the service manager that never block the loop. A message that cannot be sent
// now (its queue is full: systemd lags during a daemon-reload) is merged with what follows and
// sent again on a timer. Merging keeps the newest value of each field, and READY=1, RELOADING=1
// and STOPPING=1 as one state: only the newest of them is sent. What could not be sent at all
// (no service manager listening, or still pending at exit) is reported through `warn`.
#include <uv.h>

#include <deque>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "handle.hpp"

namespace grace::uv::detail {

class service_notifier {
 public:
  service_notifier(uv_loop_t* loop, std::function<void(const std::string&)> warn);
  ~service_notifier();
  // "KEY=VALUE\nKEY=VALUE"
  void send(const std::string& message);
  // A message with fds attached ("FDSTORE=1\nFDNAME=web"), or one that must not be merged
  // ("FDSTOREREMOVE=1\nFDNAME=web", no fds): sent alone, in order, and retried as the others
  // are. The fds are duplicated: the caller may close its own.
  void send_with_fds(const std::string& message, const std::vector<int>& fds);
  bool idle() const noexcept { return pending_.empty() && with_fds_.empty(); }
  // At exit: reports whatever is still pending and forgets it.
  void abandon();
  // The datagram pending_ makes (for tests and messages).
  std::string pending_text() const;

 private:
  void merge(const std::string& message);
  void try_send();
  void schedule_retry(const std::string& text);
  uv_loop_t* loop_;
  std::function<void(const std::string&)> warn_;
  std::vector<std::pair<std::string, std::string>> pending_;  // fields in first-seen order
  struct fd_message {
    std::string text;
    std::vector<int> fds;  // our duplicates, closed once sent or abandoned
  };
  std::deque<fd_message> with_fds_;
  owned_handle<uv_timer_t> retry_;
  uint64_t backoff_ms_ = 0;
  bool warned_lagging_ = false;
};

}  // namespace grace::uv::detail
