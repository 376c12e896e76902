// ring2d's control socket on a real unix socket, against hostile or broken local clients: wrong
// JSON types, invalid UTF-8, too many connections, clients that never finish, no fds left.
// The supervisor is never started (no holder): its status is empty and every name is unknown,
// which is all the server needs. The reactor runs on a FakeClock, so deadlines and retries move
// only when a test moves them.
#include "enjin/supervise/control_server.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fcntl.h>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "enjin/base/unix_socket.hpp"
#include "fakes/fake_clock.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::supervise {
namespace {

using nlohmann::json;
using testing::FakeClock;
using testing::TempDir;

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Reactor::create(clock_);
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(*r);
    supervisor_ = std::make_unique<Supervisor>(
        *reactor_, SupervisorOptions{dir_ / "state", "/nonexistent/enjin-holder"},
        [] { return uint64_t{0}; });
  }

  void TearDown() override {
    server_.reset();
    supervisor_.reset();
  }

  void startServer(const std::string& node = "envA") {
    server_ = std::make_unique<ControlServer>(*reactor_, *supervisor_, node,
                                              [this]() -> Status { return reloadResult_; });
    ASSERT_TRUE(server_->listen(socketPath()).ok());
  }

  std::string socketPath() const { return dir_ / "control.sock"; }

  // A connected client (non-blocking) that has sent `bytes`.
  UniqueFd client(const std::string& bytes = "") {
    auto fd = connectUnix(socketPath(), SOCK_STREAM);
    EXPECT_TRUE(fd.ok()) << fd.error().message;
    if (!fd.ok()) return UniqueFd();
    if (!bytes.empty()) {
      EXPECT_EQ(::send(fd->get(), bytes.data(), bytes.size(), MSG_NOSIGNAL),
                static_cast<ssize_t>(bytes.size()));
    }
    return std::move(*fd);
  }

  // Reads what `fd` gets until the server closes it, running the reactor meanwhile. nullopt if it
  // is still open after `timeoutMs` of real time.
  std::optional<std::string> readToEof(int fd, int timeoutMs = 2000) {
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
    for (;;) {
      char buf[4096];
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n > 0) {
        got.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n == 0) return got;
      if (errno != EAGAIN) return std::nullopt;
      if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
      reactor_->runOnce(5);
    }
  }

  // The reply to one request line, parsed; null if none came or it is not JSON.
  json ask(const std::string& line) {
    UniqueFd fd = client(line + "\n");
    auto reply = readToEof(fd.get());
    if (!reply) return nullptr;
    return json::parse(*reply, nullptr, false);
  }

  // Whether `fd` is still open on the server's side after the reactor ran for `ms` of real time.
  bool stillOpenAfter(int fd, int ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < deadline) reactor_->runOnce(5);
    char c;
    const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && errno == EAGAIN;
  }

  TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<Reactor> reactor_;
  std::unique_ptr<Supervisor> supervisor_;
  std::unique_ptr<ControlServer> server_;
  Status reloadResult_;
};

TEST_F(ControlServerTest, WrongJsonTypesGetAnErrorAndTheServerKeepsServing) {
  startServer();
  for (const char* bad : {R"({"cmd":"stop","name":1})", R"({"cmd":"start","name":null})",
                          R"({"cmd":"restart","name":["a"]})", R"({"cmd":"stop"})",
                          R"({"cmd":"restart","name":{"x":1}})"}) {
    json reply = ask(bad);
    ASSERT_TRUE(reply.is_object()) << bad;
    EXPECT_EQ(reply["ok"], false) << bad;
    EXPECT_NE(reply["error"].get<std::string>().find("needs \"name\", a string"), std::string::npos)
        << reply.dump();
  }
  for (const char* bad : {R"({"cmd":1})", R"([1,2])", R"("status")", "{", ""}) {
    json reply = ask(bad);
    ASSERT_TRUE(reply.is_object()) << bad;
    EXPECT_EQ(reply["ok"], false) << bad;
  }
  json unknown = ask(R"({"cmd":"stop","name":"nosuch"})");
  EXPECT_EQ(unknown["error"], "no process 'nosuch'") << unknown.dump();
  json status = ask(R"({"cmd":"status"})");
  EXPECT_EQ(status["ok"], true) << status.dump();
  EXPECT_EQ(status["node"], "envA");
}

