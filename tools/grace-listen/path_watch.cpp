#include "path_watch.hpp"

#include <sys/stat.h>

#include <cstring>
#include <utility>

namespace grace_listen {

struct path_watch::handles {
  uv_fs_event_t parent{}, self{};
  path_watch* owner = nullptr;
  int open = 2;  // handles not yet closed
};

path_watch::path_watch(uv_loop_t* loop, std::string path, on_change changed)
    : path_(std::move(path)), changed_(std::move(changed)), h_(new handles) {
  while (path_.size() > 1 && path_.back() == '/') path_.pop_back();
  const auto slash = path_.rfind('/');
  if (slash == std::string::npos) {
    parent_ = ".";
    base_ = path_;
  } else {
    parent_ = slash == 0 ? "/" : path_.substr(0, slash);
    base_ = path_.substr(slash + 1);
  }
  struct stat st {};
  // Once, at start-up, before the loop runs.
  directory_ = stat(path_.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  h_->owner = this;
  uv_fs_event_init(loop, &h_->parent);
  uv_fs_event_init(loop, &h_->self);
  h_->parent.data = h_;
  h_->self.data = h_;
}

path_watch::~path_watch() {
  h_->owner = nullptr;
  for (uv_fs_event_t* e : {&h_->parent, &h_->self}) {
    uv_fs_event_stop(e);
    uv_close(reinterpret_cast<uv_handle_t*>(e), [](uv_handle_t* handle) {
      auto* h = static_cast<handles*>(handle->data);
      if (--h->open == 0) delete h;
    });
  }
}

std::string path_watch::start() {
  if (base_.empty() || path_ == "/") {
    // "/" has no parent: watch it directly.
    directory_ = true;
    parent_.clear();
  } else {
    const int rc = uv_fs_event_start(
        &h_->parent,
        [](uv_fs_event_t* e, const char* name, int, int status) {
          auto* h = static_cast<handles*>(e->data);
          if (h->owner != nullptr && status == 0) h->owner->on_parent_event(name);
        },
        parent_.c_str(), 0);
    if (rc != 0) return "cannot watch " + parent_ + " (for " + path_ + "): " + uv_strerror(rc);
  }
  if (directory_) {
    rearm_self();
    if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&h_->self)) && parent_.empty())
      return "cannot watch " + path_;
  }
  return {};
}

void path_watch::on_parent_event(const char* name) {
  if (name == nullptr || base_ != name) return;
  // PATH appeared, was replaced, written, or went away: a directory PATH is watched again on
  // whatever inode the name now has.
  if (directory_) rearm_self();
  changed_(path_);
}

void path_watch::rearm_self() {
  uv_fs_event_stop(&h_->self);
  // ENOENT: it is gone for now; the parent's watch says when it is back.
  uv_fs_event_start(
      &h_->self,
      [](uv_fs_event_t* e, const char*, int, int status) {
        auto* h = static_cast<handles*>(e->data);
        if (h->owner != nullptr && status == 0) h->owner->changed_(h->owner->path_);
      },
      path_.c_str(), 0);
}

}  // namespace grace_listen
