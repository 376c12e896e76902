#include "enjin/supervise/probe.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "enjin/base/file.hpp"
#include "enjin/reactor/reactor.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::supervise {
namespace {

using enjin::testing::TempDir;
using Clock = std::chrono::steady_clock;

int64_t millisSince(Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
}

class ProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Reactor::create(clock_);
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(r).value();
  }

  // Runs the reactor until `until` holds, for at most `limitMs` of real time.
  bool runUntil(const std::function<bool()>& until, int64_t limitMs = 5000) {
    const auto start = Clock::now();
    while (!until()) {
      if (millisSince(start) > limitMs) return false;
      reactor_->runOnce(20);
    }
    return true;
  }

  // Starts `probe` and runs the reactor until its result comes, counting `done` calls.
  std::optional<ProbeResult> check(Probe& probe, int64_t limitMs = 5000) {
    std::optional<ProbeResult> result;
    int calls = 0;
    probe.start([&](ProbeResult r) {
      ++calls;
      result = std::move(r);
    });
    EXPECT_EQ(calls, 0) << "done ran inside start()";
    runUntil([&] { return calls > 0; }, limitMs);
    // No second call, even with more rounds.
    for (int i = 0; i < 3; ++i) reactor_->runOnce(0);
    EXPECT_LE(calls, 1);
    return result;
  }

  SystemClock clock_;
  std::unique_ptr<Reactor> reactor_;
};

// A listening socket on 127.0.0.1, on a port the kernel picked.
struct Listener {
  UniqueFd fd;
  int port = 0;
};

