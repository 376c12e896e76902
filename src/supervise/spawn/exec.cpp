// The exec strategy and the fork/exec core every strategy shares (fork_exec.hpp).
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <utility>

#include <nlohmann/json.hpp>

#include "enjin/base/unique_fd.hpp"
#include "enjin/supervise/fork_exec.hpp"

#if __has_include(<linux/close_range.h>)
#include <linux/close_range.h>
#endif
#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

namespace enjin::supervise::spawn_detail {
namespace {

struct RlimitName {
  const char* name;
  int resource;
};
// Sorted by name: the order of the "known:" list in errors.
constexpr RlimitName kRlimitNames[] = {
    {"as", RLIMIT_AS},         {"core", RLIMIT_CORE},     {"cpu", RLIMIT_CPU},
    {"data", RLIMIT_DATA},     {"fsize", RLIMIT_FSIZE},   {"memlock", RLIMIT_MEMLOCK},
    {"nofile", RLIMIT_NOFILE}, {"nproc", RLIMIT_NPROC},   {"stack", RLIMIT_STACK},
};

const char* rlimitName(int resource) {
  for (const auto& entry : kRlimitNames) {
    if (entry.resource == resource) return entry.name;
  }
  return "?";
}

std::string_view envKey(std::string_view entry) { return entry.substr(0, entry.find('=')); }

// Adds or replaces "KEY=VALUE" in `env`.
void setEnv(std::vector<std::string>& env, std::string entry) {
  std::string_view key = envKey(entry);
  for (auto& existing : env) {
    if (envKey(existing) == key) {
      existing = std::move(entry);
      return;
    }
  }
  env.push_back(std::move(entry));
}

// execvp's search, done in the parent: the first regular, executable file named `name` in a
// folder of `path` (an empty entry is the current folder, as for execvp).
std::optional<std::string> lookupPath(const std::string& name, std::string_view path) {
  for (;;) {
    size_t colon = path.find(':');
    std::string_view dir = path.substr(0, colon);
    std::string candidate = dir.empty() ? name : std::string(dir) + "/" + name;
    struct stat st;
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    if (colon == std::string_view::npos) return std::nullopt;
    path.remove_prefix(colon + 1);
  }
}

// ---- the child ------------------------------------------------------------------------------

enum class Step : int {
  kGate,
  kSetsid,
  kStdio,
  kListen,
  kCloseFds,
  kSetrlimit,
  kSetgroups,
  kSetgid,
  kSetuid,
  kRegainedRoot,
  kNoNewPrivs,
  kChdir,
  kExec,
};

// What a failing child writes to the error pipe: one write, well under PIPE_BUF, so atomic.
struct ChildReport {
  int step;
  int err;
  int index;  // kSetrlimit: which of plan.rlimits; kStdio: the target fd; kListen: which socket
};

// At most this many listening sockets per process: the child keeps their sources in an array
// on its stack.
constexpr size_t kMaxListenFds = 64;
// Room for a pid in decimal, and its NUL, after "LISTEN_PID=" in the child's envp.
constexpr size_t kPidDigits = 20;

// Everything the child reads. Built in the parent; with CLONE_VM the child reads it in place.
struct ChildArgs {
  const ChildPlan* plan;
  const char* path;
  char* const* argv;
  char* const* envp;
  int devNull;
  int stdoutFd;  // the fd to make the child's stdout: the plan's, or devNull
  int stderrFd;
  int errorFd;   // write end of the error pipe (close-on-exec)
  // > 0: the child shares the parent's fd table (CLONE_FILES) and must first take a private one
  // holding only the fds below this number (every fd above is among them).
  int privateFdsBelow;
  int gateRead;   // >= 0: wait for one byte here before the first step (the parent's setup)
  int gateWrite;  // the gate's other end, closed first thing in the child
  const gid_t* groups;
  size_t groupCount;
  const int* listenFds;  // put at 3 .. 3 + listenCount - 1
  int listenCount;
  char* listenPid;       // kPidDigits + 1 bytes of the envp's "LISTEN_PID=" entry, or nullptr
};

// The sanitizers track stack frames in shadow memory; a child frame never returns (execve or
// _exit) and in kVfork mode lives on a stack the parent reuses, so child code is kept out of
// their sight.
#define ENJIN_CHILD_CODE __attribute__((no_sanitize("address", "undefined")))

// From here to childMainForClone: only async-signal-safe calls, no allocation, no locks, no
// libc state. In kVfork mode the child shares the parent's memory, so it writes only to its own
// stack; in kClone3 mode glibc does not know a child exists, so set*id go through raw syscalls:
// glibc's setuid() would broadcast the change to the threads glibc believes this process has.

[[noreturn]] ENJIN_CHILD_CODE void childFail(const ChildArgs& args, Step step, int err,
                                             int index = 0) {
  ChildReport report{static_cast<int>(step), err, index};
  ssize_t ignored = ::write(args.errorFd, &report, sizeof report);
  (void)ignored;
  ::_exit(127);
}

// Closes every fd from `first` up except `keep`.
ENJIN_CHILD_CODE bool closeFdsFrom(int first, int keep) {
  bool ok = true;
  if (keep > first) {
    ok = ::syscall(SYS_close_range, static_cast<unsigned>(first), static_cast<unsigned>(keep) - 1,
                   0U) == 0;
  }
  if (ok) ok = ::syscall(SYS_close_range, static_cast<unsigned>(keep) + 1, ~0U, 0U) == 0;
  if (ok) return true;
  if (errno != ENOSYS) return false;
  // Before Linux 5.9. Listing /proc/self/fd is not async-signal-safe, so close every number the
  // fd limit allows; fds above a lowered limit would survive, a known gap of this fallback.
  rlimit limit;
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return false;
  int max = limit.rlim_cur > (1U << 20) ? (1 << 20) : static_cast<int>(limit.rlim_cur);
  for (int fd = first; fd < max; ++fd) {
    if (fd != keep) ::close(fd);
  }
  return true;
}

[[noreturn]] ENJIN_CHILD_CODE void childRun(const ChildArgs& args) {
  const ChildPlan& plan = *args.plan;
  if (args.gateRead >= 0) {
    ::close(args.gateWrite);
    char go = 0;
    ssize_t n;
    do {
      n = ::read(args.gateRead, &go, 1);
    } while (n < 0 && errno == EINTR);
    // EOF: the parent gave up on its setup (and reaps this child).
    if (n != 1) childFail(args, Step::kGate, n < 0 ? errno : ECANCELED);
    ::close(args.gateRead);
  }
  // Before any fd is touched: a table of its own, with nothing of the parent's beyond the low
  // slots. CLOSE_RANGE_UNSHARE copies only the fds below the range (Linux 5.9; the parent uses
  // the slots only where close_range exists).
  if (args.privateFdsBelow > 0 &&
      ::syscall(SYS_close_range, static_cast<unsigned>(args.privateFdsBelow), ~0U,
                CLOSE_RANGE_UNSHARE) != 0) {
    childFail(args, Step::kCloseFds, errno);
  }
  if (::setsid() < 0) childFail(args, Step::kSetsid, errno);

  // Every signal is blocked (the parent blocked them before cloning), so no handler of the
  // parent can run here. Exec resets handled signals itself; ignored ones it keeps, hence this.
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    ::sigaction(sig, &dfl, nullptr);  // EINVAL for glibc's reserved signals: harmless
  }

