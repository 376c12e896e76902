// The only file that includes cpp-httplib: its header is heavy, and what enjin needs of it fits
// in http_server.hpp.
#include "enjin/api/http_server.hpp"

#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <cctype>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

namespace enjin::api {

std::string HttpRequest::header(const std::string& lowerName) const {
  auto it = headers.find(lowerName);
  return it == headers.end() ? std::string() : it->second;
}

std::string HttpRequest::param(const std::string& name) const {
  auto it = query.find(name);
  return it == query.end() ? std::string() : it->second;
}

std::string errorCodeFor(int status) {
  switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthenticated";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 408: return "request_timeout";
    case 409: return "conflict";
    case 413: return "payload_too_large";
    case 414: return "uri_too_long";
    case 415: return "unsupported_media_type";
    case 429: return "too_many_requests";
    case 431: return "request_header_fields_too_large";
    case 503: return "unavailable";
    default: return status >= 500 ? "internal" : "error";
  }
}

void jsonError(HttpResponse& res, int status, const std::string& code, const std::string& message) {
  res.status = status;
  res.contentType = "application/json";
  // A message may quote what the client sent, which need not be UTF-8: such bytes become U+FFFD
  // rather than an exception.
  res.body = nlohmann::json{{"error", code}, {"message", message}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
  res.stream = nullptr;
}

Result<std::pair<std::string, int>> parseListen(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == listen.size()) {
    return Error{"listen address '" + listen + "': expected HOST:PORT", 400};
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = 0;
  for (char c : listen.substr(colon + 1)) {
    if (!std::isdigit(static_cast<unsigned char>(c)) || port > 65535) {
      return Error{"listen address '" + listen + "': the port is not a number in 0..65535", 400};
    }
    port = port * 10 + (c - '0');
  }
  if (port > 65535) return Error{"listen address '" + listen + "': the port is not in 0..65535", 400};
  unsigned char buf[16];
  if (host != "localhost" && ::inet_pton(AF_INET, host.c_str(), buf) != 1 &&
      ::inet_pton(AF_INET6, host.c_str(), buf) != 1) {
    return Error{"listen address '" + listen + "': '" + host +
                     "' is not a numeric IPv4 or IPv6 address nor localhost", 400};
  }
  return std::pair{host, port};
}

namespace {

// The server's threads write to sockets whose peer may be gone: with SIGPIPE blocked on them, such
// a write fails with EPIPE instead of ending the process, whatever the process does with SIGPIPE.
void blockSigpipeOnThisThread() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

// The server's threads run at a lower priority than the rest of the daemon (Linux keeps a nice
// value per thread): under API load the scheduler still turns the reactor first, so requests
// cannot delay supervision.
constexpr int kServerNice = 5;
void yieldToTheReactor() {
  const int tid = static_cast<int>(::syscall(SYS_gettid));
  errno = 0;
  const int now = ::getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
  if (errno == 0) (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), std::min(19, now + kServerNice));
}

// Set on a thread that serves a connection beyond the cap: it answers 503 and closes.
thread_local bool tOverCap = false;

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A slow client (slowloris) sends its request a byte at a time, each byte within the read
// timeout, and httplib would wait on it for as long as it keeps that up; a slow reader does the
// same with an answer. The guard bounds the time a connection spends outside its handler: from
// the moment a worker takes it up, or from the end of its last handler, to the start of the
// next, at most `limitMs`
// (which covers writing the answer, the keep-alive wait and reading the next request). Past it,
// the socket is shut down and the worker is free again. A streamed answer (Server-Sent Events)
// counts as inside its handler.
//
// httplib hands the pool a task, not the socket: the guard finds the new connection's fd when
// the task is queued (on the listening thread, right after accept) as the one connected socket
// on the server's port that no task owns yet, and remembers its peer, so that a number the
// kernel has since given to another connection is never shut down.
class ReadGuard {
 public:
  ReadGuard(int64_t limitMs, std::atomic<uint64_t>& cut) : limitMs_(limitMs), cut_(cut) {
    watchdog_ = std::thread([this] { watch(); });
  }
  ~ReadGuard() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    watchdog_.join();
  }
  void setPort(int port) { port_.store(port); }

  // On the listening thread, when a connection's task is queued: its id (0: not found, the
  // connection goes unguarded).
  uint64_t claim() {
    const int port = port_.load();
    if (port <= 0) return 0;
    // The scan runs without the lock (the workers take it on every request); only this thread
    // claims, so what no task owned before the scan is still unowned after it.
    std::set<int> owned;
    {
      std::lock_guard lock(mutex_);
      for (const auto& [id, c] : conns_) owned.insert(c.fd);
    }
    std::optional<Conn> found;
    int candidates = 0;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
      const std::string name = e.path().filename().string();
      const int fd = std::atoi(name.c_str());
      if (fd < 0 || owned.contains(fd)) continue;
      Conn c;
      if (!connectedOnPort(fd, port, c)) continue;
      ++candidates;
      found = c;
    }
    if (candidates != 1) return 0;
    found->queued = true;  // waiting for a worker: not the client's time yet
    std::lock_guard lock(mutex_);
    conns_[++nextId_] = *found;
    return nextId_;
  }
  void release(uint64_t id) {
    if (id == 0) return;
    std::lock_guard lock(mutex_);
    conns_.erase(id);
  }
  // A worker took the connection up: its time runs from now.
  void started(uint64_t id) { inHandler(id, false); }
  void inHandler(uint64_t id, bool in) {
    if (id == 0) return;
    std::lock_guard lock(mutex_);
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    it->second.queued = false;
    it->second.inHandler = in;
    it->second.phaseStartMs = nowMs();
  }

 private:
  struct Conn {
    int fd = -1;
    sockaddr_storage peer{};
    socklen_t peerLen = 0;
    int64_t phaseStartMs = 0;
    bool queued = false;
    bool inHandler = false;
    bool cut = false;
  };

  static bool connectedOnPort(int fd, int port, Conn& c) {
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) return false;
    int localPort = -1;
    if (local.ss_family == AF_INET) {
      localPort = ntohs(reinterpret_cast<const sockaddr_in*>(&local)->sin_port);
    } else if (local.ss_family == AF_INET6) {
      localPort = ntohs(reinterpret_cast<const sockaddr_in6*>(&local)->sin6_port);
    }
    if (localPort != port) return false;
    c.fd = fd;
    c.peerLen = sizeof c.peer;
    return ::getpeername(fd, reinterpret_cast<sockaddr*>(&c.peer), &c.peerLen) == 0;
  }

  void watch() {
    std::unique_lock lock(mutex_);
    const auto tick = std::chrono::milliseconds(std::clamp<int64_t>(limitMs_ / 4, 10, 250));
    while (!cv_.wait_for(lock, tick, [&] { return stopping_; })) {
      const int64_t now = nowMs();
      for (auto& [id, c] : conns_) {
        if (c.queued || c.inHandler || c.cut || now - c.phaseStartMs <= limitMs_) continue;
        sockaddr_storage peer{};
        socklen_t len = sizeof peer;
        if (::getpeername(c.fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0 ||
            len != c.peerLen || std::memcmp(&peer, &c.peer, len) != 0) {
          continue;  // closed, or the number is another connection's now
        }
        ::shutdown(c.fd, SHUT_RDWR);
        c.cut = true;
        ++cut_;
      }
    }
  }

  const int64_t limitMs_;
  std::atomic<uint64_t>& cut_;
  std::atomic<int> port_{0};
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<uint64_t, Conn> conns_;
  uint64_t nextId_ = 0;
  bool stopping_ = false;
  std::thread watchdog_;
};

