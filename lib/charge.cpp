#include "grace/charge.hpp"

#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>

#include "environment_protocol.hpp"
#include "grace/pidfile.hpp"
#include "notify_socket.hpp"

// The writes happen on a thread of the keeper's own, not on a pool: libuv's pool (the obvious one
// for a libuv server) starts four threads at its first use, which for a generation is the moment
// it hands over, the one moment a restart must cost nothing; and a pool shared with the
// application can be busy with its work when the pid file must change. The thread starts at
// start() or the first give(), so that a new generation, which starts no thread before its first
// answers, can start it once it serves.

namespace grace {
namespace {

using namespace std::chrono_literals;

// A service manager whose queue is full (systemd lags during a daemon-reload) is asked again,
// backing off, for a while but not for ever: the generation that gave charge away waits for this
// before it exits, and a manager that never learnt the new MAINPID takes that exit for the
// service's.
constexpr auto first_retry = 10ms;
constexpr auto longest_retry = 1000ms;
constexpr auto notify_patience = 10s;

}  // namespace

std::string charge_notification(pid_t pid) { return "MAINPID=" + std::to_string(pid) + "\nREADY=1"; }

struct charge_keeper::shared {
  // Set by the constructor, read-only afterwards.
  std::string pidfile;
  std::string notify_socket;  // empty: nobody to tell (notify false, or no NOTIFY_SOCKET)
  int done = -1;              // eventfd; written under the mutex while not abandoned

  mutable std::mutex mutex;
  std::condition_variable asked;
  bool running = false;  // the thread started
  pid_t next = 0;        // to hand over to next; 0: nothing
  bool writing = false;
  bool abandoned = false;  // the keeper is gone: finish what was asked, report nothing
  std::vector<std::string> failures;  // not yet collected

  bool has_work() const noexcept { return !pidfile.empty() || !notify_socket.empty(); }

  // Under the mutex.
  void wake() {
    if (abandoned || done < 0) return;
    const std::uint64_t one = 1;
    ssize_t ignored = ::write(done, &one, sizeof one);  // non-blocking; a full counter is readable anyway
    (void)ignored;
  }

  void run() {
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      asked.wait(lock, [&] { return next != 0 || abandoned; });
      if (next == 0) return;  // abandoned, nothing left
      const pid_t pid = std::exchange(next, 0);
      writing = true;
      std::vector<std::string> failed;
      if (!pidfile.empty()) {
        lock.unlock();
        auto written = write_pidfile(pidfile, pid);
        lock.lock();
        if (!written) failed.push_back(written.error().message());
      }
      // After the pid file: a manager that reads PIDFile= when told finds the new pid there.
      if (!notify_socket.empty()) tell(pid, lock, failed);
      writing = false;
      if (abandoned) continue;
      failures.insert(failures.end(), failed.begin(), failed.end());
      wake();
    }
  }

  // Sends charge_notification(pid), retrying while the manager's queue is full; a newer pid asked
  // for meanwhile ends the retries (it is told next). Called and returns with `lock` held.
  void tell(pid_t pid, std::unique_lock<std::mutex>& lock, std::vector<std::string>& failed) {
    const std::string text = charge_notification(pid);
    const auto deadline = std::chrono::steady_clock::now() + notify_patience;
    auto delay = std::chrono::duration_cast<std::chrono::steady_clock::duration>(first_retry);
    for (;;) {
      lock.unlock();
      auto sent = detail::notify_socket_send(notify_socket, text, {});
      lock.lock();
      if (sent) return;
      const std::string why = sent.error().message() + " (MAINPID=" + std::to_string(pid) + ")";
      if (sent.error().code() != std::errc::resource_unavailable_try_again) return failed.push_back(why);
      if (abandoned || std::chrono::steady_clock::now() >= deadline)
        return failed.push_back(why + ": its queue stayed full; not sent");
      asked.wait_until(lock, std::min(std::chrono::steady_clock::now() + delay, deadline),
                       [&] { return next != 0 || abandoned; });
      if (next != 0) return;  // superseded
      delay = std::min(delay * 2, std::chrono::duration_cast<std::chrono::steady_clock::duration>(longest_retry));
    }
  }

  // Under the mutex. A signal meant for the process is never run on the keeper's thread: every
  // signal is blocked while it is created, and it keeps that mask.
  bool launch(std::string& why, const std::shared_ptr<shared>& self) {
    if (running) return true;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    try {
      std::thread([state = self] { state->run(); }).detach();
      running = true;
    } catch (const std::exception& e) {
      why = e.what();
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return running;
  }
};

charge_keeper::charge_keeper(charge_options options) : shared_(std::make_shared<shared>()) {
  shared_->pidfile = std::move(options.pidfile);
  if (options.notify) shared_->notify_socket = detail::startup_inheritance().notify_socket;
  shared_->done = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (shared_->done < 0)
    shared_->failures.push_back(std::string("charge keeper: cannot make its eventfd: ") + std::strerror(errno));
}

charge_keeper::~charge_keeper() {
  int done;
  {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    shared_->abandoned = true;
    done = std::exchange(shared_->done, -1);
    shared_->asked.notify_one();
  }
  if (done >= 0) close(done);
}

void charge_keeper::start() {
  if (!shared_->has_work()) return;
  std::lock_guard<std::mutex> lock(shared_->mutex);
  std::string ignored;  // give() tries again, and says why
  shared_->launch(ignored, shared_);
}

void charge_keeper::give(pid_t pid) {
  shared& s = *shared_;
  if (!s.has_work()) return;
  std::lock_guard<std::mutex> lock(s.mutex);
  if (pid <= 0) {
    s.failures.push_back("charge keeper: " + std::to_string(pid) + " is not a process id");
    return s.wake();
  }
  std::string why;
  if (s.launch(why, shared_)) {
    s.next = pid;
    s.asked.notify_one();
    return;
  }
  // No thread (the next give() tries again): the pid file stays as it was. The service manager,
  // whose socket never blocks, is told from here, once.
  if (!s.pidfile.empty())
    s.failures.push_back("pid file " + s.pidfile + ": not written for pid " + std::to_string(pid) +
                         ": cannot start the thread that writes it: " + why);
  if (!s.notify_socket.empty())
    if (auto sent = detail::notify_socket_send(s.notify_socket, charge_notification(pid), {}); !sent)
      s.failures.push_back(sent.error().message() + " (MAINPID=" + std::to_string(pid) + ")");
  s.wake();
}

int charge_keeper::fd() const noexcept { return shared_->done; }

std::vector<std::string> charge_keeper::collect() {
  std::vector<std::string> out;
  std::lock_guard<std::mutex> lock(shared_->mutex);
  if (shared_->done >= 0) {
    std::uint64_t count = 0;
    ssize_t ignored = ::read(shared_->done, &count, sizeof count);
    (void)ignored;
  }
  out.swap(shared_->failures);
  return out;
}

bool charge_keeper::idle() const noexcept {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  return shared_->next == 0 && !shared_->writing && shared_->failures.empty();
}

}  // namespace grace