  // The child's fds are 0-2 and its listening sockets at 3 .. firstFree - 1. dup2 must not read
  // a source that an earlier dup2 overwrote, nor leave FD_CLOEXEC set on a source that already
  // is its target, so every source below firstFree (and the error pipe) moves up first; only a
  // listening socket already at its own target stays, its FD_CLOEXEC cleared.
  const int firstFree = 3 + args.listenCount;
  int errorFd = args.errorFd;
  int sources[3] = {args.devNull, args.stdoutFd, args.stderrFd};
  for (int i = 0; i < 3; ++i) {
    if (sources[i] < firstFree) {
      sources[i] = ::fcntl(sources[i], F_DUPFD_CLOEXEC, firstFree);
      if (sources[i] < 0) childFail(args, Step::kStdio, errno, i);
    }
  }
  if (errorFd < firstFree) {
    int moved = ::fcntl(errorFd, F_DUPFD_CLOEXEC, firstFree);
    if (moved < 0) childFail(args, Step::kStdio, errno, 3);
    errorFd = moved;
  }
  ChildArgs reportTo = args;
  reportTo.errorFd = errorFd;
  int listen[kMaxListenFds];
  for (int i = 0; i < args.listenCount; ++i) {
    listen[i] = args.listenFds[i];
    if (listen[i] < firstFree && listen[i] != 3 + i) {
      listen[i] = ::fcntl(listen[i], F_DUPFD_CLOEXEC, firstFree);
      if (listen[i] < 0) childFail(reportTo, Step::kListen, errno, i);
    }
  }
  for (int i = 0; i < 3; ++i) {
    if (::dup2(sources[i], i) < 0) childFail(reportTo, Step::kStdio, errno, i);
  }
  for (int i = 0; i < args.listenCount; ++i) {
    const int target = 3 + i;
    const bool ok = listen[i] == target ? ::fcntl(target, F_SETFD, 0) == 0
                                        : ::dup2(listen[i], target) == target;
    if (!ok) childFail(reportTo, Step::kListen, errno, i);
  }
  if (args.listenPid != nullptr) {
    // sd_listen_fds() takes the fds only when LISTEN_PID is its own pid: written here, the one
    // place that knows it before the exec, into the bytes the parent reserved.
    long pid = ::syscall(SYS_getpid);
    char digits[kPidDigits];
    int n = 0;
    do {
      digits[n++] = static_cast<char>('0' + pid % 10);
      pid /= 10;
    } while (pid > 0 && n < static_cast<int>(kPidDigits));
    for (int i = 0; i < n; ++i) args.listenPid[i] = digits[n - 1 - i];
    args.listenPid[n] = '\0';
  }
  if (!closeFdsFrom(firstFree, errorFd)) childFail(reportTo, Step::kCloseFds, errno);

