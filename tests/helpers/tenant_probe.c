/* tenant_probe [--out FILE] OPTION...: run as a tenant's application process, tries what a tenant
 * must not be able to do and reports each attempt as one JSON object per line. It judges nothing
 * and exits 0 whatever was allowed: the tests that run it read the lines and decide.
 *
 * Options, repeatable, run in the order given (all are checked before the first one runs):
 *   --out FILE      the report goes to FILE (created 0600, truncated) instead of stdout; first only
 *   --read PATH     open(PATH, O_RDONLY) and read 1 byte
 *   --list DIR      opendir + readdir to the end
 *   --write PATH    open(PATH, O_WRONLY|O_APPEND), never truncating; when PATH does not exist,
 *                   open(O_CREAT|O_EXCL, 0600) instead and unlink what that made
 *   --create DIR    create DIR/tenant_probe.<pid> (O_CREAT|O_EXCL), unlinked when that worked
 *   --keys DIR      walks DIR (symlinks neither followed nor opened, at most 10000 entries, 64
 *                   levels) and reads each non-directory whose name ends in ".key" (op "key"); a
 *                   directory it cannot open is reported as op "enter"
 *   --kill PID      kill(PID, 0): the permission check only, no signal is delivered
 *   --ptrace PID    ptrace(PTRACE_ATTACH); should that work, waits for the stop and detaches
 *   --connect PATH  connect an AF_UNIX stream socket to PATH (a ZeroMQ ipc:// file, a control
 *                   socket). A full backlog (EAGAIN) counts as ok: the listener was reachable
 *   --self          facts about the process itself (op "self", see reportSelf)
 *   --hold SECONDS  once the report is written and flushed, sleeps SECONDS (0..3600)
 *
 * An attempt's line: {"op":"read","target":"/x","ok":false,"errno":"EACCES"}; "target" is the
 * argument as given (for "key" and "enter": the path found under DIR); "errno" is only on failed
 * attempts, a symbolic name for the usual values, else the number. Lines without "ok" are not
 * attempts: "self", and "walk" ({"op":"walk","target":DIR,"entries":N,"keys":K,"capped":bool}),
 * which ends each --keys so a test can tell that the walk saw what it planted. The last line is
 * {"op":"done","attempts":N,"allowed":M}. Strings are JSON-escaped; bytes that are not UTF-8
 * become U+FFFD. Exit status: 0 once the report is written, 1 when writing it failed, 2 for a bad
 * command line. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { kMaxEntries = 10000, kMaxDepth = 64, kMaxHold = 3600 };

static FILE* out;
static int outFd = -1; /* the --out file's fd: left out of --self's "fds" */
static long attempts;
static long allowed;

