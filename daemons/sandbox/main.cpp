// enjin-sandbox: runs one application in namespaces of its own.
//
//   enjin-sandbox [--uid N --gid N] [--hide DIR]... [--bind-rw DIR]... [--bind-ro DIR]...
//                 [--hostname NAME] [--net]
//                 [--no-seccomp] [--cwd DIR] -- COMMAND ARGS...
//
// The holder clones it as PID 1 of new mount, pid, ipc, uts (and, for --net, network)
// namespaces, with the capabilities of the root of their user namespace. In this order it
//   1. checks that it is PID 1;
//   2. builds a new root: the host's "/" bound recursively onto a folder of a scratch tmpfs,
//      every mount of it remounted read-only and nosuid (flags the kernel has locked kept);
//   3. mounts over it: a proc of the new pid namespace on /proc, a sysfs of the new network
//      namespace on /sys (--net only), empty tmpfs on /tmp and /dev/shm (1777), an empty
//      read-only tmpfs over /run (the host's sockets) and over each --hide DIR, the host's DIR
//      read-write for each --bind-rw DIR, read-only for each --bind-ro DIR (a folder under one
//      of those covers, the application's own program folder in /tmp for one). /dev is the host's, read-only: device nodes still
//      open for writing on a read-only mount, and none can be added;
//   4. pivots into the new root and detaches the old one;
//   5. sets the host name (default "sandbox") and, for --net, brings up lo;
//   6. forks the application: setsid, capability bounding set emptied, setgroups([]), setgid,
//      setuid (setuid(0) must then fail), every capability dropped, PR_SET_NO_NEW_PRIVS,
//      umask 077, chdir, fds from 3 up closed (but the listening sockets it was handed: with
//      LISTEN_PID naming this process, fds 3 .. 3 + LISTEN_FDS - 1 stay, and the application
//      gets LISTEN_PID set to its own pid, LISTEN_FDS and LISTEN_FDNAMES as they were), the
//      seccomp filter (src/supervise/sandbox.cpp), execvp;
//   7. as PID 1: forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the
//      application, reaps every child, and when the application ends exits with its code, or
//      128 + the signal that killed it. The kernel then kills whatever is left in the pid
//      namespace; a SIGKILL to this process does the same at once.
// The first step that fails prints "enjin-sandbox: <step>: <strerror>" and exits 127: nothing
// runs in a sandbox half built.
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "enjin/supervise/sandbox.hpp"

