// The referee's HTTP reading: lengths, chunks, read-to-end bodies, and what counts as wrong.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "../tools/restart-harness/http_response.hpp"

using harness::parse_http_response;

TEST_CASE("Content-Length bodies: incomplete until the last byte; reuse unless the server closes") {
  const std::string full = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
  for (std::size_t cut = 0; cut < full.size(); ++cut)
    CHECK_FALSE(parse_http_response(full.substr(0, cut), false).complete);
  auto r = parse_http_response(full, false);
  CHECK(r.complete);
  CHECK(r.status_ok);
  CHECK_FALSE(r.server_closes);
  CHECK(r.body == "hello");
  CHECK(r.consumed == full.size());
  auto closing = parse_http_response("HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n", false);
  CHECK(closing.complete);
  CHECK(closing.server_closes);
  auto cut_short = parse_http_response(full.substr(0, full.size() - 1), true);
  CHECK_FALSE(cut_short.complete);  // a partial answer
  CHECK_FALSE(cut_short.malformed);
  auto head = parse_http_response("HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n", false, true);
  CHECK(head.complete);  // the answer to HEAD has no body
  CHECK(head.body.empty());
}

TEST_CASE("chunked bodies are reassembled; trailers allowed") {
  const std::string chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npid=\r\n3\r\n42\n\r\n0\r\n\r\n";
  for (std::size_t cut = 0; cut < chunked.size(); ++cut)
    CHECK_FALSE(parse_http_response(chunked.substr(0, cut), false).complete);
  auto r = parse_http_response(chunked, false);
  CHECK(r.complete);
  CHECK_FALSE(r.malformed);
  CHECK(r.body == "pid=42\n");
  CHECK(r.consumed == chunked.size());
  auto trailer = parse_http_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n", false);
  CHECK(trailer.complete);
  CHECK(trailer.body.empty());
  auto bad = parse_http_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false);
  CHECK(bad.complete);
  CHECK(bad.malformed);
}

TEST_CASE("a body without a length runs to the end of the connection") {
  const std::string head = "HTTP/1.0 200 OK\r\n\r\nsome body";
  CHECK_FALSE(parse_http_response(head, false).complete);
  auto r = parse_http_response(head, true);
  CHECK(r.complete);
  CHECK(r.server_closes);
  CHECK(r.body == "some body");
}

TEST_CASE("not a 200, or not HTTP at all, is wrong") {
  auto not_found = parse_http_response("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false);
  CHECK(not_found.complete);
  CHECK_FALSE(not_found.status_ok);
  auto garbage = parse_http_response("SSH-2.0-OpenSSH\r\n\r\n", false);
  CHECK(garbage.complete);
  CHECK(garbage.malformed);
  auto half_head = parse_http_response("HTTP/1.1 200", true);
  CHECK_FALSE(half_head.complete);  // cut short: a partial answer, not a wrong one
  CHECK_FALSE(half_head.malformed);
  CHECK(parse_http_response("SSH", true).malformed);
}
