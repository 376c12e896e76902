// enjin-demo-http, the demo's application, as a client and ring2d see it: the real binary on a
// loopback port, spoken to over real sockets.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "enjin/base/unique_fd.hpp"
#include "enjin/base/unix_socket.hpp"
#include "fakes/free_port.hpp"
#include "fakes/read_file.hpp"
#include "fakes/temp_dir.hpp"
#include "fakes/wait.hpp"

namespace enjin::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const std::string kDemoHttp = std::string(ENJIN_BIN_DIR) + "/enjin-demo-http";

sockaddr_in loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

// A blocking connection to 127.0.0.1:PORT whose reads give up after 10 s; empty on failure.
UniqueFd connectTo(int port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const sockaddr_in addr = loopback(port);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    return UniqueFd();
  }
  const timeval timeout{10, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  return fd;
}

// Everything `fd` receives until EOF (or an error, or the 10 s read timeout).
std::string readAll(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

bool sendAll(int fd, const std::string& data) {
  for (size_t sent = 0; sent < data.size();) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

std::string body(const std::string& response) {
  const auto end = response.find("\r\n\r\n");
  return end == std::string::npos ? "" : response.substr(end + 4);
}

class DemoHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = freeTcpPort();
    ASSERT_GT(port_, 0);
  }

  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      waitExit(5000);
    }
  }

  // Starts enjin-demo-http on port_ with `extra` flags, its stdout and stderr in the temp dir,
  // NOTIFY_SOCKET set to `notifySocket` or unset.
  void start(const std::vector<std::string>& extra = {}, const std::string& notifySocket = "") {
    std::vector<std::string> args{kDemoHttp, "--port", std::to_string(port_)};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string out = dir_ / "out";
    const std::string err = dir_ / "err";
    pid_ = ::fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      ::dup2(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), 1);
      ::dup2(::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), 2);
      if (notifySocket.empty()) {
        ::unsetenv("NOTIFY_SOCKET");
      } else {
        ::setenv("NOTIFY_SOCKET", notifySocket.c_str(), 1);
      }
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }

  // start(), then waits until the port accepts connections.
  void startListening(const std::vector<std::string>& extra = {}) {
    start(extra);
    const auto deadline = Clock::now() + 10s;
    while (!connectTo(port_)) {
      ASSERT_LT(Clock::now(), deadline) << "not listening after 10 s; stderr: " << file("err");
      ASSERT_EQ(::waitpid(pid_, nullptr, WNOHANG), 0) << "exited; stderr: " << file("err");
      std::this_thread::sleep_for(10ms);
    }
  }

  // The whole response to `request` on a connection of its own.
  std::string fetch(const std::string& request) {
    UniqueFd fd = connectTo(port_);
    if (!fd || !sendAll(fd.get(), request)) return "";
    return readAll(fd.get());
  }

  std::string get(const std::string& path) {
    return fetch("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n");
  }

  // The wait status of the server, or -1 if it is still running after `timeoutMs`.
  int waitExit(int timeoutMs) {
    const int status = enjin::testing::waitExit(pid_, timeoutMs);
    if (status != -1) pid_ = -1;
    return status;
  }

  std::string file(const std::string& name) const { return readFile(dir_ / name); }

  TempDir dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