// The guard and the connection the current worker thread serves.
thread_local ReadGuard* tGuard = nullptr;
thread_local uint64_t tConnection = 0;

// Marks the current connection as inside its handler for the life of the scope.
class InHandler {
 public:
  InHandler() {
    if (tGuard != nullptr) tGuard->inHandler(tConnection, true);
  }
  ~InHandler() {
    if (tGuard != nullptr) tGuard->inHandler(tConnection, false);
  }
  InHandler(const InHandler&) = delete;
  InHandler& operator=(const InHandler&) = delete;
};

// httplib's pool, bounded: at most `cap` connections are served or wait for one of `threads`
// workers; the ones beyond go to a single thread that answers each 503 and closes it, so an
// overload costs neither memory nor the workers' time.
class BoundedPool final : public httplib::TaskQueue {
 public:
  BoundedPool(int threads, int cap, std::atomic<uint64_t>& refused, ReadGuard& guard)
      : cap_(cap), refused_(refused), guard_(guard) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { work(queue_, false); });
    workers_.emplace_back([this] { work(overflow_, true); });
  }
  ~BoundedPool() override { shutdown(); }

  void enqueue(std::function<void()> task) override {
    const uint64_t id = guard_.claim();
    auto fn = [this, id, task = std::move(task)] {
      tGuard = &guard_;
      tConnection = id;
      guard_.started(id);
      task();
      tConnection = 0;
      guard_.release(id);
    };
    std::lock_guard lock(mutex_);
    if (inUse_ >= cap_) {
      ++refused_;
      overflow_.push_back(std::move(fn));
    } else {
      ++inUse_;
      queue_.push_back(std::move(fn));
    }
    cv_.notify_all();
  }

  void shutdown() override {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

 private:
  void work(std::deque<std::function<void()>>& from, bool overCap) {
    blockSigpipeOnThisThread();
    yieldToTheReactor();
    tOverCap = overCap;
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return stopping_ || !from.empty(); });
        if (from.empty()) return;  // stopping, and nothing left to close
        fn = std::move(from.front());
        from.pop_front();
      }
      fn();
      if (!overCap) {
        std::lock_guard lock(mutex_);
        --inUse_;
      }
    }
  }

  const int cap_;
  std::atomic<uint64_t>& refused_;
  ReadGuard& guard_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_, overflow_;
  int inUse_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

