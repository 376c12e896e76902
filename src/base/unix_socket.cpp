#include "enjin/base/unix_socket.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace enjin {
namespace {

Result<sockaddr_un> makeAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return Error{"unix socket path " + path + " is longer than " +
                 std::to_string(sizeof addr.sun_path - 1) + " bytes"};
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

}  // namespace

Result<UniqueFd> listenUnix(const std::string& path, int type, unsigned mode) {
  auto addr = makeAddress(path);
  if (!addr.ok()) return addr.error();
  UniqueFd fd(::socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return errnoError("socket for " + path, errno);
  ::unlink(path.c_str());  // a stale socket from a previous run
  // Bind under a restrictive umask so the socket never exists with a wider mode.
  const mode_t old = ::umask(0777 & ~mode);
  const int rc = ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr);
  const int err = errno;
  ::umask(old);
  if (rc != 0) return errnoError("bind " + path, err);
  if (::chmod(path.c_str(), mode) != 0) return errnoError("chmod " + path, errno);
  if (type != SOCK_DGRAM && ::listen(fd.get(), 64) != 0) return errnoError("listen " + path, errno);
  return fd;
}

Result<UniqueFd> connectUnix(const std::string& path, int type, bool nonBlocking) {
  auto addr = makeAddress(path);
  if (!addr.ok()) return addr.error();
  UniqueFd fd(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
  if (!fd) return errnoError("socket for " + path, errno);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0) {
    return errnoError("connect " + path, errno);
  }
  if (nonBlocking) {
    int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
      return errnoError("set " + path + " non-blocking", errno);
    }
  }
  return fd;
}

Status sendWithFds(int socket, std::string_view data, std::span<const int> fds) {
  if (fds.size() > kMaxFdsPerMessage) return Error{"too many fds for one message"};
  iovec iov{const_cast<char*>(data.data()), data.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    ssize_t n = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
    if (n >= 0) return {};
    if (errno == EINTR) continue;
    return errnoError("sendmsg", errno);
  }
}

Result<bool> recvWithFds(int socket, std::string& data, std::vector<UniqueFd>& fds,
                         size_t maxBytes) {
  data.resize(maxBytes);
  iovec iov{data.data(), data.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    data.clear();
    return errnoError("recvmsg", errno);
  }
  data.resize(static_cast<size_t>(n));
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.emplace_back(fd);
      }
    }
  }
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    fds.clear();  // closes what did arrive
    errno = EMSGSIZE;
    return Error{"message or its fds truncated"};
  }
  return n > 0 || !fds.empty() ? true : false;
}

Result<uid_t> peerUid(int socket) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return errnoError("SO_PEERCRED", errno);
  }
  return cred.uid;
}

}  // namespace enjin