  for (size_t i = 0; i < plan.rlimits.size(); ++i) {
    if (::setrlimit(static_cast<__rlimit_resource_t>(plan.rlimits[i].resource),
                    &plan.rlimits[i].value) != 0) {
      childFail(reportTo, Step::kSetrlimit, errno, static_cast<int>(i));
    }
  }

  if (plan.credentials) {
    const Credentials& creds = *plan.credentials;
    if (::syscall(SYS_setgroups, args.groupCount, args.groups) != 0) {
      childFail(reportTo, Step::kSetgroups, errno);
    }
    if (::syscall(SYS_setresgid, creds.gid, creds.gid, creds.gid) != 0) {
      childFail(reportTo, Step::kSetgid, errno);
    }
    if (::syscall(SYS_setresuid, creds.uid, creds.uid, creds.uid) != 0) {
      childFail(reportTo, Step::kSetuid, errno);
    }
    // Paranoia: a kernel or a capability setup that lets us back to root means the drop failed.
    // (The root of a user namespace of its own is root there by design.)
    if (!plan.userns && ::syscall(SYS_setuid, 0) == 0) {
      childFail(reportTo, Step::kRegainedRoot, 0);
    }
    // prctl is variadic and the kernel insists that arguments 3 to 5 are 0: pass whole longs.
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1UL, 0UL, 0UL, 0UL) != 0) {
      childFail(reportTo, Step::kNoNewPrivs, errno);
    }
  }

  if (plan.umask) ::umask(*plan.umask);
  if (::chdir(plan.cwd.c_str()) != 0) childFail(reportTo, Step::kChdir, errno);

  sigset_t empty;
  sigemptyset(&empty);
  ::sigprocmask(SIG_SETMASK, &empty, nullptr);
  ::execve(args.path, args.argv, args.envp);
  childFail(reportTo, Step::kExec, errno);
}

ENJIN_CHILD_CODE int childMainForClone(void* arg) { childRun(*static_cast<const ChildArgs*>(arg)); }

// ---- the parent -----------------------------------------------------------------------------

std::string describe(const ChildPlan& plan, const ChildReport& report) {
  std::string what;
  switch (static_cast<Step>(report.step)) {
    case Step::kGate: what = "wait for the parent's setup"; break;
    case Step::kSetsid: what = "setsid"; break;
    case Step::kStdio:
      what = report.index == 3 ? "move error pipe" : "dup2 to fd " + std::to_string(report.index);
      break;
    case Step::kListen:
      what = "put listening socket " + std::to_string(report.index) + " at fd " +
             std::to_string(3 + report.index);
      break;
    case Step::kCloseFds: what = "close_range"; break;
    case Step::kSetrlimit: {
      size_t i = static_cast<size_t>(report.index);
      if (i < plan.rlimits.size()) {
        const RlimitSetting& limit = plan.rlimits[i];
        what = std::string("setrlimit ") + limit.name + "=" +
               (limit.value.rlim_cur == RLIM_INFINITY ? std::string("infinity")
                                                      : std::to_string(limit.value.rlim_cur));
      } else {
        what = "setrlimit";
      }
      break;
    }
    case Step::kSetgroups: what = "setgroups"; break;
    case Step::kSetgid:
      what = "setgid(" + std::to_string(plan.credentials ? plan.credentials->gid : 0) + ")";
      break;
    case Step::kSetuid:
      what = "setuid(" + std::to_string(plan.credentials ? plan.credentials->uid : 0) + ")";
      break;
    case Step::kRegainedRoot:
      return "setuid(0) succeeded after dropping to uid " +
             std::to_string(plan.credentials ? plan.credentials->uid : 0) + ": refusing to run";
    case Step::kNoNewPrivs: what = "prctl(PR_SET_NO_NEW_PRIVS)"; break;
    case Step::kChdir: what = "chdir " + plan.cwd; break;
    case Step::kExec: what = "exec " + plan.path; break;
    default: what = "child step " + std::to_string(report.step); break;
  }
  return errnoError(what, report.err).message;
}

