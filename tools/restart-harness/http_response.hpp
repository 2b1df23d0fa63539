#pragma once
// Reading one HTTP/1.x response off the front of a buffer, as far as the referee needs: is it
// complete, is it a 200, what is its body, and may the connection be reused after it.
#include <cstddef>
#include <string>

namespace harness {

struct http_response {
  bool complete = false;        // the whole response is in the buffer (or the connection ended it)
  bool status_ok = false;       // 200
  bool server_closes = false;   // "Connection: close", or a body that runs to the end of the stream
  bool malformed = false;       // cannot be a response; counted as wrong
  std::string body;             // de-chunked
  std::size_t consumed = 0;     // bytes of the buffer the response took
};

// `at_eof`: the connection has ended, which completes a body without a length; a response cut
// short by the end stays incomplete (the caller counts a partial answer). The answer to a HEAD
// request (`head_request`) has no body, whatever its headers say.
http_response parse_http_response(const std::string& input, bool at_eof, bool head_request = false);

}  // namespace harness
