// grace-asio: grace-http's protocol on standalone asio (Debian's libasio-dev), with grace's core.
//
// The point of this sample is fd ownership. asio objects own the fds they are given: an
// acceptor or a posix::stream_descriptor closes its fd when it is destroyed. grace owns its fds
// too (grace::net its listeners, pending_child its readiness socket and pidfd). Two owners of one
// fd means a double close, which can close an fd somebody else has opened meanwhile. So:
//   - the listener: asio gets its own duplicate (F_DUPFD_CLOEXEC); each owner closes its own fd,
//     and the socket lives on while either holds it;
//   - the readiness socket and the pidfd: asio watches them and gives them back with release()
//     before pending_child closes them;
//   - charge_keeper's eventfd: asio watches a duplicate of it, as it does the listener.
// See samples/common/command_line.hpp for the command line.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <asio.hpp>
#include <list>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "../common/command_line.hpp"
#include "../http/protocol.hpp"

namespace {

class http_service;

class session : public std::enable_shared_from_this<session> {
 public:
  session(asio::ip::tcp::socket socket, http_service& service) : socket_(std::move(socket)), service_(service) {}
  void start() { read(); }
  void close() {
    asio::error_code ignored;
    socket_.close(ignored);
  }

 private:
  void read();
  void answer();

  asio::ip::tcp::socket socket_;
  http_service& service_;
  char buffer_[16384];
  std::string input_, output_;
};

class http_service {
 public:
  http_service(asio::io_context& io, grace::net& net, grace::listener* listener, sample::command_line options)
      : io_(io), net_(net), listener_(listener), options_(std::move(options)), acceptor_(io), signals_(io),
        ready_timer_(io), drain_timer_(io), keeper_(grace::charge_options{options_.pidfile}), charge_watch_(io) {
    who = sample::who_body(getpid(), grace::generation());
    // asio owns what it is given: give it a duplicate, keep grace's fd grace's.
    const int fd = fcntl(listener_->fd(), F_DUPFD_CLOEXEC, 3);
    const auto protocol = listener_->local_address().family() == AF_INET6 ? asio::ip::tcp::v6() : asio::ip::tcp::v4();
    acceptor_.assign(protocol, fd);
    if (keeper_.fd() >= 0) charge_watch_.assign(fcntl(keeper_.fd(), F_DUPFD_CLOEXEC, 3));
    signals_.add(SIGUSR2);
    signals_.add(SIGTERM);
    signals_.add(SIGINT);
    signals_.add(SIGHUP);
    for (const auto& warning : grace::inheritance_warnings()) log("warning: " + warning);
  }

  bool ready() {
    auto told = grace::notify_ready();
    if (!told) {
      log("cannot report readiness: " + told.error().message());
      return false;
    }
    // In charge alone: the pid file and MAINPID name this process. A generation that told its
    // parent writes nothing: its parent gives it charge.
    if (*told != grace::ready_outcome::told_parent) keeper_.give(getpid());
    log("serving " + listener_->address() + " as pid " + std::to_string(getpid()));
    accept();
    wait_signal();
    watch_charge();
    return true;
  }

  int run() {
    io_.run();
    grace::flush_stderr_log(1000);
    return 0;
  }

  void connection_closed(session* s) {
    sessions_.erase(s);
    if (draining && sessions_.empty()) finish();
  }
  void connection_opened(session* s) { sessions_.insert(s); }

  bool draining = false;
  std::string who;

 private:
  void log(const std::string& line) {
    grace::log_to_stderr("grace-asio[" + std::to_string(getpid()) + "] generation " + std::to_string(grace::generation()) +
                         ": " + line);
  }
  void notify(const std::string& message) {
    if (auto sent = grace::notify_service_manager(message); !sent)
      log("warning: cannot notify the service manager: " + sent.error().message());
  }

