#pragma once
#include <sys/stat.h>
#include <sys/types.h>

#include <string>

#include "grace/address.hpp"
#include "grace/export.hpp"

namespace grace {

class net;

// One listening socket held by a grace::net. The net owns it (and closes its fd); callers use
// the pointer the net hands out until they close the listener through the net.
class GRACE_API listener {
 public:
  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;
  ~listener();

  int fd() const noexcept { return fd_; }
  grace::network network() const noexcept { return network_; }
  const socket_address& local_address() const noexcept { return address_; }
  // Canonical text of the address: "127.0.0.1:8080", "[::]:8080", "/abs/path.sock", "@name".
  const std::string& address() const noexcept { return text_; }
  // The name carried in LISTEN_FDNAMES ("unknown" when nobody named it, as systemd does).
  const std::string& name() const noexcept { return name_; }
  // True when the socket came from the parent process or the service manager.
  bool inherited() const noexcept { return inherited_; }

 private:
  friend class net;
  GRACE_LOCAL listener(int fd, grace::network n, socket_address address, std::string text, std::string name,
                       bool inherited);

  int fd_ = -1;
  grace::network network_;
  socket_address address_;
  std::string text_;
  std::string name_;
  bool inherited_ = false;
  // Set once the socket has been given to another process: from then on the path it serves is
  // not this process's to remove.
  bool shared_ = false;
  // The socket file this process created by bind(); compared before unlinking so that a path
  // re-bound by somebody else is never removed.
  bool owns_path_ = false;
  dev_t path_dev_ = 0;
  ino_t path_ino_ = 0;
};

}  // namespace grace
