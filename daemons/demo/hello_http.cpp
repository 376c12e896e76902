// enjin-demo-http: the application of `./enjin demo`, run under ring2d. A tiny HTTP/1.1 server:
// GET / shows who answered (name, pid, uptime, requests served), GET /healthz answers "ok" for
// ring2d's http probe. One thread, one epoll loop, non-blocking sockets, one request per
// connection ("Connection: close"). Kept apart from libenjin on purpose: it stands for a
// customer's program, which knows nothing of enjin but the notify protocol.
//
// Socket activation: handed a listening socket with systemd's convention (LISTEN_PID naming it,
// LISTEN_FDS >= 1), it serves on fd 3 and ignores --host and --port; so a supervisor that keeps
// the socket across its restarts loses no connection made while it restarts.
//
// Exit status: 0 after SIGTERM or SIGINT, 1 when it cannot listen (or fd 3 is not a listening
// socket), CLI11's code on bad flags.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <utility>

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxHeadBytes = 8 * 1024;  // request line and headers; beyond: 431
constexpr auto kIdleTimeout = std::chrono::seconds(5);
constexpr size_t kMaxConnections = 256;
// After the response, what the client still sends (a body we did not want, the rest of an
// oversized head) is read and dropped for a while before the close: closing with unread input
// makes the kernel send a RST, which can destroy the response before the client has read it.
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr size_t kMaxLingerBytes = 64 * 1024;
constexpr auto kAcceptPause = std::chrono::milliseconds(100);  // after accept's EMFILE

// Sole owner of one fd.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

std::string errnoText(std::string_view what, int err) {
  return std::string(what) + ": " + std::strerror(err);
}

std::string htmlEscape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// "HOST:PORT", with an IPv6 address in brackets as in a URL.
std::string hostPort(const std::string& host, int port) {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

struct Listener {
  Fd fd;
  int port = 0;  // the bound one, which differs from the requested one for port 0
};

// A non-blocking listening TCP socket on the first address `host` resolves to that binds.
// Errors name the address and the cause: "127.0.0.1:80: bind: Permission denied".
bool listenTcp(const std::string& host, int port, Listener& out, std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    error = hostPort(host, port) + ": " + ::gai_strerror(rc);
    return false;
  }
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    Fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
      error = hostPort(host, port) + ": " + errnoText("socket", errno);
      continue;
    }
    // A restarted server must not wait out the TIME_WAIT connections of its predecessor.
    // Linux still refuses a port another socket listens on.
    const int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      error = hostPort(host, port) + ": " + errnoText("bind", errno);
      continue;
    }
    if (::listen(fd.get(), 512) != 0) {
      error = hostPort(host, port) + ": " + errnoText("listen", errno);
      continue;
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    out.port = port;
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len) == 0) {
      out.port = ntohs(bound.ss_family == AF_INET6
                           ? reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port
                           : reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
    }
    out.fd = std::move(fd);
    ::freeaddrinfo(found);
    return true;
  }
  ::freeaddrinfo(found);
  return false;
}

struct Response {
  int status;
  std::string_view reason;
  std::string_view contentType;
  std::string body;
  std::string_view extraHeaders;  // each ending in "\r\n"
};

class Server {
 public:
  Server(std::string name, Fd listener, Fd signals, Fd epoll)
      : name_(std::move(name)),
        listener_(std::move(listener)),
        signals_(std::move(signals)),
        epoll_(std::move(epoll)),
        started_(Clock::now()) {}

