// The SpawnStrategy interface: its harmless defaults, and how little a new strategy needs.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "enjin/supervise/spawn.hpp"
#include "fakes/read_file.hpp"
#include "fakes/temp_dir.hpp"
#include "fakes/wait.hpp"

namespace enjin::supervise {
namespace {

// ---- A complete example strategy: 14 lines. It starts processes as exec does, tells them so in
// their environment, and stops them with SIGINT whatever signal they are sent (say, for a
// program that only shuts down cleanly on ^C). Everything else is the interface's default.
class ExampleStrategy final : public SpawnStrategy {
 public:
  std::string_view name() const override { return "example"; }
  Result<SpawnedProcess> spawn(const SpawnRequest& request) const override {
    SpawnRequest copy = request;
    copy.extraEnv.push_back("ENJIN_EXAMPLE=1");
    return exec_->spawn(copy);
  }
  Status signal(const SpawnedRef& process, int, bool group) const override {
    return SpawnStrategy::signal(process, SIGINT, group);
  }
 private:
  std::unique_ptr<SpawnStrategy> exec_ = makeExecStrategy();
};
// ---- end of the example.

// Waits (bounded) for `pid` to end and returns its wait status, or -1 after killing its group.
int waitOrKill(pid_t pid) {
  const int status = testing::waitExit(pid, 10'000);
  if (status != -1) return status;
  ::kill(-pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return -1;
}

using testing::readFile;

TEST(SpawnStrategyTest, ANewStrategyOverridesOnlyWhatItChanges) {
  testing::TempDir dir;
  const std::string out = dir.path() + "/env";
  SpawnRegistry registry;
  registry.add(std::make_unique<ExampleStrategy>());
  auto strategy = registry.find("example");
  ASSERT_TRUE(strategy.ok()) << strategy.error().message;

  ProcessSpec spec;
  spec.name = "ex";
  spec.strategy = "example";
  // Exits 0 on SIGINT only: SIGTERM's default action would kill it by signal.
  spec.command = {"/bin/sh", "-c",
                  "trap 'exit 0' INT; echo \"$ENJIN_EXAMPLE\" > " + out + "; while :; do sleep 0.05; done"};
  ASSERT_TRUE(registry.validate(spec).ok());
  SpawnRequest request;
  request.spec = &spec;
  auto spawned = (*strategy)->spawn(request);
  ASSERT_TRUE(spawned.ok()) << spawned.error().message;
  testing::waitFor([&] { return !readFile(out).empty(); }, 5000);
  EXPECT_EQ(readFile(out), "1\n");

  ASSERT_TRUE((*strategy)->signal({spawned->pid, spawned->startTime}, SIGTERM, true).ok());
  const int status = waitOrKill(spawned->pid);
  ASSERT_TRUE(WIFEXITED(status)) << "wait status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the process saw SIGINT, not SIGTERM";

  // The defaults of everything the example did not override.
  EXPECT_EQ((*strategy)->isolation(), IsolationStrength::kNone);
  EXPECT_EQ((*strategy)->capabilities(), SpawnCapabilities{});
  EXPECT_TRUE((*strategy)->recover(spec, {spawned->pid, spawned->startTime}).ok());
}

TEST(SpawnStrategyTest, DefaultSignalReachesTheWholeGroupOrTheLeaderAlone) {
  auto exec = makeExecStrategy();
  ProcessSpec spec;
  spec.name = "group";
  // The leader ignores SIGTERM; its child (same group) does not.
  spec.command = {"/bin/sh", "-c", "sleep 30 & trap '' TERM; wait"};
  SpawnRequest request;
  request.spec = &spec;
  auto spawned = exec->spawn(request);
  ASSERT_TRUE(spawned.ok()) << spawned.error().message;
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  // The leader alone: it ignores SIGTERM, so it keeps running.
  ASSERT_TRUE(exec->signal({spawned->pid, spawned->startTime}, SIGTERM, false).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(::waitpid(spawned->pid, nullptr, WNOHANG), 0) << "the leader ended on a SIGTERM it ignores";
  // The group: sleep dies, and the leader's wait returns, so it exits.
  ASSERT_TRUE(exec->signal({spawned->pid, spawned->startTime}, SIGTERM, true).ok());
  const int status = waitOrKill(spawned->pid);
  EXPECT_TRUE(WIFEXITED(status)) << "wait status " << status;
  // Once reaped, the pid names nothing: signalling it is an error that names the call.
  auto gone = exec->signal({spawned->pid, spawned->startTime}, SIGTERM, true);
  ASSERT_FALSE(gone.ok());
  EXPECT_NE(gone.error().message.find("kill -" + std::to_string(spawned->pid)), std::string::npos)
      << gone.error().message;
}

TEST(SpawnStrategyTest, ExecInDefaultsToTheSupervisorsIdentityWithTheSpecEnv) {
  auto exec = makeExecStrategy();
  ProcessSpec spec;
  spec.name = "env";
  spec.command = {"/bin/true"};
  spec.env = {{"GREETING", "hi"}};
  auto identity = exec->execIn(spec);
  ASSERT_TRUE(identity.ok()) << identity.error().message;
  EXPECT_EQ(identity->uid, -1);
  EXPECT_EQ(identity->gid, -1);
  ASSERT_EQ(identity->env.size(), 2u);
  EXPECT_EQ(identity->env[0].rfind("PATH=", 0), 0u);
  EXPECT_EQ(identity->env[1], "GREETING=hi");
}

TEST(SpawnStrategyTest, UnixUserDeclaresItsStrengthAndRunsChecksAsTheAccount) {
  auto unixUser = makeUnixUserStrategy();
  EXPECT_EQ(unixUser->isolation(), IsolationStrength::kUser);
  EXPECT_TRUE(unixUser->capabilities().switchesUser);
  EXPECT_EQ(isolationName(unixUser->isolation()), "unix-user");
  EXPECT_FALSE(makeExecStrategy()->capabilities().switchesUser);

  ProcessSpec spec;
  spec.name = "u";
  spec.strategy = "unix-user";
  spec.command = {"/bin/true"};
  spec.strategyConfig = R"({"user":"nobody"})";  // every Debian system has it
  auto identity = unixUser->execIn(spec);
  ASSERT_TRUE(identity.ok()) << identity.error().message;
  EXPECT_EQ(identity->uid, 65534);
  spec.strategyConfig = R"({"user":"root"})";
  auto refused = unixUser->execIn(spec);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("uid 0"), std::string::npos) << refused.error().message;
  spec.strategyConfig = R"({"user":"no-such-user-enjin"})";
  auto unknown = unixUser->execIn(spec);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message.find("no-such-user-enjin"), std::string::npos);
}

}  // namespace
}  // namespace enjin::supervise