// What a streamed body shares with its server: whether the server is stopping (every write then
// fails, so the stream ends and the server's pool can be joined) and how many streams are open.
struct StreamState {
  std::atomic<bool> stopping{false};
  std::atomic<int> open{0};
  int max = 1;
};

void toHttplib(const HttpResponse& in, httplib::Response& out, StreamState* streams = nullptr) {
  out.status = in.status;
  if (in.stream && streams != nullptr) {
    // A stream holds one of the pool's threads for as long as it lasts: beyond `max` of them the
    // answer is 503, so that streams cannot take every thread from the other requests.
    if (streams->open.fetch_add(1) >= streams->max) {
      streams->open.fetch_sub(1);
      HttpResponse busy;
      jsonError(busy, 503, "unavailable", "too many streams open; retry later");
      busy.headers.emplace_back("Retry-After", "5");
      return toHttplib(busy, out);
    }
    for (const auto& [k, v] : in.headers) out.set_header(k, v);
    // Counted until httplib drops the provider, whether it ran or not (a client gone before).
    std::shared_ptr<void> slot(nullptr, [streams](void*) { streams->open.fetch_sub(1); });
    auto stream = in.stream;
    out.set_chunked_content_provider(
        in.contentType, [stream, streams, slot](size_t, httplib::DataSink& sink) {
          InHandler streaming;
          stream([&sink, streams](const std::string& chunk) {
            if (streams->stopping.load() || !sink.is_writable()) return false;
            // An empty chunk would end the chunked body: "" only asks whether to go on.
            return chunk.empty() || sink.write(chunk.data(), chunk.size());
          });
          sink.done();
          return true;
        });
    return;
  }
  for (const auto& [k, v] : in.headers) out.set_header(k, v);
  out.set_content(in.body, in.contentType);
}

}  // namespace