void reap(pid_t pid) {
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

// Blocks every signal in the calling thread for its lifetime, so that no handler of ours runs in
// the child before it has reset the dispositions.
class BlockAllSignals {
 public:
  BlockAllSignals() {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &saved_);
  }
  ~BlockAllSignals() { ::pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
  BlockAllSignals(const BlockAllSignals&) = delete;
  BlockAllSignals& operator=(const BlockAllSignals&) = delete;

 private:
  sigset_t saved_;
};

// The child's stack in kVfork mode, with a guard page below it: an overflow faults instead of
// writing over the parent's memory. Mapped on first use.
class ChildStack {
 public:
  static constexpr size_t kGuard = 4096;
  static constexpr size_t kSize = 64 * 1024;
  ChildStack() = default;
  ~ChildStack() {
    if (base_) ::munmap(base_, kGuard + kSize);
  }
  ChildStack(const ChildStack&) = delete;
  ChildStack& operator=(const ChildStack&) = delete;

  // The top of the stack (stacks grow down on every Linux target), or nullptr with errno set.
  void* top() {
    if (base_ == nullptr) {
      void* base = ::mmap(nullptr, kGuard + kSize, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
      if (base == MAP_FAILED) return nullptr;
      if (::mprotect(base, kGuard, PROT_NONE) != 0) {
        int err = errno;
        ::munmap(base, kGuard + kSize);
        errno = err;
        return nullptr;
      }
      base_ = static_cast<char*>(base);
    }
    return base_ + kGuard + kSize;
  }

 private:
  char* base_ = nullptr;
};

struct Clone {
  pid_t pid = -1;
  int pidfd = -1;
  int err = 0;  // when pid < 0
};

Clone cloneVfork(ChildArgs& args) {
  // One per thread, kept: mapping, guarding and unmapping a fresh one took ~9 us a spawn. The
  // thread is suspended while its child runs on it, so it is never in use twice at once.
  thread_local ChildStack stack;
  void* top = stack.top();
  if (top == nullptr) return {-1, -1, errno};
  int pidfd = -1;
  const int files = args.privateFdsBelow > 0 ? CLONE_FILES : 0;
  pid_t pid = ::clone(childMainForClone, top,
                      CLONE_VM | CLONE_VFORK | CLONE_PIDFD | files | SIGCHLD, &args, &pidfd);
  if (pid < 0) return {-1, -1, errno};
  return {pid, pidfd, 0};
}

Clone cloneClone3(ChildArgs& args, uint64_t extraFlags = 0) {
  int pidfd = -1;
  clone_args ca;
  std::memset(&ca, 0, sizeof ca);
  ca.flags = CLONE_PIDFD | extraFlags;
  ca.pidfd = reinterpret_cast<uintptr_t>(&pidfd);
  ca.exit_signal = SIGCHLD;
  long pid = ::syscall(SYS_clone3, &ca, sizeof ca);
  if (pid == 0) childRun(args);
  if (pid < 0) return {-1, -1, errno};
  return {static_cast<pid_t>(pid), pidfd, 0};
}

Clone cloneFork(ChildArgs& shared) {
  // A forked child has a table of its own already.
  ChildArgs args = shared;
  args.privateFdsBelow = 0;
  pid_t pid = ::fork();
  if (pid == 0) childRun(args);
  if (pid < 0) return {-1, -1, errno};
  // Raw syscall: glibc 2.36 declares pidfd_open without C linkage for C++. Always close-on-exec.
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0U));
  if (pidfd < 0) {
    int err = errno;
    ::kill(pid, SIGKILL);
    reap(pid);
    return {-1, -1, err};
  }
  return {pid, pidfd, 0};
}

// Low fd numbers a kVfork child's fds are put in, so that its private fd table needs to hold
// only fds 0 to the last slot. Without them the child would copy the parent's whole table (in
// the holder, four fds per supervised process) only to close it again: with 1000 processes
// that made every spawn 1-1.5 ms slower. Made at the first spawn from the lowest free numbers
// and kept for the life of the process; a slot holds /dev/null when no spawn is using it.
class LowFdSlots {
 public:
  // Fills `args` with slot numbers and returns true, or false (the slots could not be made:
  // the caller spawns without them). The lock is held until release().
  // `listen` (the listening sockets) is rewritten to slot numbers too; a slot is added for each
  // socket beyond the most any spawn has had so far.
  bool take(ChildArgs& args, int stdoutFd, int stderrFd, int errorFd, std::vector<int>& listen) {
    lock_.lock();
    if (null_ < 0 && !make()) {
      lock_.unlock();
      return false;
    }
    const auto isSlot = [&](int fd) {
      return fd == null_ || fd == out_ || fd == err_ || fd == report_ ||
             std::find(listen_.begin(), listen_.end(), fd) != listen_.end();
    };
    // A slot number someone else closed and reused for a source: do without the slots rather
    // than overwrite it.
    for (int fd : {stdoutFd, stderrFd, errorFd}) {
      if (fd >= 0 && isSlot(fd)) {
        lock_.unlock();
        return false;
      }
    }
    for (int fd : listen) {
      if (isSlot(fd)) {
        lock_.unlock();
        return false;
      }
    }
    while (listen_.size() < listen.size()) {
      const int fd = ::fcntl(null_, F_DUPFD_CLOEXEC, 3);
      if (fd < 0) {
        lock_.unlock();
        return false;
      }
      listen_.push_back(fd);
    }
    if (::dup3(stdoutFd >= 0 ? stdoutFd : null_, out_, O_CLOEXEC) < 0 ||
        ::dup3(stderrFd >= 0 ? stderrFd : null_, err_, O_CLOEXEC) < 0 ||
        ::dup3(errorFd, report_, O_CLOEXEC) < 0) {
      release();
      return false;
    }
    int below = std::max({null_, out_, err_, report_}) + 1;
    for (size_t i = 0; i < listen.size(); ++i) {
      if (::dup3(listen[i], listen_[i], O_CLOEXEC) < 0) {
        release();
        return false;
      }
      listen[i] = listen_[i];
      below = std::max(below, listen_[i] + 1);
    }
    args.devNull = null_;
    args.stdoutFd = out_;
    args.stderrFd = err_;
    args.errorFd = report_;
    args.privateFdsBelow = below;
    return true;
  }