  // Serves until SIGTERM or SIGINT (returns 0) or a broken epoll (returns 1).
  int run() {
    if (!watch(listener_.get(), kListenerId, EPOLLIN, EPOLL_CTL_ADD) ||
        !watch(signals_.get(), kSignalsId, EPOLLIN, EPOLL_CTL_ADD)) {
      std::fprintf(stderr, "enjin-demo-http: %s\n", errnoText("epoll_ctl", errno).c_str());
      return 1;
    }
    epoll_event events[64];
    for (;;) {
      const int n = ::epoll_wait(epoll_.get(), events, 64, waitMs());
      if (n < 0 && errno != EINTR) {
        std::fprintf(stderr, "enjin-demo-http: %s\n", errnoText("epoll_wait", errno).c_str());
        return 1;
      }
      for (int i = 0; i < n; ++i) {
        const uint64_t id = events[i].data.u64;
        if (id == kSignalsId) {
          signalfd_siginfo info{};
          if (::read(signals_.get(), &info, sizeof info) == sizeof info) {
            std::printf("stopping on %s\n", info.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
            std::fflush(stdout);
            listener_.reset();
            return 0;
          }
        } else if (id == kListenerId) {
          acceptAll();
        } else {
          // An id is never reused, so an event for a connection closed earlier in this round
          // finds nothing, even when a new connection got the same fd.
          auto it = connections_.find(id);
          if (it != connections_.end()) onReady(it, events[i].events);
        }
      }
      expire();
    }
  }

 private:
  enum class Phase {
    kReading,    // gathering the request head
    kWriting,    // sending the response
    kLingering,  // response sent and our side shut down; dropping input until EOF
  };
  struct Connection {
    Fd fd;
    Phase phase = Phase::kReading;
    std::string in;
    std::string out;
    size_t sent = 0;
    size_t dropped = 0;
    Clock::time_point deadline;
  };
  using Iter = std::map<uint64_t, Connection>::iterator;

  static constexpr uint64_t kListenerId = 0;
  static constexpr uint64_t kSignalsId = 1;

  bool watch(int fd, uint64_t id, uint32_t events, int op) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = id;
    return ::epoll_ctl(epoll_.get(), op, fd, &ev) == 0;
  }

  // Until the earliest deadline (a connection's, or the end of an accept pause), rounded up so
  // that a deadline is never early; -1 (no timeout) when there is none.
  int waitMs() const {
    auto earliest = acceptPaused_ ? resumeAccept_ : Clock::time_point::max();
    for (const auto& [id, c] : connections_) earliest = std::min(earliest, c.deadline);
    if (earliest == Clock::time_point::max()) return -1;
    const auto left = earliest - Clock::now();
    if (left <= Clock::duration::zero()) return 0;
    return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
  }

  void expire() {
    const auto now = Clock::now();
    for (auto it = connections_.begin(); it != connections_.end();) {
      it = it->second.deadline <= now ? close(it) : std::next(it);
    }
    if (acceptPaused_ && resumeAccept_ <= now) resumeAccept();
  }

  void resumeAccept() {
    acceptPaused_ = !watch(listener_.get(), kListenerId, EPOLLIN, EPOLL_CTL_MOD);
  }

  Iter close(Iter it) {
    // Closing the fd removes it from the epoll set.
    it = connections_.erase(it);
    // A connection is gone, so an fd is free again: accept what waited meanwhile.
    if (acceptPaused_) resumeAccept();
    return it;
  }