  void accept() {
    acceptor_.async_accept([this](asio::error_code ec, asio::ip::tcp::socket socket) {
      // A connection accepted before the acceptor closed is served all the same: dropping it
      // would reset a client the kernel had already handed to this process.
      if (!ec) std::make_shared<session>(std::move(socket), *this)->start();
      if (acceptor_.is_open() && ec != asio::error::operation_aborted) accept();
    });
  }

  void wait_signal() {
    signals_.async_wait([this](asio::error_code ec, int signum) {
      if (ec) return;
      if (signum == SIGUSR2) upgrade();
      else if (signum == SIGHUP) log("SIGHUP ignored (SIGUSR2 upgrades, SIGTERM stops)");
      else {
        log(std::string(strsignal(signum)) + ": stopping");
        shutdown();
      }
      wait_signal();
    });
  }

  void upgrade() {
    if (draining) return log("upgrade refused: this generation is draining");
    if (pending_) return log("upgrade refused: an upgrade is already in progress");
    auto child = grace::pending_child::start(net_, {}, options_.max_generations);
    if (!child) return log("upgrade refused: " + child.error().message());
    notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(grace::monotonic_usec()));
    pending_.emplace(std::move(*child));
    log("started generation " + std::to_string(grace::generation() + 1) + " as pid " + std::to_string(pending_->pid()));
    // asio watches the child's fds but must not close them: pending_child owns them.
    ready_watch_.emplace(io_, pending_->ready_fd());
    exit_watch_.emplace(io_, pending_->pid_fd());
    watch_child(*ready_watch_);
    watch_child(*exit_watch_);
    ready_timer_.expires_after(options_.ready_timeout);
    ready_timer_.async_wait([this](asio::error_code ec) {
      if (ec || !pending_) return;
      pending_->kill_pending();
      settle(grace::upgrade_outcome::timed_out);
    });
  }

  void watch_child(asio::posix::stream_descriptor& watch) {
    watch.async_wait(asio::posix::stream_descriptor::wait_read, [this, &watch](asio::error_code ec) {
      if (ec || !pending_) return;
      if (auto outcome = pending_->check()) return settle(*outcome);
      watch_child(watch);
    });
  }

  void release_watches() {
    for (auto* watch : {&ready_watch_, &exit_watch_}) {
      if (!*watch) continue;
      (*watch)->cancel();
      (*watch)->release();  // the fd goes back to pending_child, unclosed
      watch->reset();
    }
  }

  void settle(grace::upgrade_outcome outcome) {
    ready_timer_.cancel();
    release_watches();
    grace::pending_child child = std::move(*pending_);
    pending_.reset();
    if (outcome == grace::upgrade_outcome::ready) {
      keeper_.give(child.pid());  // the pid file and MAINPID name the new generation
      log("pid " + std::to_string(child.pid()) + " is ready and in charge");
      stop_accepting();
      return begin_drain();
    }
    log("rollback: pid " + std::to_string(child.pid()) + " failed before it was ready; still serving");
    reap_later(std::move(child));
    if (!draining) notify("READY=1");
  }

  // A killed child is reaped once its pidfd says it exited, never waited for.
  void reap_later(grace::pending_child child) {
    if (child.reaped() || child.pid_fd() < 0) return;
    reaping_.push_back(std::move(child));
    auto it = std::prev(reaping_.end());
    auto watch = std::make_shared<asio::posix::stream_descriptor>(io_, it->pid_fd());
    watch->async_wait(asio::posix::stream_descriptor::wait_read, [this, it, watch](asio::error_code) {
      watch->release();
      it->check();
      reaping_.erase(it);  // reaped now; a child still running would be reaped by the destructor
    });
  }

  void stop_accepting() {
    asio::error_code ignored;
    acceptor_.close(ignored);  // closes asio's duplicate only; grace's fd keeps the queue open
  }

