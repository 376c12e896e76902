// The HAProxy router against a real haproxy (/usr/sbin/haproxy, skipped when missing), on real
// loopback sockets: test-local HTTP servers stand for app instances. Every haproxy the tests
// start runs in its own process group, killed and reaped when the test ends, also on failure.
#include "enjin/router/router.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "enjin/metrics/metrics.hpp"

namespace enjin::router {
namespace {

using namespace std::chrono_literals;
using State = RouterServer::State;

constexpr const char* kHaproxy = "/usr/sbin/haproxy";

#define SKIP_WITHOUT_HAPROXY()                                                 \
  do {                                                                         \
    if (::access(kHaproxy, X_OK) != 0) GTEST_SKIP() << kHaproxy << " missing"; \
  } while (0)

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/enjin-router-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

// A loopback port nobody listens on (bound, read back, released).
int freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// A one-thread HTTP/1.1 server that answers every request with its name and closes the
// connection. Counts the requests it answered.
class TestServer {
 public:
  explicit TestServer(std::string name) : name_(std::move(name)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(fd_, 128) != 0) {
      ADD_FAILURE() << "test server " << name_ << ": " << std::strerror(errno);
    }
    socklen_t len = sizeof(a);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~TestServer() { stop(); }

  // Stops listening: connections to the port are refused from now on.
  void stop() {
    if (stopped_.exchange(true)) return;
    thread_.join();
    ::close(fd_);
  }
  int port() const { return port_; }
  int served() const { return served_.load(); }
  RouterServer server(State state = State::kReady) const {
    return RouterServer{name_, "127.0.0.1", port_, state};
  }

 private:
  void run() {
    while (!stopped_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      std::string head;
      char buf[4096];
      auto deadline = std::chrono::steady_clock::now() + 2s;
      while (head.find("\r\n\r\n") == std::string::npos &&
             std::chrono::steady_clock::now() < deadline) {
        pollfd q{c, POLLIN, 0};
        if (::poll(&q, 1, 100) <= 0) continue;
        ssize_t n = ::recv(c, buf, sizeof(buf), 0);
        if (n <= 0) break;
        head.append(buf, static_cast<size_t>(n));
      }
      if (head.find("\r\n\r\n") != std::string::npos) {
        std::string body = name_;
        std::string resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
        ::send(c, resp.data(), resp.size(), MSG_NOSIGNAL);
        ++served_;
      }
      ::shutdown(c, SHUT_WR);
      ::close(c);
    }
  }

  std::string name_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopped_{false};
  std::atomic<int> served_{0};
  std::thread thread_;
};

struct Reply {
  int status = 0;  // 0: no HTTP answer
  std::string body;
};

// GET / with `host` on a new connection, at most 3 s.
Reply get(int port, const std::string& host) {
  Reply r;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return r;
  }
  std::string req = "GET / HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string all;
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    all.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (all.rfind("HTTP/1.1 ", 0) != 0) return r;
  r.status = std::atoi(all.c_str() + 9);
  auto at = all.find("\r\n\r\n");
  if (at != std::string::npos) r.body = all.substr(at + 4);
  return r;
}

// One command on an haproxy CLI socket (the test's own client, independent of the router's).
std::string cli(const std::string& path, const std::string& command) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return "";
  }
  std::string line = command + "\n";
  ::send(fd, line.data(), line.size(), MSG_NOSIGNAL);
  ::shutdown(fd, SHUT_WR);
  std::string out;
  char buf[4096];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) break;
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// The current worker's pid, from the master's `show proc`; 0 when none is listed.
long listedWorker(const std::string& stateDir) {
  std::istringstream in(cli(stateDir + "/master.sock", "show proc"));
  std::string line;
  bool workers = false;
  while (std::getline(in, line)) {
    if (line.rfind("# workers", 0) == 0) {
      workers = true;
    } else if (line.rfind("#", 0) == 0) {
      workers = false;
    } else if (workers) {
      return std::atol(line.c_str());
    }
  }
  return 0;
}

// The same, waiting up to 5 s for one (the port listens before the master forks its worker).
long workerPid(const std::string& stateDir) {
  auto deadline = std::chrono::steady_clock::now() + 5s;
  long pid = listedWorker(stateDir);
  while (pid == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    pid = listedWorker(stateDir);
  }
  return pid;
}

