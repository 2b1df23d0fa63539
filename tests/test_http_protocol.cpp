// grace-http's request parser on hostile input: every refusal is answered and ends the
// connection, so no byte after it is taken for a new request (no desynchronisation), and
// nothing is buffered without bound.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <string>

#include "../samples/http/protocol.hpp"
#include "grace/migration.hpp"

namespace {

struct answer {
  bool complete = false;
  bool close = false;
  std::string output;
  std::string rest;  // what is left in the input
};

answer feed(std::string input, bool draining = false) {
  answer a;
  a.complete = http_protocol::answer_one(input, a.output, a.close, draining, "pid=1 generation=1\n");
  a.rest = input;
  return a;
}

bool starts_with(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }

}  // namespace

TEST_CASE("a request head that may still move fits what a connection carries") {
  CHECK(http_protocol::max_head < grace::connection_state_limit);
}

TEST_CASE("a GET, pipelined requests, a body with a Content-Length") {
  auto get = feed("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(get.complete);
  CHECK_FALSE(get.close);
  CHECK(starts_with(get.output, "HTTP/1.1 200 OK\r\n"));
  CHECK(get.output.find("\r\n\r\npid=1 generation=1\n") != std::string::npos);

  auto two = feed("GET / HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n");
  CHECK(two.complete);
  CHECK(two.rest == "GET /x HTTP/1.1\r\n\r\n");

  auto body = feed("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET");
  CHECK(body.complete);
  CHECK(body.rest == "GET");
  CHECK_FALSE(feed("POST / HTTP/1.1\r\nContent-Length:  3 \r\n\r\nab").complete);  // waits for the body
  CHECK(feed("POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n").complete);
  CHECK_FALSE(feed("GET / HTTP/1.1\r\nHost: x\r\n").complete);

  auto draining = feed("GET / HTTP/1.1\r\n\r\n", true);
  CHECK(draining.close);
  CHECK(draining.output.find("Connection: close\r\n") != std::string::npos);
}

TEST_CASE("Content-Length: decimal digits only, bounded; anything else is refused and ends the connection") {
  for (const char* bad : {"-1", "+5", "0x10", "1e3", "5,5", "five", "", "1 2", "\t"}) {
    CAPTURE(bad);
    auto a = feed(std::string("POST / HTTP/1.1\r\nContent-Length: ") + bad + "\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    CHECK(a.complete);
    CHECK(a.close);
    CHECK(starts_with(a.output, "HTTP/1.1 400 Bad Request\r\n"));
    CHECK(a.rest.empty());  // the smuggled request behind it is never answered
  }
  for (const char* huge : {"18446744073709551615", "18446744073709551616", "99999999999999999999999", "1048577"}) {
    CAPTURE(huge);
    auto a = feed(std::string("POST / HTTP/1.1\r\nContent-Length: ") + huge + "\r\n\r\n");
    CHECK(a.complete);
    CHECK(a.close);
    CHECK(starts_with(a.output, "HTTP/1.1 413 Payload Too Large\r\n"));
  }
  CHECK_FALSE(feed("POST / HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n").complete);  // at the limit: waits
  auto twice = feed("POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello");
  CHECK(twice.close);
  CHECK(starts_with(twice.output, "HTTP/1.1 400 Bad Request\r\n"));
  auto chunked = feed("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
  CHECK(chunked.close);
  CHECK(starts_with(chunked.output, "HTTP/1.1 501 Not Implemented\r\n"));
}

TEST_CASE("a head that never ends is refused at 64 KiB, not buffered without bound") {
  std::string endless = "GET / HTTP/1.1\r\nX: " + std::string(http_protocol::max_head, 'a');
  auto a = feed(endless);
  CHECK(a.complete);
  CHECK(a.close);
  CHECK(starts_with(a.output, "HTTP/1.1 431 "));
  CHECK(a.rest.empty());
  CHECK_FALSE(feed("GET / HTTP/1.1\r\nX: " + std::string(1000, 'a')).complete);
}
