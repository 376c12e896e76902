// The exec probe: run a check command; exit 0 is healthy.
//
// The command starts through fork and execve; between them the child makes only async-signal-safe
// calls (the daemon has other threads, libzmq's). In the child: its own process group
// (pgid == pid), every signal disposition at its default, stdin/stdout/stderr on /dev/null, every
// other fd closed (close_range), an empty signal mask. A command without '/' is looked up on
// $PATH in the parent. An exec failure is written to a close-on-exec pipe that is read, without
// blocking, once the child has exited: start() never waits for the child. (Not posix_spawn:
// glibc's leaves its two internal signals, 32 and 33, ignored in the command.)
//
// The child is watched through a pidfd on the reactor and reaped with waitid(P_PIDFD). When the
// command exits, whatever it left in its process group is killed before it is reaped (the zombie
// keeps the group id reserved until then), so a check leaves nothing running. At the timeout, on
// cancel() and in the destructor the whole group is killed at once and the command reaped by the
// reactor once its pidfd reports the exit, so none of them ever blocks.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "enjin/base/unique_fd.hpp"
#include "enjin/supervise/probe.hpp"

namespace enjin::supervise {
namespace {
char kDefaultPath[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
}  // namespace

namespace {

// glibc 2.36 has no wrapper; pidfd_open always sets close-on-exec.
int pidfdOpen(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

// Reaps the child behind `pidfd` if it has exited. Returns true once reaped (or if it cannot be:
// ECHILD means it is not ours to reap any more), with its status in `info`.
bool tryReap(int pidfd, siginfo_t& info) {
  for (;;) {
    info = siginfo_t{};
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info,
                 WEXITED | WNOHANG) == 0) {
      return info.si_pid != 0;
    }
    if (errno == EINTR) continue;
    info.si_code = 0;
    info.si_status = errno;
    return true;
  }
}

std::string describeExit(const siginfo_t& info) {
  switch (info.si_code) {
    case CLD_EXITED:
      return "exit " + std::to_string(info.si_status);
    case CLD_KILLED:
    case CLD_DUMPED: {
      const char* abbrev = ::sigabbrev_np(info.si_status);
      return abbrev != nullptr ? std::string("killed by SIG") + abbrev
                               : "killed by signal " + std::to_string(info.si_status);
    }
    default:
      return errnoError("waitid", info.si_status).message;
  }
}

class ExecProbe final : public Probe {
 public:
  ExecProbe(Reactor& reactor, std::vector<std::string> command, int64_t timeoutMs,
            ExecIdentity identity)
      : reactor_(reactor), command_(std::move(command)), timeoutMs_(timeoutMs),
        identity_(std::move(identity)) {
    if (identity_.env.empty()) identity_.env.push_back(kDefaultPath);
  }
  ~ExecProbe() override { cancel(); }
  ExecProbe(const ExecProbe&) = delete;
  ExecProbe& operator=(const ExecProbe&) = delete;

  void start(std::function<void(ProbeResult)> done) override {
    cancel();
    done_ = std::move(done);
    if (command_.empty()) return finishSoon({false, "exec probe: no command"});

    pid_t pid = -1;
    if (auto st = spawn(pid); !st.ok()) return finishSoon({false, st.error().message});
    pid_ = pid;
    pidfd_.reset(pidfdOpen(pid));
    if (!pidfd_) {
      const int err = errno;
      // Without a pidfd the child cannot be watched: kill it and reap it here. SIGKILL cannot be
      // caught, so the wait is short.
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      pid_ = -1;
      execError_.reset();
      return finishSoon({false, errnoError("pidfd_open for " + command_[0], err).message});
    }
    if (auto st = reactor_.addFd(pidfd_.get(), EPOLLIN, [this](uint32_t) { onExit(); }); !st.ok()) {
      abandonChild();
      return finishSoon({false, st.error().message});
    }
    timer_ = reactor_.addTimerAfterMillis(timeoutMs_, [this] { onTimeout(); });
  }

