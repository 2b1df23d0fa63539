#pragma once
// A minimal blocking HTTP/1.1 client for tests, with deadlines.
#include <chrono>
#include <optional>
#include <string>

namespace test_support {

struct http_response {
  int status = 0;
  bool connection_close = false;
  std::string body;
};

// Sends "GET / HTTP/1.1" on an open connection and reads one response; nullopt if the server
// closed the connection or did not answer in time.
std::optional<http_response> http_get(int fd, std::chrono::milliseconds timeout = std::chrono::seconds(10));
// Reads one response to a request the caller sent itself.
std::optional<http_response> http_read_response(int fd, std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace test_support
