#include "pidfile_writer.hpp"

#include "grace/pidfile.hpp"

namespace grace::uv::detail {

struct pidfile_writer::job {
  uv_work_t work{};
  pidfile_writer* owner;  // null once the writer is gone
  std::string path;
  pid_t pid;
  std::string failure;
};

pidfile_writer::pidfile_writer(uv_loop_t* loop, std::string path,
                               std::function<void(pid_t, const std::string&)> on_result)
    : loop_(loop), path_(std::move(path)), on_result_(std::move(on_result)) {}

pidfile_writer::~pidfile_writer() {
  if (running_ != nullptr) running_->owner = nullptr;
}

bool pidfile_writer::idle() const noexcept { return running_ == nullptr && next_ == 0; }

void pidfile_writer::write(pid_t pid) {
  if (running_ != nullptr) {
    next_ = pid;
    return;
  }
  start(pid);
}

void pidfile_writer::start(pid_t pid) {
  auto* j = new job{{}, this, path_, pid, {}};
  j->work.data = j;
  running_ = j;
  const int rc = uv_queue_work(
      loop_, &j->work,
      [](uv_work_t* w) {
        auto* jb = static_cast<job*>(w->data);
        if (auto written = write_pidfile(jb->path, jb->pid); !written) jb->failure = written.error().message();
      },
      [](uv_work_t* w, int) {
        auto* jb = static_cast<job*>(w->data);
        pidfile_writer* self = jb->owner;
        const pid_t written_pid = jb->pid;
        const std::string failure = std::move(jb->failure);
        delete jb;
        if (self == nullptr) return;
        self->running_ = nullptr;
        const pid_t next = self->next_;
        self->next_ = 0;
        if (next != 0) self->start(next);
        // Last: the callback may destroy the writer.
        if (self->on_result_) self->on_result_(written_pid, failure);
      });
  if (rc != 0) {
    running_ = nullptr;
    delete j;
    if (on_result_) on_result_(pid, std::string("pid file ") + path_ + ": cannot queue the write: " + uv_strerror(rc));
  }
}

}  // namespace grace::uv::detail
