#pragma once
// The NOTIFY_SOCKET grace-listen gives every generation of the command: a unix datagram socket in
// a private directory (0700, made for this run, removed at exit) that also holds the hand-over
// socket's path (GRACE_HANDOVER_SOCKET), so that only this user's processes reach either. Each
// message comes with its sender's credentials (SCM_CREDENTIALS), so a READY=1 is attributed to
// the process that sent it, never guessed.
#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace grace_listen {

// What a message says, of what grace-listen acts on (sd_notify's READY=1 and MAINPID=).
struct notice {
  bool ready = false;
  pid_t main_pid = 0;  // MAINPID=, 0 when absent or malformed
};
// Pure: "READY=1\nMAINPID=42\nSTATUS=..." -> {true, 42}. Unknown lines are ignored.
notice parse_notice(std::string_view message);

struct received_notice {
  pid_t sender = 0;
  uid_t uid = 0;
  notice what;
};

class notify_inbox {
 public:
  // Makes the private directory and binds its notify socket; nullopt (with `why`) on failure.
  static std::optional<notify_inbox> open(std::string& why);
  notify_inbox(notify_inbox&& other) noexcept;
  notify_inbox& operator=(notify_inbox&&) = delete;
  ~notify_inbox();  // closes the socket; remove() removes the directory

  int fd() const noexcept { return fd_; }
  const std::string& notify_path() const noexcept { return notify_path_; }
  const std::string& handover_path() const noexcept { return handover_path_; }
  // Every message waiting now (never blocks); messages without credentials are dropped.
  std::vector<received_notice> drain();
  // Removes the sockets' files and the directory (at exit).
  void remove() noexcept;

 private:
  notify_inbox() = default;
  int fd_ = -1;
  std::string directory_, notify_path_, handover_path_;
};

}  // namespace grace_listen
