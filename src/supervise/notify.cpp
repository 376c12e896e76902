#include "supervisor_impl.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace enjin::supervise {

// Valid UTF-8 only (anything else becomes '?'), no control characters, bounded.
std::string cleanStatus(std::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size() && out.size() < kMaxStatusBytes;) {
    const auto c = static_cast<unsigned char>(in[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool ok = len > 0 && i + len <= in.size();
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
    for (size_t k = 1; ok && k < len; ++k) {
      const auto b = static_cast<unsigned char>(in[i + k]);
      ok = (b >> 6) == 0x2;
      cp = (cp << 6) | (b & 0x3f);
    }
    // Strictly valid UTF-8, as JSON writers demand: no overlong forms, no surrogates, nothing
    // past U+10FFFF.
    static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
    ok = ok && cp >= kMinForLength[len] && !(cp >= 0xD800 && cp <= 0xDFFF) && cp <= 0x10FFFF;
    if (!ok) {
      out += '?';
      ++i;
    } else if (len == 1 && (c < 0x20 || c == 0x7f)) {
      out += ' ';
      ++i;
    } else {
      out.append(in.substr(i, len));
      i += len;
    }
  }
  return out;
}

void Supervisor::Impl::onNotify(Proc& p) {
  char buf[4096];
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
  for (size_t i = 0; i < kNotifyPerWakeup; ++i) {
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(p.notify.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) break;
    // Only the process or a member of its process group may speak for it (systemd's
    // NotifyAccess=all, within the service); a stale datagram from an earlier run is ignored.
    const cmsghdr* c = CMSG_FIRSTHDR(&msg);
    if (c == nullptr || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_CREDENTIALS) continue;
    ucred cred;
    std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
    if (p.phase == Phase::kSpawning || p.phase == Phase::kCancelling) {
      // Judged once the holder says which pid the new run has (onSpawned).
      if (p.earlyNotify.size() < kEarlyNotifyKept) {
        p.earlyNotify.emplace_back(cred.pid, std::string(buf, static_cast<size_t>(n)));
      }
      continue;
    }
    if (p.pid <= 0 || (cred.pid != p.pid && ::getpgid(cred.pid) != p.pid)) continue;
    applyNotify(p, std::string_view(buf, static_cast<size_t>(n)));
  }
  flushEvents();
}

void Supervisor::Impl::applyNotify(Proc& p, std::string_view text) {
  {
    // A process that is being stopped, or not running, has nothing more to say.
    if (p.phase != Phase::kRunning && !isReady(p.phase)) return;
    while (!text.empty()) {
      const size_t nl = text.find('\n');
      std::string_view line = text.substr(0, nl);
      text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
      if (line == "READY=1") {
        dispatch(p, Event::Kind::kReady, p.detail);  // the STATUS= it sent stays shown
      } else if (line.starts_with("STATUS=")) {
        p.detail = cleanStatus(line.substr(7));
        scheduleSave();
      } else if (line == "WATCHDOG=1") {
        if (isReady(p.phase)) armWatchdog(p);
      } else if (line == "WATCHDOG=trigger") {
        dispatch(p, Event::Kind::kWatchdog, "WATCHDOG=trigger");
      }
    }
  }
}

}  // namespace enjin::supervise