  // Back to /dev/null, so that no slot keeps the child's error pipe (its EOF tells the parent
  // the exec happened) or its output channel open.
  void release() {
    for (int slot : {out_, err_, report_}) (void)::dup3(null_, slot, O_CLOEXEC);
    for (int slot : listen_) (void)::dup3(null_, slot, O_CLOEXEC);
    lock_.unlock();
  }

 private:
  bool make() {
    // Without close_range (before Linux 5.9) the child could only unshare the whole table,
    // which sandboxes' seccomp filters often refuse: no slots, no CLONE_FILES.
    if (::syscall(SYS_close_range, ~0U, ~0U, 0U) != 0) return false;
    UniqueFd opened(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!opened) return false;
    int fds[4];
    for (int i = 0; i < 4; ++i) {
      fds[i] = ::fcntl(opened.get(), F_DUPFD_CLOEXEC, 3);
      if (fds[i] < 0) {
        for (int j = 0; j < i; ++j) ::close(fds[j]);
        return false;
      }
    }
    null_ = fds[0];
    out_ = fds[1];
    err_ = fds[2];
    report_ = fds[3];
    return true;
  }

  std::mutex lock_;  // one spawn at a time uses the slots
  int null_ = -1, out_ = -1, err_ = -1, report_ = -1;
  std::vector<int> listen_;  // one per listening socket of the spawn that had the most
};

LowFdSlots& lowFdSlots() {
  static LowFdSlots* slots = new LowFdSlots;  // never destroyed: no exit-time ordering to mind
  return *slots;
}

// Writes `text` to a /proc or cgroup file in one write(2), as those files want.
Status writeWhole(const std::string& path, const std::string& text) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return errnoError("open " + path, errno);
  ssize_t n = ::write(fd.get(), text.data(), text.size());
  if (n < 0) return errnoError("write " + path, errno);
  if (static_cast<size_t>(n) != text.size()) return Error{"write " + path + ": short write"};
  return {};
}

// What the parent does while a gated child waits: the user namespace's maps, then the cgroups.
Status finishChildSetup(const ChildPlan& plan, pid_t pid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  if (plan.userns) {
    if (auto st = writeWhole(proc + "/uid_map", plan.userns->uidMap); !st.ok()) return st;
    if (auto st = writeWhole(proc + "/gid_map", plan.userns->gidMap); !st.ok()) return st;
  }
  for (const auto& procs : plan.cgroupProcs) {
    if (auto st = writeWhole(procs, std::to_string(pid)); !st.ok()) return st;
  }
  return {};
}

}  // namespace

Result<int> rlimitResource(std::string_view name) {
  for (const auto& entry : kRlimitNames) {
    if (name == entry.name) return entry.resource;
  }
  std::string message = "unknown rlimit '" + std::string(name) + "' (known: ";
  bool first = true;
  for (const auto& entry : kRlimitNames) {
    if (!first) message += ", ";
    message += entry.name;
    first = false;
  }
  message += ")";
  return Error{std::move(message)};
}

Status validateCommon(const ProcessSpec& spec) {
  if (spec.command.empty() || spec.command[0].empty()) return Error{"empty command"};
  return {};
}