namespace {

constexpr int kFailExit = 127;
constexpr const char* kDefaultHostname = "sandbox";
// The scratch tmpfs is mounted over this existing folder of our own (private) mount namespace,
// so nothing is created on the host; it becomes the root for as long as the new root is built.
constexpr const char* kScratch = "/run";
constexpr const char* kNewRoot = "/newroot";
constexpr const char* kOldRoot = "/oldroot";
constexpr const char* kTmpfsSize = "size=64m";
constexpr int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

// ---- errors ---------------------------------------------------------------------------------

const char* errText(int err) {
  const char* text = ::strerrordesc_np(err);
  return text != nullptr ? text : "Unknown error";
}

// Async-signal-safe: used by the forked application child as well.
void writeStderr(const char* a, const char* b = "", const char* c = "") {
  for (const char* part : {"enjin-sandbox: ", a, b, c, "\n"}) {
    size_t len = std::strlen(part);
    while (len > 0) {
      ssize_t n = ::write(STDERR_FILENO, part, len);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      part += n;
      len -= static_cast<size_t>(n);
    }
  }
}

[[noreturn]] void fail(const std::string& step, int err) {
  writeStderr(step.c_str(), ": ", errText(err));
  ::_exit(kFailExit);
}

[[noreturn]] void usage(const std::string& why) {
  writeStderr(why.c_str(),
              "\nusage: enjin-sandbox [--uid N --gid N] [--hide DIR]... [--bind-rw DIR]... [--bind-ro DIR]... "
              "[--hostname NAME] [--net] [--no-seccomp] [--cwd DIR] -- COMMAND ARGS...");
  ::_exit(kFailExit);
}

// ---- the command line -----------------------------------------------------------------------

struct Options {
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::vector<std::string> hide;
  std::vector<std::string> bindRw;
  std::vector<std::string> bindRo;
  std::string hostname = kDefaultHostname;
  bool net = false;
  bool seccomp = true;
  std::string cwd = "/";
  std::vector<char*> command;  // null-terminated
};

unsigned long parseId(const std::string& flag, const char* text) {
  errno = 0;
  char* end = nullptr;
  unsigned long value = std::strtoul(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || value >= 0xffffffffUL) {
    usage(flag + ": not an id: '" + text + "'");
  }
  return value;
}

// Absolute, and without "." or ".." components, so that "/newroot" + dir stays in the new root.
std::string parseDir(const std::string& flag, const char* text) {
  std::string dir(text);
  if (dir.empty() || dir[0] != '/') usage(flag + " '" + dir + "': not an absolute path");
  std::string clean;
  std::istringstream parts(dir);
  std::string part;
  while (std::getline(parts, part, '/')) {
    if (part.empty()) continue;
    if (part == "." || part == "..") usage(flag + " '" + dir + "': '.' or '..' in the path");
    clean += "/" + part;
  }
  if (clean.empty()) usage(flag + " '" + dir + "': the root itself");
  return clean;
}

Options parseArgs(int argc, char** argv) {
  Options o;
  int i = 1;
  auto value = [&](const std::string& flag) -> const char* {
    if (i + 1 >= argc) usage(flag + ": missing value");
    return argv[++i];
  };
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg == "--uid") {
      o.uid = static_cast<uid_t>(parseId(arg, value(arg)));
    } else if (arg == "--gid") {
      o.gid = static_cast<gid_t>(parseId(arg, value(arg)));
    } else if (arg == "--hide") {
      o.hide.push_back(parseDir(arg, value(arg)));
    } else if (arg == "--bind-rw") {
      o.bindRw.push_back(parseDir(arg, value(arg)));
    } else if (arg == "--bind-ro") {
      o.bindRo.push_back(parseDir(arg, value(arg)));
    } else if (arg == "--hostname") {
      o.hostname = value(arg);
      if (o.hostname.empty() || o.hostname.size() > 64) usage("--hostname: 1 to 64 characters");
    } else if (arg == "--net") {
      o.net = true;
    } else if (arg == "--no-seccomp") {
      o.seccomp = false;
    } else if (arg == "--cwd") {
      o.cwd = value(arg);
      if (o.cwd.empty() || o.cwd[0] != '/') usage("--cwd: not an absolute path");
    } else {
      usage("unknown option '" + arg + "'");
    }
  }
  if (o.uid.has_value() != o.gid.has_value()) usage("--uid and --gid go together");
  if (i >= argc) usage("no command");
  for (; i < argc; ++i) o.command.push_back(argv[i]);
  o.command.push_back(nullptr);
  return o;
}

// ---- the new root ---------------------------------------------------------------------------

void mountOrFail(const char* source, const std::string& target, const char* fstype,
                 unsigned long flags, const char* data, const std::string& step) {
  if (::mount(source, target.c_str(), fstype, flags, data) != 0) fail(step, errno);
}

// Read through the host's proc under /oldroot: the scratch root has no /proc. The paths it lists
// are relative to our root, the scratch.
constexpr const char* kMountInfo = "/oldroot/proc/self/mountinfo";

