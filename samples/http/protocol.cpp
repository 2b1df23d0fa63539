#include "protocol.hpp"

#include <strings.h>

#include <string_view>

namespace http_protocol {
namespace {

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view trimmed(std::string_view value) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  return value;
}

// Every value of header `name` in `head`, counted; the first one kept.
std::size_t header_values(std::string_view head, std::string_view name, std::string_view& first) {
  std::size_t count = 0;
  std::size_t at = head.find("\r\n");
  while (at != std::string_view::npos && at + 2 < head.size()) {
    const std::size_t start = at + 2;
    const std::size_t end = head.find("\r\n", start);
    const std::string_view line = head.substr(start, end - start);
    const std::size_t colon = line.find(':');
    if (colon != std::string_view::npos && equals_ignoring_case(line.substr(0, colon), name)) {
      if (count++ == 0) first = trimmed(line.substr(colon + 1));
    }
    at = end;
  }
  return count;
}

std::string_view header_value(std::string_view head, std::string_view name) {
  std::string_view value;
  header_values(head, name, value);
  return value;
}

// Decimal digits only, at most max_body: "-1", "+5", "0x10", "1e3" and 2^64-1 are refused here,
// before any arithmetic can wrap.
enum class length_check { ok, malformed, too_large };
length_check parse_length(std::string_view text, std::size_t& length) {
  if (text.empty() || text.size() > 20) return text.size() > 20 ? length_check::too_large : length_check::malformed;
  std::size_t value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return length_check::malformed;
    if (value > max_body) return length_check::too_large;  // stops long before overflow
    value = value * 10 + static_cast<std::size_t>(c - '0');
  }
  if (value > max_body) return length_check::too_large;
  length = value;
  return length_check::ok;
}

void refuse(std::string& output, bool& close, const char* status) {
  const std::string body = std::string(status) + "\n";
  output += "HTTP/1.1 " + std::string(status) + "\r\nContent-Type: text/plain\r\nContent-Length: " +
            std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  close = true;
}

}  // namespace

bool answer_one(std::string& input, std::string& output, bool& close, bool draining, const std::string& who) {
  const std::size_t head_end = input.find("\r\n\r\n");
  if (head_end == std::string::npos) {
    if (input.size() < max_head) return false;
    refuse(output, close, "431 Request Header Fields Too Large");
    input.clear();
    return true;
  }
  const std::string_view head(input.data(), head_end + 2);
  if (!header_value(head, "Transfer-Encoding").empty()) {
    refuse(output, close, "501 Not Implemented");
    input.clear();
    return true;
  }
  std::string_view length_text;
  const std::size_t lengths = header_values(head, "Content-Length", length_text);
  std::size_t body = 0;
  if (lengths > 1) {
    refuse(output, close, "400 Bad Request");
    input.clear();
    return true;
  }
  if (lengths == 1) {
    const length_check checked = parse_length(length_text, body);
    if (checked != length_check::ok) {
      refuse(output, close, checked == length_check::too_large ? "413 Payload Too Large" : "400 Bad Request");
      input.clear();
      return true;
    }
  }
  if (input.size() < head_end + 4 + body) return false;

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
  return true;
}

}  // namespace http_protocol
