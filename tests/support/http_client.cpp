#include "http_client.hpp"

#include <poll.h>
#include <strings.h>
#include <unistd.h>

#include <cstdlib>

namespace test_support {

std::optional<http_response> http_get(int fd, std::chrono::milliseconds timeout) {
  const std::string request = "GET / HTTP/1.1\r\nHost: test\r\n\r\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) return std::nullopt;
  return http_read_response(fd, timeout);
}

std::optional<http_response> http_read_response(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string in;
  std::size_t head_end = std::string::npos, length = 0;
  while (true) {
    if (head_end == std::string::npos && (head_end = in.find("\r\n\r\n")) != std::string::npos) {
      const auto at = in.find("Content-Length: ");
      if (at != std::string::npos && at < head_end) length = std::strtoul(in.c_str() + at + 16, nullptr, 10);
    }
    if (head_end != std::string::npos && in.size() >= head_end + 4 + length) break;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
    char chunk[4096];
    const ssize_t n = read(fd, chunk, sizeof chunk);
    if (n <= 0) return std::nullopt;
    in.append(chunk, static_cast<std::size_t>(n));
  }
  http_response r;
  r.status = std::atoi(in.c_str() + 9);
  const std::string head = in.substr(0, head_end);
  r.connection_close = head.find("Connection: close") != std::string::npos;
  r.body = in.substr(head_end + 4, length);
  return r;
}

}  // namespace test_support