Listener listenOnLoopback(int backlog = 16) {
  Listener l;
  l.fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(::bind(l.fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_EQ(::listen(l.fd.get(), backlog), 0);
  socklen_t len = sizeof addr;
  EXPECT_EQ(::getsockname(l.fd.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  l.port = ntohs(addr.sin_port);
  return l;
}

// A port nothing listens on: bound, then released.
int closedPort() {
  Listener l = listenOnLoopback();
  return l.port;
}

// A tiny HTTP server on the test's reactor. Each connection gets `response` once the request's
// header is complete (nothing, when `response` is empty: the never-answering server), written
// in pieces with a pause between them, then closed.
class LoopbackHttpServer {
 public:
  LoopbackHttpServer(Reactor& reactor, std::vector<std::string> response)
      : reactor_(reactor), response_(std::move(response)), listener_(listenOnLoopback()) {
    EXPECT_TRUE(reactor_.addFd(listener_.fd.get(), EPOLLIN, [this](uint32_t) { accept(); }).ok());
  }
  ~LoopbackHttpServer() {
    for (auto& [fd, conn] : conns_) reactor_.removeFd(fd);
    for (auto id : timers_) reactor_.cancelTimer(id);
    reactor_.removeFd(listener_.fd.get());
  }

  int port() const { return listener_.port; }
  const std::vector<std::string>& requests() const { return requests_; }
  int accepted() const { return accepted_; }
  int closedByPeer() const { return closedByPeer_; }

 private:
  struct Conn {
    UniqueFd fd;
    std::string request;
  };

  void accept() {
    UniqueFd fd(::accept4(listener_.fd.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) return;
    ++accepted_;
    const int raw = fd.get();
    conns_[raw].fd = std::move(fd);
    EXPECT_TRUE(reactor_.addFd(raw, EPOLLIN, [this, raw](uint32_t) { read(raw); }).ok());
  }

  void read(int raw) {
    Conn& c = conns_[raw];
    char buf[4096];
    const ssize_t n = ::recv(raw, buf, sizeof buf, 0);
    if (n <= 0) {
      if (n == 0) ++closedByPeer_;
      close(raw);
      return;
    }
    c.request.append(buf, static_cast<size_t>(n));
    if (c.request.find("\r\n\r\n") == std::string::npos) return;
    requests_.push_back(c.request);
    if (response_.empty()) return;  // never answers; keeps reading to see the probe hang up
    reactor_.removeFd(raw);
    writePiece(raw, 0);
  }

  void writePiece(int raw, size_t i) {
    const std::string& piece = response_[i];
    EXPECT_EQ(::send(raw, piece.data(), piece.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(piece.size()));
    if (i + 1 == response_.size()) {
      conns_.erase(raw);
      return;
    }
    timers_.push_back(reactor_.addTimerAfterMillis(20, [this, raw, i] { writePiece(raw, i + 1); }));
  }

  void close(int raw) {
    reactor_.removeFd(raw);
    conns_.erase(raw);
  }

  Reactor& reactor_;
  std::vector<std::string> response_;
  Listener listener_;
  std::map<int, Conn> conns_;
  std::vector<Reactor::TimerId> timers_;
  std::vector<std::string> requests_;
  int accepted_ = 0;
  int closedByPeer_ = 0;
};

std::string url(int port, const std::string& path = "/health") {
  return "http://127.0.0.1:" + std::to_string(port) + path;
}

// --- tcp ---

TEST_F(ProbeTest, TcpIsHealthyWhenSomethingListens) {
  Listener l = listenOnLoopback();
  auto probe = makeTcpProbe(*reactor_, "127.0.0.1", l.port, 2000);
  auto r = check(*probe);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->healthy);
  EXPECT_EQ(r->detail, "connected to 127.0.0.1:" + std::to_string(l.port));
}

TEST_F(ProbeTest, TcpTakesLocalhostAsTheLoopbackAddress) {
  Listener l = listenOnLoopback();
  auto probe = makeTcpProbe(*reactor_, "localhost", l.port, 2000);
  auto r = check(*probe);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->healthy) << r->detail;
}

TEST_F(ProbeTest, TcpWorksOverIpv6Loopback) {
  UniqueFd fd(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_loopback;
  if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    GTEST_SKIP() << "no IPv6 loopback here";
  }
  ASSERT_EQ(::listen(fd.get(), 4), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin6_port);
  auto probe = makeTcpProbe(*reactor_, "::1", port, 2000);
  auto r = check(*probe);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->healthy) << r->detail;
  EXPECT_EQ(r->detail, "connected to [::1]:" + std::to_string(port));
}

TEST_F(ProbeTest, TcpIsUnhealthyWhenTheConnectionIsRefused) {
  const int port = closedPort();
  auto probe = makeTcpProbe(*reactor_, "127.0.0.1", port, 2000);
  auto r = check(*probe);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->healthy);
  EXPECT_EQ(r->detail, "connect 127.0.0.1:" + std::to_string(port) + ": Connection refused");
}

TEST_F(ProbeTest, TcpRefusesHostNamesWithoutBlockingOnDns) {
  auto probe = makeTcpProbe(*reactor_, "example.com", 80, 2000);
  auto r = check(*probe);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->healthy);
  EXPECT_EQ(r->detail,
            "tcp probe: address 'example.com' port 80: not a numeric IPv4 or IPv6 address nor "
            "localhost");
  auto badPort = makeTcpProbe(*reactor_, "127.0.0.1", 70000, 2000);
  auto r2 = check(*badPort);
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->detail, "tcp probe: address '127.0.0.1' port 70000: port is not in 1..65535");
}

TEST_F(ProbeTest, TcpCanRunAgainAfterAResult) {
  Listener l = listenOnLoopback();
  auto probe = makeTcpProbe(*reactor_, "127.0.0.1", l.port, 2000);
  for (int i = 0; i < 3; ++i) {
    auto r = check(*probe);
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->healthy);
  }
}

// --- http ---

