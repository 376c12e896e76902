/* Tries the system calls enjin-sandbox's seccomp filter refuses, and a few it lets through, and
 * prints one line per call: "NAME ok", "NAME err=ERRNO" or, when the call killed the process
 * making it, "NAME signal=SIG". Each call is made in a child of its own, so that one that
 * succeeds (a namespace, a personality) changes nothing for the next. Without the filter no call
 * changes anything outside that child: mount targets a path that does not exist, TIOCSTI and
 * ptrace name no fd and no process, and so fail with ENOENT, EBADF and ESRCH. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/keyctl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum Call {
  kKeyctl, kBpf, kUnshare, kCloneNewns, kCloneNewuser, kClonePlain, kClone3, kMount, kPtrace,
  kPersonalityLinux, kPersonalityQuery, kPersonalityBsd, kTiocsti, kGetpid, kX32, kCallCount
};
static const char* const kNames[kCallCount] = {
    "keyctl", "bpf", "unshare", "clone_newns", "clone_newuser", "clone_plain", "clone3", "mount",
    "ptrace", "personality_linux", "personality_query", "personality_bsd", "ioctl_tiocsti",
    "getpid", "x32",
};

/* clone() with `flags` through the raw call; a child made exits at once. */
static long rawClone(unsigned long flags) {
  long rc = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
  if (rc == 0) _exit(0);
  if (rc > 0) waitpid((pid_t)rc, NULL, 0);
  return rc;
}

static long makeCall(enum Call call) {
  switch (call) {
    case kKeyctl:
      return syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0);
    case kBpf: return syscall(SYS_bpf, 0, NULL, 0);
    case kUnshare: return unshare(CLONE_NEWUSER);
    case kCloneNewns: return rawClone(CLONE_NEWNS);
    case kCloneNewuser: return rawClone(CLONE_NEWUSER);
    case kClonePlain: return rawClone(0);
    case kClone3: {
      struct clone_args args;
      memset(&args, 0, sizeof args);
      args.exit_signal = SIGCHLD;
      long rc = syscall(SYS_clone3, &args, sizeof args);
      if (rc == 0) _exit(0);
      if (rc > 0) waitpid((pid_t)rc, NULL, 0);
      return rc;
    }
    case kMount: return mount("none", "/nonexistent/enjin-sandbox-probe", "tmpfs", 0, NULL);
    /* pid 0 is no process: ESRCH without the filter. */
    case kPtrace: return syscall(SYS_ptrace, PTRACE_PEEKDATA, 0, NULL, NULL);
    case kPersonalityLinux: return personality(PER_LINUX);
    case kPersonalityQuery: return personality(0xffffffff);
    case kPersonalityBsd: return personality(PER_BSD);
    case kTiocsti: {
      char c = 'x';
      return ioctl(-1, TIOCSTI, &c);
    }
    case kGetpid: return syscall(SYS_getpid);
#if defined(__x86_64__)
    case kX32: return syscall(0x40000000 | SYS_getpid);
#else
    case kX32: errno = ENOSYS; return -1;
#endif
    case kCallCount: break;
  }
  errno = EINVAL;
  return -1;
}

int main(void) {
  for (int call = 0; call < kCallCount; ++call) {
    pid_t child = fork();
    if (child < 0) {
      perror("fork");
      return 1;
    }
    if (child == 0) {
      long rc = makeCall((enum Call)call);
      _exit(rc < 0 ? (errno > 0 && errno < 255 ? errno : 255) : 0);
    }
    int status = 0;
    if (waitpid(child, &status, 0) != child) {
      perror("waitpid");
      return 1;
    }
    if (WIFSIGNALED(status)) {
      printf("%s signal=%d\n", kNames[call], WTERMSIG(status));
    } else if (WEXITSTATUS(status) == 0) {
      printf("%s ok\n", kNames[call]);
    } else {
      printf("%s err=%d\n", kNames[call], WEXITSTATUS(status));
    }
  }
  return 0;
}
