/* stamp_child: the supervised process of the supervision benches. The very first thing it does is
 * read CLOCK_MONOTONIC; it then sends that reading, with its pid and parent pid, as one datagram
 * to the unix socket named by $STAMP_SOCKET (if set), and sleeps until killed.
 *   datagram: struct { int64_t monotonic_ns; int32_t pid; int32_t ppid; } in host byte order
 * Then, if $STAMP_READY_FD names an fd, it writes "\n" to it and closes it: the readiness
 * notification of s6 (a service dir's notification-fd), which s6-supervise needs before it restarts
 * a dead service without its 1 s pause.
 * It takes no arguments it cares about, so it can be a service's ./run (a symlink to it) as well.
 * The bench takes its own CLOCK_MONOTONIC reading just before kill(), so "kill -> first
 * instruction of the replacement" is the difference of two readings of one clock. */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct Stamp {
  int64_t monotonicNs;
  int32_t pid;
  int32_t ppid;
};

int main(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);

  const char* path = getenv("STAMP_SOCKET");
  if (path != NULL && path[0] != '\0' && strlen(path) < sizeof(((struct sockaddr_un*)0)->sun_path)) {
    struct Stamp stamp = {(int64_t)now.tv_sec * 1000000000 + now.tv_nsec, (int32_t)getpid(),
                          (int32_t)getppid()};
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
      /* Blocking: when the bench's queue is full the stamp waits rather than being lost. */
      (void)sendto(fd, &stamp, sizeof stamp, 0, (const struct sockaddr*)&addr, sizeof addr);
      close(fd);
    }
  }
  const char* ready = getenv("STAMP_READY_FD");
  if (ready != NULL && ready[0] != '\0') {
    int fd = atoi(ready);
    (void)write(fd, "\n", 1);
    close(fd);
  }
  for (;;) pause();
}
