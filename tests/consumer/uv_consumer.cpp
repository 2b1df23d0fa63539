// An outside user of grace-uv: serve, be ready, shut down, drain, exit.
#include <grace/grace.hpp>
#include <grace/uv/upgrader.hpp>

#include <cstdio>

int main() {
  grace::net net;
  auto l = net.listen_tcp("tcp", "127.0.0.1:0");
  if (!l) {
    std::fprintf(stderr, "%s\n", l.error().message().c_str());
    return 1;
  }
  uv_loop_t* loop = uv_default_loop();
  grace::uv::upgrader_options options;
  options.handle_signals = false;
  options.on_event = [](const grace::uv::event&) {};
  grace::uv::upgrader upgrader(loop, net, options);
  if (auto served = upgrader.serve(*l, [](grace::uv::connection& c) { c.close(); }); !served) return 1;
  if (auto ready = upgrader.ready(); !ready) return 1;
  upgrader.shutdown();
  const int status = upgrader.run();
  std::printf("grace %s: served and drained %s\n", GRACE_VERSION_STRING, status == 0 ? "ok" : "FAILED");
  return status;
}
