// The only file that includes cpp-httplib: its header is heavy, and what enjin needs of it fits
// in http_server.hpp.
#include "enjin/api/http_server.hpp"

#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <httplib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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
  res.body = nlohmann::json{{"error", code}, {"message", message}}.dump();
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

// Set on a thread that serves a connection beyond the cap: it answers 503 and closes.
thread_local bool tOverCap = false;

// httplib's pool, bounded: at most `cap` connections are served or wait for one of `threads`
// workers; the ones beyond go to a single thread that answers each 503 and closes it, so an
// overload costs neither memory nor the workers' time.
class BoundedPool final : public httplib::TaskQueue {
 public:
  BoundedPool(int threads, int cap, std::atomic<uint64_t>& refused) : cap_(cap), refused_(refused) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { work(queue_, false); });
    workers_.emplace_back([this] { work(overflow_, true); });
  }
  ~BoundedPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
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
int HttpServer::openStreams() const { return impl_->streams.open.load(); }

Result<std::unique_ptr<HttpServer>> HttpServer::start(const HttpServerOptions& o, HttpHandler handler) {
  auto hp = parseListen(o.listen);
  if (!hp.ok()) return hp.error();
  const auto& [host, port] = *hp;
  if (o.tlsCert.empty() != o.tlsKey.empty()) {
    return Error{"listen " + o.listen + ": TLS needs both tls_cert and tls_key", 400};
  }
  auto impl = std::make_unique<Impl>();
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
  s.new_task_queue = [threads, cap, refused] { return new BoundedPool(threads, cap, *refused); };
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
              status == 413 ? "the body is larger than the limit" : "the request was refused");
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
  const std::string shownHost = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  impl->url = std::string(o.tlsCert.empty() ? "http" : "https") + "://" + shownHost + ":" +
              std::to_string(impl->port);
  auto* srv = impl->server.get();
  impl->thread = std::thread([srv] {
    blockSigpipeOnThisThread();
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
