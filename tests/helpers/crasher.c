/* crasher MODE: a process that misbehaves on demand, for supervision tests and benches.
 *   exit:N             exits with status N at once
 *   signal:N           kills itself with signal N (its default action, even if inherited ignored)
 *   sleep:MS           sleeps MS milliseconds, then exits 0
 *   ignore-term        ignores SIGTERM, writes "ready\n", then sleeps until killed
 *   spawn-grandchild   forks a child that ignores SIGTERM and sleeps forever, writes
 *                      "grandchild PID\n" once the grandchild ignores SIGTERM, then sleeps until
 *                      killed
 *   lines:N:MS         writes "line 1\n", "line 2\n", ... one write(2) each, MS ms apart; N lines
 *                      then exits 0, or forever when N is 0
 *   hog:MB             allocates and touches MB mebibytes, 1 MiB at a time, then sleeps until
 *                      killed (a memory limit's test: the kernel's OOM killer should end it)
 *   forkbomb:N:S       forks up to N children, each sleeping S seconds then exiting, as fast as
 *                      fork allows; writes "forked K\n" (K: how many forks worked) and sleeps S
 *                      seconds too. Bounded by N and S: the test's fork bomb stops by itself
 * An unknown MODE is usage error 2. Lines go straight to fd 1 with write(2), unbuffered. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void sleepMs(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static void sleepForever(void) {
  for (;;) pause();
}

static int writeAll(const char* s, size_t n) {
  while (n > 0) {
    ssize_t w = write(1, s, n);
    if (w < 0) return -1;
    s += w;
    n -= (size_t)w;
  }
  return 0;
}

static int usage(void) {
  fputs("usage: crasher exit:N | signal:N | sleep:MS | ignore-term | spawn-grandchild |"
        " lines:N:MS | hog:MB | forkbomb:N:S\n", stderr);
  return 2;
}

int main(int argc, char** argv) {
  if (argc != 2) return usage();
  const char* mode = argv[1];
  char line[64];

  if (strncmp(mode, "exit:", 5) == 0) return atoi(mode + 5);

  if (strncmp(mode, "signal:", 7) == 0) {
    int sig = atoi(mode + 7);
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    kill(getpid(), sig);
    return 125; /* the signal did not kill us */
  }

  if (strncmp(mode, "sleep:", 6) == 0) {
    sleepMs(atol(mode + 6));
    return 0;
  }

  if (strcmp(mode, "ignore-term") == 0) {
    signal(SIGTERM, SIG_IGN);
    writeAll("ready\n", 6);
    sleepForever();
  }

  if (strcmp(mode, "spawn-grandchild") == 0) {
    int sync[2];
    if (pipe(sync) != 0) return 1;
    pid_t child = fork();
    if (child < 0) return 1;
    if (child == 0) {
      signal(SIGTERM, SIG_IGN);
      close(sync[0]);
      close(sync[1]); /* tells the parent SIGTERM is ignored */
      sleepForever();
    }
    close(sync[1]);
    char c;
    while (read(sync[0], &c, 1) > 0) {
    }
    close(sync[0]);
    int n = snprintf(line, sizeof line, "grandchild %d\n", (int)child);
    writeAll(line, (size_t)n);
    sleepForever();
  }

  if (strncmp(mode, "lines:", 6) == 0) {
    char* rest;
    long count = strtol(mode + 6, &rest, 10);
    if (*rest != ':') return usage();
    long intervalMs = atol(rest + 1);
    for (long k = 1; count == 0 || k <= count; ++k) {
      int n = snprintf(line, sizeof line, "line %ld\n", k);
      if (writeAll(line, (size_t)n) != 0) return 1;
      if (intervalMs > 0 && (count == 0 || k < count)) sleepMs(intervalMs);
    }
    return 0;
  }

  if (strncmp(mode, "hog:", 4) == 0) {
    long mb = atol(mode + 4);
    for (long k = 0; k < mb; ++k) {
      char* block = malloc(1 << 20);
      if (block == NULL) return 1;
      memset(block, (int)(k & 0xff) | 1, 1 << 20);
    }
    sleepForever();
  }
  if (strncmp(mode, "forkbomb:", 9) == 0) {
    char* rest;
    long count = strtol(mode + 9, &rest, 10);
    if (*rest != ':') return usage();
    long seconds = atol(rest + 1);
    long forked = 0;
    for (long k = 0; k < count; ++k) {
      pid_t pid = fork();
      if (pid == 0) {
        sleepMs(seconds * 1000);
        _exit(0);
      }
      if (pid > 0) ++forked;
    }
    int n = snprintf(line, sizeof line, "forked %ld\n", forked);
    if (writeAll(line, (size_t)n) != 0) return 1;
    sleepMs(seconds * 1000);
    return 0;
  }

  return usage();
}
