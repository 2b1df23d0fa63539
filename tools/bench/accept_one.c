/* grace-bench-accept-one: the baseline of restart latency. A trivial C program that accepts one
 * connection on the listening socket it inherits at fd 3, answers "ok\n" and exits. */
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
  int conn = accept(3, 0, 0);
  if (conn < 0) return 1;
  return write(conn, "ok\n", 3) == 3 ? 0 : 1;
}