  void shutdown() {
    if (draining) {
      log("asked again to stop: closing " + std::to_string(sessions_.size()) + " connection(s) now");
      for (session* s : std::set<session*>(sessions_)) s->close();
      return finish();
    }
    notify("STOPPING=1");
    stop_accepting();
    if (auto closed = net_.close(listener_); !closed) log("warning: " + closed.error().message());
    if (pending_) {
      pending_->kill_pending();
      settle(grace::upgrade_outcome::timed_out);
    }
    begin_drain();
  }

  void begin_drain() {
    if (draining) return;
    draining = true;
    log("draining " + std::to_string(sessions_.size()) + " connection(s)");
    drain_timer_.expires_after(options_.drain_timeout);
    drain_timer_.async_wait([this](asio::error_code ec) {
      if (ec) return;
      log("drain deadline passed: closing " + std::to_string(sessions_.size()) + " connection(s)");
      for (session* s : std::set<session*>(sessions_)) s->close();
      finish();
    });
    if (sessions_.empty()) finish();
  }

  void finish() {
    if (finished_) return;
    finished_ = true;
    drain_timer_.cancel();
    signals_.cancel();
    log_charge_failures();
    if (keeper_.idle()) stop();  // otherwise once it is, in watch_charge()
  }

  void stop() {
    log("drained; exiting");
    io_.stop();
  }

  // The pid file and MAINPID are written on the keeper's thread; its eventfd, watched for as long
  // as this generation runs, tells the loop when. The wait also keeps io_context::run() from
  // returning while a write is under way (once the drain leaves nothing else to wait for): the
  // process would exit with the pid file naming it, and the next SIGUSR2 would find nobody.
  void watch_charge() {
    if (!charge_watch_.is_open()) return;
    charge_watch_.async_wait(asio::posix::stream_descriptor::wait_read, [this](asio::error_code ec) {
      if (ec) return;
      log_charge_failures();
      if (finished_ && keeper_.idle()) return stop();
      watch_charge();
    });
  }

  void log_charge_failures() {
    for (const auto& failure : keeper_.collect()) log("warning: " + failure);
  }

  asio::io_context& io_;
  grace::net& net_;
  grace::listener* listener_;
  sample::command_line options_;
  asio::ip::tcp::acceptor acceptor_;
  asio::signal_set signals_;
  asio::steady_timer ready_timer_, drain_timer_;
  std::optional<grace::pending_child> pending_;
  std::optional<asio::posix::stream_descriptor> ready_watch_, exit_watch_;
  std::list<grace::pending_child> reaping_;
  std::set<session*> sessions_;
  grace::charge_keeper keeper_;
  asio::posix::stream_descriptor charge_watch_;  // a duplicate of keeper_.fd(): asio closes its own
  bool finished_ = false;
};

void session::read() {
  service_.connection_opened(this);
  auto self = shared_from_this();
  socket_.async_read_some(asio::buffer(buffer_), [this, self](asio::error_code ec, std::size_t n) {
    if (ec) return service_.connection_closed(this);
    input_.append(buffer_, n);
    answer();
  });
}

void session::answer() {
  bool close = false;
  while (!close && http_protocol::answer_one(input_, output_, close, service_.draining, service_.who)) {
  }
  if (output_.empty()) return read();
  auto self = shared_from_this();
  asio::async_write(socket_, asio::buffer(output_), [this, self, close](asio::error_code ec, std::size_t) {
    output_.clear();
    if (ec || close) {
      this->close();
      return service_.connection_closed(this);
    }
    read();
  });
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  const auto options = sample::parse_command_line(argc, argv, "grace-asio");
  sample::refuse_upgrader_options(options, "grace-asio");
  if (options.address.rfind("unix:", 0) == 0) {
    std::fprintf(stderr, "grace-asio: ADDRESS must be a TCP address\n");
    return 2;
  }
  grace::net net;
  grace::listener* listener = sample::open_listener(net, options.address, "grace-asio");
  asio::io_context io;
  http_service service(io, net, listener, options);
  if (!service.ready()) return 1;
  return service.run();
}
