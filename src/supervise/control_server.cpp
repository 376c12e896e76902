#include "enjin/supervise/control_server.hpp"

#include "enjin/supervise/spec_json.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <nlohmann/json.hpp>

#include "enjin/base/unix_socket.hpp"

namespace enjin::supervise {

using nlohmann::json;

namespace {
constexpr size_t kMaxRequestBytes = 64 * 1024;

// Text in a reply may come from a process (its STATUS= detail) or the spec: invalid UTF-8 is
// replaced (U+FFFD), never thrown about.
std::string dumpSafe(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json errorReply(const std::string& message) { return json{{"ok", false}, {"error", message}}; }

}  // namespace

json statusToJson(const ProcessStatus& s) {
  return {{"name", s.name},       {"state", stateName(s.state)},
          {"pid", s.pid},         {"started_wall_ms", s.startedAtWallMs},
          {"restarts", s.restarts}, {"last_exit", exitToJson(s.lastExit)},
          {"detail", s.detail}};
}

std::string statusJson(const ProcessStatus& s) { return dumpSafe(statusToJson(s)); }

Result<json> controlCall(const std::string& socketPath, const json& request) {
  auto fd = connectUnix(socketPath, SOCK_STREAM, /*nonBlocking=*/false);
  if (!fd.ok()) return fd.error();
  const std::string line = dumpSafe(request) + "\n";
  if (::send(fd->get(), line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    return errnoError("send to " + socketPath, errno);
  }
  std::string reply;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd->get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  json j = json::parse(reply, nullptr, false);
  if (!j.is_object()) return Error{"unreadable reply from " + socketPath};
  if (!j.value("ok", false)) return Error{j.value("error", "request failed")};
  return j;
}

ControlServer::ControlServer(Reactor& reactor, Supervisor& supervisor, std::string node,
                             std::function<Status()> reload)
    : reactor_(reactor), supervisor_(supervisor), node_(std::move(node)), reload_(std::move(reload)) {}

ControlServer::~ControlServer() {
  // Timers and handlers capture `this`; the reactor outlives the server.
  for (auto& [fd, c] : conns_) {
    reactor_.cancelTimer(c->deadline);
    reactor_.removeFd(fd);
  }
  if (acceptRetry_ != 0) reactor_.cancelTimer(acceptRetry_);
  if (listener_) reactor_.removeFd(listener_.get());
}

Status ControlServer::listen(const std::string& path) {
  auto fd = listenUnix(path, SOCK_STREAM, 0600);
  if (!fd.ok()) return fd.error().wrap("control socket");
  listener_ = std::move(*fd);
  return watchListener();
}

Status ControlServer::watchListener() {
  if (auto st = reactor_.addFd(listener_.get(), EPOLLIN, [this](uint32_t) { onAccept(); }); !st.ok()) {
    return st;
  }
  listening_ = true;
  return {};
}

void ControlServer::pauseAccepting() {
  if (!listening_) return;
  reactor_.removeFd(listener_.get());
  listening_ = false;
}

void ControlServer::resumeAccepting() {
  if (listening_ || acceptRetry_ != 0 || conns_.size() >= kMaxConnections) return;
  if (auto st = watchListener(); !st.ok()) {
    // Cannot happen with a valid epoll fd and listener: a broken invariant.
    std::fprintf(stderr, "ring2d: control socket: %s\n", st.error().message.c_str());
    std::abort();
  }
}

void ControlServer::onAccept() {
  for (;;) {
    if (conns_.size() >= kMaxConnections) {
      // Further clients wait in the listen backlog until a connection closes.
      return pauseAccepting();
    }
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) {
      const int err = errno;
      if (err == EINTR || err == ECONNABORTED) continue;
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        // The connection stays in the backlog and the level-triggered listener stays readable:
        // watching it now would spin. Look again later.
        pauseAccepting();
        if (acceptRetry_ == 0) {
          acceptRetry_ = reactor_.addTimerAfterMillis(kAcceptRetryMs, [this] {
            acceptRetry_ = 0;
            resumeAccepting();
          });
        }
      }
      return;
    }
    auto uid = peerUid(fd.get());
    if (!uid.ok() || (*uid != 0 && *uid != ::geteuid())) continue;  // deny by default
    const int raw = fd.get();
    auto conn = std::make_unique<Conn>();
    conn->fd = std::move(fd);
    conn->serial = nextSerial_++;
    if (!reactor_.addFd(raw, EPOLLIN, [this, raw](uint32_t ev) { onConn(raw, ev); }).ok()) continue;
    // close() cancels it, so it never fires for a later connection that reuses the fd number.
    conn->deadline = reactor_.addTimerAfterMillis(kConnectionDeadlineMs, [this, raw] { close(raw); });
    conns_[raw] = std::move(conn);
  }
}

void ControlServer::close(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  reactor_.cancelTimer(it->second->deadline);
  reactor_.removeFd(fd);
  conns_.erase(it);
  resumeAccepting();
}

void ControlServer::onConn(int fd, uint32_t events) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  if (c.waiting) {
    // Nothing more is read while the reply is owed; a client that hung up is let go.
    if ((events & (EPOLLHUP | EPOLLERR)) != 0) close(fd);
    return;
  }
  if (c.out.empty()) {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n > 0) {
        c.in.append(buf, static_cast<size_t>(n));
        if (c.in.size() > kMaxRequestBytes) return close(fd);
        continue;
      }
      if (n == 0 || errno != EAGAIN) {
        if (c.in.find('\n') == std::string::npos) return close(fd);
      }
      break;
    }
    const size_t nl = c.in.find('\n');
    if (nl == std::string::npos) return;
    // Parsed once; nlohmann's non-throwing parse gives a discarded value for bad JSON.
    const json req = json::parse(c.in.substr(0, nl), nullptr, false);
    if (extension_ && req.is_object()) {
      const uint64_t serial = c.serial;
      c.waiting = true;
      (void)reactor_.modifyFd(fd, 0);
      auto owed = [this, fd, serial] {
        auto conn = conns_.find(fd);
        return conn != conns_.end() && conn->second->serial == serial && conn->second->waiting;
      };
      bool taken;
      try {
        taken = extension_(req, [this, fd, owed](json r) {
          if (owed()) reply(fd, dumpSafe(r) + "\n");
        });
      } catch (const std::exception& e) {
        taken = true;
        if (owed()) reply(fd, dumpSafe(errorReply(std::string("request failed: ") + e.what())) + "\n");
      }
      if (taken) return;
    }
    reply(fd, handle(req) + "\n");
    return;
  }
  if ((events & (EPOLLOUT | EPOLLIN)) != 0 || !c.out.empty()) {
    while (c.written < c.out.size()) {
      const ssize_t n = ::send(fd, c.out.data() + c.written, c.out.size() - c.written, MSG_NOSIGNAL);
      if (n < 0 && errno == EAGAIN) return;
      if (n <= 0) return close(fd);
      c.written += static_cast<size_t>(n);
    }
    close(fd);
  }
}

