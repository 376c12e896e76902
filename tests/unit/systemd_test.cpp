// The notify protocol end to end against a datagram socket standing in for systemd's, and the
// watchdog variables as systemd sets them.
#include "enjin/base/systemd.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <optional>
#include <string>

#include "enjin/base/unix_socket.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::testing {
namespace {

class SystemdTest : public ::testing::Test {
 protected:
  // The variables the tests change, as they were, restored after each test so that neither a
  // test nor the process running the tests (perhaps under systemd itself) sees another's.
  void SetUp() override {
    for (const char* name : {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}) {
      const char* value = ::getenv(name);
      saved_[name] = value ? std::optional<std::string>(value) : std::nullopt;
      ::unsetenv(name);
    }
  }
  void TearDown() override {
    for (const auto& [name, value] : saved_) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }

  // A datagram socket in the temp dir, as systemd's notify socket, and NOTIFY_SOCKET naming it.
  UniqueFd listenNotify() {
    auto fd = listenUnix(dir_ / "notify.sock", SOCK_DGRAM, 0600);
    EXPECT_TRUE(fd.ok()) << fd.error().message;
    ::setenv("NOTIFY_SOCKET", (dir_ / "notify.sock").c_str(), 1);
    return fd.ok() ? std::move(*fd) : UniqueFd();
  }

  // The next datagram on `fd` (non-blocking), or nullopt when none is waiting.
  static std::optional<std::string> nextDatagram(int fd) {
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      EXPECT_EQ(errno, EAGAIN);
      return std::nullopt;
    }
    return std::string(buf, static_cast<size_t>(n));
  }

  TempDir dir_;
  std::map<std::string, std::optional<std::string>> saved_;
};

TEST_F(SystemdTest, NotifySendsTheStateAsOneDatagram) {
  UniqueFd sock = listenNotify();
  ASSERT_TRUE(sock);
  EXPECT_TRUE(systemd::underSystemd());
  auto st = systemd::notify("READY=1\nSTATUS=hello");
  ASSERT_TRUE(st.ok()) << st.error().message;
  // sendmsg on a unix datagram socket has queued it by the time notify returns.
  EXPECT_EQ(nextDatagram(sock.get()), "READY=1\nSTATUS=hello");
  EXPECT_EQ(nextDatagram(sock.get()), std::nullopt);
}

TEST_F(SystemdTest, NotifyWithoutNotifySocketIsANoOp) {
  UniqueFd sock = listenNotify();
  ASSERT_TRUE(sock);
  ::unsetenv("NOTIFY_SOCKET");
  EXPECT_FALSE(systemd::underSystemd());
  auto st = systemd::notify("READY=1");
  EXPECT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(nextDatagram(sock.get()), std::nullopt);
}

TEST_F(SystemdTest, NotifyToAMissingSocketNamesTheSocketAndTheCause) {
  const std::string path = dir_ / "nobody.sock";
  ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  auto st = systemd::notify("READY=1\nSTATUS=x");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "notify READY=1 to " + path + ": No such file or directory");
}

TEST_F(SystemdTest, WatchdogIntervalForThisProcess) {
  ::setenv("WATCHDOG_USEC", "3000000", 1);
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  EXPECT_EQ(systemd::watchdogIntervalMs(), 3000);
  // Without WATCHDOG_PID the watchdog is ours too.
  ::unsetenv("WATCHDOG_PID");
  EXPECT_EQ(systemd::watchdogIntervalMs(), 3000);
}

TEST_F(SystemdTest, WatchdogMeantForAnotherProcessIsNotOurs) {
  ::setenv("WATCHDOG_USEC", "3000000", 1);
  ::setenv("WATCHDOG_PID", std::to_string(::getppid()).c_str(), 1);
  EXPECT_EQ(systemd::watchdogIntervalMs(), 0);
}

TEST_F(SystemdTest, NoOrBadWatchdogIsZero) {
  EXPECT_EQ(systemd::watchdogIntervalMs(), 0);
  ::setenv("WATCHDOG_USEC", "soon", 1);
  EXPECT_EQ(systemd::watchdogIntervalMs(), 0);
  ::setenv("WATCHDOG_USEC", "0", 1);
  EXPECT_EQ(systemd::watchdogIntervalMs(), 0);
}

}  // namespace
}  // namespace enjin::testing
