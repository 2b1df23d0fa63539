#include "server_set.hpp"

#include <algorithm>

#include "../../failure.hpp"

namespace grace::uv::detail {

server_set::server_set(uv_loop_t* loop, hooks h) : loop_(loop), hooks_(std::move(h)) {
  wake_status_ = wake_.init([&](uv_async_t* a) {
    return uv_async_init(loop_, a, [](uv_async_t* woken) { static_cast<server_set*>(woken->data)->hooks_.woken(); });
  }, this);
  if (wake_) uv_unref(reinterpret_cast<uv_handle_t*>(wake_.get()));
}

server_set::~server_set() {
  release_workers();
  servers_.clear();
}

void server_set::release_workers() {
  for (auto& each : servers_)
    if (each.group != nullptr && each.s) each.group->run(each.worker, [&each] { each.s.reset(); });
  servers_.erase(std::remove_if(servers_.begin(), servers_.end(), [](const served& each) { return !each.s; }),
                 servers_.end());
}

result<void> server_set::status() const { return uv_result(wake_status_, "upgrader: wake-up handle"); }

server* server_set::add(std::unique_ptr<server> s, worker_group* group, unsigned worker, grace::listener* l) {
  servers_.push_back(served{std::move(s), group, worker});
  if (std::find(listeners_.begin(), listeners_.end(), l) == listeners_.end()) listeners_.push_back(l);
  return servers_.back().s.get();
}

result<server*> server_set::serve(grace::listener* l, server::accept_callback on_accept, bool stopped) {
  if (l == nullptr) return grace::detail::fail(errc::invalid_argument, "serve: no listener");
  auto s = server::open(loop_, *l, std::move(on_accept));
  if (!s) return tl::unexpected(s.error());
  (*s)->on_connection_closed = [this] { hooks_.closed(); };
  if (stopped) (*s)->stop_accepting();
  return add(std::move(*s), nullptr, 0, l);
}

result<server*> server_set::serve(grace::listener* l, server::accept_callback on_accept, worker_group& workers,
                                  unsigned worker, bool stopped) {
  if (l == nullptr) return grace::detail::fail(errc::invalid_argument, "serve: no listener");
  if (worker >= workers.size())
    return grace::detail::fail(errc::invalid_argument, "serve " + l->address() + ": no worker " +
                                                           std::to_string(worker) + " in a group of " +
                                                           std::to_string(workers.size()));
  result<std::unique_ptr<server>> s = grace::detail::fail(errc::invalid_argument, "serve: the worker stopped");
  workers.run(worker, [&] {
    s = server::open(workers.loop(worker), *l, std::move(on_accept));
    if (!s) return;
    (*s)->on_connection_closed = [this] { wake(); };
    if (stopped) (*s)->stop_accepting();
  });
  if (!s) return tl::unexpected(s.error());
  // This loop has nothing of its own to keep it running while workers serve.
  serving_elsewhere();
  return add(std::move(*s), &workers, worker, l);
}

void server_set::serving_elsewhere() {
  if (wake_) uv_ref(reinterpret_cast<uv_handle_t*>(wake_.get()));
}

void server_set::wake() noexcept {
  if (wake_) uv_async_send(wake_.get());
}

server_set::served* server_set::find(const server* s) {
  for (auto& each : servers_)
    if (each.s.get() == s) return &each;
  return nullptr;
}

void server_set::post(served& each, std::function<void(server&)> fn) {
  if (each.group == nullptr) return fn(*each.s);
  server* s = each.s.get();
  ++worker_tasks_;
  const bool posted = each.group->post(each.worker, [this, s, fn = std::move(fn)] {
    fn(*s);
    --worker_tasks_;
    wake();
  });
  if (!posted) --worker_tasks_;
}

bool server_set::on_loop_of(const server* s, std::function<void(server&)> fn) {
  served* home = find(s);
  if (home == nullptr) return false;
  post(*home, std::move(fn));
  return true;
}

void server_set::each(const std::function<void(server&)>& fn) {
  for (auto& each : servers_) post(each, fn);
}

void server_set::stop_accepting() {
  if (!std::exchange(accepting_, false)) return;
  each([](server& s) { s.stop_accepting(); });
}

void server_set::resume_accepting() {
  accepting_ = true;
  each([](server& s) { s.resume_accepting(); });
}

void server_set::close_listening_sockets() {
  accepting_ = false;
  each([](server& s) { s.close_listening_socket(); });
}

std::size_t server_set::close_all_connections() {
  const std::size_t open = connection_count();
  each([](server& s) { s.close_all_connections(); });
  return open;
}

std::size_t server_set::connection_count() const noexcept {
  std::size_t n = 0;
  for (const auto& each : servers_) n += each.s->connection_count();
  return n;
}

std::size_t server_set::worker_count() const {
  std::vector<std::pair<const worker_group*, unsigned>> workers;
  for (const auto& each : servers_) {
    const std::pair<const worker_group*, unsigned> where(each.group, each.worker);
    if (each.group != nullptr && std::find(workers.begin(), workers.end(), where) == workers.end())
      workers.push_back(where);
  }
  return workers.size();
}

std::vector<const server*> server_set::servers_for(const std::string& address, bool is_unix) const {
  std::vector<const server*> same, similar;
  for (const auto& each : servers_) {
    if (each.s->listener().address == address) same.push_back(each.s.get());
    else if (each.s->listener().is_unix == is_unix) similar.push_back(each.s.get());
  }
  return same.empty() ? similar : same;
}

}  // namespace grace::uv::detail
