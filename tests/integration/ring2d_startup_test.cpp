// ring2d's start-up checks, end to end: the state dir (ownership, mode, one ring2d at a time), the
// node name, whom it accepts as its holder, and the fd limit its processes get.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstring>
#include <fstream>

#include "ring2d_fixture.hpp"

namespace enjin::testing {
namespace {

using nlohmann::json;

class Ring2dStartupTest : public Ring2dTest {
 protected:
  void TearDown() override {
    for (pid_t pid : others_) {
      ::kill(pid, SIGKILL);
      waitExit(pid, 5000);
    }
    Ring2dTest::TearDown();
  }

  std::vector<std::string> ring2dArgs(std::vector<std::string> extra = {}) const {
    std::vector<std::string> args{helper("ring2d"), "--spec",   specPath(),
                                  "--state-dir",    state(),    "--holder",
                                  helper("enjin-holder")};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  // Runs a ring2d that is expected to refuse to start; returns its wait status (-1: still
  // running after 5 s) and leaves its stderr in `err`.
  int runRefused(const std::vector<std::string>& args, std::string& err) {
    const std::string errPath = dir_ / ("refused" + std::to_string(others_.size()) + ".err");
    const pid_t pid = spawnProcess(args, errPath);
    others_.push_back(pid);
    const int status = waitExit(pid, 5000);
    if (status != -1) others_.pop_back();
    err = readFile(errPath);
    return status;
  }

  void writeSleeperSpec() {
    writeSpec("[[process]]\nname = \"a\"\ncommand = [\"" + helper("crasher") +
              "\", \"sleep:600000\"]\n");
  }

  std::vector<pid_t> others_;  // ring2ds started besides ring2d_
};

TEST_F(Ring2dStartupTest, ASecondRing2dOnTheSameStateDirIsRefused) {
  writeSleeperSpec();
  startRing2d();
  std::string err;
  const int status = runRefused(ring2dArgs(), err);
  ASSERT_NE(status, -1) << "the second ring2d kept running";
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_NE(err.find("another ring2d is running with state dir " + state() + " (pid " +
                     std::to_string(ring2d_) + ")"),
            std::string::npos)
      << err;
  // The first one is undisturbed and still holds the lock.
  EXPECT_TRUE(controlOk());
  EXPECT_EQ(stateOf("a"), "ready");
  // After kill -9 the lock is gone with it: a new ring2d starts at once.
  killRing2d(SIGKILL);
  startRing2d();
  EXPECT_EQ(stateOf("a"), "ready");
}

TEST_F(Ring2dStartupTest, AStateDirOthersCanWriteToIsRefused) {
  writeSleeperSpec();
  ASSERT_EQ(::mkdir(state().c_str(), 0700), 0);
  ASSERT_EQ(::chmod(state().c_str(), 0777), 0);
  std::string err;
  const int status = runRefused(ring2dArgs(), err);
  ASSERT_NE(status, -1) << "ring2d started on a world-writable state dir";
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_NE(err.find("refusing state dir " + state() + ": mode 0777 lets group or others write"),
            std::string::npos)
      << err;
  struct stat st;
  ASSERT_EQ(::stat(state().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0777u) << "refused, not fixed";
}

TEST_F(Ring2dStartupTest, AStateDirOfAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a dir away";
  writeSleeperSpec();
  ASSERT_EQ(::mkdir(state().c_str(), 0700), 0);
  ASSERT_EQ(::chown(state().c_str(), 65534, 65534), 0);
  std::string err;
  const int status = runRefused(ring2dArgs(), err);
  ASSERT_NE(status, -1) << "ring2d started on another user's state dir";
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_NE(err.find("refusing state dir " + state() + ": owned by uid 65534"), std::string::npos)
      << err;
}

TEST_F(Ring2dStartupTest, AMissingStateDirIsCreatedPrivate) {
  writeSleeperSpec();
  startRing2d();
  struct stat st;
  ASSERT_EQ(::stat(state().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  std::ifstream lock(state() + "/lock");
  pid_t pid = 0;
  lock >> pid;
  EXPECT_EQ(pid, ring2d_);
}

TEST_F(Ring2dStartupTest, TheNodeNameMustBeOneTopicSegment) {
  writeSleeperSpec();
  for (const std::string& bad : std::vector<std::string>{"env.a", std::string(65, 'n'), "a b", "x/y"}) {
    std::string err;
    const int status = runRefused(ring2dArgs({"--node", bad}), err);
    ASSERT_NE(status, -1) << "ring2d started with --node '" << bad << "'";
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 2) << bad;
    EXPECT_NE(err.find("--node '" + bad + "': expected 1 to 64 of A-Z a-z 0-9 _ -"),
              std::string::npos)
        << err;
  }
  startRing2d({"--node", "env_A-1"});
  EXPECT_EQ(call({{"cmd", "status"}})["node"], "env_A-1");
}

TEST_F(Ring2dStartupTest, TheDefaultNodeIsTheHostnamesFirstLabel) {
  if (::geteuid() != 0 || ::access("/usr/bin/unshare", X_OK) != 0) {
    GTEST_SKIP() << "needs root and unshare(1) to set a hostname";
  }
  writeSleeperSpec();
  std::vector<std::string> args{"/usr/bin/unshare", "-u", "/bin/sh", "-c",
                                "hostname web-3.example.com && exec \"$0\" \"$@\""};
  for (auto& a : ring2dArgs()) args.push_back(a);
  ring2d_ = spawnProcess(args, dir_ / "ring2d.err");  // unshare and sh exec: the same pid
  ASSERT_TRUE(waitFor([&] { return controlOk(); }, 10'000)) << ring2dErr();
  EXPECT_EQ(call({{"cmd", "status"}})["node"], "web-3");
}

TEST_F(Ring2dStartupTest, AHolderSocketOfAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to listen as another user";
  writeSleeperSpec();
  ASSERT_EQ(::mkdir(state().c_str(), 0700), 0);
  // A process that binds holder.sock, then becomes uid 65534 and listens: SO_PEERCRED reports
  // the credentials of listen(). It never answers.
  const std::string path = state() + "/holder.sock";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t impostor = ::fork();
  if (impostor == 0) {
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ::_exit(1);
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) ::_exit(2);
    if (::listen(fd, 8) != 0) ::_exit(3);
    (void)!::write(ready[1], "r", 1);
    ::pause();
    ::_exit(0);
  }
  others_.push_back(impostor);
  ::close(ready[1]);
  char byte;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1) << "the impostor did not start";
  ::close(ready[0]);

  std::string err;
  const int status = runRefused(ring2dArgs(), err);
  ASSERT_NE(status, -1) << "ring2d kept talking to another user's holder socket";
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_NE(err.find("refusing the holder at " + path + ": it runs as uid 65534"),
            std::string::npos)
      << err;
}

TEST_F(Ring2dStartupTest, ProcessesGetTheFdLimitRing2dWasStartedWith) {
  rlimit saved;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  if (saved.rlim_max != RLIM_INFINITY && saved.rlim_max <= 1024) {
    GTEST_SKIP() << "the hard fd limit leaves no room to raise";
  }
  writeSpec("[[process]]\nname = \"inherits\"\ncommand = [\"" + helper("probe_child") +
            "\"]\nrestart = \"never\"\n\n[[process]]\nname = \"own\"\ncommand = [\"" +
            helper("probe_child") + "\"]\nrestart = \"never\"\n\n[process.exec]\nrlimits = { nofile = 100 }\n");
  // ring2d inherits a soft limit of 1000 and raises its own to the hard limit.
  rlimit lowered = saved;
  lowered.rlim_cur = 1000;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lowered), 0);
  startRing2d();
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  ASSERT_TRUE(waitFor([&] { return stateOf("inherits") == "stopped" && stateOf("own") == "stopped"; },
                      5000))
      << ring2dErr();
  EXPECT_EQ(probeFacts(state() + "/logs/inherits.log")["nofile"], 1000);
  EXPECT_EQ(probeFacts(state() + "/logs/own.log")["nofile"], 100);
}

// The fixture's TearDown kills the process groups state.json names: never a reused pid.
TEST_F(Ring2dStartupTest, TearDownKillsOnlyPidsWhoseStartTimeStillMatches) {
  const pid_t bystander = ::fork();
  if (bystander == 0) {
    ::setpgid(0, 0);
    ::pause();
    ::_exit(0);
  }
  others_.push_back(bystander);
  auto startTime = supervise::processStartTime(bystander);
  ASSERT_TRUE(startTime.ok());
  ASSERT_EQ(::mkdir(state().c_str(), 0700), 0);
  auto writeState = [&](uint64_t st) {
    std::ofstream(state() + "/state.json")
        << json{{"version", 1},
                {"processes", {{"old", {{"pid", bystander}, {"start_time", st}}}}}}
               .dump();
  };
  writeState(*startTime + 1);  // a process that ran with this pid before
  EXPECT_TRUE(heldPids().empty());
  writeState(*startTime);
  EXPECT_EQ(heldPids(), std::vector<pid_t>{bystander});
  writeState(*startTime + 1);  // TearDown must leave it alone; checked by the wait below
  Ring2dTest::TearDown();
  EXPECT_TRUE(processAlive(bystander));
}

}  // namespace
}  // namespace enjin::testing