static const char* errnoName(int e) {
  switch (e) {
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ESRCH: return "ESRCH";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EROFS: return "EROFS";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case ENOTTY: return "ENOTTY";
    case EIO: return "EIO";
    case ENXIO: return "ENXIO";
    case ELOOP: return "ELOOP";
    case EINVAL: return "EINVAL";
    case EEXIST: return "EEXIST";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case EAGAIN: return "EAGAIN";
    case ENOTSOCK: return "ENOTSOCK";
    case EPROTOTYPE: return "EPROTOTYPE";
    case EBADF: return "EBADF";
    case ENOSPC: return "ENOSPC";
    case EDQUOT: return "EDQUOT";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOSYS: return "ENOSYS";
    case EBUSY: return "EBUSY";
    case ETXTBSY: return "ETXTBSY";
    case ENODEV: return "ENODEV";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    default: return NULL;
  }
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when s does not start one. */
static int utf8Length(const unsigned char* s) {
  unsigned char c = s[0];
  if (c < 0x80) return 1;
  int n;
  unsigned min;
  unsigned cp;
  if ((c & 0xe0) == 0xc0) {
    n = 2, min = 0x80, cp = c & 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    n = 3, min = 0x800, cp = c & 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    n = 4, min = 0x10000, cp = c & 0x07;
  } else {
    return 0;
  }
  for (int i = 1; i < n; ++i) {
    if ((s[i] & 0xc0) != 0x80) return 0; /* also stops at the terminating NUL */
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

static void putString(const char* str) {
  const unsigned char* s = (const unsigned char*)str;
  putc('"', out);
  while (*s) {
    unsigned char c = *s;
    if (c == '"' || c == '\\') {
      putc('\\', out);
      putc(c, out);
      ++s;
    } else if (c < 0x20 || c == 0x7f) {
      fprintf(out, "\\u%04x", c);
      ++s;
    } else {
      int n = utf8Length(s);
      if (n == 0) {
        fputs("\\ufffd", out);
        ++s;
      } else {
        fwrite(s, 1, (size_t)n, out);
        s += n;
      }
    }
  }
  putc('"', out);
}

static void putNullableString(const char* s) {
  if (s) {
    putString(s);
  } else {
    fputs("null", out);
  }
}

/* Ends a line and flushes it, so a killed or held probe has written everything before. */
static void endLine(void) {
  fputs("}\n", out);
  fflush(out);
}

static void beginAttempt(const char* op, const char* target) {
  fputs("{\"op\":", out);
  putString(op);
  fputs(",\"target\":", out);
  putString(target);
}

/* Ends an attempt's line; err is 0 when it worked. */
static void endAttempt(int err) {
  ++attempts;
  if (err == 0) {
    ++allowed;
    fputs(",\"ok\":true", out);
  } else {
    const char* name = errnoName(err);
    if (name) {
      fprintf(out, ",\"ok\":false,\"errno\":\"%s\"", name);
    } else {
      fprintf(out, ",\"ok\":false,\"errno\":%d", err);
    }
  }
  endLine();
}

static void report(const char* op, const char* target, int err) {
  beginAttempt(op, target);
  endAttempt(err);
}

/* Reads 1 byte from fd (0 bytes, an empty file, counts as read); closes fd. errno value or 0. */
static int readOneByte(int fd) {
  char byte;
  int err = read(fd, &byte, 1) < 0 ? errno : 0;
  close(fd);
  return err;
}

/* O_NONBLOCK: opening a FIFO must not wait for a writer. */
enum { kReadFlags = O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC };

static void tryRead(const char* path) {
  int fd = open(path, kReadFlags);
  report("read", path, fd < 0 ? errno : readOneByte(fd));
}

static void tryList(const char* path) {
  DIR* dir = opendir(path);
  if (!dir) {
    report("list", path, errno);
    return;
  }
  long entries = 0;
  int err = 0;
  for (;;) {
    errno = 0;
    struct dirent* e = readdir(dir);
    if (!e) {
      err = errno;
      break;
    }
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) ++entries;
  }
  closedir(dir);
  beginAttempt("list", path);
  if (err == 0) fprintf(out, ",\"entries\":%ld", entries);
  endAttempt(err);
}

static void tryWrite(const char* path) {
  int fd = open(path, O_WRONLY | O_APPEND | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  int err = fd < 0 ? errno : 0;
  int created = 0;
  if (err == ENOENT) {
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOCTTY | O_CLOEXEC, 0600);
    err = fd < 0 ? errno : 0;
    if (fd >= 0) {
      created = 1;
      unlink(path);
    }
  }
  if (fd >= 0) close(fd);
  beginAttempt("write", path);
  if (created) fputs(",\"created\":true", out);
  endAttempt(err);
}

static void tryCreate(const char* dir) {
  char path[PATH_MAX];
  int err;
  if (snprintf(path, sizeof path, "%s/tenant_probe.%d", dir, (int)getpid()) >= (int)sizeof path) {
    err = ENAMETOOLONG;
  } else {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOCTTY | O_CLOEXEC, 0600);
    err = fd < 0 ? errno : 0;
    if (fd >= 0) {
      close(fd);
      unlink(path);
    }
  }
  report("create", dir, err);
}

struct Walk {
  long entries;
  long keys;
  int capped;
};

static int endsWithKey(const char* name) {
  size_t n = strlen(name);
  return n >= 4 && strcmp(name + n - 4, ".key") == 0;
}

/* Walks the open directory dirFd (named path; closed here). Only openat on names read from the
 * directory itself with O_NOFOLLOW, so a symlink is never followed, whatever its place. */
static void walkDir(int dirFd, const char* path, int depth, struct Walk* walk) {
  DIR* dir = fdopendir(dirFd);
  if (!dir) {
    report("enter", path, errno);
    close(dirFd);
    return;
  }
  struct dirent* e;
  while ((e = readdir(dir)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (walk->entries >= kMaxEntries) {
      walk->capped = 1;
      break;
    }
    ++walk->entries;
    unsigned char type = e->d_type;
    if (type == DT_UNKNOWN) {
      struct stat st;
      if (fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISLNK(st.st_mode) ? DT_LNK : DT_REG;
    }
    if (type == DT_LNK) continue;
    char child[PATH_MAX];
    if (snprintf(child, sizeof child, "%s/%s", path, e->d_name) >= (int)sizeof child) continue;
    if (type == DT_DIR) {
      if (depth >= kMaxDepth) {
        walk->capped = 1;
        continue;
      }
      int fd = openat(dirfd(dir), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) {
        report("enter", child, errno);
      } else {
        walkDir(fd, child, depth + 1, walk);
      }
    } else if (endsWithKey(e->d_name)) {
      ++walk->keys;
      int fd = openat(dirfd(dir), e->d_name, kReadFlags | O_NOFOLLOW);
      report("key", child, fd < 0 ? errno : readOneByte(fd));
    }
  }
  closedir(dir);
}

static void tryKeys(const char* path) {
  struct Walk walk = {0, 0, 0};
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    report("enter", path, errno);
  } else {
    walkDir(fd, path, 0, &walk);
  }
  fputs("{\"op\":\"walk\",\"target\":", out);
  putString(path);
  fprintf(out, ",\"entries\":%ld,\"keys\":%ld,\"capped\":%s", walk.entries, walk.keys,
          walk.capped ? "true" : "false");
  endLine();
}

static void tryKill(const char* arg, pid_t pid) { report("kill", arg, kill(pid, 0) == 0 ? 0 : errno); }

static void tryPtrace(const char* arg, pid_t pid) {
  if (ptrace(PTRACE_ATTACH, pid, NULL, NULL) != 0) {
    report("ptrace", arg, errno);
    return;
  }
  /* Attached: the tracee stops with SIGSTOP. Take that stop and let it go at once. */
  int status;
  while (waitpid(pid, &status, __WALL) < 0 && errno == EINTR) {
  }
  ptrace(PTRACE_DETACH, pid, NULL, NULL);
  report("ptrace", arg, 0);
}

static void tryConnect(const char* path) {
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof addr.sun_path) {
    report("connect", path, ENAMETOOLONG);
    return;
  }
  strcpy(addr.sun_path, path);
  /* Non-blocking: a listener that never accepts must not hang the probe. */
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    report("connect", path, errno);
    return;
  }
  int err = connect(fd, (struct sockaddr*)&addr, sizeof addr) == 0 ? 0 : errno;
  close(fd);
  beginAttempt("connect", path);
  if (err == EAGAIN) fputs(",\"backlog_full\":true", out);
  endAttempt(err == EAGAIN ? 0 : err);
}

