// The HTTP server through real sockets on loopback, and the handoff to a reactor thread.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "enjin/api/http_server.hpp"
#include "enjin/base/clock.hpp"
#include "enjin/reactor/handoff.hpp"
#include "enjin/reactor/reactor.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::api {
namespace {

using nlohmann::json;

HttpServerOptions at(std::string listen, std::string cert = "", std::string key = "") {
  HttpServerOptions o;
  o.listen = std::move(listen);
  o.tlsCert = std::move(cert);
  o.tlsKey = std::move(key);
  return o;
}

std::unique_ptr<HttpServer> startEcho(HttpServerOptions o = {}) {
  if (o.listen.empty()) o.listen = "127.0.0.1:0";
  auto s = HttpServer::start(o, [](const HttpRequest& req, HttpResponse& res) {
    res.body = json{{"method", req.method}, {"path", req.path}, {"q", req.param("q")},
                    {"auth", req.header("authorization")}, {"body", req.body},
                    {"from", req.remoteAddr}}.dump();
  });
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
  return s.ok() ? std::move(*s) : nullptr;
}

// One raw connection: sends `request`, returns everything the server answers until it closes.
std::string rawExchange(int port, const std::string& request, int timeoutMs = 3000) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{timeoutMs / 1000, (timeoutMs % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "connect failed";
  }
  (void)!::write(fd, request.data(), request.size());
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

TEST(HttpServerTest, ServesARequestWithItsPathQueryHeadersAndBody) {
  auto s = startEcho();
  ASSERT_TRUE(s);
  httplib::Client c("127.0.0.1", s->port());
  auto r = c.Post("/v1/x?q=a%20b", {{"Authorization", "Bearer T"}}, "hello", "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  auto j = json::parse(r->body);
  EXPECT_EQ(j["method"], "POST");
  EXPECT_EQ(j["path"], "/v1/x");
  EXPECT_EQ(j["q"], "a b");
  EXPECT_EQ(j["auth"], "Bearer T");
  EXPECT_EQ(j["body"], "hello");
  EXPECT_EQ(j["from"], "127.0.0.1");
  EXPECT_EQ(s->url(), "http://127.0.0.1:" + std::to_string(s->port()));
}

TEST(HttpServerTest, ABodyOverTheLimitIs413InTheApiShape) {
  HttpServerOptions o;
  o.maxBodyBytes = 1024;
  auto s = startEcho(o);
  ASSERT_TRUE(s);
  httplib::Client c("127.0.0.1", s->port());
  auto r = c.Post("/v1/x", std::string(4096, 'a'), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  auto j = json::parse(r->body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r->body;
  EXPECT_EQ(j["error"], "payload_too_large");
}

TEST(HttpServerTest, GarbageGetsAnErrorAndTheServerStillServes) {
  HttpServerOptions o;
  o.readTimeoutMs = 300;
  o.keepAliveMs = 1000;
  auto s = startEcho(o);
  ASSERT_TRUE(s);
  const std::string garbage[] = {"\x01\x02\x03\r\n\r\n", "GET\r\n\r\n", "GET / HTTP/9\r\n\r\n",
                                 "POST /x HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                                 "GET /" + std::string(20000, 'a') + " HTTP/1.1\r\n\r\n",
                                 "GET / HTTP/1.1\r\nX: " + std::string(20000, 'b') + "\r\n\r\n"};
  for (const auto& g : garbage) {
    const std::string out = rawExchange(s->port(), g, 700);
    EXPECT_EQ(out.find(" 500 "), std::string::npos) << out.substr(0, 80);
  }
  httplib::Client c("127.0.0.1", s->port());
  auto r = c.Get("/still");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(HttpServerTest, ConnectionsBeyondTheCapAre503) {
  HttpServerOptions o;
  o.threads = 1;
  o.maxConnections = 1;
  o.readTimeoutMs = 2000;
  auto s = startEcho(o);
  ASSERT_TRUE(s);
  // One connection that sends nothing holds the only slot until its read times out.
  const int hold = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(s->port()));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(hold, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const std::string out = rawExchange(s->port(), "GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_NE(out.find("HTTP/1.1 503"), std::string::npos) << out;
  EXPECT_NE(out.find("\"unavailable\""), std::string::npos) << out;
  EXPECT_EQ(s->refusedConnections(), 1u);
  ::close(hold);
}

TEST(HttpServerTest, StreamsUntilTheHandlerEnds) {
  auto s = HttpServer::start(at("127.0.0.1:0"), [](const HttpRequest&, HttpResponse& res) {
    res.contentType = "text/event-stream";
    res.stream = [](const std::function<bool(const std::string&)>& write) {
      for (int i = 1; i <= 3; ++i) {
        if (!write("id: " + std::to_string(i) + "\ndata: {}\n\n")) return;
      }
    };
  });
  ASSERT_TRUE(s.ok());
  httplib::Client c("127.0.0.1", (*s)->port());
  auto r = c.Get("/v1/events");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  EXPECT_EQ(r->body, "id: 1\ndata: {}\n\nid: 2\ndata: {}\n\nid: 3\ndata: {}\n\n");
}

int connectTo(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 ? fd : (::close(fd), -1);
}

// Slow clients that each send a header byte well within the read timeout hold every worker, but
// only for requestTimeoutMs: then they are cut, and a normal request is served.
TEST(HttpServerTest, SlowClientsAreCutAndTheWorkersServeAgain) {
  HttpServerOptions o;
  o.threads = 2;
  o.maxConnections = 16;
  o.readTimeoutMs = 5000;
  o.keepAliveMs = 300;
  o.requestTimeoutMs = 800;
  auto s = startEcho(o);
  ASSERT_TRUE(s);
  std::vector<int> slow;
  for (int i = 0; i < 3; ++i) {
    const int fd = connectTo(s->port());
    ASSERT_GE(fd, 0);
    (void)!::write(fd, "GET / HTTP/1.1\r\nX-Slow: ", 24);
    slow.push_back(fd);
  }
  std::atomic<bool> stop{false};
  std::thread drip([&] {
    // A byte each 200 ms (well within the 5 s read timeout), for at most 4 s.
    for (int i = 0; i < 20 && !stop; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      for (int fd : slow) (void)!::send(fd, "a", 1, MSG_NOSIGNAL);
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto started = std::chrono::steady_clock::now();
  httplib::Client c("127.0.0.1", s->port());
  c.set_read_timeout(4, 0);
  auto r = c.Get("/served");
  const auto waited = std::chrono::steady_clock::now() - started;
  stop = true;
  drip.join();
  ASSERT_TRUE(r) << "the slow clients held the workers";
  EXPECT_EQ(r->status, 200);
  EXPECT_LT(waited, std::chrono::milliseconds(3000));
  EXPECT_GE(s->slowConnectionsCut(), 2u);
  // A cut connection reads its end.
  char buf[64];
  timeval tv{1, 0};
  ::setsockopt(slow[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  EXPECT_LE(::read(slow[0], buf, sizeof buf), 0);
  for (int fd : slow) ::close(fd);
}

// A stream that lasts longer than requestTimeoutMs is a handler at work, not a slow client.
TEST(HttpServerTest, ALongStreamIsNotCut) {
  HttpServerOptions o = at("127.0.0.1:0");
  o.requestTimeoutMs = 300;
  o.keepAliveMs = 200;
  auto s = HttpServer::start(o, [](const HttpRequest&, HttpResponse& res) {
    res.contentType = "text/event-stream";
    res.stream = [](const std::function<bool(const std::string&)>& write) {
      for (int i = 1; i <= 8; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (!write("id: " + std::to_string(i) + "\n\n")) return;
      }
    };
  });
  ASSERT_TRUE(s.ok());
  httplib::Client c("127.0.0.1", (*s)->port());
  auto r = c.Get("/v1/events");
  ASSERT_TRUE(r);
  EXPECT_NE(r->body.find("id: 8\n"), std::string::npos) << r->body;
  EXPECT_EQ((*s)->slowConnectionsCut(), 0u);
}

TEST(HttpServerTest, BadListenAddressesAndBusyPortsAreNamed) {
  auto bad = HttpServer::start(at("example.com:80"), nullptr);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("'example.com' is not a numeric"), std::string::npos);
  EXPECT_FALSE(HttpServer::start(at("127.0.0.1"), nullptr).ok());
  EXPECT_FALSE(HttpServer::start(at("127.0.0.1:99999"), nullptr).ok());
  auto first = startEcho();
  ASSERT_TRUE(first);
  auto second = HttpServer::start(at("127.0.0.1:" + std::to_string(first->port())),
                                  [](const HttpRequest&, HttpResponse&) {});
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.error().message.find("cannot bind"), std::string::npos);
}

TEST(HttpServerTest, ServesTlsWithACertificateMadeByOpenssl) {
  testing::TempDir dir;
  const std::string cert = dir.path() + "/cert.pem", key = dir.path() + "/key.pem";
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
                          "-keyout " + key + " -out " + cert + " >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "openssl could not make a certificate";
  auto s = startEcho(at("127.0.0.1:0", cert, key));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->url().rfind("https://", 0), 0u);
  httplib::SSLClient c("127.0.0.1", s->port());
  c.set_ca_cert_path(cert.c_str());
  c.enable_server_certificate_verification(true);
  auto r = c.Get("/v1/tls");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(json::parse(r->body)["path"], "/v1/tls");
  // Plain HTTP to the TLS port gets no answer that looks like ours.
  EXPECT_EQ(rawExchange(s->port(), "GET / HTTP/1.1\r\n\r\n", 1000).find("200"), std::string::npos);
  // A key that does not match the certificate is refused at start.
  std::ofstream(dir.path() + "/junk.pem") << "not a key\n";
  EXPECT_FALSE(HttpServer::start(at("127.0.0.1:0", cert, dir.path() + "/junk.pem"),
                                 nullptr).ok());
}

TEST(HandoffTest, CallsRunOnTheReactorThreadAndAnswer) {
  SystemClock clock;
  auto reactor = Reactor::create(clock);
  ASSERT_TRUE(reactor.ok());
  Handoff handoff(**reactor);
  std::atomic<bool> stop{false};
  std::thread::id reactorThread;
  int counter = 0;  // touched only on the reactor thread
  std::thread caller([&] {
    std::vector<std::thread> callers;
    std::atomic<int> sum{0};
    for (int t = 0; t < 4; ++t) {
      callers.emplace_back([&] {
        for (int i = 0; i < 250; ++i) {
          auto v = handoff.call<int>([&] { return ++counter; }, 5000);
          ASSERT_TRUE(v.has_value());
          sum += 1;
        }
      });
    }
    for (auto& c : callers) c.join();
    EXPECT_EQ(sum.load(), 1000);
    auto where = handoff.call<std::thread::id>([] { return std::this_thread::get_id(); }, 5000);
    ASSERT_TRUE(where.has_value());
    EXPECT_EQ(*where, reactorThread);
    stop = true;
    handoff.post([] {});
  });
  reactorThread = std::this_thread::get_id();
  while (!stop) (*reactor)->runOnce(100);
  caller.join();
  EXPECT_EQ(counter, 1000);
}

TEST(HandoffTest, ACallTimesOutWhenTheReactorDoesNotTurnAndAClosedHandoffRefuses) {
  SystemClock clock;
  auto reactor = Reactor::create(clock);
  ASSERT_TRUE(reactor.ok());
  Handoff handoff(**reactor);
  EXPECT_FALSE(handoff.call<int>([] { return 1; }, 50).has_value());
  EXPECT_EQ(handoff.pending(), 1u);
  (*reactor)->runOnce(0);
  EXPECT_EQ(handoff.pending(), 0u);
  handoff.close();
  EXPECT_FALSE(handoff.post([] {}));
}

}  // namespace
}  // namespace enjin::api