  void cancel() override {
    if (timer_ != 0) reactor_.cancelTimer(std::exchange(timer_, 0));
    stopChild();
    done_ = nullptr;
  }

 private:
  // Forks and execs command_ as described at the top of this file. The parent does not wait for
  // the exec: an exec failure reaches it through execError_ when the child exits.
  Status spawn(pid_t& pid) {
    const std::string path = findExecutable(command_[0]);
    if (path.empty()) return errnoError("exec " + command_[0], ENOENT);
    std::vector<char*> argv;
    argv.reserve(command_.size() + 1);
    for (auto& arg : command_) argv.push_back(arg.data());
    argv.push_back(nullptr);
    // Never the daemon's own environment: the check sees what the process it checks sees.
    std::vector<char*> envp;
    for (auto& e : identity_.env) envp.push_back(e.data());
    envp.push_back(nullptr);

    UniqueFd devNull(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!devNull) return errnoError("open /dev/null", errno);
    int errPipe[2];
    if (::pipe2(errPipe, O_CLOEXEC | O_NONBLOCK) != 0) return errnoError("pipe2", errno);
    UniqueFd errRead(errPipe[0]);
    UniqueFd errWrite(errPipe[1]);

    // All signals blocked across fork: no handler of the daemon may run in the child before its
    // dispositions are reset.
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = ::fork();
    if (pid == 0) {
      runChild(path.c_str(), argv.data(), envp.data(), devNull.get(), errWrite.get(), identity_.uid,
               identity_.gid);
    }
    const int forkErr = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) return errnoError("fork for " + command_[0], forkErr);
    // Also here, so that the group exists before the parent may signal it, whichever runs first.
    // EACCES once the child has exec'd: it then did it itself.
    ::setpgid(pid, pid);
    execError_ = std::move(errRead);
    return {};
  }

  // In the child, between fork and exec: async-signal-safe calls only, no allocation.
  [[noreturn]] static void runChild(const char* path, char* const* argv, char* const* envp,
                                    int devNull, int errWrite, int uid, int gid) {
    ::setpgid(0, 0);
    // The child of fork is single-threaded: the plain calls change only its own credentials.
    if (gid >= 0 && (::setgroups(0, nullptr) != 0 || ::setgid(static_cast<gid_t>(gid)) != 0)) {
      const int err = errno;
      (void)!::write(errWrite, &err, sizeof err);
      ::_exit(127);
    }
    if (uid >= 0 && ::setuid(static_cast<uid_t>(uid)) != 0) {
      const int err = errno;
      (void)!::write(errWrite, &err, sizeof err);
      ::_exit(127);
    }
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) {
      ::sigaction(sig, &dfl, nullptr);  // EINVAL for SIGKILL, SIGSTOP, glibc's own: harmless
    }
    for (int fd = 0; fd <= 2; ++fd) {
      if (fd != devNull) ::dup2(devNull, fd);
      ::fcntl(fd, F_SETFD, 0);  // dup2 onto itself would keep close-on-exec
    }
    // Every other fd closes at exec; errWrite stays usable until then.
    if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
      for (int fd = 3; fd < 65536; ++fd) {
        if (fd != errWrite) ::close(fd);
      }
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(path, argv, envp);
    const int err = errno;
    (void)!::write(errWrite, &err, sizeof err);
    ::_exit(127);
  }