  void acceptAll() {
    for (;;) {
      Fd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // The listener would stay readable and the loop spin: stop watching it until a
          // connection closes, or for a moment if the fds are taken by something else. One
          // line per shortage, not one per retry.
          if (!starved_) {
            std::fprintf(stderr, "enjin-demo-http: %s; pausing accept\n",
                         errnoText("accept", errno).c_str());
          }
          starved_ = true;
          acceptPaused_ = watch(listener_.get(), kListenerId, 0, EPOLL_CTL_MOD);
          resumeAccept_ = Clock::now() + kAcceptPause;
        }
        return;  // EAGAIN: none left
      }
      starved_ = false;
      // Over the limit: accepted and closed at once (the client sees the connection close
      // without a response), so the backlog does not fill with connections never served.
      if (connections_.size() >= kMaxConnections) continue;
      const uint64_t id = nextId_++;
      if (!watch(fd.get(), id, EPOLLIN, EPOLL_CTL_ADD)) continue;
      Connection c;
      c.fd = std::move(fd);
      c.deadline = Clock::now() + kIdleTimeout;
      connections_.emplace(id, std::move(c));
    }
  }

  void onReady(Iter it, uint32_t events) {
    Connection& c = it->second;
    if ((events & EPOLLERR) != 0) {
      close(it);
      return;
    }
    if (c.phase == Phase::kWriting) {
      flush(it);
      return;
    }
    char buf[4096];
    for (;;) {
      const ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n <= 0) {
        close(it);  // EOF before a whole head, or after the response; or a reset
        return;
      }
      if (c.phase == Phase::kLingering) {
        c.dropped += static_cast<size_t>(n);
        if (c.dropped > kMaxLingerBytes) {
          close(it);
          return;
        }
        continue;
      }
      c.in.append(buf, static_cast<size_t>(n));
      c.deadline = Clock::now() + kIdleTimeout;
      if (handleHead(it)) return;
    }
  }

  // Responds once the head is complete or too long; returns whether it did.
  bool handleHead(Iter it) {
    Connection& c = it->second;
    size_t end = c.in.find("\r\n\r\n");
    if (end != std::string::npos) {
      end += 4;
    } else if (end = c.in.find("\n\n"); end != std::string::npos) {
      end += 2;  // bare LF line ends, which RFC 9112 lets a server accept
    }
    if (end == std::string::npos ? c.in.size() > kMaxHeadBytes : end > kMaxHeadBytes) {
      respond(it, {431, "Request Header Fields Too Large", "text/plain; charset=utf-8",
                   "request head over 8 KiB\n", ""},
              true);
      return true;
    }
    if (end == std::string::npos) return false;
    const std::string_view head(c.in.data(), end);
    const std::string_view line = head.substr(0, head.find('\n'));
    // A response to HEAD never has a body, whatever its status.
    respond(it, route(line), !line.starts_with("HEAD "));
    return true;
  }

  Response route(std::string_view line) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const size_t sp1 = line.find(' ');
    const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos) {
      return {400, "Bad Request", "text/plain; charset=utf-8", "bad request line\n", ""};
    }
    const std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = line.substr(sp2 + 1);
    if (version != "HTTP/1.1" && version != "HTTP/1.0") {
      return {400, "Bad Request", "text/plain; charset=utf-8", "unsupported HTTP version\n", ""};
    }
    if (method != "GET") {
      return {405, "Method Not Allowed", "text/plain; charset=utf-8", "only GET\n",
              "Allow: GET\r\n"};
    }
    target = target.substr(0, target.find('?'));
    if (target == "/healthz") return {200, "OK", "text/plain; charset=utf-8", "ok\n", ""};
    if (target == "/") return {200, "OK", "text/html; charset=utf-8", page(), ""};
    return {404, "Not Found", "text/plain; charset=utf-8", "not found\n", ""};
  }

  std::string page() const {
    const auto up = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_);
    const std::string name = htmlEscape(name_);
    return "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>hello from " + name +
           "</title></head>\n<body>\n<h1>hello from " + name + "</h1>\n<p>pid " +
           std::to_string(::getpid()) + ", up " + std::to_string(up.count()) + " s, request " +
           std::to_string(requests_ + 1) + "</p>\n</body></html>\n";
  }

  void respond(Iter it, const Response& r, bool withBody) {
    ++requests_;
    Connection& c = it->second;
    c.out = "HTTP/1.1 " + std::to_string(r.status) + " " + std::string(r.reason) +
            "\r\nContent-Type: " + std::string(r.contentType) +
            "\r\nContent-Length: " + std::to_string(r.body.size()) +
            "\r\nCache-Control: no-store\r\nConnection: close\r\n" + std::string(r.extraHeaders) +
            "\r\n";
    if (withBody) c.out += r.body;
    c.in.clear();
    c.in.shrink_to_fit();
    c.phase = Phase::kWriting;
    flush(it);
  }

  void flush(Iter it) {
    Connection& c = it->second;
    while (c.sent < c.out.size()) {
      const ssize_t n =
          ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!watch(c.fd.get(), it->first, EPOLLOUT, EPOLL_CTL_MOD)) close(it);
        return;
      }
      if (n < 0) {
        close(it);
        return;
      }
      c.sent += static_cast<size_t>(n);
      c.deadline = Clock::now() + kIdleTimeout;
    }
    // All sent: FIN to the client, then drop its input until it closes too (see kLingerTime).
    ::shutdown(c.fd.get(), SHUT_WR);
    c.phase = Phase::kLingering;
    c.out.clear();
    c.out.shrink_to_fit();
    c.deadline = Clock::now() + kLingerTime;
    if (!watch(c.fd.get(), it->first, EPOLLIN, EPOLL_CTL_MOD)) close(it);
  }

  const std::string name_;
  Fd listener_;
  Fd signals_;
  Fd epoll_;
  const Clock::time_point started_;
  std::map<uint64_t, Connection> connections_;
  uint64_t nextId_ = 2;  // after kListenerId and kSignalsId
  uint64_t requests_ = 0;
  bool acceptPaused_ = false;
  Clock::time_point resumeAccept_;  // while acceptPaused_
  bool starved_ = false;            // accept failed for want of fds; cleared by one that works
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"enjin-demo-http - a tiny HTTP server for the enjin demo"};
  std::string host = "127.0.0.1";
  int port = 0;
  std::string name = "enjin";
  app.add_option("--host", host, "address to listen on")->capture_default_str();
  auto* portOpt =
      app.add_option("--port", port, "TCP port to listen on (0: any free one, printed)")
          ->check(CLI::Range(0, 65535));
  app.footer(
      "Socket activation: when LISTEN_PID is this process and LISTEN_FDS is at least 1 (the\n"
      "systemd convention, which ring2d and enjin-sandbox follow), it serves on fd 3, which\n"
      "must be a listening socket, and --host and --port are not needed.");
  app.add_option("--name", name, "name shown on the page")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  // SIGTERM and SIGINT arrive through a signalfd in the loop; blocked before anything else.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  ::sigprocmask(SIG_BLOCK, &sigs, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  Fd signals(::signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC));
  Fd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!signals || !epoll) {
    std::fprintf(stderr, "enjin-demo-http: %s\n",
                 errnoText(signals ? "epoll_create1" : "signalfd", errno).c_str());
    return 1;
  }

  Listener listener;
  std::string error;
  // sd_listen_fds checks LISTEN_PID, sets FD_CLOEXEC and unsets the variables.
  const int handed = ::sd_listen_fds(1);
  if (handed < 0) {
    std::fprintf(stderr, "enjin-demo-http: %s\n", errnoText("LISTEN_FDS", -handed).c_str());
    return 1;
  }
  if (handed > 0) {
    const int fd = SD_LISTEN_FDS_START;
    int accepting = 0;
    socklen_t len = sizeof accepting;
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0 || accepting == 0) {
      std::fprintf(stderr, "enjin-demo-http: fd %d (LISTEN_FDS) is not a listening socket\n", fd);
      return 1;
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    sockaddr_storage bound{};
    socklen_t boundLen = sizeof bound;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &boundLen) == 0 &&
        (bound.ss_family == AF_INET || bound.ss_family == AF_INET6)) {
      char text[INET6_ADDRSTRLEN] = {};
      const bool v6 = bound.ss_family == AF_INET6;
      const auto* in4 = reinterpret_cast<const sockaddr_in*>(&bound);
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&bound);
      ::inet_ntop(bound.ss_family, v6 ? static_cast<const void*>(&in6->sin6_addr) : &in4->sin_addr,
                  text, sizeof text);
      host = text;
      listener.port = ntohs(v6 ? in6->sin6_port : in4->sin_port);
    }
    listener.fd = Fd(fd);
  } else if (portOpt->count() == 0) {
    std::fprintf(stderr, "enjin-demo-http: --port is required without LISTEN_FDS\n");
    return 1;
  } else if (!listenTcp(host, port, listener, error)) {
    std::fprintf(stderr, "enjin-demo-http: cannot listen on %s\n", error.c_str());
    return 1;
  }
  const std::string url = "http://" + hostPort(host, listener.port);
  // Ready once connections are accepted, which they are from listen() on. Outside a
  // supervisor NOTIFY_SOCKET is unset and sd_notify does nothing.
  const std::string ready = "READY=1\nSTATUS=listening on " + url;
  if (int rc = ::sd_notify(0, ready.c_str()); rc < 0) {
    std::fprintf(stderr, "enjin-demo-http: %s\n", errnoText("notify READY=1", -rc).c_str());
  }
  std::printf("listening on %s\n", url.c_str());
  std::fflush(stdout);  // a pipe to ring2d's log: the line must not wait in a buffer

  Server server(name, std::move(listener.fd), std::move(signals), std::move(epoll));
  return server.run();
}
