#include "supervisor_impl.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>

namespace enjin::supervise {

// ---------------------------------------------------------------------------------------------
// Log pipes and notify sockets

void Supervisor::Impl::attachFds(Proc& p, const std::vector<holder_proto::FdRole>& roles,
                                 std::vector<UniqueFd>& fds) {
  using holder_proto::FdRole;
  if (roles.size() != fds.size()) return;
  for (size_t i = 0; i < fds.size(); ++i) {
    UniqueFd* slot = roles[i] == FdRole::kOut ? &p.out : roles[i] == FdRole::kErr ? &p.err : &p.notify;
    if (*slot) reactor_.removeFd(slot->get());
    *slot = std::move(fds[i]);
    const int fl = ::fcntl(slot->get(), F_GETFL);
    ::fcntl(slot->get(), F_SETFL, fl | O_NONBLOCK);
    const std::string name = p.spec.name;
    if (slot == &p.notify) {
      (void)reactor_.addFd(slot->get(), EPOLLIN, [this, name](uint32_t) {
        if (Proc* q = find(name)) onNotify(*q);
      });
    } else {
      const LogStream stream = slot == &p.out ? LogStream::kStdout : LogStream::kStderr;
      // Edge-triggered: a half-written line may wait in the socket for its end, and must not
      // keep the fd ready (and the reactor spinning) meanwhile.
      (void)reactor_.addFd(slot->get(), EPOLLIN | EPOLLET, [this, name, stream](uint32_t) {
        if (Proc* q = find(name)) onLogReadable(*q, stream);
      });
    }
  }
  if (!p.log) {
    auto w = LogWriter::open(logPath(p.spec.name), p.spec.log);
    if (w.ok()) {
      p.log.emplace(std::move(*w));
    } else {
      spdlog::error("process '{}': {}", p.spec.name, w.error().message);
    }
  }
}

void Supervisor::Impl::detachFds(Proc& p) {
  for (UniqueFd* fd : {&p.out, &p.err, &p.notify}) {
    if (*fd) reactor_.removeFd(fd->get());
    fd->reset();
  }
}

void Supervisor::Impl::onLogReadable(Proc& p, LogStream stream, bool final) {
  UniqueFd& fd = stream == LogStream::kStdout ? p.out : p.err;
  if (!fd) return;
  // Peek, write, then consume, and only whole lines: the unfinished end of a line stays in the
  // kernel, where it survives this process's death, instead of in a buffer here; and a line
  // leaves the kernel only after it is in the log file, so a kill between the two steps repeats
  // it rather than losing it.
  for (size_t i = 0; i < kLogReadsPerWakeup; ++i) {
    const ssize_t n = ::recv(fd.get(), readBuffer_.data(), readBuffer_.size(), MSG_PEEK | MSG_DONTWAIT);
    if (n <= 0) {
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) {  // every writer gone
        if (p.log) (void)p.log->finish(stream, reactor_.clock().wallMicros());
        reactor_.removeFd(fd.get());
        fd.reset();
      }
      return;
    }
    std::string_view peeked(readBuffer_.data(), static_cast<size_t>(n));
    size_t take = peeked.rfind('\n');
    if (take != std::string_view::npos) {
      ++take;
    } else if (final || peeked.size() >= LogWriter::kMaxLineBytes) {
      take = peeked.size();  // a line too long to wait for, or the writer is gone
    } else {
      return;  // the rest of this line has not been written yet
    }
    if (p.log) {
      auto st = p.log->append(stream, peeked.substr(0, take), reactor_.clock().wallMicros());
      if (st.ok() && final) st = p.log->finish(stream, reactor_.clock().wallMicros());
      if (!st.ok()) spdlog::error("process '{}': {}", p.spec.name, st.error().message);
    }
    if (dieAfterLogWrites_ > 0 && --dieAfterLogWrites_ == 0) std::_Exit(137);
    // Only this process reads the socket, so the peeked bytes are still its head.
    const ssize_t got = ::recv(fd.get(), readBuffer_.data(), take, MSG_DONTWAIT);
    if (got != static_cast<ssize_t>(take)) {
      spdlog::error("process '{}': took {} of the {} bytes just logged off its output", p.spec.name,
                    got, take);
      return;
    }
  }
  // More is waiting than one turn takes: come back after the other fds had theirs. The socket
  // is edge-triggered, so nothing else would call us for data already there.
  timers_.after(0, [this, name = p.spec.name, stream, final] {
    if (Proc* q = find(name)) onLogReadable(*q, stream, final);
  });
}

void Supervisor::Impl::drainLogs(Proc& p) {
  // The holder reaped the process (and killed its group) before reporting the exit, so all it
  // ever wrote is already in the sockets.
  onLogReadable(p, LogStream::kStdout, true);
  onLogReadable(p, LogStream::kStderr, true);
}

void Supervisor::Impl::reopenLog(Proc& p) {
  if (!p.log) return;
  auto w = LogWriter::open(logPath(p.spec.name), p.spec.log);
  if (w.ok()) {
    p.log.emplace(std::move(*w));
  } else {
    spdlog::error("process '{}': {}", p.spec.name, w.error().message);
  }
}

}  // namespace enjin::supervise
