// The upgrader's facade: makes the parts (lib/uv/upgrader/), ties their hooks to the handlers in
// lifecycle.cpp, and forwards the public calls. No part reads another's members.
#include "impl.hpp"

#include <signal.h>
#include <unistd.h>

#include "../../failure.hpp"
#include "grace/notify.hpp"

namespace grace::uv {

using detail::phase;

upgrader::impl::impl(uv_loop_t* l, grace::net& n, upgrader_options o)
    : loop(l),
      net(n),
      options(std::move(o)),
      setup_error(detail::check_options(options)),
      generation(grace::generation()),
      events(loop, options.on_event, generation),
      charge(loop, options.pidfile,
             {[this](const std::string& why) { log(event_kind::warning, why); }, [this] { maybe_stop(); }}),
      servers(loop, {[this] { check_drained(); },
                     [this] {
                       outbound.collect();
                       check_drained();
                     }}),
      draining(loop, {[this] {
                        const std::size_t open = servers.connection_count();
                        log(event_kind::drain_progress, std::to_string(open) + " connection(s) still open", 0, open);
                      },
                      [this] { on_drain_deadline(); }}),
      successor(loop, options.ready_timeout, options.successor_watch,
                {[this](upgrade_outcome outcome, pending_child child, const std::string& kill_reason) {
                   on_settled(outcome, std::move(child), kill_reason);
                 },
                 [this](pid_t pid, int status, bool retired) { on_successor_exited(pid, status, retired); },
                 [this] { check_drained(); }}),
      outbound(loop, servers, migration,
               {[this](const std::string& why) { log(event_kind::warning, why); },
                [this](const std::string& line, std::size_t busy) { log(event_kind::drain_progress, line, 0, busy); },
                [this] { check_drained(); },
                [this] {
                  // Without a taker, the connections left end as a drain ends them.
                  if (at == phase::draining) draining.run_hook();
                  check_drained();
                },
                [this] { return at == phase::exiting || at == phase::done; }}),
      inbound(loop, servers, migration,
              {[this](const std::string& why) { log(event_kind::warning, why); },
               [this](const std::string& line) { log(event_kind::drain_progress, line); },
               [this](result<int> fd) { flows.on_predecessor_channel(std::move(fd)); }}),
      flows(loop, {[this](const std::string& why) { log(event_kind::warning, why); },
                   [this](const std::string& line) { log(event_kind::drain_progress, line); },
                   [this] { check_drained(); }}),
      starter(loop, [this](result<pending_child> child) { on_started(std::move(child)); }) {
  if (auto woken = servers.status(); !woken && !setup_error) setup_error = woken.error();
  for (const auto& warning : inheritance_warnings()) log(event_kind::warning, warning);
  if (options.handle_signals)
    if (auto handled = handle_signals(); !handled && !setup_error) setup_error = handled.error();
}

upgrader::impl::~impl() {
  // Work posted to workers may reach the parts: it runs, and the workers' servers go, first.
  servers.release_workers();
  takeover.reset();
  usr2.reset();
  term.reset();
  interrupt.reset();
  hup.reset();
}

result<void> upgrader::impl::handle_signals() {
  auto handle = [this](detail::owned_handle<uv_signal_t>& h, int signum, uv_signal_cb cb) -> result<void> {
    const std::string what = std::string("signal handler for ") + strsignal(signum);
    if (auto made = detail::uv_result(h.init([&](uv_signal_t* s) { return uv_signal_init(loop, s); }, this), what);
        !made)
      return made;
    if (auto started = detail::uv_result(uv_signal_start(h.get(), cb, signum), what); !started) return started;
    // A busy loop must not keep a process alive for a signal handler alone.
    uv_unref(reinterpret_cast<uv_handle_t*>(h.get()));
    return {};
  };
  auto terminate = [](uv_signal_t* s, int) { static_cast<impl*>(s->data)->shutdown(); };
  if (auto h = handle(usr2, SIGUSR2, [](uv_signal_t* s, int) { static_cast<impl*>(s->data)->upgrade(); }); !h) return h;
  if (auto h = handle(term, SIGTERM, terminate); !h) return h;
  if (auto h = handle(interrupt, SIGINT, terminate); !h) return h;
  return handle(hup, SIGHUP, [](uv_signal_t* s, int) { static_cast<impl*>(s->data)->reload(); });
}

detail::hand_over_view upgrader::impl::hand_over_state(pid_t taker) const {
  detail::hand_over_view v;
  v.at = at;
  v.pending = successor.has_pending();
  v.pending_pid = successor.pending();
  v.starting = starter.busy();
  v.taking_over = takeover && takeover->busy();
  v.taking_over_pid = v.taking_over ? takeover->busy_with() : 0;
  v.pid_one = getpid() == 1;
  v.taker = taker;
  v.flows_arriving = flows.holding();
  return v;
}

// --- The facade ----------------------------------------------------------------------------------

upgrader::upgrader(uv_loop_t* loop, grace::net& net, upgrader_options options)
    : impl_(std::make_unique<impl>(loop, net, std::move(options))) {}

upgrader::~upgrader() {
  uv_loop_t* loop = impl_->loop;
  impl_.reset();
  // Let libuv run the close callbacks that free the handles.
  uv_run(loop, UV_RUN_NOWAIT);
}

result<server*> upgrader::serve(grace::listener* l, server::accept_callback on_accept) {
  const bool stopped = impl_->at == phase::draining || impl_->at == phase::exiting;
  return impl_->servers.serve(l, std::move(on_accept), stopped);
}

result<server*> upgrader::serve(grace::listener* l, server::accept_callback on_accept, worker_group& workers,
                                unsigned worker) {
  const bool stopped = impl_->at == phase::draining || impl_->at == phase::exiting;
  return impl_->servers.serve(l, std::move(on_accept), workers, worker, stopped);
}

result<std::vector<server*>> upgrader::serve(const listener_group& group, server::accept_callback on_accept,
                                            worker_group& workers) {
  if (group.members.empty() || group.steered == 0 || group.steered > group.members.size())
    return grace::detail::fail(errc::invalid_argument, "serve: an empty or malformed listener group");
  std::vector<server*> out;
  for (const auto& [member, worker] : place_group(group, workers.size())) {
    auto s = serve(member, on_accept, workers, worker);
    if (!s) return tl::unexpected(s.error());
    out.push_back(*s);
  }
  return out;
}

void upgrader::serving_elsewhere() { impl_->servers.serving_elsewhere(); }

result<void> upgrader::serve_flows(const std::vector<grace::listener*>& sockets, flow_options options,
                                   std::function<void(const routed_datagram&)> on_datagram) {
  return impl_->flows.serve(sockets, std::move(options), std::move(on_datagram));
}

void upgrader::flow_began(const flow_key& key) { impl_->flows.began(key); }

void upgrader::flow_ended(const flow_key& key) { impl_->flows.ended(key); }

bool upgrader::reply(const routed_datagram& d, std::string_view bytes) { return impl_->flows.reply(d, bytes); }

flow_counters upgrader::flow_statistics() const { return impl_->flows.counters(); }

unsigned upgrader::flow_cookie() const noexcept { return impl_->flows.cookie(); }
void upgrader::on_drain(std::function<void()> hook) { impl_->draining.set_hook(std::move(hook)); }
void upgrader::on_reload(std::function<void()> hook) { impl_->reload_hook = std::move(hook); }
void upgrader::on_resume(std::function<void()> hook) { impl_->resume_hook = std::move(hook); }
void upgrader::on_export(std::function<std::optional<std::string>(connection&)> hook) {
  impl_->migration.export_state = std::move(hook);
}
void upgrader::on_import(std::function<void(connection&, std::string)> hook) {
  impl_->migration.import_state = std::move(hook);
}
bool upgrader::can_migrate() const noexcept { return impl_->outbound.open(); }
bool upgrader::migrate(connection& c, std::string bytes) { return impl_->outbound.migrate(c, std::move(bytes)); }
result<void> upgrader::ready() { return impl_->ready(); }
void upgrader::upgrade() { impl_->upgrade(); }
void upgrader::shutdown() { impl_->shutdown(); }
void upgrader::reload() { impl_->reload(); }
int upgrader::run() { return impl_->run(); }
unsigned upgrader::generation() const noexcept { return impl_->generation; }
bool upgrader::draining() const noexcept { return impl_->at == phase::draining; }
bool upgrader::upgrading() const noexcept { return impl_->successor.has_pending() || impl_->starter.busy(); }
std::size_t upgrader::connection_count() const noexcept { return impl_->servers.connection_count(); }

}  // namespace grace::uv
