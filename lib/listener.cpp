#include "grace/listener.hpp"

#include <unistd.h>

namespace grace {

listener::listener(int fd, grace::network n, socket_address address, std::string text,
                   std::string name, bool inherited)
    : fd_(fd),
      network_(n),
      address_(std::move(address)),
      text_(std::move(text)),
      name_(std::move(name)),
      inherited_(inherited) {}

listener::~listener() {
  // Go's net package removes a unix socket's file on close, so there an old generation exiting
  // deletes the path the new one serves. Here only a file this process made, never shared, and
  // still ours goes.
  if (owns_path_ && !shared_) {
    struct stat st {};
    if (stat(text_.c_str(), &st) == 0 && st.st_dev == path_dev_ && st.st_ino == path_ino_)
      unlink(text_.c_str());
  }
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace grace
