// The smallest outside user of an installed grace.
#include <grace/grace.hpp>

#include <cstdio>

int main() {
  grace::net net;
  auto l = net.listen_tcp("tcp", "127.0.0.1:0");
  if (!l) {
    std::fprintf(stderr, "%s\n", l.error().message().c_str());
    return 1;
  }
  std::printf("listening on %s\n", (*l)->address().c_str());
  return 0;
}
