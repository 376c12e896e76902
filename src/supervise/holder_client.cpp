#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "enjin/base/unix_socket.hpp"
#include "enjin/supervise/holder.hpp"

namespace enjin::supervise {

namespace {

// Whoever answers at the holder's socket gets our specs and hands us the processes' fds: it must
// run as our own user, not be someone else who bound the path first.
Status checkHolderUser(int fd, const std::string& socketPath) {
  auto uid = peerUid(fd);
  if (!uid.ok()) return uid.error().wrap("holder at " + socketPath);
  if (*uid != ::geteuid()) {
    return Error{"refusing the holder at " + socketPath + ": it runs as uid " +
                 std::to_string(*uid) + ", not as this user (uid " + std::to_string(::geteuid()) +
                 ")"};
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<HolderClient>> HolderClient::connectOrLaunch(const std::string& socketPath,
                                                                    const std::string& holderExe,
                                                                    const std::string& logPath) {
  auto existing = connectUnix(socketPath, SOCK_SEQPACKET);
  if (existing.ok()) {
    if (auto st = checkHolderUser(existing->get(), socketPath); !st.ok()) return st.error();
    return std::unique_ptr<HolderClient>(new HolderClient(std::move(*existing), UniqueFd(), false));
  }
  // None answers: launch one. It reports readiness by closing the write end of `ready` once it
  // listens, so there is no connect-retry loop.
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return errnoError("holder: pipe2", errno);
  UniqueFd readyRead(ready[0]), readyWrite(ready[1]);
  // Everything the child needs is computed before fork: only async-signal-safe calls after it.
  const int readyFd = readyWrite.get();
  const char* argv[] = {holderExe.c_str(), "--socket", socketPath.c_str(), "--ready-fd", "3",
                        nullptr};
  const pid_t pid = ::fork();
  if (pid < 0) return errnoError("holder: fork", errno);
  if (pid == 0) {
    // Child: its own session (so a terminal's ^C or ring2d's process group never reaches it),
    // stdin /dev/null, output to its log, nothing else inherited but the ready pipe.
    ::setsid();
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    int devnull = ::open("/dev/null", O_RDONLY);
    int log = ::open(logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (devnull >= 0) ::dup2(devnull, 0);
    if (log >= 0) {
      ::dup2(log, 1);
      ::dup2(log, 2);
    }
    if (readyFd == 3) {
      ::fcntl(3, F_SETFD, 0);  // dup2 onto itself would leave close-on-exec set
    } else {
      ::dup2(readyFd, 3);
    }
    ::syscall(SYS_close_range, 4U, ~0U, 0U);
    ::execv(holderExe.c_str(), const_cast<char* const*>(argv));
    ::_exit(127);
  }
  readyWrite.reset();
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  char byte;
  ssize_t n;
  do {
    n = ::read(readyRead.get(), &byte, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) {
    // It exited or could not exec: collect it and say so.
    int status = 0;
    ::waitpid(pid, &status, 0);
    return Error{"holder " + holderExe + " did not start (see " + logPath + ")"};
  }
  auto sock = connectUnix(socketPath, SOCK_SEQPACKET);
  if (!sock.ok()) return sock.error().wrap("holder started but does not answer");
  if (auto st = checkHolderUser(sock->get(), socketPath); !st.ok()) {
    // Someone else answers on the path our holder bound: not ours to talk to. Ours goes too.
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return st.error();
  }
  return std::unique_ptr<HolderClient>(new HolderClient(std::move(*sock), std::move(pidfd), true));
}

Status HolderClient::sendFds(const std::string& message, const std::vector<int>& fds) {
  if (queue_.empty()) {
    auto st = sendWithFds(socket_.get(), message, fds);
    if (st.ok() || errno != EAGAIN) return st;
  }
  Queued queued{message, {}};
  for (int fd : fds) {
    UniqueFd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
    if (!copy) return errnoError("holder connection: dup a listening socket", errno);
    queued.fds.push_back(std::move(copy));
  }
  queue_.push_back(std::move(queued));
  return {};
}

Status HolderClient::flush() {
  while (!queue_.empty()) {
    std::vector<int> fds;
    for (const auto& fd : queue_.front().fds) fds.push_back(fd.get());
    auto st = sendWithFds(socket_.get(), queue_.front().text, fds);
    if (!st.ok()) return errno == EAGAIN ? Status{} : st;
    queue_.pop_front();
  }
  return {};
}

Result<bool> HolderClient::receive(std::string& message, std::vector<UniqueFd>& fds) {
  auto got = recvWithFds(socket_.get(), message, fds);
  if (!got.ok()) {
    if (errno == EAGAIN) return false;
    return got.error().wrap("holder connection");
  }
  if (!*got) return Error{"holder closed the connection"};
  return true;
}

}  // namespace enjin::supervise