void ControlServer::reply(int fd, std::string line) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  it->second->waiting = false;
  it->second->out = std::move(line);
  (void)reactor_.modifyFd(fd, EPOLLOUT);
}

std::string ControlServer::handle(const json& req) {
  // Anything a request can make throw (a type nlohmann refuses, an allocation) answers this
  // request with an error: it must never take ring2d down.
  try {
    return dumpSafe(answer(req));
  } catch (const std::exception& e) {
    return dumpSafe(errorReply(std::string("request failed: ") + e.what()));
  }
}

json ControlServer::answer(const json& req) {
  if (!req.is_object() || !req.contains("cmd") || !req["cmd"].is_string()) {
    return errorReply("request must be a JSON object with \"cmd\"");
  }
  const std::string cmd = req["cmd"].get<std::string>();
  if (cmd == "status") {
    json procs = json::array();
    for (const auto& s : supervisor_.status()) procs.push_back(statusToJson(s));
    return json{{"ok", true}, {"node", node_}, {"processes", procs}};
  }
  Status st;
  if (cmd == "start" || cmd == "stop" || cmd == "restart") {
    const auto name = req.find("name");
    if (name == req.end() || !name->is_string()) {
      return errorReply("\"" + cmd + "\" needs \"name\", a string");
    }
    const std::string n = name->get<std::string>();
    st = supervisor_.runCommand(cmd, n);
  } else if (cmd == "reload") {
    st = reload_();
  } else {
    st = Error{"unknown command '" + cmd + "' (known: status, start, stop, restart, reload)"};
  }
  if (!st.ok()) return errorReply(st.error().message);
  return json{{"ok", true}};
}

}  // namespace enjin::supervise