// haproxy as ring1d would run it: the router's processSpec() command, in its own process group.
class RouterProcess {
 public:
  RouterProcess(const supervise::ProcessSpec& spec, int port) {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      // Should the test process die without its destructors, the master dies with it, and
      // its workers follow their master.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      std::vector<char*> argv;
      for (const auto& a : spec.command) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::setpgid(pid_, pid_);
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(static_cast<uint16_t>(port));
      bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
      ::close(fd);
      if (up) {
        ready_ = true;
        return;
      }
      std::this_thread::sleep_for(20ms);
    }
  }
  ~RouterProcess() {
    if (pid_ > 0) {
      ::kill(-pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  bool ready() const { return ready_; }

 private:
  pid_t pid_ = -1;
  bool ready_ = false;
};

class RouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    settings_.listenHost = "127.0.0.1";
    settings_.listenPort = freePort();
    settings_.domains = {"example.test"};
    settings_.stateDir = dir_.path + "/router";
    settings_.exe = kHaproxy;
    router_ = makeHaproxyRouter(settings_);
  }

  // Starts haproxy after the first apply.
  void start(const std::vector<RouterBackend>& backends) {
    auto st = router_->apply(backends);
    ASSERT_TRUE(st.ok()) << st.error().message;
    process_ = std::make_unique<RouterProcess>(router_->processSpec(), settings_.listenPort);
    ASSERT_TRUE(process_->ready()) << "haproxy did not listen";
  }

  void apply(const std::vector<RouterBackend>& backends) {
    auto st = router_->apply(backends);
    ASSERT_TRUE(st.ok()) << st.error().message;
  }

  Reply get(const std::string& host) { return router::get(settings_.listenPort, host); }

  TempDir dir_;
  RouterSettings settings_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<RouterProcess> process_;
};

TEST_F(RouterTest, RendersAConfigHaproxyAccepts) {
  SKIP_WITHOUT_HAPROXY();
  TestServer a("web-1");
  apply({{"web", {a.server()}}, {"api", {}}});
  std::string cfg = settings_.stateDir + "/haproxy.cfg";
  struct stat st {};
  ASSERT_EQ(::stat(cfg.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::string check = std::string(kHaproxy) + " -c -q -f " + cfg;
  EXPECT_EQ(std::system(check.c_str()), 0);
  std::ifstream in(cfg);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("web.localhost web.example.test"), std::string::npos) << text;
  EXPECT_NE(text.find("backend be_api"), std::string::npos);
  EXPECT_NE(text.find("server s8 "), std::string::npos) << "8 slots at least";
  EXPECT_NE(text.find("master-worker"), std::string::npos);

  auto spec = router_->processSpec();
  EXPECT_EQ(spec.name, "router");
  EXPECT_EQ(spec.readiness.kind, "tcp");
  EXPECT_EQ(spec.readiness.port, settings_.listenPort);
}

TEST_F(RouterTest, RefusesBadNamesAndConfigsHaproxyRejects) {
  SKIP_WITHOUT_HAPROXY();
  auto bad = router_->apply({{"Web_1", {}}});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, 400);
  auto badHost = router_->apply({{"web", {{"w1", "example.com", 80, State::kReady}}}});
  ASSERT_FALSE(badHost.ok());
  EXPECT_EQ(badHost.error().code, 400);

  // A checker that rejects everything: the config in place stays the last good one.
  apply({{"web", {}}});
  std::string cfg = settings_.stateDir + "/haproxy.cfg";
  std::ifstream before(cfg);
  std::string good((std::istreambuf_iterator<char>(before)), std::istreambuf_iterator<char>());
  RouterSettings rejecting = settings_;
  rejecting.exe = "/bin/false";
  auto other = makeHaproxyRouter(rejecting);
  auto st = other->apply({{"web", {}}, {"api", {}}});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, 500);
  EXPECT_NE(st.error().message.find("rejects the rendered config"), std::string::npos)
      << st.error().message;
  std::ifstream after(cfg);
  std::string now((std::istreambuf_iterator<char>(after)), std::istreambuf_iterator<char>());
  EXPECT_EQ(now, good);
}

