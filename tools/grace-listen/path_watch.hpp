#pragma once
// A --watch PATH that survives the ways files are really written: replaced by rename (linkers,
// `cp` + `mv`, editors), unlinked and created again, a watched directory removed and made again.
// An inotify watch follows an inode, not a name, so watching PATH alone goes deaf after the first
// replacement. PATH's parent directory is watched instead, for events naming PATH's last
// component; a directory PATH is also watched itself (for its entries), and that watch is made
// again on its new inode whenever the parent says PATH appeared.
#include <uv.h>

#include <functional>
#include <memory>
#include <string>

namespace grace_listen {

class path_watch {
 public:
  using on_change = std::function<void(const std::string& path)>;
  path_watch(uv_loop_t* loop, std::string path, on_change changed);
  ~path_watch();  // closes the handles (freed by their close callbacks)
  path_watch(const path_watch&) = delete;
  path_watch& operator=(const path_watch&) = delete;

  // Starts watching; an error message when PATH's directory cannot be watched.
  std::string start();

 private:
  struct handles;
  void rearm_self();
  void on_parent_event(const char* name);
  std::string path_, parent_, base_;
  bool directory_ = false;
  on_change changed_;
  handles* h_;  // owned; freed after both handles are closed
};

}  // namespace grace_listen