TEST_F(ProbeTest, HttpSendsAMinimalGetAndIsHealthyOn200) {
  LoopbackHttpServer server(*reactor_, {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"});
  auto probe = makeHttpProbe(*reactor_, url(server.port(), "/health?deep=1"), 2000);
  ASSERT_TRUE(probe.ok()) << probe.error().message;
  auto r = check(**probe);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->healthy);
  EXPECT_EQ(r->detail, "HTTP 200");
  ASSERT_EQ(server.requests().size(), 1u);
  EXPECT_EQ(server.requests()[0],
            "GET /health?deep=1 HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(server.port()) +
                "\r\nConnection: close\r\nUser-Agent: enjin\r\n\r\n");
}

TEST_F(ProbeTest, HttpIsUnhealthyOn503) {
  LoopbackHttpServer server(*reactor_, {"HTTP/1.1 503 Service Unavailable\r\n\r\n"});
  auto probe = makeHttpProbe(*reactor_, url(server.port()), 2000);
  ASSERT_TRUE(probe.ok());
  auto r = check(**probe);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->healthy);
  EXPECT_EQ(r->detail, "HTTP 503");
}

TEST_F(ProbeTest, HttpCountsARedirectAsHealthyWithoutFollowingIt) {
  LoopbackHttpServer server(*reactor_,
                            {"HTTP/1.0 302 Found\r\nLocation: http://127.0.0.1:1/\r\n\r\n"});
  auto probe = makeHttpProbe(*reactor_, url(server.port()), 2000);
  ASSERT_TRUE(probe.ok());
  auto r = check(**probe);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->healthy);
  EXPECT_EQ(r->detail, "HTTP 302");
  EXPECT_EQ(server.accepted(), 1);
}

TEST_F(ProbeTest, HttpReadsAStatusLineThatArrivesInPieces) {
  LoopbackHttpServer server(*reactor_, {"HTT", "P/1.1 2", "04 No Content\r", "\n\r\n"});
  auto probe = makeHttpProbe(*reactor_, url(server.port()), 2000);
  ASSERT_TRUE(probe.ok());
  auto r = check(**probe);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->healthy);
  EXPECT_EQ(r->detail, "HTTP 204");
}

TEST_F(ProbeTest, HttpRejectsAMalformedOrMissingStatusLine) {
  struct Case {
    std::vector<std::string> response;
    std::string detail;
  };
  const std::vector<Case> cases = {
      {{"SSH-2.0-OpenSSH_9.2\r\n"}, "malformed status line 'SSH-2.0-OpenSSH_9.2'"},
      {{"HTTP/1.1 2x0 OK\r\n"}, "malformed status line 'HTTP/1.1 2x0 OK'"},
      {{"HTTP/1.1 2000\r\n"}, "malformed status line 'HTTP/1.1 2000'"},
      {{"HTTP/1.1 200"}, "connection closed inside the status line"},
      {{std::string(9000, 'x')}, "status line longer than 8192 bytes"},
  };
  for (const auto& c : cases) {
    LoopbackHttpServer server(*reactor_, c.response);
    auto probe = makeHttpProbe(*reactor_, url(server.port()), 2000);
    ASSERT_TRUE(probe.ok());
    auto r = check(**probe);
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->healthy);
    EXPECT_EQ(r->detail, c.detail);
  }
}

TEST_F(ProbeTest, HttpReportsARefusedConnection) {
  const int port = closedPort();
  auto probe = makeHttpProbe(*reactor_, url(port), 2000);
  ASSERT_TRUE(probe.ok());
  auto r = check(**probe);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->healthy);
  EXPECT_EQ(r->detail, "connect 127.0.0.1:" + std::to_string(port) + ": Connection refused");
}

TEST_F(ProbeTest, HttpTimesOutOnAServerThatNeverAnswers) {
  LoopbackHttpServer server(*reactor_, {});
  auto probe = makeHttpProbe(*reactor_, url(server.port()), 200);
  ASSERT_TRUE(probe.ok());
  const auto start = Clock::now();
  auto r = check(**probe);
  ASSERT_TRUE(r);
  EXPECT_GE(millisSince(start), 200);
  EXPECT_FALSE(r->healthy);
  EXPECT_EQ(r->detail, "timed out after 200 ms");
  EXPECT_EQ(server.requests().size(), 1u);
  // The probe hung up when it gave up.
  EXPECT_TRUE(runUntil([&] { return server.closedByPeer() == 1; }));
}

