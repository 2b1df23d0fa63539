#pragma once
// grace::net's state and the work done under its lock. The public class holds only a pointer to
// it, so none of this is part of the ABI, and nothing here is exported (GRACE_LOCAL in net.hpp).
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "endpoint_index.hpp"
#include "environment_protocol.hpp"
#include "grace/net.hpp"
#include "inherit.hpp"

namespace grace {

struct net::state {
  result<void> inherit_locked();
  void add_inherited_locked(detail::inherited_socket s);
  void file_inherited_locked(std::size_t index);  // into inherited_index_
  result<void> prepare_listen_locked(const listen_options& options);
  // The first inherited socket filed under `where` that is a socket of `n` (family rules as for
  // a wildcard), or null; an error when one of its kind cannot serve. Given a name, one inherited
  // under that name comes first.
  result<listener*> take_inherited_locked(const detail::endpoint& where, network n, int family, bool wildcard,
                                          const std::string& name);
  result<listener*> take_inherited_locked(const detail::endpoint& where, network n, int family, bool wildcard,
                                          const std::string& name, bool same_name_only);
  result<void> refuse_foreign_group(const socket_address& candidate, int type);
  result<listener*> take_inherited_by_file_locked(const socket_address& address, network n);
  result<listener*> take_named_ephemeral_locked(network n, const socket_address& asked, const std::string& name);
  result<listener*> claim_slot_locked(detail::inherited_slot& slot, network n);
  listener* activate_locked(std::unique_ptr<listener> l);
  // TCP or UDP: a numeric address without resolving it, else what resolve_tcp gives.
  result<listener*> listen_inet(network n, std::string_view address, const listen_options& options);
  result<listener*> listen_inet_locked(network n, const socket_address* candidates, std::size_t count,
                                       const listen_options& options);
  result<listener*> claim_inherited_inet_locked(network n, const socket_address* candidates, std::size_t count,
                                                const listen_options& options);
  std::unique_ptr<listener> show_inherited_locked(detail::inherited_slot& slot) const;
  result<listener*> bind_inet_locked(network n, const socket_address* candidates, std::size_t count,
                                     const listen_options& options);
  result<listener*> listen_unix_locked(network n, std::string_view path, const listen_options& options);

  // Starts a process with every active listener, under the lock, so that the fds it gets and the
  // variables that name them (lay_out_child) come from one view of the listeners: one opened on
  // another thread meanwhile can shift neither. A `successor` gets its readiness socket after
  // the listeners and the extra fds.
  result<pid_t> start_process(const process_options& options, std::optional<detail::successor_place> successor);

  mutable std::mutex mutex_;
  bool inherited_read_ = false;
  std::optional<error> inherit_error_;
  std::string inherited_source_;  // "LISTEN_FDS=N", for errors about an inherited fd
  mutable std::vector<detail::inherited_slot> inherited_;
  detail::endpoint_index inherited_index_;  // endpoint hash -> slot
  std::vector<std::unique_ptr<listener>> active_;
};

}  // namespace grace
