#pragma once
#include <string>
#include <vector>

#include <memory>

#include "canonical_address.hpp"
#include "failure.hpp"
#include "grace/address.hpp"
#include "grace/listener.hpp"

namespace grace::detail {

struct inherited_socket {
  int fd = -1;
  // SOCK_STREAM, SOCK_SEQPACKET or SOCK_DGRAM: once checked here, or as the grace parent that
  // checked it said (GRACE_LISTEN_TYPES); 0 until then.
  int type = 0;
  int family = 0;  // AF_INET, AF_INET6 or AF_UNIX
  endpoint where;  // its local address, as matched (address_of() gives it back)
  std::string name;
};

struct inherited_slot;
// Appends the sockets this process inherited (systemd's protocol, captured at start-up) to
// `slots`, for the first caller only. A start-up reads thousands of them, so each costs one
// system call here (its local address: an fd that is not open, not a socket, or of another
// family is an error that names the variable and the fd); the rest is checked when a listen call
// claims it (claimable_as), unless the grace parent said what it is (GRACE_LISTEN_TYPES). A
// malformed environment is an error that names the variable. A unix socket's endpoint is its path
// as bound: the caller makes a relative one absolute.
result<void> take_inherited_sockets(std::vector<inherited_slot>& slots);
// Checks one socket handed over by `source` (named in the error) in full: a listening stream or
// seqpacket socket, or a datagram socket, of AF_INET, AF_INET6 or AF_UNIX.
result<inherited_socket> check_inherited_socket(const std::string& source, int fd);
// Whether `s` is a socket of network `n`: false for one of another kind (a UDP socket on the
// port a TCP listen call asks for), an error naming the fd for one of the kind that cannot serve
// (a TCP socket that is not listening). Sets s.type when it fits.
result<bool> claimable_as(inherited_socket& s, network n, const std::string& source);
// The socket type of an unchecked socket (one system call), for showing it.
int socket_type_of(int fd);

// An inherited socket in its net: owned (closed with the slot) until a listen call claims it.
struct inherited_slot {
  inherited_socket socket;  // fd -1 once claimed
  std::uint64_t hash = 0;   // socket.where.hash()
  std::unique_ptr<listener> shown;  // made by net::unused_inherited(); owns the fd then
  inherited_slot() = default;
  inherited_slot(inherited_slot&& other) noexcept;
  inherited_slot& operator=(inherited_slot&&) = delete;
  ~inherited_slot();
  bool open() const noexcept { return socket.fd >= 0; }
};

}  // namespace grace::detail