  // command[0] itself when it holds a '/', else its first executable match on $PATH; empty when
  // there is none.
  static std::string findExecutable(const std::string& name) {
    if (name.find('/') != std::string::npos) return name;
    const char* pathVar = ::getenv("PATH");
    std::string_view dirs = pathVar != nullptr ? pathVar : "/usr/local/bin:/usr/bin:/bin";
    for (;;) {
      const size_t colon = dirs.find(':');
      std::string_view dir = dirs.substr(0, colon);
      std::string candidate = std::string(dir.empty() ? "." : dir) + "/" + name;
      struct stat st;
      if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
          ::access(candidate.c_str(), X_OK) == 0) {
        return candidate;
      }
      if (colon == std::string_view::npos) return {};
      dirs.remove_prefix(colon + 1);
    }
  }

  // The errno a failed exec left in the pipe, if it failed.
  std::optional<int> takeExecError() {
    int err = 0;
    const ssize_t n = ::read(execError_.get(), &err, sizeof err);
    execError_.reset();
    if (n == static_cast<ssize_t>(sizeof err)) return err;
    return std::nullopt;
  }

  // The result does not wait for the command to die: one stuck in an uninterruptible sleep
  // would otherwise hold it back indefinitely.
  void onTimeout() {
    timer_ = 0;
    stopChild();
    finish({false, "timed out after " + std::to_string(timeoutMs_) + " ms"});
  }

  void onExit() {
    // The command has exited, but while it is unreaped its pid, and so its group id, cannot be
    // reused: killing the group here reaches only what the command left behind.
    ::kill(-pid_, SIGKILL);
    siginfo_t info;
    if (!tryReap(pidfd_.get(), info)) return;  // not yet: level-triggered, called again
    pid_ = -1;                                 // reaped: the pid may be reused from now on
    reactor_.removeFd(pidfd_.get());
    pidfd_.reset();
    if (timer_ != 0) reactor_.cancelTimer(std::exchange(timer_, 0));
    ProbeResult result;
    const std::optional<int> execErr = takeExecError();
    if (execErr) {
      result.detail = errnoError("exec " + command_[0], *execErr).message;
    } else {
      result.healthy = info.si_code == CLD_EXITED && info.si_status == 0;
      result.detail = describeExit(info);
    }
    finish(std::move(result));
  }

  // Kills the command's process group, if a command runs. It is reaped here if it is already
  // gone, otherwise by the reactor as soon as its pidfd reports the exit: this never blocks.
  void stopChild() {
    if (!pidfd_) return;
    reactor_.removeFd(pidfd_.get());
    abandonChild();
    execError_.reset();
  }

  // Kills the group of a child whose pidfd this probe no longer watches, and makes sure it is
  // reaped: now if it is already dead, else by a handler that owns the pidfd.
  void abandonChild() {
    ::kill(-pid_, SIGKILL);
    pid_ = -1;
    siginfo_t info;
    if (tryReap(pidfd_.get(), info)) {
      pidfd_.reset();
      return;
    }
    auto pidfd = std::make_shared<UniqueFd>(std::move(pidfd_));
    Reactor& reactor = reactor_;
    auto st = reactor.addFd(pidfd->get(), EPOLLIN, [&reactor, pidfd](uint32_t) {
      siginfo_t ignored;
      // Removing the handler leaves it alive until it returns; the pidfd closes after that.
      if (tryReap(pidfd->get(), ignored)) reactor.removeFd(pidfd->get());
    });
    if (!st.ok()) {
      // Cannot happen short of running out of memory; the child is dead or dying, so wait.
      siginfo_t info2;
      ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd->get()), &info2, WEXITED);
    }
  }

  void finishSoon(ProbeResult result) {
    timer_ = reactor_.addTimerAfterMillis(0, [this, result = std::move(result)]() mutable {
      timer_ = 0;
      finish(std::move(result));
    });
  }

  // Calls `done` last: it may start the next check or destroy the probe.
  void finish(ProbeResult result) {
    auto done = std::exchange(done_, nullptr);
    if (done) done(std::move(result));
  }

  Reactor& reactor_;
  std::vector<std::string> command_;
  int64_t timeoutMs_;

  std::function<void(ProbeResult)> done_;
  ExecIdentity identity_;
  pid_t pid_ = -1;  // the running command, until reaped
  UniqueFd pidfd_;
  UniqueFd execError_;  // read end of the child's close-on-exec pipe
  Reactor::TimerId timer_ = 0;
};

}  // namespace

std::unique_ptr<Probe> makeExecProbe(Reactor& reactor, std::vector<std::string> command,
                                     int64_t timeoutMs, ExecIdentity identity) {
  return std::make_unique<ExecProbe>(reactor, std::move(command), timeoutMs, std::move(identity));
}

}  // namespace enjin::supervise