TEST_F(ProbeTest, HttpCancelAndDestroyReleaseTheSocketAndNeverCallDone) {
  LoopbackHttpServer server(*reactor_, {});
  auto probe = makeHttpProbe(*reactor_, url(server.port()), 10'000);
  ASSERT_TRUE(probe.ok());
  int calls = 0;
  (*probe)->start([&](ProbeResult) { ++calls; });
  ASSERT_TRUE(runUntil([&] { return server.requests().size() == 1; }));
  (*probe)->cancel();
  (*probe)->cancel();  // nothing in flight: harmless
  EXPECT_TRUE(runUntil([&] { return server.closedByPeer() == 1; }));

  (*probe)->start([&](ProbeResult) { ++calls; });
  ASSERT_TRUE(runUntil([&] { return server.requests().size() == 2; }));
  probe->reset();
  EXPECT_TRUE(runUntil([&] { return server.closedByPeer() == 2; }));
  for (int i = 0; i < 3; ++i) reactor_->runOnce(0);
  EXPECT_EQ(calls, 0);
}

TEST_F(ProbeTest, StartingAgainCancelsTheCheckInFlight) {
  LoopbackHttpServer server(*reactor_, {"HTTP/1.1 200 OK\r\n\r\n"});
  auto probe = makeHttpProbe(*reactor_, url(server.port()), 2000);
  ASSERT_TRUE(probe.ok());
  int first = 0;
  (*probe)->start([&](ProbeResult) { ++first; });
  auto r = check(**probe);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->healthy);
  EXPECT_EQ(first, 0);
}

TEST_F(ProbeTest, DoneMayDestroyTheProbeOrStartTheNextCheck) {
  LoopbackHttpServer server(*reactor_, {"HTTP/1.1 200 OK\r\n\r\n"});
  auto made = makeHttpProbe(*reactor_, url(server.port()), 2000);
  ASSERT_TRUE(made.ok());
  std::unique_ptr<Probe> probe = std::move(*made);
  int results = 0;
  std::function<void(ProbeResult)> again = [&](ProbeResult r) {
    EXPECT_TRUE(r.healthy);
    if (++results < 3) {
      probe->start(again);
    } else {
      probe.reset();
    }
  };
  probe->start(again);
  EXPECT_TRUE(runUntil([&] { return results == 3; }));
  EXPECT_EQ(probe, nullptr);
  EXPECT_EQ(server.accepted(), 3);
}

TEST(HttpProbeUrl, AcceptsNumericHostsAndLocalhostOnly) {
  SystemClock clock;
  auto reactor = std::move(Reactor::create(clock)).value();
  for (const char* good : {"http://127.0.0.1:8080/health", "http://127.0.0.1", "HTTP://[::1]:80/x",
                           "http://localhost:9000?q=1", "http://10.0.0.1:1/a#frag"}) {
    auto p = makeHttpProbe(*reactor, good, 1000);
    EXPECT_TRUE(p.ok()) << good << ": " << p.error().message;
  }
  struct Bad {
    const char* url;
    const char* error;
  };
  for (const Bad& bad : std::vector<Bad>{
           {"https://127.0.0.1/",
            "http probe: URL 'https://127.0.0.1/': the url must start with http:// (https is not "
            "supported)"},
           {"http://example.com/",
            "http probe 'http://example.com/': address 'example.com' port 80: not a numeric IPv4 "
            "or IPv6 address nor localhost"},
           {"http://127.0.0.1:99999/",
            "http probe: URL 'http://127.0.0.1:99999/': port '99999': expected 1 to 65535"},
           {"http://127.0.0.1:/",
            "http probe: URL 'http://127.0.0.1:/': port '': expected 1 to 65535"},
           {"http:///x", "http probe: URL 'http:///x': no host"},
           {"http://[::1/", "http probe: URL 'http://[::1/': unterminated [ in the host"},
           {"http://u@127.0.0.1/",
            "http probe: URL 'http://u@127.0.0.1/': user info is not supported"},
           {"http://127.0.0.1/a b",
            "http probe: URL 'http://127.0.0.1/a b': the path holds a space or a control "
            "character"},
       }) {
    auto p = makeHttpProbe(*reactor, bad.url, 1000);
    ASSERT_FALSE(p.ok()) << bad.url;
    EXPECT_EQ(p.error().message, bad.error);
  }
}