// The mount points kMountInfo lists at `prefix` or below it, in mount order (a parent
// before its children). The fifth field, with the kernel's octal escapes (\040) undone.
std::vector<std::string> mountPointsUnder(const std::string& prefix) {
  std::ifstream in(kMountInfo);
  if (!in) fail(std::string("read ") + kMountInfo, errno);
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, escaped;
    if (!(fields >> id >> parent >> dev >> root >> escaped)) fail(std::string("parse ") + kMountInfo, EINVAL);
    std::string point;
    for (size_t k = 0; k < escaped.size(); ++k) {
      if (escaped[k] == '\\' && k + 3 < escaped.size()) {
        point += static_cast<char>(std::stoi(escaped.substr(k + 1, 3), nullptr, 8));
        k += 3;
      } else {
        point += escaped[k];
      }
    }
    if (point == prefix || point.rfind(prefix + "/", 0) == 0) out.push_back(point);
  }
  if (in.bad()) fail(std::string("read ") + kMountInfo, EIO);
  return out;
}

// Remounts every mount at `prefix` or below: nosuid, read-only when `readOnly`, and keeping
// read-only, nodev and noexec where a mount has them (in a user namespace the kernel refuses to
// clear a flag it locked; the atime flags it keeps by itself when none is given).
void remountTree(const std::string& prefix, bool readOnly) {
  for (const std::string& point : mountPointsUnder(prefix)) {
    struct statvfs st;
    if (::statvfs(point.c_str(), &st) != 0) fail("statvfs " + point, errno);
    unsigned long flags = MS_REMOUNT | MS_BIND | MS_NOSUID;
    if (readOnly || (st.f_flag & ST_RDONLY)) flags |= MS_RDONLY;
    if (st.f_flag & ST_NODEV) flags |= MS_NODEV;
    if (st.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
    mountOrFail(nullptr, point, nullptr, flags, nullptr, "remount " + point);
  }
}

// Calls `visit` with each prefix of `dir` in the new root, shortest first: NEWROOT/a, then
// NEWROOT/a/b, ...
template <class Visit>
void forEachPrefix(const std::string& dir, Visit visit) {
  std::string path = kNewRoot;
  size_t start = 1;
  while (start <= dir.size()) {
    size_t slash = dir.find('/', start);
    if (slash == std::string::npos) slash = dir.size();
    path += "/" + dir.substr(start, slash - start);
    start = slash + 1;
    if (!visit(path)) return;
  }
}

// True when `path` (in the new root) is a folder, no component of it a symbolic link: a link
// would be resolved against the scratch root while the new root is built.
bool isPlainDir(const std::string& dir, const std::string& what) {
  bool found = true;
  forEachPrefix(dir, [&](const std::string& path) {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) {
      if (errno != ENOENT) fail(what + ": lstat " + path, errno);
      found = false;
      return false;
    }
    if (S_ISLNK(st.st_mode)) fail(what + ": " + path, ELOOP);
    if (!S_ISDIR(st.st_mode)) fail(what + ": " + path, ENOTDIR);
    return true;
  });
  return found;
}

// True when `path` is a folder itself, not a link to one. /dev/shm and /dev/mqueue are left as
// they are when they are not (a /dev/shm linked to /run/shm ends in the empty /run).
bool isDirHere(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// mkdir -p of `dir` in the new root (a --bind-rw target under a --hide tmpfs).
void makeDirs(const std::string& dir, const std::string& what) {
  forEachPrefix(dir, [&](const std::string& path) {
    if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) fail(what + ": mkdir " + path, errno);
    return true;
  });
}

struct Cover {
  enum class Kind { kHide, kBindRw, kBindRo };
  std::string dir;
  Kind kind;
};

size_t depth(const std::string& dir) { return std::count(dir.begin(), dir.end(), '/'); }

