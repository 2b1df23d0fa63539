#pragma once
// Connection migration, old side (grace/migration.hpp): once the generation this one handed over
// to says hello on the channel offered to it, this process's idle connections travel to it, in
// parcels, each confirmed before its copies here are let go. What cannot travel (the channel
// fails, the new generation hangs up or never says hello) is given back to the application here.
#include <sys/types.h>
#include <uv.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../handle.hpp"
#include "grace/owned_fd.hpp"
#include "grace/readiness.hpp"
#include "grace/uv/fd_channel.hpp"
#include "grace/uv/server.hpp"
#include "server_set.hpp"

namespace grace::uv::detail {

// The application's two migration hooks (upgrader::on_export, on_import).
struct migration_hooks {
  std::function<std::optional<std::string>(connection&)> export_state;
  std::function<void(connection&, std::string)> import_state;
  bool set() const noexcept { return export_state && import_state; }
};

class migration_out {
 public:
  struct hooks {
    std::function<void(const std::string& why)> warn;
    // "handing N idle connection(s) to pid P; K busy one(s) finish here first"
    std::function<void(const std::string& line, std::size_t busy)> progress;
    std::function<void()> changed;        // connections moved or came back: the drain checks
    std::function<void()> given_back;     // connections came back: they end as a drain ends them
    std::function<bool()> stopping;       // this process is exiting: what comes back is closed
  };
  migration_out(uv_loop_t* loop, server_set& servers, const migration_hooks& app, hooks h);
  ~migration_out();
  migration_out(const migration_out&) = delete;
  migration_out& operator=(const migration_out&) = delete;

  using clock = std::chrono::steady_clock;
  // Offers the channel to `successor`, which just took over and was told it gets connections;
  // `upgrade_began`: when this upgrade began (SIGUSR2, a taker), which the summary times from.
  void offer(const pending_child& successor, clock::time_point upgrade_began);
  // The channel is offered and not closed: the drain hook waits for the hello.
  bool offered() const noexcept { return static_cast<bool>(outbound_); }
  // Connections may leave now: from the offer until the channel closes or the new generation
  // has no more room. Thread-safe.
  bool open() const noexcept { return open_.load(); }
  // upgrader::migrate(), on the thread of the loop `c` is served on.
  bool migrate(connection& c, std::string bytes);
  // Whether `bytes` can travel with a connection (connection_state_limit); when not, the
  // connection stays here, counted and said once.
  bool fits(const std::string& bytes);
  // On this loop after a worker woke it: connections migrated there join the next parcel.
  void collect();
  // Connections between migrate() and the new generation's confirmation (or their return). Thread-safe.
  std::size_t moving() const noexcept { return moving_.load(); }
  // Connections sent and not confirmed yet: the drain waits for the answer (bounded) before its
  // deadline applies to them.
  bool awaiting_answer() const noexcept { return !in_flight_.empty(); }
  // The channel failed, or this process stops: what is not confirmed yet is given back to the
  // application (`give_back`) or closed; how many were closed.
  std::size_t stop(const std::string& why, bool give_back);

 private:
  struct handed {
    owned_fd fd;
    std::string state;
    const server* from = nullptr;
  };
  void on_outbound(result<parcel> p);
  void on_hello_timer();
  void export_all();
  void export_from(server& s);
  void report_exports();
  void queue(handed h);
  void give_back(handed h);
  void flush();
  outgoing_parcel describe(const std::vector<handed>& batch);
  void send(std::vector<handed> batch);
  bool send_away(connection& c, std::string& bytes);
  void say_too_large();  // `bytes` is taken only when it succeeds
  void close_for_good(const std::string& why);
  // "moved N connection(s) to pid P in K parcel(s): ..." with where the time went; once the
  // channel closes.
  void report_timing();

  uv_loop_t* loop_;
  server_set& servers_;
  const migration_hooks& app_;
  hooks hooks_;
  std::thread::id loop_thread_;
  std::unique_ptr<fd_channel> outbound_;
  int channel_fd_ = -1;  // outbound_'s socket, to see whether the hello waits in it
  bool hello_seen_ = false;
  pid_t successor_ = 0;
  std::atomic<bool> open_{false};
  std::atomic<std::size_t> moving_{0};
  std::mutex inbox_mutex_;
  std::vector<handed> inbox_;  // migrated on workers, for this loop to send
  std::atomic<int> exports_running_{0};
  std::atomic<std::size_t> exported_{0};
  std::atomic<std::size_t> kept_{0};  // busy when the exports ran: they finish here first
  std::atomic<std::size_t> too_large_{0};  // state larger than a connection carries: they stay
  std::size_t capacity_ = 0;  // connections the new generation has room for, not sent yet
  bool warned_too_large_ = false;
  bool report_due_ = false;
  // Where the time goes (report_timing()).
  clock::time_point upgrade_began_{}, offered_at_{}, hello_at_{}, first_sent_at_{}, last_confirmed_at_{};
  std::atomic<std::int64_t> building_ns_{0};  // export hooks, copies, descriptions: every thread's
  std::size_t parcels_ = 0;
  std::size_t confirmed_ = 0;
  std::vector<handed> queued_;                // sent with the next parcel
  std::list<std::vector<handed>> in_flight_;  // sent, not confirmed yet
  // Declared last: they let go before the channel closes.
  owned_handle<uv_timer_t> hello_timer_, flush_timer_;
};

}  // namespace grace::uv::detail