// --- exec ---

// `pid` has been reaped by us: not a zombie, not our child any more, its process group empty.
void expectReapedWithItsGroup(pid_t pid) {
  auto failsWith = [](int rc) { return rc == -1 ? errno : 0; };
  EXPECT_EQ(failsWith(::kill(pid, 0)), ESRCH);
  EXPECT_EQ(failsWith(::kill(-pid, 0)), ESRCH);
  EXPECT_EQ(failsWith(::waitpid(pid, nullptr, WNOHANG)), ECHILD);
}

pid_t readPid(const std::string& path) {
  auto text = readFile(path);
  return text.ok() && !text->empty() ? std::stoi(*text) : -1;
}

TEST_F(ProbeTest, ExecIsHealthyOnExitZeroOnly) {
  auto yes = makeExecProbe(*reactor_, {"/bin/true"}, 5000);
  auto r = check(*yes);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->healthy);
  EXPECT_EQ(r->detail, "exit 0");

  auto no = makeExecProbe(*reactor_, {"/bin/false"}, 5000);
  r = check(*no);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->healthy);
  EXPECT_EQ(r->detail, "exit 1");

  auto three = makeExecProbe(*reactor_, {"sh", "-c", "exit 3"}, 5000);  // found on PATH
  r = check(*three);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->detail, "exit 3");

  auto killed = makeExecProbe(*reactor_, {"/bin/sh", "-c", "kill -SEGV $$"}, 5000);
  r = check(*killed);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->healthy);
  EXPECT_EQ(r->detail, "killed by SIGSEGV");
}

TEST_F(ProbeTest, ExecReportsACommandThatCannotRun) {
  auto missing = makeExecProbe(*reactor_, {"/nonexistent/check"}, 5000);
  auto r = check(*missing);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->healthy);
  EXPECT_EQ(r->detail, "exec /nonexistent/check: No such file or directory");

  auto empty = makeExecProbe(*reactor_, {}, 5000);
  r = check(*empty);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->detail, "exec probe: no command");
}

TEST_F(ProbeTest, ExecRunsTheCommandAloneWithACleanSlate) {
  // What the daemon has that the check must not inherit: an fd without close-on-exec, a blocked
  // signal, an ignored signal.
  UniqueFd leaked(::dup2(STDERR_FILENO, 100));
  ASSERT_TRUE(leaked);
  sigset_t block, oldMask;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR2);
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &block, &oldMask), 0);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  struct sigaction oldPipe {};
  ASSERT_EQ(::sigaction(SIGPIPE, &ignore, &oldPipe), 0);

  const std::vector<std::pair<std::string, std::string>> facts = {
      {"stdio on /dev/null",
       "[ /proc/self/fd/0 -ef /dev/null ] && [ /proc/self/fd/1 -ef /dev/null ] && "
       "[ /proc/self/fd/2 -ef /dev/null ]"},
      {"no inherited fd", "[ ! -e /proc/self/fd/100 ]"},
      {"own process group",
       "read -r pid comm state ppid pgrp rest < /proc/self/stat; "
       "[ \"$pgrp\" = \"$$\" ]"},
      {"empty signal mask", "exec grep -q '^SigBlk:[[:space:]]*0*$' /proc/self/status"},
      {"no ignored signal", "exec grep -q '^SigIgn:[[:space:]]*0*$' /proc/self/status"},
  };
  for (const auto& [what, script] : facts) {
    auto probe = makeExecProbe(*reactor_, {"/bin/sh", "-c", script}, 5000);
    auto r = check(*probe);
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->healthy) << what << ": " << r->detail;
  }

  ASSERT_EQ(::sigaction(SIGPIPE, &oldPipe, nullptr), 0);
  ASSERT_EQ(::pthread_sigmask(SIG_SETMASK, &oldMask, nullptr), 0);
}

