#pragma once
// The HTTP/1.1 subset the http samples speak, free of any I/O so that the grace samples and the
// bare-libuv benchmark server answer byte for byte alike.
#include <cstddef>
#include <string>

namespace http_protocol {

// Request line and headers; below grace::connection_state_limit, so that a connection with
// half a head read can still move to the next generation.
constexpr std::size_t max_head = 48 * 1024;
constexpr std::size_t max_body = 1024 * 1024;  // a larger Content-Length is 413

// Takes one complete request off the front of `input` (GET/HEAD, an optional Content-Length
// body) and appends its response to `output`; false when `input` holds no complete request yet.
// `close` becomes true when the connection must end after this response: the client asked for
// it (HTTP/1.0 without keep-alive, "Connection: close"), the server is `draining`, or the
// request was refused (400 for a malformed or duplicated Content-Length, 413 for a body over
// max_body, 431 for a head over max_head, 501 for Transfer-Encoding). A refused request is
// answered and the connection ends, so that no byte after it is taken for a new request.
// `who` is the body of the answer to "GET /".
bool answer_one(std::string& input, std::string& output, bool& close, bool draining, const std::string& who);

}  // namespace http_protocol