TEST_F(RouterTest, RoutesByHostAndAnswersUnknownHostsWith404) {
  SKIP_WITHOUT_HAPROXY();
  TestServer web("web-1");
  TestServer api("api-1");
  start({{"web", {web.server()}}, {"api", {api.server()}}});

  EXPECT_EQ(get("web.localhost").body, "web-1");
  EXPECT_EQ(get("web.localhost:" + std::to_string(settings_.listenPort)).body, "web-1");
  EXPECT_EQ(get("API.example.test").body, "api-1");
  Reply unknown = get("nope.localhost");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_NE(unknown.body.find("<html>"), std::string::npos) << unknown.body;
  EXPECT_EQ(get("web.elsewhere.test").status, 404);

  auto stats = router_->stats();
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  ASSERT_EQ(stats->size(), 2u);
  EXPECT_EQ((*stats)[0].app, "web");
  EXPECT_EQ((*stats)[0].requests, 2u);
  EXPECT_EQ((*stats)[0].responses2xx, 2u);
  EXPECT_EQ((*stats)[1].responses2xx, 1u);

  metrics::Registry registry;
  std::vector<RouterAppStats> snapshot = *stats;
  addRouterMetrics(registry, [&] { return snapshot; });
  std::string text = registry.render();
  EXPECT_NE(text.find("enjin_router_requests_total{app=\"web\"} 2"), std::string::npos) << text;
  EXPECT_NE(text.find("enjin_router_responses_total{app=\"api\",code=\"2xx\"} 1"),
            std::string::npos);
  EXPECT_NE(text.find("# TYPE enjin_router_response_time_seconds gauge"), std::string::npos);
  EXPECT_NE(text.find("enjin_router_errors_total{app=\"web\",kind=\"connect\"} 0"),
            std::string::npos);
  if (::access("/usr/bin/promtool", X_OK) == 0) {
    std::string path = dir_.path + "/metrics.txt";
    std::ofstream(path) << text;
    std::string lint = "promtool check metrics < '" + path + "' > /dev/null 2>&1";
    EXPECT_EQ(std::system(lint.c_str()), 0) << text;
  }
}

// The traffic manager's setting: NAME.<domain> and every name below it go to NAME; a name that
// only ends in the same letters does not, and the app router's default stays exact.
TEST_F(RouterTest, SubdomainsRouteEveryNameBelowALabel) {
  SKIP_WITHOUT_HAPROXY();
  TestServer web("web-node");
  TestServer db("db-node");
  settings_.subdomains = true;
  router_ = makeHaproxyRouter(settings_);
  start({{"web", {web.server()}}, {"db", {db.server()}}});

  EXPECT_EQ(get("web.example.test").body, "web-node");
  EXPECT_EQ(get("shop.web.example.test").body, "web-node");
  EXPECT_EQ(get("A.Shop.WEB.example.test:80").body, "web-node");
  EXPECT_EQ(get("shop.db.example.test").body, "db-node");
  EXPECT_EQ(get("shop.web.localhost").body, "web-node");
  EXPECT_EQ(get("xweb.example.test").status, 404);
  EXPECT_EQ(get("shop.web.example.test.evil.test").status, 404);
  EXPECT_EQ(get("shop.other.example.test").status, 404);
  EXPECT_EQ(web.served(), 4);

  std::ifstream in(settings_.stateDir + "/haproxy.cfg");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("-m end .web.localhost .web.example.test"), std::string::npos) << text;
}

TEST_F(RouterTest, WithoutSubdomainsANameBelowAnAppIsUnknown) {
  SKIP_WITHOUT_HAPROXY();
  TestServer web("web-1");
  start({{"web", {web.server()}}});
  EXPECT_EQ(get("web.example.test").body, "web-1");
  EXPECT_EQ(get("shop.web.example.test").status, 404);
  std::ifstream in(settings_.stateDir + "/haproxy.cfg");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.find("-m end"), std::string::npos) << text;
}

TEST_F(RouterTest, NeverHangsOnASocketThatDoesNotAnswer) {
  SKIP_WITHOUT_HAPROXY();
  apply({{"web", {}}});
  // A listener that accepts (in the kernel) and never reads or answers.
  std::string path = settings_.stateDir + "/admin.sock";
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(fd, 8), 0);
  auto t0 = std::chrono::steady_clock::now();
  auto stats = router_->stats();
  auto took = std::chrono::steady_clock::now() - t0;
  ::close(fd);
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(stats.error().code, 504) << stats.error().message;
  EXPECT_LT(took, 2s);
}

TEST_F(RouterTest, DrainedMaintainedAndRemovedServersGetNoNewRequests) {
  SKIP_WITHOUT_HAPROXY();
  TestServer a("web-a");
  TestServer b("web-b");
  start({{"web", {a.server(), b.server()}}});
  for (int i = 0; i < 10; ++i) EXPECT_EQ(get("web.localhost").status, 200);
  EXPECT_GT(a.served(), 0);
  EXPECT_GT(b.served(), 0);

  apply({{"web", {a.server(), b.server(State::kDrain)}}});
  int bBefore = b.served();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(get("web.localhost").body, "web-a");
  EXPECT_EQ(b.served(), bBefore);

  apply({{"web", {a.server(State::kMaint), b.server()}}});
  int aBefore = a.served();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(get("web.localhost").body, "web-b");
  EXPECT_EQ(a.served(), aBefore);

  // b leaves: drained at once, a serves alone.
  apply({{"web", {a.server()}}});
  bBefore = b.served();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(get("web.localhost").body, "web-a");
  EXPECT_EQ(b.served(), bBefore);
  apply({{"web", {a.server()}}});  // frees b's slot
  EXPECT_EQ(get("web.localhost").body, "web-a");
}