class HttpServer::Impl {
 public:
  explicit Impl(int64_t requestTimeoutMs) : guard(requestTimeoutMs, cut) {}
  std::atomic<uint64_t> cut{0};
  ReadGuard guard;  // outlives the server and its pool
  std::unique_ptr<httplib::Server> server;
  std::thread thread;
  std::atomic<uint64_t> refused{0};
  StreamState streams;
  int port = 0;
  std::string url;
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  // Streams end at their next write (or write("") check) once `stopping` is set; the pool's
  // threads can then be joined.
  impl_->streams.stopping = true;
  if (impl_->server) impl_->server->stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

int HttpServer::port() const { return impl_->port; }
std::string HttpServer::url() const { return impl_->url; }
uint64_t HttpServer::refusedConnections() const { return impl_->refused.load(); }
uint64_t HttpServer::slowConnectionsCut() const { return impl_->cut.load(); }
int HttpServer::openStreams() const { return impl_->streams.open.load(); }

Result<std::unique_ptr<HttpServer>> HttpServer::start(const HttpServerOptions& o, HttpHandler handler) {
  auto hp = parseListen(o.listen);
  if (!hp.ok()) return hp.error();
  const auto& [host, port] = *hp;
  if (o.tlsCert.empty() != o.tlsKey.empty()) {
    return Error{"listen " + o.listen + ": TLS needs both tls_cert and tls_key", 400};
  }
  auto impl = std::make_unique<Impl>(std::max<int64_t>(1, o.requestTimeoutMs));
  if (!o.tlsCert.empty()) {
    for (const auto& f : {o.tlsCert, o.tlsKey}) {
      if (::access(f.c_str(), R_OK) != 0) return errnoError("listen " + o.listen + ": " + f, errno);
    }
    auto tls = std::make_unique<httplib::SSLServer>(o.tlsCert.c_str(), o.tlsKey.c_str());
    if (!tls->is_valid()) {
      return Error{"listen " + o.listen + ": cannot load the certificate " + o.tlsCert +
                   " and key " + o.tlsKey + " (not PEM, or they do not match)"};
    }
    impl->server = std::move(tls);
  } else {
    impl->server = std::make_unique<httplib::Server>();
  }
  auto& s = *impl->server;
  auto* refused = &impl->refused;
  const int threads = std::max(1, o.threads), cap = std::max(threads, o.maxConnections);
  impl->streams.max = std::clamp(o.maxStreams, 0, threads - 1);
  auto* streams = &impl->streams;
  auto* guard = &impl->guard;
  s.new_task_queue = [threads, cap, refused, guard] {
    return new BoundedPool(threads, cap, *refused, *guard);
  };
  s.set_payload_max_length(o.maxBodyBytes);
  s.set_read_timeout(std::chrono::milliseconds(o.readTimeoutMs));
  s.set_write_timeout(std::chrono::milliseconds(o.writeTimeoutMs));
  s.set_keep_alive_timeout(std::max<int64_t>(1, o.keepAliveMs / 1000));
  s.set_keep_alive_max_count(static_cast<size_t>(std::max(1, o.keepAliveRequests)));
  s.set_tcp_nodelay(true);
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, which would let a second daemon bind
  // the same port and silently take half of its connections.
  s.set_socket_options([](int sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });

  s.set_pre_routing_handler([](const httplib::Request&, httplib::Response& res) {
    if (!tOverCap) return httplib::Server::HandlerResponse::Unhandled;
    HttpResponse out;
    jsonError(out, 503, "unavailable", "too many connections; retry later");
    out.headers.emplace_back("Connection", "close");
    out.headers.emplace_back("Retry-After", "1");
    toHttplib(out, res);
    return httplib::Server::HandlerResponse::Handled;
  });
  auto serve = [handler, streams](const httplib::Request& req, httplib::Response& res) {
    HttpRequest in;
    in.method = req.method;
    in.path = req.path;
    for (const auto& [k, v] : req.params) in.query.emplace(k, v);
    for (const auto& [k, v] : req.headers) {
      std::string lower = k;
      for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      in.headers[lower] = v;
    }
    in.body = req.body;
    in.remoteAddr = req.remote_addr;
    HttpResponse out;
    try {
      InHandler inside;
      handler(in, out);
    } catch (const std::exception& e) {
      jsonError(out, 500, "internal", std::string("the request failed: ") + e.what());
    }
    toHttplib(out, res, streams);
  };
  const httplib::Server::Handler h = serve;
  s.Get(".*", h);
  s.Post(".*", h);
  s.Put(".*", h);
  s.Patch(".*", h);
  s.Delete(".*", h);
  s.Options(".*", h);
  // Answers httplib makes itself (a bad request line, a body over the limit) in the API's shape.
  s.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    HttpResponse out;
    const int status = res.status > 0 ? res.status : 400;
    jsonError(out, status, errorCodeFor(status),
              status == 413   ? "the body is larger than the limit"
              : status == 414 ? "the request line is longer than 8 KiB"
              : status == 400 ? "the request could not be read: a malformed request line or "
                                "header, a header line longer than 8 KiB, or a POST, PUT or "
                                "PATCH without Content-Length"
                              : "the request was refused");
    toHttplib(out, res);
  });

  if (port == 0) {
    impl->port = s.bind_to_any_port(host);
    if (impl->port <= 0) return Error{"listen " + o.listen + ": cannot bind"};
  } else {
    if (!s.bind_to_port(host, port)) {
      return Error{"listen " + o.listen + ": cannot bind (in use, or not an address of this host)"};
    }
    impl->port = port;
  }
  impl->guard.setPort(impl->port);
  const std::string shownHost = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  impl->url = std::string(o.tlsCert.empty() ? "http" : "https") + "://" + shownHost + ":" +
              std::to_string(impl->port);
  auto* srv = impl->server.get();
  impl->thread = std::thread([srv] {
    blockSigpipeOnThisThread();
    yieldToTheReactor();
    srv->listen_after_bind();
  });
  // Serving before start() returns: a stop() that came before httplib marked itself running
  // would be lost, and the destructor would wait for a loop that never ends.
  for (int i = 0; i < 2000 && !srv->is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

}  // namespace enjin::api
