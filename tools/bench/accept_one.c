/* grace-bench-accept-one: the baseline of restart latency. A trivial C program that accepts one
 * connection on the listening socket it inherits at fd 3, answers "ok\n" and exits. It takes no
 * argument but --help and --version. */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../include/grace/version.hpp"

int main(int argc, char** argv) {
  if (argc > 1) {
    if (strcmp(argv[1], "--version") == 0) return printf("grace-bench-accept-one (grace) %s\n", GRACE_VERSION_STRING) < 0;
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
      return printf("usage: grace-bench-accept-one (with a listening socket at fd 3)\n") < 0;
    fprintf(stderr, "grace-bench-accept-one: %s \"%s\"\n", argv[1][0] == '-' ? "unknown option" : "unexpected argument",
            argv[1]);
    return 2;
  }
  int conn = accept(3, 0, 0);
  if (conn < 0) return 1;
  return write(conn, "ok\n", 3) == 3 ? 0 : 1;
}