void buildRoot(const Options& o) {
  // Nothing done here may reach the host's mount namespace, nor come back from it.
  mountOrFail(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr, "make / private");

  // A scratch tmpfs as the root, the host's root under it at /oldroot: from here on what is
  // bound into /newroot comes from /oldroot, and no mount of the host is under the scratch.
  mountOrFail("tmpfs", kScratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m",
              "mount scratch tmpfs on " + std::string(kScratch));
  if (::chdir(kScratch) != 0) fail("chdir scratch", errno);
  if (::mkdir("newroot", 0755) != 0) fail("mkdir newroot", errno);
  if (::mkdir("oldroot", 0755) != 0) fail("mkdir oldroot", errno);
  if (::syscall(SYS_pivot_root, ".", "oldroot") != 0) fail("pivot_root into scratch", errno);
  if (::chdir("/") != 0) fail("chdir /", errno);

  mountOrFail(kOldRoot, kNewRoot, nullptr, MS_BIND | MS_REC, nullptr, "bind / on new root");
  remountTree(kNewRoot, true);

  const std::string root = kNewRoot;
  mountOrFail("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr,
              "mount proc");
  // sysfs shows the network namespace of whoever mounts it: ours with --net. Without it the
  // kernel refuses a sysfs to a user namespace, and the host's stays, read-only.
  if (o.net) {
    mountOrFail("sysfs", root + "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                nullptr, "mount sysfs");
  }
  const std::string tmpData = std::string("mode=1777,") + kTmpfsSize;
  mountOrFail("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, tmpData.c_str(),
              "mount tmpfs on /tmp");
  if (isDirHere(root + "/dev/shm")) {
    mountOrFail("tmpfs", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, tmpData.c_str(),
                "mount tmpfs on /dev/shm");
  }
  // The message queues of the new ipc namespace, not the host's.
  if (isDirHere(root + "/dev/mqueue")) {
    mountOrFail("mqueue", root + "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                nullptr, "mount mqueue on /dev/mqueue");
  }

  // /run (the host's daemons' sockets: a read-only mount does not stop connect()) and each
  // --hide, then each --bind-rw; a parent before what lies in it, so that a bind-rw under a
  // hidden folder is visible and a hide under a bound one hides.
  std::vector<Cover> covers{{"/run", Cover::Kind::kHide}};
  for (const auto& dir : o.hide) covers.push_back({dir, Cover::Kind::kHide});
  for (const auto& dir : o.bindRw) covers.push_back({dir, Cover::Kind::kBindRw});
  for (const auto& dir : o.bindRo) covers.push_back({dir, Cover::Kind::kBindRo});
  std::stable_sort(covers.begin(), covers.end(),
                   [](const Cover& a, const Cover& b) { return depth(a.dir) < depth(b.dir); });
  std::vector<std::string> hidden;
  for (const Cover& cover : covers) {
    const std::string target = root + cover.dir;
    if (cover.kind == Cover::Kind::kHide) {
      const std::string what = "hide " + cover.dir;
      if (!isPlainDir(cover.dir, what)) continue;  // nothing to hide
      mountOrFail("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  "mode=0755,size=64k", what + ": mount tmpfs");
      hidden.push_back(target);
    } else {
      const bool readOnly = cover.kind == Cover::Kind::kBindRo;
      const std::string what = (readOnly ? "bind-ro " : "bind-rw ") + cover.dir;
      const std::string source = kOldRoot + cover.dir;
      struct stat st;
      if (::stat(source.c_str(), &st) != 0) fail(what, errno);
      if (!S_ISDIR(st.st_mode)) fail(what, ENOTDIR);
      makeDirs(cover.dir, what);
      if (!isPlainDir(cover.dir, what)) fail(what, ENOENT);
      mountOrFail(source.c_str(), target, nullptr, MS_BIND | MS_REC, nullptr, what + ": bind");
      remountTree(target, readOnly);
    }
  }
  // The hiding tmpfs were writable until the bind-rw targets in them were made.
  for (const std::string& target : hidden) {
    mountOrFail(nullptr, target, nullptr,
                MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr,
                "remount " + target + " read-only");
  }

  if (::umount2(kOldRoot, MNT_DETACH) != 0) fail("detach old root", errno);
  // pivot_root(".", ".") stacks the scratch root under the new one; detaching "." then drops
  // it, and no path leads out of the new root.
  if (::chdir(kNewRoot) != 0) fail("chdir new root", errno);
  if (::syscall(SYS_pivot_root, ".", ".") != 0) fail("pivot_root into new root", errno);
  if (::umount2(".", MNT_DETACH) != 0) fail("detach scratch root", errno);
  if (::chdir("/") != 0) fail("chdir /", errno);
}

void loopbackUp() {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("lo: socket", errno);
  ifreq req{};
  std::strncpy(req.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(fd, SIOCGIFFLAGS, &req) != 0) fail("lo: SIOCGIFFLAGS", errno);
  req.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (::ioctl(fd, SIOCSIFFLAGS, &req) != 0) fail("lo: SIOCSIFFLAGS", errno);
  ::close(fd);
}

// ---- the application ------------------------------------------------------------------------

// Everything the child needs, decided before fork: between fork and execvp the child makes
// only system calls (execvp's PATH search aside) and writes its error with writeStderr.
struct ChildPlan {
  const Options* options;
  const enjin::supervise::SeccompProgram* seccomp;  // null: --no-seccomp
  sigset_t mask;                                    // the mask to exec with
  int lastCap;
  int listenFds;    // fds 3 .. 3 + listenFds - 1 are passed on (LISTEN_FDS)
  char* listenPid;  // the value of the environment's LISTEN_PID, room for 20 digits; or null
};

[[noreturn]] void childFail(const char* step, int err) {
  writeStderr(step, ": ", errText(err));
  ::_exit(kFailExit);
}

[[noreturn]] void runChild(const ChildPlan& plan) {
  const Options& o = *plan.options;
  if (::setsid() < 0) childFail("setsid", errno);
  // The bounding set first, while CAP_SETPCAP is held: no exec can then give a capability back.
  for (int cap = 0; cap <= plan.lastCap; ++cap) {
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) childFail("drop bounding set", errno);
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
    childFail("clear ambient capabilities", errno);
  }
  if (o.uid) {
    if (::setgroups(0, nullptr) != 0) childFail("setgroups", errno);
    if (::setgid(*o.gid) != 0) childFail("setgid", errno);
    if (::setuid(*o.uid) != 0) childFail("setuid", errno);
    if (*o.uid != 0 && ::setuid(0) == 0) childFail("setuid(0) succeeded after dropping", EPERM);
  }
  // A root user (no --uid) keeps its uid but no capability; after setuid the kernel has
  // cleared them already and this changes nothing.
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
  if (::syscall(SYS_capset, &header, data) != 0) childFail("capset", errno);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) childFail("no_new_privs", errno);
  ::umask(077);
  if (::chdir(o.cwd.c_str()) != 0) childFail("chdir", errno);
  // An fd inherited on a host folder would lead out of the new root. The listening sockets
  // (sockets, not folders) are the application's.
  const unsigned firstClosed = 3U + static_cast<unsigned>(plan.listenFds);
  if (::syscall(SYS_close_range, firstClosed, ~0U, 0U) != 0) childFail("close fds", errno);
  for (int fd = 3; fd < static_cast<int>(firstClosed); ++fd) {
    if (::fcntl(fd, F_SETFD, 0) != 0) childFail("listening sockets", errno);
  }
  if (plan.listenPid != nullptr) {
    // The application's pid, which only this child knows before the exec, into the bytes
    // reserved before the fork.
    long pid = ::getpid();
    char digits[20];
    int n = 0;
    do {
      digits[n++] = static_cast<char>('0' + pid % 10);
      pid /= 10;
    } while (pid > 0 && n < 20);
    for (int i = 0; i < n; ++i) plan.listenPid[i] = digits[n - 1 - i];
    plan.listenPid[n] = '\0';
  }
  if (plan.seccomp != nullptr) {
    if (int err = enjin::supervise::loadSeccompProgram(*plan.seccomp); err != 0) {
      childFail("seccomp", err);
    }
  }
  if (::sigprocmask(SIG_SETMASK, &plan.mask, nullptr) != 0) childFail("sigprocmask", errno);
  ::execvp(o.command[0], o.command.data());
  writeStderr("exec ", o.command[0], (std::string(": ") + errText(errno)).c_str());
  ::_exit(kFailExit);
}

int lastCapability() {
  std::ifstream in("/proc/sys/kernel/cap_last_cap");
  int last = -1;
  if (!(in >> last) || last < 0 || last > 63) fail("read /proc/sys/kernel/cap_last_cap", EINVAL);
  return last;
}

// ---- PID 1 ----------------------------------------------------------------------------------

[[noreturn]] void superviseApp(pid_t app, const sigset_t& waited) {
  for (;;) {
    siginfo_t info;
    int sig = ::sigwaitinfo(&waited, &info);
    if (sig < 0) {
      if (errno == EINTR) continue;
      fail("sigwaitinfo", errno);
    }
    if (sig != SIGCHLD) {
      if (::kill(app, sig) != 0 && errno != ESRCH) fail("forward signal", errno);
      continue;
    }
    // SIGCHLD: one signal may stand for several children, orphans of the namespace included.
    for (;;) {
      int status = 0;
      pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid == 0) break;
      if (pid < 0) {
        if (errno == EINTR) continue;
        if (errno == ECHILD) break;
        fail("waitpid", errno);
      }
      if (pid != app) continue;
      if (WIFEXITED(status)) ::_exit(WEXITSTATUS(status));
      if (WIFSIGNALED(status)) ::_exit(128 + WTERMSIG(status));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parseArgs(argc, argv);
  if (::getpid() != 1) {
    writeStderr("not pid 1 of a new pid namespace");
    return kFailExit;
  }
  // The folders made in the new root must be passable by the application whatever umask the
  // holder has (a tenant node's is 077); the application gets 077 back before exec.
  ::umask(022);

  // Blocked from the start, so that a signal sent while the sandbox is built waits for the
  // application instead of being lost (PID 1 ignores signals it has no handler for).
  sigset_t waited, original;
  sigemptyset(&waited);
  sigaddset(&waited, SIGCHLD);
  for (int sig : kForwarded) sigaddset(&waited, sig);
  if (::sigprocmask(SIG_BLOCK, &waited, &original) != 0) fail("sigprocmask", errno);

  buildRoot(o);
  if (::sethostname(o.hostname.data(), o.hostname.size()) != 0) fail("sethostname", errno);
  if (o.net) loopbackUp();

  std::optional<enjin::supervise::SeccompProgram> seccomp;
  if (o.seccomp) {
    auto program = enjin::supervise::compileSeccompFilter();
    if (!program) {
      writeStderr(program.error().message.c_str());
      return kFailExit;
    }
    seccomp = std::move(*program);
  }
  ChildPlan plan{&o, seccomp ? &*seccomp : nullptr, original, lastCapability(), 0, nullptr};
  // Listening sockets handed to this process (systemd's convention, LISTEN_PID naming us) go on
  // to the application; anything else of the kind is not for it.
  const char* listenPid = ::getenv("LISTEN_PID");
  const char* listenFds = ::getenv("LISTEN_FDS");
  if (listenPid != nullptr && listenFds != nullptr && std::string_view(listenPid) == "1") {
    char* end = nullptr;
    const long n = std::strtol(listenFds, &end, 10);
    if (end == listenFds || *end != '\0' || n < 0 || n > 4096) fail("LISTEN_FDS", EINVAL);
    for (long i = 0; i < n; ++i) {
      if (::fcntl(3 + static_cast<int>(i), F_GETFD) < 0) fail("LISTEN_FDS", errno);
    }
    plan.listenFds = static_cast<int>(n);
    if (::setenv("LISTEN_PID", "00000000000000000000", 1) != 0) fail("setenv", errno);
    plan.listenPid = ::getenv("LISTEN_PID");
  } else {
    ::unsetenv("LISTEN_PID");
    ::unsetenv("LISTEN_FDS");
    ::unsetenv("LISTEN_FDNAMES");
  }

  pid_t app = ::fork();
  if (app < 0) fail("fork", errno);
  if (app == 0) runChild(plan);
  superviseApp(app, waited);
}