TEST_F(ControlServerTest, InvalidUtf8InAReplyIsReplacedNotThrown) {
  startServer("env\xff");
  reloadResult_ = Error{"cannot read spec \xc0\xaf"};
  json status = ask(R"({"cmd":"status"})");
  ASSERT_TRUE(status.is_object());
  EXPECT_EQ(status["ok"], true);
  EXPECT_EQ(status["node"], "env\xef\xbf\xbd");  // U+FFFD
  json reload = ask(R"({"cmd":"reload"})");
  ASSERT_TRUE(reload.is_object());
  EXPECT_EQ(reload["ok"], false);
  EXPECT_EQ(reload["error"].get<std::string>().find("cannot read spec \xef\xbf\xbd"), 0u)
      << reload.dump();
  ProcessStatus s;
  s.name = "web";
  s.detail = "half a char \xe2\x82";
  json j = json::parse(statusJson(s), nullptr, false);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["detail"], "half a char \xef\xbf\xbd");
}

TEST_F(ControlServerTest, AtTheConnectionCapFurtherClientsWaitUntilOneCloses) {
  startServer();
  std::vector<UniqueFd> idle;
  for (size_t i = 0; i < ControlServer::kMaxConnections; ++i) idle.push_back(client());
  for (int i = 0; i < 20; ++i) reactor_->runOnce(5);  // all accepted
  UniqueFd waiting = client(R"({"cmd":"status"})" "\n");
  // In the backlog, not accepted: no reply however long the reactor runs.
  EXPECT_FALSE(readToEof(waiting.get(), 300).has_value());
  idle.front().reset();
  auto reply = readToEof(waiting.get());
  ASSERT_TRUE(reply.has_value()) << "not served once a connection closed";
  EXPECT_EQ(json::parse(*reply, nullptr, false)["ok"], true) << *reply;
  // The other idle connections stay open: only their deadline closes them.
  for (size_t i = 1; i < idle.size(); ++i) EXPECT_TRUE(stillOpenAfter(idle[i].get(), 0));
}

TEST_F(ControlServerTest, AConnectionIsClosedAtItsDeadline) {
  startServer();
  UniqueFd silent = client();
  UniqueFd partial = client(R"({"cmd":)");
  EXPECT_TRUE(stillOpenAfter(silent.get(), 50));
  clock_.advanceMillis(ControlServer::kConnectionDeadlineMs - 1);
  EXPECT_TRUE(stillOpenAfter(silent.get(), 50));
  EXPECT_TRUE(stillOpenAfter(partial.get(), 0));
  clock_.advanceMillis(1);
  EXPECT_TRUE(readToEof(silent.get()).has_value());
  EXPECT_TRUE(readToEof(partial.get()).has_value());
  // And the server still answers.
  EXPECT_EQ(ask(R"({"cmd":"status"})")["ok"], true);
}

TEST_F(ControlServerTest, NoFdsLeftForAcceptDoesNotSpin) {
#if defined(__SANITIZE_ADDRESS__)
  // The sanitizer runtimes open files of their own (to symbolize, to check a vptr); with no fd
  // left they report errors that are theirs, not ours.
  GTEST_SKIP() << "needs free fds that the sanitizer runtime would take";
#endif
  startServer();
  UniqueFd waiting = client(R"({"cmd":"status"})" "\n");
  // The lowest free fd number becomes the limit: accept4 fails with EMFILE.
  const int lowestFree = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(lowestFree, 0);
  ::close(lowestFree);
  rlimit saved;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit lowered = saved;
  lowered.rlim_cur = static_cast<rlim_t>(lowestFree);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lowered), 0);
  size_t handlersRun = 0;
  for (int i = 0; i < 1000; ++i) handlersRun += reactor_->runOnce(0);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  // One failed accept, then the listener is left alone until the retry timer.
  EXPECT_LE(handlersRun, 2u);
  EXPECT_TRUE(stillOpenAfter(waiting.get(), 20));
  clock_.advanceMillis(ControlServer::kAcceptRetryMs);
  auto reply = readToEof(waiting.get());
  ASSERT_TRUE(reply.has_value()) << "not served after the retry";
  EXPECT_EQ(json::parse(*reply, nullptr, false)["ok"], true) << *reply;
}

}  // namespace
}  // namespace enjin::supervise
