#include "http_response.hpp"

#include <strings.h>

#include <cstdlib>

namespace harness {
namespace {

// The value of header `name` (case-insensitive) within the head, or npos when absent.
bool header(const std::string& head, const char* name, std::string& value) {
  const std::size_t name_length = std::char_traits<char>::length(name);
  std::size_t line = head.find("\r\n");
  while (line != std::string::npos && line + 2 < head.size()) {
    const std::size_t start = line + 2;
    const std::size_t end = head.find("\r\n", start);
    const std::size_t stop = end == std::string::npos ? head.size() : end;
    if (stop - start > name_length && head[start + name_length] == ':' &&
        strncasecmp(head.c_str() + start, name, name_length) == 0) {
      std::size_t from = start + name_length + 1;
      while (from < stop && head[from] == ' ') ++from;
      value = head.substr(from, stop - from);
      return true;
    }
    line = end;
  }
  return false;
}

bool contains_token(const std::string& value, const char* token) {
  const std::size_t n = std::char_traits<char>::length(token);
  for (std::size_t i = 0; i + n <= value.size(); ++i)
    if (strncasecmp(value.c_str() + i, token, n) == 0) return true;
  return false;
}

// De-chunks from `at`; false while the last chunk has not arrived. Sets `end` past the trailer.
bool dechunk(const std::string& input, std::size_t at, std::string& body, std::size_t& end, bool& malformed) {
  while (true) {
    const std::size_t line_end = input.find("\r\n", at);
    if (line_end == std::string::npos) return false;
    char* stop = nullptr;
    const unsigned long size = std::strtoul(input.c_str() + at, &stop, 16);
    if (stop == input.c_str() + at) {
      malformed = true;
      return true;
    }
    if (size == 0) {
      const std::size_t trailer_end = input.find("\r\n\r\n", line_end);
      if (input.compare(line_end, 4, "\r\n\r\n") == 0) end = line_end + 4;
      else if (trailer_end != std::string::npos) end = trailer_end + 4;
      else return false;
      return true;
    }
    if (input.size() < line_end + 2 + size + 2) return false;
    body.append(input, line_end + 2, size);
    at = line_end + 2 + size + 2;
  }
}

}  // namespace

http_response parse_http_response(const std::string& input, bool at_eof, bool head_request) {
  http_response r;
  const std::size_t head_end = input.find("\r\n\r\n");
  if (head_end == std::string::npos) {
    // Cut short: a partial answer. Not HTTP at all: wrong.
    const std::size_t prefix = input.size() < 5 ? input.size() : 5;
    r.malformed = input.compare(0, prefix, "HTTP/", 0, prefix) != 0;
    r.complete = r.malformed;
    return r;
  }
  if (input.compare(0, 5, "HTTP/") != 0) {
    r.malformed = r.complete = true;
    return r;
  }
  const std::string head = input.substr(0, head_end + 2);
  r.status_ok = head.size() > 12 && head.compare(8, 4, " 200") == 0;
  std::string value;
  r.server_closes = header(head, "Connection", value) && contains_token(value, "close");
  const std::size_t body_start = head_end + 4;
  if (head_request) {
    r.complete = true;
    r.consumed = body_start;
    return r;
  }
  if (header(head, "Transfer-Encoding", value) && contains_token(value, "chunked")) {
    std::size_t end = 0;
    r.complete = dechunk(input, body_start, r.body, end, r.malformed);
    r.consumed = end;
    return r;
  }
  if (header(head, "Content-Length", value)) {
    char* stop = nullptr;
    const unsigned long length = std::strtoul(value.c_str(), &stop, 10);
    if (stop == value.c_str()) {
      r.malformed = r.complete = true;
      return r;
    }
    if (input.size() < body_start + length) return r;  // more to come, or cut short
    r.complete = true;
    r.body = input.substr(body_start, length);
    r.consumed = body_start + length;
    return r;
  }
  // Neither: the body runs to the end of the connection.
  r.server_closes = true;
  if (!at_eof) return r;
  r.complete = true;
  r.body = input.substr(body_start);
  r.consumed = input.size();
  return r;
}

}  // namespace harness
