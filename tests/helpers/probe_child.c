/* probe_child [ENV_NAME...]: prints facts about the process it runs as, as one JSON object on
 * stdout, then exits 0. The spawn tests compare them with what a strategy promises:
 *   pid, ppid, uid, gid, euid, egid   ids
 *   groups                            getgroups() count
 *   setuid0_fails                     setuid(0) failed (attempted after everything else is read)
 *   no_new_privs                      NoNewPrivs from /proc/self/status
 *   fds                               open fds from /proc/self/fd, without the one used to list
 *   fd_table_size                     FDSize from /proc/self/status: the slots of the fd table
 *                                     this process was given (exec keeps the table)
 *   has_ctty, tty_errno               open("/dev/tty") succeeded; its errno when it did not
 *   sid_is_pid, pgid_is_pid           session and process-group leader
 *   sig_blk, sig_ign                  SigBlk and SigIgn from /proc/self/status (hex masks)
 *   nofile, core                      RLIMIT_NOFILE and RLIMIT_CORE soft limits (-1: infinity)
 *   cwd                               getcwd()
 *   env                               each ENV_NAME from argv: its value, or null when unset */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void putJsonString(const char* s) {
  putchar('"');
  for (; *s; ++s) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      putchar('\\');
      putchar(c);
    } else if (c < 0x20) {
      printf("\\u%04x", c);
    } else {
      putchar(c);
    }
  }
  putchar('"');
}

/* The value of "Key:" in /proc/self/status, trimmed, into out; "" when absent. */
static void statusField(const char* key, char* out, size_t size) {
  out[0] = '\0';
  FILE* f = fopen("/proc/self/status", "re");
  if (!f) return;
  char line[512];
  size_t keyLen = strlen(key);
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, keyLen) == 0 && line[keyLen] == ':') {
      char* v = line + keyLen + 1;
      while (*v == ' ' || *v == '\t') ++v;
      v[strcspn(v, "\n")] = '\0';
      snprintf(out, size, "%s", v);
      break;
    }
  }
  fclose(f);
}

static long long softLimit(int resource) {
  struct rlimit rl;
  if (getrlimit(resource, &rl) != 0) return -2;
  return rl.rlim_cur == RLIM_INFINITY ? -1 : (long long)rl.rlim_cur;
}

int main(int argc, char** argv) {
  pid_t pid = getpid();
  printf("{\"pid\":%d,\"ppid\":%d", (int)pid, (int)getppid());
  printf(",\"uid\":%u,\"gid\":%u,\"euid\":%u,\"egid\":%u", (unsigned)getuid(), (unsigned)getgid(),
         (unsigned)geteuid(), (unsigned)getegid());
  printf(",\"groups\":%d", getgroups(0, NULL));

  char value[512];
  statusField("NoNewPrivs", value, sizeof value);
  printf(",\"no_new_privs\":%d", atoi(value));
  statusField("FDSize", value, sizeof value);
  printf(",\"fd_table_size\":%d", atoi(value));
  statusField("SigBlk", value, sizeof value);
  printf(",\"sig_blk\":");
  putJsonString(value);
  statusField("SigIgn", value, sizeof value);
  printf(",\"sig_ign\":");
  putJsonString(value);

  printf(",\"fds\":[");
  DIR* dir = opendir("/proc/self/fd");
  if (dir) {
    int listFd = dirfd(dir);
    int first = 1;
    struct dirent* e;
    while ((e = readdir(dir)) != NULL) {
      if (e->d_name[0] == '.') continue;
      int fd = atoi(e->d_name);
      if (fd == listFd) continue;
      printf(first ? "%d" : ",%d", fd);
      first = 0;
    }
    closedir(dir);
  }
  printf("]");

  int tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  int ttyErrno = tty < 0 ? errno : 0;
  if (tty >= 0) close(tty);
  printf(",\"has_ctty\":%s,\"tty_errno\":%d", tty >= 0 ? "true" : "false", ttyErrno);
  printf(",\"sid_is_pid\":%s,\"pgid_is_pid\":%s", getsid(0) == pid ? "true" : "false",
         getpgid(0) == pid ? "true" : "false");
  printf(",\"nofile\":%lld,\"core\":%lld", softLimit(RLIMIT_NOFILE), softLimit(RLIMIT_CORE));

  char cwd[4096];
  printf(",\"cwd\":");
  putJsonString(getcwd(cwd, sizeof cwd) ? cwd : "");

  printf(",\"env\":{");
  for (int i = 1; i < argc; ++i) {
    if (i > 1) putchar(',');
    putJsonString(argv[i]);
    putchar(':');
    const char* v = getenv(argv[i]);
    if (v) {
      putJsonString(v);
    } else {
      fputs("null", stdout);
    }
  }
  putchar('}');

  /* Last: should it succeed, nothing above is affected. */
  printf(",\"setuid0_fails\":%s}\n", setuid(0) != 0 ? "true" : "false");
  return fflush(stdout) == 0 ? 0 : 1;
}