TEST_F(RouterTest, MovesAServerToANewPortWithoutAReload) {
  SKIP_WITHOUT_HAPROXY();
  TestServer first("web-1");
  start({{"web", {first.server()}}});
  EXPECT_EQ(get("web.localhost").body, "web-1");
  long pid = workerPid(settings_.stateDir);
  ASSERT_GT(pid, 0);

  TestServer second("web-2");
  apply({{"web", {{"web-1", "127.0.0.1", second.port(), State::kReady}}}});
  for (int i = 0; i < 5; ++i) EXPECT_EQ(get("web.localhost").body, "web-2");
  // More instances than before, still within the slots: no reload either.
  TestServer third("web-3");
  apply({{"web", {{"web-1", "127.0.0.1", second.port(), State::kReady}, third.server()}}});
  for (int i = 0; i < 6; ++i) EXPECT_EQ(get("web.localhost").status, 200);
  EXPECT_GT(third.served(), 0);
  EXPECT_EQ(workerPid(settings_.stateDir), pid);
}

TEST_F(RouterTest, AddingAnAppReloadsWithoutFailingARequest) {
  SKIP_WITHOUT_HAPROXY();
  TestServer web("web-1");
  TestServer api("api-1");
  start({{"web", {web.server()}}});
  long pid = workerPid(settings_.stateDir);
  ASSERT_GT(pid, 0);
  EXPECT_EQ(get("web.localhost").status, 200);

  // Requests on new connections before, during and after the reload, two at a time; bounded
  // (at most 1000 each).
  std::atomic<int> failures{0};
  std::atomic<int> done{0};
  std::atomic<bool> stop{false};
  auto loop = [&] {
    for (int i = 0; i < 1000 && !stop; ++i) {
      if (get("web.localhost").status != 200) ++failures;
      ++done;
    }
  };
  std::thread load1(loop);
  std::thread load2(loop);
  while (done < 50) std::this_thread::sleep_for(1ms);
  int beforeApply = done;
  auto st = router_->apply({{"web", {web.server()}}, {"api", {api.server()}}});
  int atApply = done;
  auto until = std::chrono::steady_clock::now() + 10s;
  while ((done < atApply + 50 || done < 200) && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(1ms);
  }
  stop = true;
  load1.join();
  load2.join();
  EXPECT_GE(done.load(), 200);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(failures.load(), 0);
  EXPECT_NE(workerPid(settings_.stateDir), pid);
  EXPECT_EQ(get("api.localhost").body, "api-1");

  // Counts survive the reload (less what the old worker served while the new one started).
  auto stats = router_->stats();
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  EXPECT_GE((*stats)[0].requests, static_cast<uint64_t>(beforeApply));
  EXPECT_EQ((*stats)[1].requests, 1u);
}

TEST_F(RouterTest, RetriesARefusedConnectionOnAnotherServer) {
  SKIP_WITHOUT_HAPROXY();
  TestServer a("web-a");
  TestServer b("web-b");
  start({{"web", {a.server(), b.server()}}});
  b.stop();  // b's port refuses connections; the router has not been told
  for (int i = 0; i < 10; ++i) EXPECT_EQ(get("web.localhost").body, "web-a") << i;
  auto stats = router_->stats();
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  // Each refused attempt went straight to the other server (option redispatch 1).
  EXPECT_GT((*stats)[0].redispatches, 0u);
  EXPECT_EQ((*stats)[0].responses2xx, 10u);
}

TEST_F(RouterTest, ApplyWhileTheRouterIsDownSucceedsAndAStartUsesIt) {
  SKIP_WITHOUT_HAPROXY();
  TestServer web("web-1");
  apply({{"web", {}}});
  apply({{"web", {web.server()}}});  // runtime-only change, nobody to tell
  process_ = std::make_unique<RouterProcess>(router_->processSpec(), settings_.listenPort);
  ASSERT_TRUE(process_->ready());
  EXPECT_EQ(get("web.localhost").body, "web-1");
}

}  // namespace
}  // namespace enjin::router
