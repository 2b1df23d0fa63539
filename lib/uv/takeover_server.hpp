#pragma once
// The serving side of a takeover (grace/takeover.hpp), on the upgrader's loop: opens the
// hand-over socket, accepts on it while this generation serves, answers the hello of a process
// started independently with every listener, and gives the upgrader that process and the
// connection on which it will say it is ready. One takeover at a time; a second caller, or one
// while this generation cannot hand over, gets a refusal that says why.
#include <sys/types.h>
#include <uv.h>

#include <chrono>

#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>

#include "grace/net.hpp"
#include "grace/uv/fd_channel.hpp"
#include "handle.hpp"

namespace grace::uv::detail {

// The hand-over socket of `path`: inherited or taken over when this process got it from the
// previous generation; otherwise bound fresh, 0600, in a directory owned by this user that
// nobody else may write to (created 0700 when missing). "@name" is an abstract socket, guarded
// by the peer check alone.
result<grace::listener*> open_handover_socket(grace::net& net, const std::string& path);

class takeover_server {
 public:
  struct hooks {
    // Why this generation cannot hand over now; nullopt when it can.
    // Why this generation cannot hand over now to `taker` (its pid as this namespace sees it, 0
    // when it cannot see it); nullopt when it can.
    std::function<std::optional<std::string>(pid_t taker)> cannot_hand_over;
    // `pid` took the listeners and will say on `ready_fd` when it is ready (the fd is the
    // callee's). `same_pid_namespace` false: it runs in another pid namespace (pid 0 when this
    // one cannot see it), and names itself in the pid file once ready. Not called when the
    // exchange failed.
    std::function<void(pid_t pid, int ready_fd, bool same_pid_namespace)> took_listeners;
    // A refusal this side sent (generation cap, upgrade in progress), for the log.
    std::function<void(pid_t pid, const std::string& why)> refused;
    std::function<void(const std::string&)> warn;
    // Whether the taker is told it will get connections once it is ready.
    std::function<bool()> offers_connections;
    std::function<bool()> offers_flows;
  };

  // Serves the hand-over socket `socket` of `net`; an error when its poll cannot be made.
  [[nodiscard]] static result<std::unique_ptr<takeover_server>> open(uv_loop_t* loop, grace::net& net,
                                                                     grace::listener* socket,
                                                                     grace::channel_options channel,
                                                                     unsigned max_generations, hooks h);
  ~takeover_server();
  takeover_server(const takeover_server&) = delete;
  takeover_server& operator=(const takeover_server&) = delete;

  void start_accepting();
  void stop_accepting();
  const std::string& address() const noexcept { return address_; }
  // A process is between its hello and the confirmation of the listeners.
  // Only after a valid hello: a peer that connects and says nothing blocks nobody.
  bool busy() const noexcept { return candidate_ != nullptr; }
  pid_t busy_with() const noexcept;

 private:
  // A peer that connected and has not said its hello yet: it is nobody's candidate, blocks
  // nothing, and is hung up on when its deadline passes.
  struct greeting {
    takeover_server* owner;
    std::unique_ptr<fd_channel> channel;
    owned_handle<uv_timer_t> deadline;  // last: lets go before the channel closes
  };
  using greeting_list = std::list<greeting>;
  takeover_server(uv_loop_t* loop, grace::net& net, grace::listener* socket, grace::channel_options channel,
                  unsigned max_generations, hooks h);
  void accept_ready();
  void pause_accepting(int err);
  void greet(std::unique_ptr<fd_channel> c);
  void on_hello(greeting_list::iterator g, result<parcel> hello);
  void hang_up_silent(greeting* g);
  void hand_over_to(std::unique_ptr<fd_channel> c, pid_t pid);
  void refuse(std::unique_ptr<fd_channel> c, const std::string& why);
  void drop_candidate();
  // A warning about a peer, at most a few per interval; the rest are counted and said later.
  void warn_about_peer(const std::string& message);
  void refused(pid_t pid, const std::string& why);
  bool allow_peer_line();

  uv_loop_t* loop_;
  grace::net& net_;
  int fd_;
  std::string address_;
  grace::channel_options channel_options_;
  unsigned max_generations_;
  hooks hooks_;
  bool accepting_ = false;
  bool paused_ = false;  // out of fds: the poll waits for the retry timer
  unsigned retry_ms_ = 0;
  greeting_list greeting_;
  std::unique_ptr<fd_channel> candidate_;  // the process taking over, between hello and ready_fd
  pid_t candidate_pid_ = 0;
  std::list<std::unique_ptr<fd_channel>> refusing_;  // until each refusal is confirmed
  std::chrono::steady_clock::time_point warn_window_{};
  unsigned warned_in_window_ = 0;
  std::size_t not_shown_ = 0;
  // Declared last: they let go of the fds before the channels close them.
  owned_handle<uv_timer_t> candidate_timer_, retry_timer_;
  owned_handle<uv_poll_t> poll_;
};

}  // namespace grace::uv::detail