/* The value of "Key:" in /proc/self/status, trimmed, into value; 0 when absent. */
static int statusField(const char* key, char* value, size_t size) {
  FILE* f = fopen("/proc/self/status", "re");
  if (!f) return 0;
  char line[512];
  size_t keyLen = strlen(key);
  int found = 0;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, keyLen) == 0 && line[keyLen] == ':') {
      char* v = line + keyLen + 1;
      while (*v == ' ' || *v == '\t') ++v;
      v[strcspn(v, "\n")] = '\0';
      snprintf(value, size, "%s", v);
      found = 1;
      break;
    }
  }
  fclose(f);
  return found;
}

static void putStatusNumber(const char* name, const char* key) {
  char value[512];
  if (statusField(key, value, sizeof value)) {
    fprintf(out, ",\"%s\":%ld", name, strtol(value, NULL, 10));
  } else {
    fprintf(out, ",\"%s\":null", name);
  }
}

static void putStatusString(const char* name, const char* key) {
  char value[512];
  fprintf(out, ",\"%s\":", name);
  putNullableString(statusField(key, value, sizeof value) ? value : NULL);
}

static int isNumber(const char* s) {
  if (!*s) return 0;
  for (; *s; ++s) {
    if (*s < '0' || *s > '9') return 0;
  }
  return 1;
}