TEST_F(DemoHttpTest, ServesThePageAndHealthz) {
  startListening({"--name", "web <7>"});
  const std::string page = get("/");
  EXPECT_EQ(page.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << page;
  EXPECT_NE(page.find("Content-Type: text/html"), std::string::npos) << page;
  EXPECT_NE(page.find("Connection: close\r\n"), std::string::npos) << page;
  EXPECT_NE(page.find("hello from web &lt;7&gt;"), std::string::npos) << page;
  EXPECT_NE(page.find("pid " + std::to_string(pid_) + ","), std::string::npos) << page;

  const std::string health = get("/healthz");
  EXPECT_EQ(health.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << health;
  EXPECT_EQ(body(health), "ok\n");
  // Every request counts; startListening's probe connection sent none.
  EXPECT_NE(get("/?x=1").find("request 3</p>"), std::string::npos);
  EXPECT_EQ(file("out"), "listening on http://127.0.0.1:" + std::to_string(port_) + "\n");
}

TEST_F(DemoHttpTest, AnUnknownPathIs404) {
  startListening();
  EXPECT_EQ(get("/nope").rfind("HTTP/1.1 404 Not Found\r\n", 0), 0u);
}

TEST_F(DemoHttpTest, AHeadOver8KiBIs431) {
  startListening();
  const std::string big = "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20 * 1024, 'a') +
                          "\r\n\r\n";
  const std::string response = fetch(big);
  EXPECT_EQ(response.rfind("HTTP/1.1 431 Request Header Fields Too Large\r\n", 0), 0u) << response;
  // A head just under the limit is still served.
  const std::string fits = "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(8000, 'a') + "\r\n\r\n";
  EXPECT_EQ(body(fetch(fits)), "ok\n");
}

TEST_F(DemoHttpTest, MethodsOtherThanGetAre405) {
  startListening();
  const std::string head = fetch("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0), 0u) << head;
  EXPECT_NE(head.find("Allow: GET\r\n"), std::string::npos) << head;
  EXPECT_EQ(body(head), "") << "a response to HEAD has no body";
  // The body the server did not read does not turn the response into a reset.
  const std::string post = fetch("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 30000\r\n\r\n" +
                                 std::string(30000, 'b'));
  EXPECT_EQ(post.rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0), 0u) << post;
  EXPECT_EQ(body(post), "only GET\n");
}

TEST_F(DemoHttpTest, SigtermExitsZeroAndStopsListening) {
  startListening();
  ASSERT_EQ(::kill(pid_, SIGTERM), 0);
  const int status = waitExit(5000);
  ASSERT_NE(status, -1) << "still running 5 s after SIGTERM";
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_FALSE(connectTo(port_));
  EXPECT_EQ(file("err"), "");
}

TEST_F(DemoHttpTest, SendsReadyOnceListening) {
  auto notify = listenUnix(dir_ / "notify.sock", SOCK_DGRAM, 0600);
  ASSERT_TRUE(notify.ok()) << notify.error().message;
  start({}, dir_ / "notify.sock");
  pollfd p{notify->get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10'000), 1) << "no notification in 10 s; stderr: " << file("err");
  char buf[1024];
  const ssize_t n = ::recv(notify->get(), buf, sizeof buf, 0);
  ASSERT_GT(n, 0);
  const std::string message(buf, static_cast<size_t>(n));
  EXPECT_EQ(message.rfind("READY=1\n", 0), 0u) << message;
  EXPECT_NE(message.find("STATUS=listening on http://127.0.0.1:" + std::to_string(port_)),
            std::string::npos)
      << message;
  // Ready means connections are accepted now, not in a moment.
  EXPECT_TRUE(connectTo(port_));
}

TEST_F(DemoHttpTest, APortInUseIsAnErrorNamingIt) {
  UniqueFd taken(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const sockaddr_in addr = loopback(port_);
  ASSERT_EQ(::bind(taken.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(taken.get(), 1), 0);
  start();
  const int status = waitExit(10'000);
  ASSERT_NE(status, -1) << "kept running on a port in use";
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_EQ(file("err"), "enjin-demo-http: cannot listen on 127.0.0.1:" + std::to_string(port_) +
                             ": bind: Address already in use\n");
  EXPECT_EQ(file("out"), "");
}

TEST_F(DemoHttpTest, AClientThatSendsNothingIsClosedAfter5s) {
  startListening();
  UniqueFd idle = connectTo(port_);
  ASSERT_TRUE(idle);
  const auto t0 = Clock::now();
  EXPECT_EQ(readAll(idle.get()), "");  // EOF, no response
  const auto waited = Clock::now() - t0;
  EXPECT_GE(waited, 4500ms);
  EXPECT_LT(waited, 8s);
}

TEST_F(DemoHttpTest, ConnectionsBeyond256AreClosedAtOnce) {
  startListening();
  // startListening's probe connection counts until the server has seen it close; that takes it
  // microseconds, but nothing tells the test when it is done.
  std::this_thread::sleep_for(300ms);
  std::vector<UniqueFd> held;
  for (int i = 0; i < 256; ++i) {
    held.push_back(connectTo(port_));
    ASSERT_TRUE(held.back()) << i;
  }
  // The 257th is accepted after the 256 before it (the backlog is FIFO) and closed: EOF well
  // before the 5 s idle timeout.
  UniqueFd extra = connectTo(port_);
  ASSERT_TRUE(extra);
  const auto t0 = Clock::now();
  EXPECT_EQ(readAll(extra.get()), "");
  EXPECT_LT(Clock::now() - t0, 3s);
  // and none of the 256 was closed instead.
  std::vector<pollfd> polls;
  for (const auto& fd : held) polls.push_back({fd.get(), POLLIN, 0});
  EXPECT_EQ(::poll(polls.data(), polls.size(), 0), 0);
  // One of the 256 leaves: a place is free again.
  held.pop_back();
  const auto deadline = Clock::now() + 3s;
  std::string health;
  while ((health = get("/healthz")).empty() && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(body(health), "ok\n");
}

}  // namespace
}  // namespace enjin::testing
