#include "enjin/supervise/control_server.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "enjin/base/unix_socket.hpp"

namespace enjin::supervise {

using nlohmann::json;

namespace {
constexpr size_t kMaxRequestBytes = 64 * 1024;

json exitJson(const std::optional<ExitInfo>& e) {
  if (!e) return nullptr;
  switch (e->kind) {
    case ExitInfo::Kind::kExited: return {{"kind", "exited"}, {"code", e->code}};
    case ExitInfo::Kind::kSignaled: return {{"kind", "signaled"}, {"signal", e->signal}};
    case ExitInfo::Kind::kUnknown: return {{"kind", "unknown"}};
  }
  return nullptr;
}

json toJson(const ProcessStatus& s) {
  return {{"name", s.name},       {"state", stateName(s.state)},
          {"pid", s.pid},         {"started_wall_ms", s.startedAtWallMs},
          {"restarts", s.restarts}, {"last_exit", exitJson(s.lastExit)},
          {"detail", s.detail}};
}
}  // namespace

std::string statusJson(const ProcessStatus& s) { return toJson(s).dump(); }

Result<json> controlCall(const std::string& socketPath, const json& request) {
  auto fd = connectUnix(socketPath, SOCK_STREAM, /*nonBlocking=*/false);
  if (!fd.ok()) return fd.error();
  const std::string line = request.dump() + "\n";
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
  for (auto& [fd, c] : conns_) reactor_.removeFd(fd);
  if (listener_) reactor_.removeFd(listener_.get());
}

Status ControlServer::listen(const std::string& path) {
  auto fd = listenUnix(path, SOCK_STREAM, 0600);
  if (!fd.ok()) return fd.error().wrap("control socket");
  listener_ = std::move(*fd);
  return reactor_.addFd(listener_.get(), EPOLLIN, [this](uint32_t) { onAccept(); });
}

void ControlServer::onAccept() {
  for (;;) {
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) return;
    auto uid = peerUid(fd.get());
    if (!uid.ok() || (*uid != 0 && *uid != ::geteuid())) continue;  // deny by default
    const int raw = fd.get();
    auto conn = std::make_unique<Conn>();
    conn->fd = std::move(fd);
    conns_[raw] = std::move(conn);
    (void)reactor_.addFd(raw, EPOLLIN, [this, raw](uint32_t ev) { onConn(raw, ev); });
  }
}

void ControlServer::close(int fd) {
  reactor_.removeFd(fd);
  conns_.erase(fd);
}

void ControlServer::onConn(int fd, uint32_t events) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
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
    c.out = handle(c.in.substr(0, nl)) + "\n";
    (void)reactor_.modifyFd(fd, EPOLLOUT);
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

std::string ControlServer::handle(const std::string& line) {
  json req = json::parse(line, nullptr, false);
  if (!req.is_object() || !req.contains("cmd") || !req["cmd"].is_string()) {
    return json{{"ok", false}, {"error", "request must be a JSON object with \"cmd\""}}.dump();
  }
  const std::string cmd = req["cmd"];
  if (cmd == "status") {
    json procs = json::array();
    for (const auto& s : supervisor_.status()) procs.push_back(toJson(s));
    return json{{"ok", true}, {"node", node_}, {"processes", procs}}.dump();
  }
  Status st;
  if (cmd == "start" || cmd == "stop" || cmd == "restart") {
    const std::string name = req.value("name", "");
    st = cmd == "start"  ? supervisor_.startProcess(name)
         : cmd == "stop" ? supervisor_.stopProcess(name)
                         : supervisor_.restartProcess(name);
  } else if (cmd == "reload") {
    st = reload_();
  } else {
    st = Error{"unknown command '" + cmd + "' (known: status, start, stop, restart, reload)"};
  }
  if (!st.ok()) return json{{"ok", false}, {"error", st.error().message}}.dump();
  return json{{"ok", true}}.dump();
}

}  // namespace enjin::supervise