/* {"op":"self", uid gid euid, groups (supplementary), no_new_privs, cap_eff, cap_prm, seccomp
 * (from /proc/self/status; null without /proc), fds (open fds, less the one listing them and the
 * --out file), ctty (open("/dev/tty") works), tiocsti (ioctl(0, TIOCSTI) pushing "x" into the
 * terminal's input: "ok" or the errno), umask (octal), sid, pid, pids_visible (numeric entries of
 * /proc), root_writable (/tenant_probe.<pid> could be created; unlinked then), cwd, home ($HOME)}.
 * The fds are listed first, before this function opens anything else. */
static void reportSelf(void) {
  fputs("{\"op\":\"self\"", out);
  fprintf(out, ",\"uid\":%u,\"gid\":%u,\"euid\":%u", (unsigned)getuid(), (unsigned)getgid(),
          (unsigned)geteuid());

  fputs(",\"fds\":[", out);
  DIR* fdDir = opendir("/proc/self/fd");
  if (fdDir) {
    int listFd = dirfd(fdDir);
    int first = 1;
    struct dirent* e;
    while ((e = readdir(fdDir)) != NULL) {
      if (!isNumber(e->d_name)) continue;
      int fd = atoi(e->d_name);
      if (fd == listFd || fd == outFd) continue;
      fprintf(out, first ? "%d" : ",%d", fd);
      first = 0;
    }
    closedir(fdDir);
  }
  fputc(']', out);

  fputs(",\"groups\":[", out);
  int count = getgroups(0, NULL);
  gid_t* groups = count > 0 ? malloc(sizeof(gid_t) * (size_t)count) : NULL;
  if (groups) {
    count = getgroups(count, groups);
    for (int i = 0; i < count; ++i) fprintf(out, i ? ",%u" : "%u", (unsigned)groups[i]);
    free(groups);
  }
  fputc(']', out);

  putStatusNumber("no_new_privs", "NoNewPrivs");
  putStatusString("cap_eff", "CapEff");
  putStatusString("cap_prm", "CapPrm");
  putStatusNumber("seccomp", "Seccomp");

  int tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (tty >= 0) close(tty);
  fprintf(out, ",\"ctty\":%s", tty >= 0 ? "true" : "false");

  char injected = 'x';
  int tiocstiErr = ioctl(0, TIOCSTI, &injected) == 0 ? 0 : errno;
  fputs(",\"tiocsti\":", out);
  if (tiocstiErr == 0) {
    fputs("\"ok\"", out);
  } else if (errnoName(tiocstiErr)) {
    fprintf(out, "\"%s\"", errnoName(tiocstiErr));
  } else {
    fprintf(out, "\"%d\"", tiocstiErr);
  }

  mode_t mask = umask(0);
  umask(mask);
  fprintf(out, ",\"umask\":\"%04o\"", (unsigned)mask);
  fprintf(out, ",\"sid\":%d,\"pid\":%d", (int)getsid(0), (int)getpid());

  long pids = 0;
  DIR* proc = opendir("/proc");
  if (proc) {
    struct dirent* e;
    while ((e = readdir(proc)) != NULL) pids += isNumber(e->d_name);
    closedir(proc);
  }
  fprintf(out, ",\"pids_visible\":%ld", pids);

  char rootPath[64];
  snprintf(rootPath, sizeof rootPath, "/tenant_probe.%d", (int)getpid());
  int rootFd = open(rootPath, O_WRONLY | O_CREAT | O_EXCL | O_NOCTTY | O_CLOEXEC, 0600);
  if (rootFd >= 0) {
    close(rootFd);
    unlink(rootPath);
  }
  fprintf(out, ",\"root_writable\":%s", rootFd >= 0 ? "true" : "false");

  char cwd[PATH_MAX];
  fputs(",\"cwd\":", out);
  putNullableString(getcwd(cwd, sizeof cwd));
  fputs(",\"home\":", out);
  putNullableString(getenv("HOME"));
  endLine();
}

