#pragma once
// UDP flow affinity (grace/flows.hpp) on the upgrader's loop: grace reads the application's UDP
// sockets, routes each datagram by its flow, and hands the application those it answers. At a
// hand-over the old side stops reading and sends its flows on a channel of their own; the new
// side reads once they have arrived, and forwards the old side's datagrams to it.
#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../handle.hpp"
#include "grace/flows.hpp"
#include "grace/listener.hpp"
#include "grace/readiness.hpp"
#include "grace/uv/upgrader_options.hpp"

namespace grace::uv::detail {

class flow_service {
 public:
  struct hooks {
    std::function<void(const std::string&)> warn;
    std::function<void(const std::string&)> progress;
    std::function<void()> changed;  // flows ended: the drain checks
  };
  flow_service(uv_loop_t* loop, hooks h);
  ~flow_service();
  flow_service(const flow_service&) = delete;
  flow_service& operator=(const flow_service&) = delete;

  result<void> serve(const std::vector<grace::listener*>& sockets, flow_options options,
                     std::function<void(const routed_datagram&)> on_datagram);
  bool used() const noexcept { return router_ != nullptr; }
  // Offered to the next generation: the service has affinity on.
  bool offers() const noexcept { return router_ && router_->affinity(); }

  // New side, once ready() told the parent: wait (bounded) for the previous generation's flows.
  void after_ready();
  // The previous generation's channel arrived (migration_in reads the offers), or will not.
  void on_predecessor_channel(result<int> fd);

  // Old side, the new generation is ready: stop reading; when it was told of flows, send them.
  void hand_over(const pending_child& successor, bool offered);
  // Serving again (the new generation died after it took over): read again.
  void resume();
  // The next generation is gone and this one does not serve again: flows that nobody can
  // forward here any more end (those the kernel steers here by their cookie go on).
  void successor_gone();
  // Waiting for the previous generation's flows: this one must not hand over yet.
  bool holding() const noexcept { return router_ && router_->holding(); }
  // Nothing left to answer here.
  bool finished() const noexcept;
  // This process exits now: what is left is lost (counted, said).
  void close(const std::string& why);

  void began(const flow_key& key);
  void ended(const flow_key& key);
  bool reply(const routed_datagram& d, std::string_view bytes);
  flow_counters counters() const;
  unsigned cookie() const noexcept;

 private:
  struct socket;
  void start_reading();
  void stop_reading();
  void on_datagram(socket& s, ssize_t n, const uv_buf_t* buf, const sockaddr* from);
  void watch(owned_handle<uv_poll_t>& poll, int fd, bool predecessor);
  void on_channel_event(bool predecessor, int status, int events);
  void arm_expiry();
  void on_expiry();
  void done_holding(const std::string& why);
  // The kernel path.
  struct steering;
  result<void> check_cookie_setup(const std::vector<grace::listener*>& sockets);
  void on_extension(std::string_view bytes, std::vector<int> fds);
  void take_slot();
  void steer();
  void slots_freed(const std::vector<unsigned>& slots);
  socket* open_slot_reader(int fd, unsigned slot);
  bool start_reader(socket* r);
  void drop_steering(const std::string& why);
  void close_sockets();
  static void close_reader(socket* s);
  void read_free_slots();
  void stop_free_slots();

  uv_loop_t* loop_;
  hooks hooks_;
  flow_options options_;
  std::function<void(const routed_datagram&)> deliver_;
  std::unique_ptr<flow_router> router_;
  std::vector<std::unique_ptr<socket>> sockets_;
  bool reading_ = false;
  bool handed_over_ = false;
  std::uint64_t reply_failures_ = 0;
  std::uint64_t next_drop_report_ = 1;
  bool warned_bad_socket_ = false;
  std::unique_ptr<steering> steering_;
  owned_handle<uv_timer_t> hold_timer_, expiry_timer_;
  owned_handle<uv_poll_t> predecessor_poll_, successor_poll_;
};

}  // namespace grace::uv::detail
