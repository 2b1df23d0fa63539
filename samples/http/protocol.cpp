#include "protocol.hpp"

#include <strings.h>

#include <cstdlib>
#include <string_view>

namespace http_protocol {
namespace {

constexpr std::size_t max_head = 64 * 1024;

std::string_view header_value(std::string_view head, std::string_view name) {
  std::size_t at = head.find("\r\n");
  while (at != std::string_view::npos && at + 2 < head.size()) {
    const std::size_t start = at + 2;
    const std::size_t end = head.find("\r\n", start);
    const std::string_view line = head.substr(start, end - start);
    const std::size_t colon = line.find(':');
    if (colon == name.size() && strncasecmp(line.data(), name.data(), name.size()) == 0) {
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      return value;
    }
    at = end;
  }
  return {};
}

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

parse_result answer_one(std::string& input, std::string& output, bool& close, bool draining,
                        const std::string& who) {
  const std::size_t head_end = input.find("\r\n\r\n");
  if (head_end == std::string::npos) return input.size() < max_head ? parse_result::need_more : parse_result::malformed;
  const std::string_view head(input.data(), head_end + 2);
  const std::string_view length_text = header_value(head, "Content-Length");
  char* end = nullptr;
  const std::string length_string(length_text);
  const unsigned long body = length_text.empty() ? 0 : std::strtoul(length_string.c_str(), &end, 10);
  if (!length_text.empty() && (end == length_string.c_str() || *end != '\0')) return parse_result::malformed;
  if (input.size() < head_end + 4 + body) return parse_result::need_more;

  const std::string_view request_line = head.substr(0, head.find("\r\n"));
  const bool http10 = request_line.size() >= 8 && request_line.substr(request_line.size() - 8) == "HTTP/1.0";
  const std::string_view connection = header_value(head, "Connection");
  const bool client_closes = http10 ? !equals_ignoring_case(connection, "keep-alive")
                                    : equals_ignoring_case(connection, "close");
  close = client_closes || draining;

  const bool head_only = request_line.rfind("HEAD ", 0) == 0;
  const bool root = request_line.rfind("GET / ", 0) == 0 || request_line.rfind("HEAD / ", 0) == 0;
  const std::string body_text = root ? who : "not found\n";
  output += root ? "HTTP/1.1 200 OK\r\n" : "HTTP/1.1 404 Not Found\r\n";
  output += "Content-Type: text/plain\r\nContent-Length: " + std::to_string(body_text.size()) + "\r\n";
  output += close ? "Connection: close\r\n\r\n" : "Connection: keep-alive\r\n\r\n";
  if (!head_only) output += body_text;
  input.erase(0, head_end + 4 + body);
  return parse_result::answered;
}

}  // namespace http_protocol