/* A whole decimal number in [min, max] into *value; 0 when s is not one. */
static int parseNumber(const char* s, long min, long max, long* value) {
  char* end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < min || v > max) return 0;
  *value = v;
  return 1;
}

static int usage(const char* why, const char* arg) {
  fprintf(stderr, "tenant_probe: %s%s%s\n", why, arg ? ": " : "", arg ? arg : "");
  return 2;
}

static const char* const kOptions[] = {"--read", "--list",    "--write", "--create", "--keys",
                                       "--kill", "--ptrace",  "--connect", "--out",  "--hold"};

static int takesValue(const char* opt) {
  for (size_t i = 0; i < sizeof kOptions / sizeof kOptions[0]; ++i) {
    if (strcmp(opt, kOptions[i]) == 0) return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  out = stdout;
  long hold = 0;

  /* The whole command line is checked first: a typo must not leave half a report. */
  for (int i = 1; i < argc; ++i) {
    const char* opt = argv[i];
    if (strcmp(opt, "--self") == 0) continue;
    if (!takesValue(opt)) return usage("unknown option", opt);
    if (i + 1 >= argc) return usage("missing value", opt);
    const char* value = argv[++i];
    long number;
    if (strcmp(opt, "--out") == 0 && i != 2) return usage("--out must come first", NULL);
    if ((strcmp(opt, "--kill") == 0 || strcmp(opt, "--ptrace") == 0) &&
        !parseNumber(value, INT_MIN, INT_MAX, &number)) {
      return usage("not a pid", value);
    }
    if (strcmp(opt, "--hold") == 0) {
      if (!parseNumber(value, 0, kMaxHold, &number)) return usage("--hold: 0..3600 seconds", value);
      hold = number;
    }
  }

  int first = 1;
  if (argc > 2 && strcmp(argv[1], "--out") == 0) {
    outFd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_NOCTTY | O_CLOEXEC, 0600);
    if (outFd < 0 || !(out = fdopen(outFd, "w"))) {
      fprintf(stderr, "tenant_probe: %s: %s\n", argv[2], strerror(errno));
      return 1;
    }
    first = 3;
  }

  for (int i = first; i < argc; ++i) {
    const char* opt = argv[i];
    if (strcmp(opt, "--self") == 0) {
      reportSelf();
      continue;
    }
    const char* value = argv[++i];
    if (strcmp(opt, "--read") == 0) {
      tryRead(value);
    } else if (strcmp(opt, "--list") == 0) {
      tryList(value);
    } else if (strcmp(opt, "--write") == 0) {
      tryWrite(value);
    } else if (strcmp(opt, "--create") == 0) {
      tryCreate(value);
    } else if (strcmp(opt, "--keys") == 0) {
      tryKeys(value);
    } else if (strcmp(opt, "--kill") == 0) {
      tryKill(value, (pid_t)strtol(value, NULL, 10));
    } else if (strcmp(opt, "--ptrace") == 0) {
      tryPtrace(value, (pid_t)strtol(value, NULL, 10));
    } else if (strcmp(opt, "--connect") == 0) {
      tryConnect(value);
    }
    /* --hold was taken in the check above. */
  }

  fprintf(out, "{\"op\":\"done\",\"attempts\":%ld,\"allowed\":%ld", attempts, allowed);
  endLine();
  if (ferror(out) || fflush(out) != 0) {
    fprintf(stderr, "tenant_probe: writing the report failed\n");
    return 1;
  }

  /* nanosleep resumes after a handled signal; an unhandled one ends the probe anyway. */
  struct timespec left = {hold, 0};
  while (left.tv_sec > 0 || left.tv_nsec > 0) {
    if (nanosleep(&left, &left) == 0) break;
    if (errno != EINTR) break;
  }
  return 0;
}