Result<ForkExecConfig> parseForkExecConfig(const ProcessSpec& spec, std::string_view strategy,
                                           bool withUser) {
  ForkExecConfig config;
  const std::string prefix = std::string(strategy) + ": ";
  // The common case, and exec's hot path: no block, nothing to parse.
  if (spec.strategyConfig.empty()) {
    if (withUser) return Error{prefix + "'user' is required"};
    return config;
  }
  const nlohmann::json j = nlohmann::json::parse(spec.strategyConfig, nullptr, false);
  if (!j.is_object()) return Error{prefix + "settings: expected a JSON object"};
  for (const auto& [key, value] : j.items()) {
    if (key == "rlimits") {
      if (!value.is_object()) return Error{prefix + "rlimits: expected a table"};
      for (const auto& [name, limit] : value.items()) {
        if (auto resource = rlimitResource(name); !resource) {
          return Error{prefix + resource.error().message};
        }
        const bool nonNegative = limit.is_number_unsigned() ||
                                 (limit.is_number_integer() && limit.get<int64_t>() >= 0);
        if (!nonNegative) {
          return Error{prefix + "rlimits." + name + ": expected an integer of at least 0"};
        }
        config.rlimits[name] = limit.get<uint64_t>();
      }
    } else if (key == "user" && withUser) {
      if (!value.is_string() || value.get<std::string>().empty()) {
        return Error{prefix + "user: expected a non-empty string"};
      }
      config.user = value.get<std::string>();
    } else if (key == "user" && value.is_string()) {
      // A user on the exec strategy would run as the supervisor's own user, root most likely:
      // refused rather than ignored, naming the strategy that does switch users.
      return Error{std::string(strategy) + " strategy cannot run as user '" +
                   value.get<std::string>() + "' (use strategy unix-user)"};
    } else {
      return Error{prefix + "unknown key '" + key + "' (known: " +
                   (withUser ? "user, rlimits" : "rlimits") + ")"};
    }
  }
  if (withUser && config.user.empty()) return Error{prefix + "'user' is required"};
  return config;
}

const ProcessSpec& requireSpec(const SpawnRequest& request) {
  if (request.spec == nullptr) {
    std::fprintf(stderr, "spawn: SpawnRequest without a spec\n");
    std::abort();
  }
  return *request.spec;
}

Result<ChildPlan> makePlan(const SpawnRequest& request, std::vector<std::string> baseEnv,
                           const SpawnDefaults& defaults, const ForkExecConfig& config) {
  const ProcessSpec& spec = requireSpec(request);
  if (auto st = validateCommon(spec); !st) return st.error();

  ChildPlan plan;
  plan.argv = spec.command;
  plan.env = std::move(baseEnv);
  for (const auto& [key, value] : spec.env) setEnv(plan.env, key + "=" + value);
  for (const auto& entry : request.extraEnv) setEnv(plan.env, entry);

  const std::string& command = spec.command[0];
  if (command.find('/') != std::string::npos) {
    plan.path = command;
  } else {
    std::string_view path;
    for (const auto& entry : plan.env) {
      if (envKey(entry) == "PATH") path = std::string_view(entry).substr(5);
    }
    auto found = lookupPath(command, path);
    if (!found) {
      return Error{"exec " + command + ": not found on PATH " + std::string(path)};
    }
    plan.path = std::move(*found);
  }

  plan.cwd = spec.cwd.empty() ? request.defaultCwd : spec.cwd;
  for (const auto& [name, value] : config.rlimits) {
    RlimitSetting limit;
    limit.resource = *rlimitResource(name);
    limit.name = rlimitName(limit.resource);
    limit.value.rlim_cur = limit.value.rlim_max = static_cast<rlim_t>(value);
    plan.rlimits.push_back(limit);
  }
  if (defaults.nofileSoft && !config.rlimits.contains("nofile")) {
    // Only the soft limit: the hard one stays what this process has, so the child may raise its
    // soft limit again as far as it could before.
    rlimit current;
    if (::getrlimit(RLIMIT_NOFILE, &current) != 0) return errnoError("getrlimit nofile", errno);
    RlimitSetting limit;
    limit.resource = RLIMIT_NOFILE;
    limit.name = rlimitName(RLIMIT_NOFILE);
    limit.value.rlim_max = current.rlim_max;
    limit.value.rlim_cur = std::min(static_cast<rlim_t>(*defaults.nofileSoft), current.rlim_max);
    plan.rlimits.push_back(limit);
  }
  plan.stdoutFd = request.stdoutFd;
  plan.stderrFd = request.stderrFd;
  if (request.listenFds.size() != spec.sockets.size()) {
    return Error{"process '" + spec.name + "': " + std::to_string(spec.sockets.size()) +
                 " sockets in its spec, " + std::to_string(request.listenFds.size()) +
                 " listening fds given"};
  }
  plan.listenFds = request.listenFds;
  for (const auto& ref : spec.sockets) {
    if (!plan.listenNames.empty()) plan.listenNames += ':';
    plan.listenNames += ref.name;
  }
  return plan;
}

