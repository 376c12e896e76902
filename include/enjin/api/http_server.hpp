// An HTTP/1.1 server on a bounded pool of threads (cpp-httplib underneath, included only by
// http_server.cpp): plain or TLS, with the limits every listener of enjin has. Handlers run on
// the pool's threads, never on a reactor; what they need from a daemon's state they get through
// a Handoff (enjin/reactor/handoff.hpp).
//
// Limits: a body above maxBodyBytes is 413, a header block above the library's 8 KiB is
// refused, a read that waits longer than readTimeoutMs drops the connection, an idle keep-alive
// connection is closed after keepAliveMs, a connection that takes longer than requestTimeoutMs
// to send a request (slowloris) or take an answer is cut, and beyond maxConnections (queued or
// served) a connection is answered 503 at once; so is a streamed body beyond maxStreams (each
// holds a thread of the pool while it lasts). Every answer the server makes itself is JSON
// {"error","message"}, like the API's own.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "enjin/base/result.hpp"

namespace enjin::api {

struct HttpRequest {
  std::string method;                         // "GET", ...
  std::string path;                           // decoded, without the query
  std::multimap<std::string, std::string> query;
  std::map<std::string, std::string> headers;  // names lower-case; a repeated header: the last
  std::string body;
  std::string remoteAddr;

  std::string header(const std::string& lowerName) const;
  std::string param(const std::string& name) const;  // "" if absent
};

struct HttpResponse {
  int status = 200;
  std::string contentType = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // A streamed body (Server-Sent Events): called on the connection's thread with a writer that
  // returns false once the client is gone (noticed when a write fails) or the server is
  // stopping; the stream ends when this returns. write("") sends nothing and only tells whether
  // to go on: a stream that waits for something to send calls it every few hundred ms, so that
  // it does not hold up the server's destructor. A stream keeps its connection and one of the
  // server's threads for as long as it lasts, and counts against maxConnections.
  std::function<void(const std::function<bool(const std::string&)>& write)> stream;
};

using HttpHandler = std::function<void(const HttpRequest&, HttpResponse&)>;

struct HttpServerOptions {
  std::string listen;        // "127.0.0.1:8080", "[::1]:8080"; port 0: any free port
  std::string tlsCert;       // PEM files; both or neither
  std::string tlsKey;
  // A connection keeps its thread for as long as it is kept alive: as many threads as clients
  // that talk at once, or the others wait for a keep-alive to end.
  int threads = 32;
  int maxConnections = 64;   // served plus waiting for a thread
  int maxStreams = 4;        // streamed bodies at once (at most threads - 1); beyond: 503
  size_t maxBodyBytes = 1 << 20;
  int64_t readTimeoutMs = 5000;
  int64_t writeTimeoutMs = 5000;
  int64_t keepAliveMs = 5000;
  // The longest a connection may spend outside its handler: sending one request (a slowloris
  // sends it a byte at a time), taking one answer, waiting between requests. Past it the
  // connection is cut. Must exceed keepAliveMs.
  int64_t requestTimeoutMs = 10'000;
  // Requests on one kept-alive connection before it is closed; each new connection costs an
  // accept and the slow-client guard's look at the process's fds.
  int keepAliveRequests = 10'000;
};

// {"error": code, "message": message} with `status`.
void jsonError(HttpResponse& res, int status, const std::string& code, const std::string& message);
// The error code word for a status: 400 "bad_request", 401 "unauthenticated", 403 "forbidden", ...
std::string errorCodeFor(int status);

class HttpServer {
 public:
  // Binds (errors name the address and the cause: a bad address, a port in use, an unreadable
  // certificate) and starts serving on its own threads; every request goes to `handler`.
  static Result<std::unique_ptr<HttpServer>> start(const HttpServerOptions& options,
                                                   HttpHandler handler);
  ~HttpServer();  // stops: no handler runs after it returns
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const;          // the bound port
  std::string url() const;   // "http://127.0.0.1:PORT" or https
  // Connections answered 503 because maxConnections were in use.
  uint64_t refusedConnections() const;
  // Connections cut for taking longer than requestTimeoutMs outside a handler (slow clients).
  uint64_t slowConnectionsCut() const;
  // Streamed bodies being served now.
  int openStreams() const;

 private:
  class Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Splits "host:port" / "[v6]:port"; the host must be a numeric address or "localhost".
Result<std::pair<std::string, int>> parseListen(const std::string& listen);

}  // namespace enjin::api
