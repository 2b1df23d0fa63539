#pragma once
// Connection migration: at a hand-over (re-exec or takeover), the old generation passes its idle
// connections to the new one, which goes on serving them on the same TCP connection; a restart
// then closes no connection, and the old generation exits as soon as its busy connections have
// finished instead of waiting for idle clients until the drain deadline.
//
// The connections travel on a channel of their own (grace/fd_channel.hpp), set up over the
// readiness connection after the new generation said it was ready: the old process sends one end
// of a fresh socketpair in a single message, the new one answers on it with a hello, and the
// connections follow, each with the application's bytes (its state, and input read but not yet
// consumed). The old process offers this only to a generation it told so (GRACE_CONNECTIONS=1,
// or the takeover offer): a new generation that does not take connections never hears of it,
// and one that declines closes its end.
//
// grace::uv::upgrader does all of this (on_export / on_import); these are its steps, for other
// event loops.
#include <cstddef>
#include <cstdint>
#include <optional>

#include "grace/error.hpp"
#include "grace/export.hpp"
#include "grace/fd_channel.hpp"

namespace grace {

// New generation: whether the process that started (or was taken over from) this one will offer
// its connections once this one is ready.
GRACE_API bool parent_offers_connections() noexcept;
// New generation, after notify_ready(): the readiness connection to the parent, to watch for
// readability (-1 when there is none, or after notify_retiring()).
GRACE_API int parent_connection_fd() noexcept;
// New generation, when parent_connection_fd() is readable: the parent's end of the connection
// channel (close-on-exec, non-blocking), nullopt when nothing has arrived yet. A parent that
// hung up, or a message that is not the offer, is an error.
[[nodiscard]] GRACE_API result<std::optional<int>> receive_connection_channel();

// Old generation, once the new one is ready: sends the new generation (`ready_fd`, its readiness
// connection: pending_child::ready_fd()) one end of a fresh channel and returns the other.
[[nodiscard]] GRACE_API result<int> offer_connection_channel(int ready_fd);

// The most application bytes one connection carries (its description also holds its address and
// listener name, within description_limit). A connection with more state stays in the old
// generation; an application's buffers for a connection that may move (an HTTP server's request
// head) stay within this.
inline constexpr std::size_t connection_state_limit = description_limit - 4096 - 255 - 64;

// The first parcel on the connection channel, from the new generation: it takes connections, at
// most `capacity` of them (what its fd table holds while it keeps room to accept new clients:
// connection_capacity()). The old generation sends no more than that and keeps the rest.
GRACE_API outgoing_parcel connection_hello(std::size_t capacity = SIZE_MAX);
GRACE_API bool is_connection_hello(const parcel& p) noexcept;
// The capacity a hello names (SIZE_MAX when it names none: a generation of an older grace);
// nullopt for a parcel that is not a hello.
GRACE_API std::optional<std::size_t> hello_capacity(const parcel& p) noexcept;
// How many connections this process can take in: the free entries of its fd table (counted in
// one system call, without /proc) less a reserve, a quarter of the table (at least 16, at most
// 1024), kept for accepting new clients and everything else the process opens.
GRACE_API std::size_t connection_capacity() noexcept;
// After receive_connection_channel(): whether the parent reads a capacity in the hello (an
// earlier release compares the hello whole: it is then sent without one).
GRACE_API bool parent_reads_capacity_in_hello() noexcept;

}  // namespace grace