Result<SpawnedProcess> forkExec(const ChildPlan& plan, CloneMode mode) {
  // Every allocation happens here, before the clone.
  std::vector<char*> argv;
  argv.reserve(plan.argv.size() + 1);
  for (const auto& arg : plan.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  if (plan.listenFds.size() > kMaxListenFds) {
    return Error{"spawn: " + std::to_string(plan.listenFds.size()) +
                 " listening sockets, more than " + std::to_string(kMaxListenFds)};
  }
  // With listening sockets: LISTEN_FDS, LISTEN_FDNAMES, and LISTEN_PID with room for the pid the
  // child writes; whatever the plan's env said of the three is replaced.
  const bool listening = !plan.listenFds.empty();
  std::string listenPid, listenCount, listenNames;
  std::vector<char*> envp;
  envp.reserve(plan.env.size() + 4);
  for (const auto& entry : plan.env) {
    if (listening) {
      const std::string_view key = envKey(entry);
      if (key == "LISTEN_PID" || key == "LISTEN_FDS" || key == "LISTEN_FDNAMES") continue;
    }
    envp.push_back(const_cast<char*>(entry.c_str()));
  }
  if (listening) {
    listenPid = "LISTEN_PID=" + std::string(kPidDigits + 1, '\0');
    listenCount = "LISTEN_FDS=" + std::to_string(plan.listenFds.size());
    listenNames = "LISTEN_FDNAMES=" + plan.listenNames;
    for (std::string* entry : {&listenPid, &listenCount, &listenNames}) envp.push_back(entry->data());
  }
  envp.push_back(nullptr);
  std::vector<int> listenFds = plan.listenFds;

  UniqueFd devNull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!devNull) return errnoError("open /dev/null", errno);
  int pipeFds[2];
  if (::pipe2(pipeFds, O_CLOEXEC) != 0) return errnoError("pipe2", errno);
  UniqueFd errorRead(pipeFds[0]);
  UniqueFd errorWrite(pipeFds[1]);

  // A plan the parent must finish after the clone (a user namespace's maps, cgroups) holds the
  // child at a gate, which needs a child that does not share this process's memory.
  const bool gated = plan.userns.has_value() || !plan.cgroupProcs.empty();
  UniqueFd gateRead, gateWrite;
  if (gated) {
    int gate[2];
    if (::pipe2(gate, O_CLOEXEC) != 0) return errnoError("pipe2", errno);
    gateRead.reset(gate[0]);
    gateWrite.reset(gate[1]);
    if (mode == CloneMode::kVfork) mode = CloneMode::kClone3;
  }
  ChildArgs args{&plan,
                 plan.path.c_str(),
                 argv.data(),
                 envp.data(),
                 devNull.get(),
                 plan.stdoutFd >= 0 ? plan.stdoutFd : devNull.get(),
                 plan.stderrFd >= 0 ? plan.stderrFd : devNull.get(),
                 errorWrite.get(),
                 0,
                 gated ? gateRead.get() : -1,
                 gated ? gateWrite.get() : -1,
                 plan.groups.data(),
                 plan.groups.size(),
                 listenFds.data(),
                 static_cast<int>(listenFds.size()),
                 listening ? listenPid.data() + std::strlen("LISTEN_PID=") : nullptr};
  // kVfork shares the fd table with the child, which then copies only the low slots.
  const bool slots = mode == CloneMode::kVfork &&
                     lowFdSlots().take(args, plan.stdoutFd, plan.stderrFd, errorWrite.get(), listenFds);
  args.listenFds = listenFds.data();
  Clone child;
  {
    BlockAllSignals blocked;
    if (plan.userns || plan.namespaces != 0) {
      // No fallback: a kernel without clone3 cannot give the child its namespaces atomically.
      child = cloneClone3(args, plan.namespaces | (plan.userns ? CLONE_NEWUSER : 0));
    } else {
      switch (mode) {
        case CloneMode::kVfork: child = cloneVfork(args); break;
        case CloneMode::kClone3: child = cloneClone3(args); break;
        case CloneMode::kFork: child = cloneFork(args); break;
      }
      // Kernels without CLONE_PIDFD for clone (before 5.2) or without clone3 (before 5.3).
      if (child.pid < 0 && mode != CloneMode::kFork &&
          (child.err == EINVAL || child.err == ENOSYS)) {
        child = cloneFork(args);
      }
    }
  }
  if (slots) lowFdSlots().release();
  if (child.pid < 0) {
    return errnoError(plan.userns || plan.namespaces ? "clone3 with new namespaces" : "clone",
                      child.err);
  }
  if (gated) {
    gateRead.reset();
    if (auto st = finishChildSetup(plan, child.pid); !st.ok()) {
      gateWrite.reset();  // the child sees EOF and gives up
      ::kill(child.pid, SIGKILL);
      reap(child.pid);
      if (child.pidfd >= 0) ::close(child.pidfd);
      return st.error();
    }
    const char go = 'g';
    if (::write(gateWrite.get(), &go, 1) != 1) {
      ::kill(child.pid, SIGKILL);
      reap(child.pid);
      if (child.pidfd >= 0) ::close(child.pidfd);
      return errnoError("spawn: open the child's gate", errno);
    }
    gateWrite.reset();
  }
  UniqueFd pidfd(child.pidfd);
  errorWrite.reset();  // else the read below would never see EOF

  ChildReport report;
  size_t got = 0;
  while (got < sizeof report) {
    ssize_t n =
        ::read(errorRead.get(), reinterpret_cast<char*>(&report) + got, sizeof report - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  if (got != 0) {
    reap(child.pid);
    if (got != sizeof report) return Error{"spawn: short report from the child"};
    return Error{describe(plan, report)};
  }
  // EOF: the exec succeeded (the pipe closed with it), or the child was killed before it could
  // report, which the caller sees as an exit through the pidfd.

  SpawnedProcess spawned;
  spawned.pid = child.pid;
  spawned.pidfd = std::move(pidfd);
  // The child exists until reaped, as a zombie if it already died, so this fails only if /proc
  // is missing; 0 then means "unknown" rather than failing a spawn that happened.
  auto startTime = processStartTime(child.pid);
  spawned.startTime = startTime ? *startTime : 0;
  return spawned;
}

}  // namespace enjin::supervise::spawn_detail

namespace enjin::supervise {
namespace {

// exec understands "rlimits" in its [process.exec] block, and nothing else: a key it does not
// know (a "user" above all, which would silently run as the supervisor's own user) is refused
// rather than ignored. An empty block is no block at all.
// The plan run through enjin-sandbox instead: it is PID 1 of the new namespaces, builds the
// process's view of the host and drops to the app ids itself, so the child keeps the holder's
// credentials until then; the cwd is applied inside.
void sandboxPlan(spawn_detail::ChildPlan& plan, const SpawnDefaults::Sandbox& sandbox,
                 const SpawnDefaults::RunAs& runAs) {
  std::vector<std::string> argv{sandbox.exe, "--uid", std::to_string(runAs.uid), "--gid",
                                std::to_string(runAs.gid)};
  for (const auto& dir : sandbox.hide) argv.insert(argv.end(), {"--hide", dir});
  argv.insert(argv.end(), {"--bind-rw", runAs.home, "--net", "--cwd", plan.cwd});
  // The program's own folder, read-only, when it lies under what the sandbox covers (a fresh
  // /tmp, an empty /run, a hidden folder): what the node was asked to run stays runnable.
  const std::string programDir = plan.path.substr(0, plan.path.rfind('/'));
  std::vector<std::string> covered{"/tmp", "/run", "/dev/shm"};
  covered.insert(covered.end(), sandbox.hide.begin(), sandbox.hide.end());
  const bool underCover = std::any_of(covered.begin(), covered.end(), [&](const std::string& c) {
    return programDir == c || programDir.starts_with(c + "/");
  });
  if (underCover) argv.insert(argv.end(), {"--bind-ro", programDir});
  argv.push_back("--");
  argv.push_back(plan.path);  // as found on PATH here: the sandbox sees the same files
  argv.insert(argv.end(), plan.argv.begin() + 1, plan.argv.end());
  plan.argv = std::move(argv);
  plan.path = sandbox.exe;
  plan.cwd = "/";
  plan.credentials.reset();
  plan.namespaces = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET;
}

class ExecStrategy final : public SpawnStrategy {
 public:
  explicit ExecStrategy(SpawnDefaults defaults) : defaults_(std::move(defaults)) {}
  std::string_view name() const override { return "exec"; }
  SpawnCapabilities capabilities() const override { return {.resourceLimits = true}; }
  Status validate(const ProcessSpec& spec) const override {
    if (auto st = spawn_detail::validateCommon(spec); !st) return st;
    if (auto config = spawn_detail::parseForkExecConfig(spec, name(), false); !config) {
      return config.error();
    }
    return {};
  }
  // A spec without a block (nearly all) pays one empty() for it; one with rlimits parses a few
  // bytes of JSON, next to a clone and an exec.
  Result<SpawnedProcess> spawn(const SpawnRequest& request) const override {
    auto config = spawn_detail::parseForkExecConfig(spawn_detail::requireSpec(request), name(),
                                                    false);
    if (!config) return config.error();
    const auto& runAs = defaults_.runAs;
    auto plan = spawn_detail::makePlan(
        request,
        {std::string("PATH=") + spawn_detail::kBasePath, "HOME=" + (runAs ? runAs->home : "/")},
        defaults_, *config);
    if (!plan) return plan.error();
    if (runAs) {
      plan->credentials = spawn_detail::Credentials{runAs->uid, runAs->gid};
      plan->umask = runAs->umask;
      if (request.spec->cwd.empty()) plan->cwd = runAs->home;
    }
    if (defaults_.sandbox && runAs) sandboxPlan(*plan, *defaults_.sandbox, *runAs);
    return spawn_detail::forkExec(*plan);
  }

  Result<ExecIdentity> execIn(const ProcessSpec& spec) const override {
    auto identity = SpawnStrategy::execIn(spec);
    if (!identity || !defaults_.runAs) return identity;
    identity->uid = static_cast<int>(defaults_.runAs->uid);
    identity->gid = static_cast<int>(defaults_.runAs->gid);
    return identity;
  }

 private:
  SpawnDefaults defaults_;
};

}  // namespace

std::unique_ptr<SpawnStrategy> makeExecStrategy(SpawnDefaults defaults) {
  return std::make_unique<ExecStrategy>(std::move(defaults));
}

}  // namespace enjin::supervise