TEST_F(ProbeTest, ExecKillsAndReapsACommandThatTimesOut) {
  TempDir dir;
  const std::string pidFile = dir / "pid";
  auto probe =
      makeExecProbe(*reactor_, {"/bin/sh", "-c", "echo $$ > " + pidFile + "; exec sleep 10"}, 300);
  const auto start = Clock::now();
  auto r = check(*probe);
  ASSERT_TRUE(r);
  EXPECT_GE(millisSince(start), 300);
  EXPECT_LT(millisSince(start), 5000);
  EXPECT_FALSE(r->healthy);
  EXPECT_EQ(r->detail, "timed out after 300 ms");
  const pid_t pid = readPid(pidFile);
  ASSERT_GT(pid, 0);
  // Killed at the timeout; reaped on the reactor once the kill has taken effect.
  EXPECT_TRUE(runUntil([&] { return ::kill(pid, 0) != 0; }, 2000));
  expectReapedWithItsGroup(pid);
}

TEST_F(ProbeTest, ExecKillsWhatTheCommandLeavesInItsGroup) {
  // The orphaned straggler is re-parented to us rather than to init, so that the test can check
  // how it died and reap it.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  TempDir dir;
  const std::string pidFile = dir / "pid";
  // Exits at once, leaving a background sleep in its process group.
  auto probe = makeExecProbe(
      *reactor_, {"/bin/sh", "-c", "sleep 10 & echo $! > " + pidFile + "; exit 0"}, 5000);
  auto r = check(*probe);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->healthy);
  EXPECT_EQ(r->detail, "exit 0");
  const pid_t straggler = readPid(pidFile);
  ASSERT_GT(straggler, 0);
  // Killed already, so this wait is short.
  int status = 0;
  ASSERT_EQ(::waitpid(straggler, &status, 0), straggler);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
}

TEST_F(ProbeTest, ExecCancelAndDestroyKillAndReapTheCommand) {
  TempDir dir;
  for (bool destroy : {false, true}) {
    const std::string pidFile = dir / (destroy ? "destroyed" : "cancelled");
    auto probe = makeExecProbe(
        *reactor_,
        {"/bin/sh", "-c",
         "echo $$ > " + pidFile + ".tmp; mv " + pidFile + ".tmp " + pidFile + "; exec sleep 10"},
        10'000);
    int calls = 0;
    probe->start([&](ProbeResult) { ++calls; });
    ASSERT_TRUE(runUntil([&] { return readPid(pidFile) > 0; }));
    const pid_t pid = readPid(pidFile);
    if (destroy) {
      probe.reset();
    } else {
      probe->cancel();
    }
    // Reaped on the reactor once the kill has taken effect.
    EXPECT_TRUE(runUntil([&] { return ::kill(pid, 0) != 0; }, 2000));
    expectReapedWithItsGroup(pid);
    EXPECT_EQ(calls, 0);
  }
}

TEST_F(ProbeTest, ExecDoneMayStartTheNextCheck) {
  auto probe = makeExecProbe(*reactor_, {"/bin/true"}, 5000);
  int results = 0;
  std::function<void(ProbeResult)> again = [&](ProbeResult r) {
    EXPECT_TRUE(r.healthy) << r.detail;
    if (++results < 3) probe->start(again);
  };
  probe->start(again);
  EXPECT_TRUE(runUntil([&] { return results == 3; }));
}

}  // namespace
}  // namespace enjin::supervise
