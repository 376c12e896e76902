// The supervision engine: restarts, backoff, intensity, spawn failures, stops and readiness.
// Through the fixture in supervisor_engine_fixture.hpp: exact delays on a fake clock.
#include "supervisor_engine_fixture.hpp"

namespace enjin::supervise {
namespace engine_test {
namespace {

TEST_F(SupervisorEngineTest, StartsSpawnsAndIsReadyWithoutReadinessCheck) {
  start({makeSpec("a")});
  EXPECT_EQ(holder_.take(), (Log{"hello", "spawn a"}));
  EXPECT_EQ(takeStates("a"), (std::vector<std::string>{"starting", "running", "ready"}));
  const ProcessStatus s = status("a");
  EXPECT_EQ(s.state, ProcessState::kReady);
  EXPECT_EQ(s.pid, holder_.pid("a"));
  EXPECT_EQ(s.restarts, 0u);
  EXPECT_TRUE(sup_->settled());
}

TEST_F(SupervisorEngineTest, RestartsAfterExactlyTheConfiguredDelay) {
  auto spec = makeSpec("a");
  spec.restart.delayMs = 250;
  start({spec});
  (void)holder_.take();
  (void)takeStates("a");
  const int firstPid = holder_.pid("a");

  expectRespawnAfter("a", 250);
  EXPECT_EQ(takeStates("a"), (std::vector<std::string>{"backoff", "starting", "running", "ready"}));
  EXPECT_EQ(status("a").restarts, 1u);
  EXPECT_NE(holder_.pid("a"), firstPid);
  EXPECT_EQ(status("a").pid, holder_.pid("a"));
}

TEST_F(SupervisorEngineTest, BackoffDoublesUpToItsMaximum) {
  auto spec = makeSpec("a");
  spec.restart.delayMs = 100;
  spec.restart.backoffMaxMs = 500;
  start({spec});
  (void)holder_.take();
  // Each run exits at once (uptime 0 < stableAfterMs): the step doubles, then stays capped.
  for (int64_t delay : {100, 200, 400, 500, 500}) expectRespawnAfter("a", delay);
  EXPECT_EQ(status("a").restarts, 5u);
}

TEST_F(SupervisorEngineTest, JitterDrawsFromTheLowerQuarter) {
  random_ = 0;  // the bottom of the range: 3/4 of each step
  start({makeSpec("a")});
  (void)holder_.take();
  for (int64_t delay : {75, 150, 300}) expectRespawnAfter("a", delay);
}

TEST_F(SupervisorEngineTest, StableRunStartsTheBackoffAgain) {
  auto spec = makeSpec("a");
  spec.restart.stableAfterMs = 1'000;
  start({spec});
  (void)holder_.take();
  expectRespawnAfter("a", 100);
  expectRespawnAfter("a", 200);
  advance(999);  // not quite stable
  expectRespawnAfter("a", 400);
  advance(1'000);  // stable: back to the first step
  expectRespawnAfter("a", 100);
}

TEST_F(SupervisorEngineTest, RestartIntensityExceededFailsAndStopsSpawning) {
  auto spec = makeSpec("a");
  spec.restart.delayMs = 10;
  spec.restart.backoffMaxMs = 10;
  spec.restart.maxRestarts = 3;
  spec.restart.windowS = 60;
  start({spec});
  (void)holder_.take();
  for (int i = 0; i < 3; ++i) expectRespawnAfter("a", 10);
  (void)takeStates("a");

  holder_.exitCode("a", 1);
  pump();
  EXPECT_EQ(state("a"), ProcessState::kFailed);
  EXPECT_EQ(status("a").detail, "exit code 1; restart intensity exceeded: 3 restarts in 60 s");
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_[0].status.state, ProcessState::kFailed);
  EXPECT_TRUE(events_[0].exitEvent);
  ASSERT_TRUE(events_[0].status.lastExit.has_value());
  EXPECT_EQ(events_[0].status.lastExit->code, 1);
  advance(120'000);
  EXPECT_EQ(holder_.take(), Log{});
  EXPECT_EQ(state("a"), ProcessState::kFailed);
  EXPECT_EQ(status("a").restarts, 3u);
}

TEST_F(SupervisorEngineTest, RestartsOutsideTheWindowAreForgiven) {
  auto spec = makeSpec("a");
  spec.restart.delayMs = 10;
  spec.restart.backoffMaxMs = 10;
  spec.restart.maxRestarts = 2;
  spec.restart.windowS = 1;
  start({spec});
  (void)holder_.take();
  expectRespawnAfter("a", 10);
  expectRespawnAfter("a", 10);
  // Both restarts are now more than 1 s old: a third exit restarts again instead of failing.
  advance(1'100);
  expectRespawnAfter("a", 10);
  // But two inside the window are the limit.
  expectRespawnAfter("a", 10);
  holder_.exitCode("a", 1);
  pump();
  EXPECT_EQ(state("a"), ProcessState::kFailed);
}

TEST_F(SupervisorEngineTest, OperatorStartAfterFailureForgivesTheHistory) {
  auto spec = makeSpec("a");
  spec.restart.maxRestarts = 1;
  start({spec});
  (void)holder_.take();
  expectRespawnAfter("a", 100);
  holder_.exitCode("a", 1);
  pump();
  ASSERT_EQ(state("a"), ProcessState::kFailed);

  ASSERT_TRUE(sup_->startProcess("a").ok());
  EXPECT_EQ(holder_.take(), Log{"respawn a"});  // at once
  pump();
  EXPECT_EQ(state("a"), ProcessState::kReady);
  // A fresh history: the backoff starts from delayMs and one restart is allowed again.
  expectRespawnAfter("a", 100);
  holder_.exitCode("a", 1);
  pump();
  EXPECT_EQ(state("a"), ProcessState::kFailed);
}

TEST_F(SupervisorEngineTest, RestartNeverLeavesItStopped) {
  auto spec = makeSpec("a");
  spec.restart.mode = RestartMode::kNever;
  start({spec});
  (void)holder_.take();
  (void)takeStates("a");
  holder_.exitCode("a", 1);
  pump();
  EXPECT_EQ(state("a"), ProcessState::kStopped);
  EXPECT_EQ(status("a").detail, "exit code 1 (restart=never)");
  EXPECT_EQ(takeStates("a"), (std::vector<std::string>{"stopped"}));
  advance(60'000);
  EXPECT_EQ(holder_.take(), Log{});
  EXPECT_EQ(status("a").restarts, 0u);
}

TEST_F(SupervisorEngineTest, RestartOnFailureRestartsOnlyFailures) {
  auto spec = makeSpec("a");
  spec.restart.mode = RestartMode::kOnFailure;
  start({spec});
  (void)holder_.take();
  expectRespawnAfter("a", 100, /*code=*/3);
  // Killed by a signal is a failure too.
  holder_.exitSignal("a", SIGSEGV);
  pump();
  EXPECT_EQ(state("a"), ProcessState::kBackoff);
  advance(200);
  EXPECT_EQ(holder_.take(), Log{"respawn a"});
  // A clean exit is not.
  holder_.exitCode("a", 0);
  pump();
  EXPECT_EQ(state("a"), ProcessState::kStopped);
  EXPECT_EQ(status("a").detail, "exit code 0 (exited cleanly, restart=on-failure)");
  advance(60'000);
  EXPECT_EQ(holder_.take(), Log{});
}

TEST_F(SupervisorEngineTest, Exit125AsksNotToBeRestarted) {
  start({makeSpec("a")});
  (void)holder_.take();
  holder_.exitCode("a", kExitDoNotRestart);
  pump();
  EXPECT_EQ(state("a"), ProcessState::kStopped);
  advance(60'000);
  EXPECT_EQ(holder_.take(), Log{});
}

TEST_F(SupervisorEngineTest, SpawnFailedCountsAsAFailedStartAndBacksOff) {
  holder_.failSpawns("a", 2);
  start({makeSpec("a")});
  EXPECT_EQ(holder_.take(), (Log{"hello", "spawn a"}));
  EXPECT_EQ(state("a"), ProcessState::kBackoff);
  // The holder's error is what an operator sees, not only a bare exit code 127.
  EXPECT_EQ(status("a").detail, "exec: No such file or directory; restart in 100 ms");
  ASSERT_TRUE(status("a").lastExit.has_value());
  EXPECT_EQ(status("a").lastExit->code, 127);

  // The holder's spawn failed, so the next attempt sends the whole spec again.
  advance(99);
  EXPECT_EQ(holder_.take(), Log{});
  advance(1);
  EXPECT_EQ(holder_.take(), Log{"spawn a"});
  EXPECT_EQ(state("a"), ProcessState::kBackoff);
  advance(199);
  EXPECT_EQ(holder_.take(), Log{});
  advance(1);
  EXPECT_EQ(holder_.take(), Log{"spawn a"});
  EXPECT_EQ(state("a"), ProcessState::kReady);
  EXPECT_EQ(status("a").restarts, 2u);
}

TEST_F(SupervisorEngineTest, SpawnFailuresCountTowardsTheIntensity) {
  auto spec = makeSpec("a");
  spec.restart.maxRestarts = 2;
  holder_.failSpawns("a", 100);
  start({spec});
  advance(100);
  advance(200);
  EXPECT_EQ(holder_.take(), (Log{"hello", "spawn a", "spawn a", "spawn a"}));
  EXPECT_EQ(state("a"), ProcessState::kFailed);
  advance(60'000);
  EXPECT_EQ(holder_.take(), Log{});
}

TEST_F(SupervisorEngineTest, StopEscalatesToSigkillAfterStopTimeout) {
  auto spec = makeSpec("a");
  spec.stopSignal = SIGINT;
  spec.stopTimeoutMs = 2'000;
  holder_.ignore(SIGINT);
  start({spec});
  (void)holder_.take();
  (void)takeStates("a");

  ASSERT_TRUE(sup_->stopProcess("a").ok());
  EXPECT_EQ(holder_.take(), Log{"signal a INT"});
  EXPECT_EQ(state("a"), ProcessState::kStopping);
  advance(1'999);
  EXPECT_EQ(holder_.take(), Log{});
  EXPECT_EQ(state("a"), ProcessState::kStopping);
  advance(1);
  EXPECT_EQ(holder_.take(), Log{"signal a KILL"});
  // The fake dies of SIGKILL: stopped, and it stays stopped.
  EXPECT_EQ(state("a"), ProcessState::kStopped);
  EXPECT_EQ(takeStates("a"), (std::vector<std::string>{"stopping", "stopped"}));
  ASSERT_TRUE(status("a").lastExit.has_value());
  EXPECT_EQ(status("a").lastExit->signal, SIGKILL);
  advance(60'000);
  EXPECT_EQ(holder_.take(), Log{});
}

TEST_F(SupervisorEngineTest, StopThatSucceedsSendsNoSigkill) {
  start({makeSpec("a")});
  (void)holder_.take();
  ASSERT_TRUE(sup_->stopProcess("a").ok());
  pump();
  EXPECT_EQ(holder_.take(), Log{"signal a TERM"});
  EXPECT_EQ(state("a"), ProcessState::kStopped);
  advance(10'000);
  EXPECT_EQ(holder_.take(), Log{});
}

TEST_F(SupervisorEngineTest, StopDuringBackoffCancelsTheRestart) {
  start({makeSpec("a")});
  (void)holder_.take();
  holder_.exitCode("a", 1);
  pump();
  ASSERT_EQ(state("a"), ProcessState::kBackoff);
  ASSERT_TRUE(sup_->stopProcess("a").ok());
  EXPECT_EQ(state("a"), ProcessState::kStopped);
  advance(10'000);
  EXPECT_EQ(holder_.take(), Log{});
}

TEST_F(SupervisorEngineTest, RestartCommandStopsThenRespawnsAtOnce) {
  start({makeSpec("a")});
  (void)holder_.take();
  ASSERT_TRUE(sup_->restartProcess("a").ok());
  pump();
  EXPECT_EQ(holder_.take(), (Log{"signal a TERM", "respawn a"}));
  EXPECT_EQ(state("a"), ProcessState::kReady);
  // An operator's restart is not the policy's: no restart counted, no backoff used.
  EXPECT_EQ(status("a").restarts, 0u);
}

TEST_F(SupervisorEngineTest, NotifyReadinessTimeoutSignalsWithStopSignal) {
  auto spec = makeSpec("a");
  spec.readiness.kind = "notify";
  spec.readiness.timeoutMs = 500;
  spec.stopSignal = SIGUSR1;
  spec.stopTimeoutMs = 300;
  holder_.ignore(SIGUSR1);
  start({spec});
  EXPECT_EQ(holder_.take(), (Log{"hello", "spawn a"}));
  // The spawn names the notify socket and hands its path to the process.
  const auto* spawnReq = std::get_if<holder_proto::Spawn>(&holder_.requests().at(1));
  ASSERT_NE(spawnReq, nullptr);
  ASSERT_TRUE(spawnReq->notify.has_value());
  EXPECT_EQ(*spawnReq->notify, dir_.path() + "/notify/a.sock");
  EXPECT_EQ(spawnReq->env, (std::vector<std::string>{"NOTIFY_SOCKET=" + *spawnReq->notify}));
  EXPECT_EQ(state("a"), ProcessState::kRunning);
  EXPECT_FALSE(sup_->settled());

  advance(499);
  EXPECT_EQ(holder_.take(), Log{});
  EXPECT_EQ(state("a"), ProcessState::kRunning);
  advance(1);
  EXPECT_EQ(holder_.take(), Log{"signal a USR1"});
  EXPECT_EQ(state("a"), ProcessState::kUnhealthy);
  EXPECT_EQ(status("a").detail, "not ready after 500 ms");
  // It ignores its stop signal: SIGKILL after stopTimeoutMs.
  advance(299);
  EXPECT_EQ(holder_.take(), Log{});
  advance(1);
  EXPECT_EQ(holder_.take(), Log{"signal a KILL"});
  // Not ready in time is a failed start: the policy restarts it after the backoff.
  EXPECT_EQ(state("a"), ProcessState::kBackoff);
  advance(100);
  EXPECT_EQ(holder_.take(), Log{"respawn a"});
  EXPECT_EQ(state("a"), ProcessState::kRunning);
  EXPECT_EQ(status("a").restarts, 1u);
}

TEST_F(SupervisorEngineTest, NotifyReadyInTimeCancelsTheReadinessTimeout) {
  auto spec = makeSpec("a");
  spec.readiness.kind = "notify";
  spec.readiness.timeoutMs = 500;
  holder_.useOwnPid("a");
  start({spec});
  (void)holder_.take();
  advance(400);
  ASSERT_TRUE(holder_.notify("a", "STATUS=warming up\nREADY=1"));
  pump();
  EXPECT_EQ(state("a"), ProcessState::kReady);
  EXPECT_EQ(status("a").detail, "warming up");
  advance(10'000);
  EXPECT_EQ(holder_.take(), Log{});
  EXPECT_EQ(state("a"), ProcessState::kReady);
}

TEST_F(SupervisorEngineTest, DependentWaitsUntilItsDependencyIsReady) {
  auto a = makeSpec("a");
  a.readiness.kind = "notify";
  a.readiness.timeoutMs = 5'000;
  auto b = makeSpec("b");
  b.dependsOn = {"a"};
  holder_.useOwnPid("a");
  start({b, a});  // listed out of order on purpose
  EXPECT_EQ(holder_.take(), (Log{"hello", "spawn a"}));
  EXPECT_EQ(state("a"), ProcessState::kRunning);
  EXPECT_EQ(state("b"), ProcessState::kStarting);
  EXPECT_EQ(status("b").detail, "waiting for 'a' to be ready");
  advance(1'000);
  EXPECT_EQ(holder_.take(), Log{});  // a runs, but is not ready: b waits

  ASSERT_TRUE(holder_.notify("a", "READY=1"));
  pump();
  EXPECT_EQ(holder_.take(), Log{"spawn b"});
  EXPECT_EQ(state("a"), ProcessState::kReady);
  EXPECT_EQ(state("b"), ProcessState::kReady);
}

TEST_F(SupervisorEngineTest, DependentOfAProcessWithoutCheckStartsOnceItIsSpawned) {
  auto b = makeSpec("b");
  b.dependsOn = {"a"};
  startOnly({b, makeSpec("a")});
  // Nothing is spawned for b until the holder said a runs (and so is ready).
  EXPECT_EQ(holder_.take(), (Log{"hello", "spawn a"}));
  pump();
  EXPECT_EQ(holder_.take(), Log{"spawn b"});
}

TEST_F(SupervisorEngineTest, StopAllStopsDependentsFirstThenShutsTheHolderDown) {
  auto b = makeSpec("b");
  b.dependsOn = {"a"};
  holder_.ignore(SIGTERM);
  start({makeSpec("a"), b});
  EXPECT_EQ(holder_.take(), (Log{"hello", "spawn a", "spawn b"}));

  bool done = false;
  sup_->stopAll([&] { done = true; });
  EXPECT_EQ(holder_.take(), Log{"signal b TERM"});
  advance(1'000);
  EXPECT_EQ(holder_.take(), Log{});  // a waits for b to be down
  holder_.exitSignal("b", SIGTERM);
  pump();
  EXPECT_EQ(holder_.take(), Log{"signal a TERM"});
  EXPECT_FALSE(done);
  holder_.exitSignal("a", SIGTERM);
  pump();
  EXPECT_EQ(holder_.take(), Log{"shutdown"});
  EXPECT_TRUE(done);  // after the holder's bye
  EXPECT_EQ(state("a"), ProcessState::kStopped);
  EXPECT_EQ(state("b"), ProcessState::kStopped);
}

TEST_F(SupervisorEngineTest, StopWhileTheSpawnIsOnItsWaySignalsOnceSpawned) {
  startOnly({makeSpec("a")});
  EXPECT_EQ(holder_.take(), (Log{"hello", "spawn a"}));
  ASSERT_TRUE(sup_->stopProcess("a").ok());
  EXPECT_EQ(state("a"), ProcessState::kStopping);
  EXPECT_EQ(holder_.take(), Log{});  // no pid to signal yet
  pump();
  EXPECT_EQ(holder_.take(), Log{"signal a TERM"});
  EXPECT_EQ(state("a"), ProcessState::kStopped);
  advance(60'000);
  EXPECT_EQ(holder_.take(), Log{});
}

// A stop that comes while a readiness timeout's stop is under way does not postpone the SIGKILL:
// the first deadline stands (800 ms here, not 1000).
TEST_F(SupervisorEngineTest, StopRequestDuringAReadinessStopKeepsTheSigkillDeadline) {
  auto spec = makeSpec("a");
  spec.readiness.kind = "notify";
  spec.readiness.timeoutMs = 500;
  spec.stopTimeoutMs = 300;
  holder_.ignore(SIGTERM);
  start({spec});
  (void)holder_.take();
  advance(500);
  EXPECT_EQ(holder_.take(), Log{"signal a TERM"});  // not ready: SIGKILL due at 800
  advance(200);
  ASSERT_TRUE(sup_->stopProcess("a").ok());
  (void)holder_.take();  // whether it sends the stop signal again does not matter here
  EXPECT_EQ(state("a"), ProcessState::kStopping);
  // "A stop already under way keeps its deadline" (Supervisor::Impl::terminate).
  advance(99);
  EXPECT_EQ(holder_.take(), Log{});
  advance(1);
  EXPECT_EQ(holder_.take(), Log{"signal a KILL"});
  EXPECT_EQ(state("a"), ProcessState::kStopped);
}

TEST_F(SupervisorEngineTest, WatchdogMissedSignalsWithStopSignal) {
  auto spec = makeSpec("a");
  spec.readiness.kind = "notify";
  spec.readiness.watchdogMs = 1'000;
  holder_.useOwnPid("a");
  holder_.ignore(SIGTERM);
  start({spec});
  (void)holder_.take();
  const auto* spawnReq = std::get_if<holder_proto::Spawn>(&holder_.requests().at(1));
  ASSERT_NE(spawnReq, nullptr);
  EXPECT_EQ(spawnReq->env, (std::vector<std::string>{"NOTIFY_SOCKET=" + *spawnReq->notify,
                                                     "WATCHDOG_USEC=1000000"}));
  ASSERT_TRUE(holder_.notify("a", "READY=1"));
  pump();
  ASSERT_EQ(state("a"), ProcessState::kReady);
  advance(999);
  ASSERT_TRUE(holder_.notify("a", "WATCHDOG=1"));  // re-arms: due 1000 ms from now
  pump();
  advance(999);
  EXPECT_EQ(holder_.take(), Log{});
  EXPECT_EQ(state("a"), ProcessState::kReady);
  advance(1);
  EXPECT_EQ(holder_.take(), Log{"signal a TERM"});
  EXPECT_EQ(state("a"), ProcessState::kUnhealthy);
  EXPECT_EQ(status("a").detail, "no WATCHDOG=1 for 1000 ms");
}

}  // namespace
}  // namespace engine_test
}  // namespace enjin::supervise
