/* stamp_child: the supervised process of the supervision benches. The very first thing it does is
 * read CLOCK_MONOTONIC; it then writes that reading, with its pid and parent pid, as one 16-byte
 * record to the FIFO named by $STAMP_FIFO (if set), and sleeps until killed.
 *   record: struct { int64_t monotonic_ns; int32_t pid; int32_t ppid; } in host byte order
 * A FIFO rather than a datagram socket: a write of at most PIPE_BUF bytes is atomic, and the
 * bench makes the pipe big enough for thousands of records, so nobody waits. (Thousands of
 * senders blocked on a full unix datagram queue are all woken by every read, a thundering herd
 * that once stalled a 5000-child restart for minutes.)
 * Then, if $STAMP_READY_FD names an fd, it writes "\n" to it and closes it: the readiness
 * notification of s6 (a service dir's notification-fd), which s6-supervise needs before it restarts
 * a dead service without its 1 s pause.
 * It takes no arguments it cares about, so it can be a service's ./run (a symlink to it) as well.
 * The bench takes its own CLOCK_MONOTONIC reading just before kill(), so "kill -> first
 * instruction of the replacement" is the difference of two readings of one clock. */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
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

  const char* path = getenv("STAMP_FIFO");
  if (path != NULL && path[0] != '\0') {
    struct Stamp stamp = {(int64_t)now.tv_sec * 1000000000 + now.tv_nsec, (int32_t)getpid(),
                          (int32_t)getppid()};
    /* The bench holds the read end open, so this open does not wait. */
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      (void)write(fd, &stamp, sizeof stamp);
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
