#pragma once
// The HTTP/1.1 subset the http samples speak, free of any I/O so that the grace sample and the
// bare-libuv benchmark server answer byte for byte alike.
#include <string>

namespace http_protocol {

enum class parse_result { need_more, answered, malformed };

// Takes one complete request off the front of `input` (GET/HEAD, optional Content-Length body)
// and appends its response to `output`. `close` becomes true when the connection must end after
// this response: the client asked for it (HTTP/1.0 without keep-alive, "Connection: close"), or
// the server is `draining`. `who` is the body of the answer to "GET /".
parse_result answer_one(std::string& input, std::string& output, bool& close, bool draining,
                        const std::string& who);

}  // namespace http_protocol
