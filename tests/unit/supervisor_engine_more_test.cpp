// The supervision engine: dependencies, reloads, stop deadlines, health checks and re-adoption.
// Through the fixture in supervisor_engine_fixture.hpp: exact delays on a fake clock.
#include "supervisor_engine_fixture.hpp"

namespace enjin::supervise {
namespace engine_test {
namespace {

TEST_F(SupervisorEngineTest, DependentRestartWaitsForItsDependencyAgain) {
  auto a = makeSpec("a");
  a.restart.delayMs = 1'000;
  auto b = makeSpec("b");
  b.dependsOn = {"a"};
  start({a, b});
  EXPECT_EQ(holder_.take(), (Log{"hello", "spawn a", "spawn b"}));
  holder_.exitCode("a", 1);  // a: backoff 1000 ms
  holder_.exitCode("b", 1);  // b: backoff 100 ms, then waits for a
  pump();
  advance(100);
  EXPECT_EQ(holder_.take(), Log{});
  EXPECT_EQ(state("b"), ProcessState::kStarting);
  EXPECT_EQ(status("b").detail, "waiting for 'a' to be ready");
  advance(900);
  EXPECT_EQ(holder_.take(), (Log{"respawn a", "respawn b"}));
  EXPECT_EQ(state("b"), ProcessState::kReady);
}

TEST_F(SupervisorEngineTest, StoppedDependentStaysDownWhenItsDependencyBecomesReady) {
  auto a = makeSpec("a");
  a.readiness.kind = "notify";
  auto b = makeSpec("b");
  b.dependsOn = {"a"};
  holder_.useOwnPid("a");
  start({a, b});
  (void)holder_.take();
  ASSERT_EQ(state("b"), ProcessState::kStarting);
  ASSERT_TRUE(sup_->stopProcess("b").ok());
  EXPECT_EQ(state("b"), ProcessState::kStopped);
  ASSERT_TRUE(holder_.notify("a", "READY=1"));
  pump();
  EXPECT_EQ(state("a"), ProcessState::kReady);
  EXPECT_EQ(holder_.take(), Log{});
  EXPECT_EQ(state("b"), ProcessState::kStopped);
}

TEST_F(SupervisorEngineTest, RestartCommandDuringBackoffRespawnsAtOnce) {
  start({makeSpec("a")});
  (void)holder_.take();
  expectRespawnAfter("a", 100);
  holder_.exitCode("a", 1);
  pump();
  ASSERT_EQ(status("a").detail, "exit code 1; restart in 200 ms");
  ASSERT_TRUE(sup_->restartProcess("a").ok());
  EXPECT_EQ(holder_.take(), Log{"respawn a"});
  pump();
  EXPECT_EQ(state("a"), ProcessState::kReady);
  advance(10'000);
  EXPECT_EQ(holder_.take(), Log{});  // the cancelled backoff timer does not spawn again
  expectRespawnAfter("a", 100);      // and the history was forgiven
}

TEST_F(SupervisorEngineTest, StopAllStopsWhatIsInBackoffOrStillSpawning) {
  start({makeSpec("a")});
  (void)holder_.take();
  holder_.exitCode("a", 1);
  pump();
  ASSERT_EQ(state("a"), ProcessState::kBackoff);
  ASSERT_TRUE(sup_->reload({makeSpec("a"), makeSpec("c")}).ok());
  EXPECT_EQ(holder_.take(), Log{"spawn c"});  // c's spawned is not read yet
  bool done = false;
  sup_->stopAll([&] { done = true; });
  EXPECT_EQ(state("a"), ProcessState::kStopped);
  EXPECT_EQ(state("c"), ProcessState::kStopping);
  pump();
  EXPECT_EQ(holder_.take(), (Log{"signal c TERM", "shutdown"}));
  EXPECT_TRUE(done);
  advance(60'000);
  EXPECT_EQ(holder_.take(), Log{});
}

TEST_F(SupervisorEngineTest, ReloadRestartsChangedStopsRemovedStartsNew) {
  holder_.ignore(SIGTERM);
  start({makeSpec("a"), makeSpec("b"), makeSpec("keep")});
  EXPECT_EQ(holder_.take(), (Log{"hello", "spawn a", "spawn b", "spawn keep"}));
  auto changed = makeSpec("a");
  changed.command = {"/bin/false"};
  ASSERT_TRUE(sup_->reload({changed, makeSpec("keep"), makeSpec("c")}).ok());
  pump();
  // The changed one and the removed one are stopped, the new one starts, the unchanged one is
  // left alone. (Between different processes the order is not part of the contract.)
  Log first = holder_.take();
  std::sort(first.begin(), first.end());
  EXPECT_EQ(first, (Log{"signal a TERM", "signal b TERM", "spawn c"}));
  EXPECT_EQ(state("a"), ProcessState::kStopping);
  EXPECT_EQ(state("b"), ProcessState::kStopping);
  // The removed one is forgotten once stopped, the holder told to close it.
  holder_.exitSignal("b", SIGTERM);
  pump();
  EXPECT_EQ(holder_.take(), Log{"close b"});
  // The changed one restarts with its new spec: a full spawn, not a respawn.
  holder_.exitSignal("a", SIGTERM);
  pump();
  EXPECT_EQ(holder_.take(), Log{"spawn a"});
  const holder_proto::Spawn* spawnReq = nullptr;  // a's last
  for (const auto& r : holder_.requests()) {
    if (const auto* m = std::get_if<holder_proto::Spawn>(&r); m && m->name == "a") spawnReq = m;
  }
  ASSERT_NE(spawnReq, nullptr);
  EXPECT_EQ(spawnReq->spec.command, (std::vector<std::string>{"/bin/false"}));
  EXPECT_EQ(state("a"), ProcessState::kReady);
  EXPECT_EQ(state("keep"), ProcessState::kReady);
  EXPECT_EQ(state("c"), ProcessState::kReady);
  for (const auto& s : sup_->status()) EXPECT_NE(s.name, "b");
}

TEST_F(SupervisorEngineTest, StateFileIsWrittenAfterTheSaveDelay) {
  start({makeSpec("a")});
  const std::string path = dir_.path() + "/state.json";
  advance(49);
  EXPECT_FALSE(std::filesystem::exists(path));
  advance(1);
  EXPECT_TRUE(std::filesystem::exists(path));
}

TEST_F(SupervisorEngineTest, ZeroDelayRestartsAtOnce) {
  auto spec = makeSpec("a");
  spec.restart.delayMs = 0;
  start({spec});
  (void)holder_.take();
  (void)takeStates("a");
  for (int i = 0; i < 3; ++i) {
    holder_.exitCode("a", 1);
    pump();  // the clock does not move
    EXPECT_EQ(holder_.take(), Log{"respawn a"});
    EXPECT_EQ(state("a"), ProcessState::kReady);
    EXPECT_EQ(status("a").restarts, static_cast<uint64_t>(i + 1));
  }
  // The exit is published once per restart, with the exit that caused it.
  int exitEvents = 0;
  for (const auto& e : events_) {
    if (!e.exitEvent) continue;
    ++exitEvents;
    EXPECT_EQ(e.status.state, ProcessState::kBackoff);
    EXPECT_EQ(e.status.detail, "exit code 1; restarting now");
    ASSERT_TRUE(e.status.lastExit.has_value());
    EXPECT_EQ(e.status.lastExit->code, 1);
  }
  EXPECT_EQ(exitEvents, 3);
}

TEST_F(SupervisorEngineTest, SecondStopKeepsTheFirstSigkillDeadline) {
  holder_.ignore(SIGTERM);
  start({makeSpec("a")});
  (void)holder_.take();
  ASSERT_TRUE(sup_->stopProcess("a").ok());
  EXPECT_EQ(holder_.take(), Log{"signal a TERM"});
  advance(1'500);
  ASSERT_TRUE(sup_->stopProcess("a").ok());
  ASSERT_TRUE(sup_->restartProcess("a").ok());  // restarts once the stop completes
  EXPECT_EQ(holder_.take(), Log{});
  advance(499);
  EXPECT_EQ(holder_.take(), Log{});
  advance(1);
  EXPECT_EQ(holder_.take(), (Log{"signal a KILL", "respawn a"}));
  EXPECT_EQ(state("a"), ProcessState::kReady);
}

TEST_F(SupervisorEngineTest, StartDuringAStopStartsAgainOnceStopped) {
  holder_.ignore(SIGTERM);
  start({makeSpec("a")});
  (void)holder_.take();
  ASSERT_TRUE(sup_->stopProcess("a").ok());
  ASSERT_TRUE(sup_->startProcess("a").ok());
  EXPECT_EQ(holder_.take(), Log{"signal a TERM"});
  EXPECT_EQ(state("a"), ProcessState::kStopping);
  holder_.exitSignal("a", SIGTERM);
  pump();
  EXPECT_EQ(holder_.take(), Log{"respawn a"});
  EXPECT_EQ(state("a"), ProcessState::kReady);
}

TEST_F(SupervisorEngineTest, StopTimerOfAnEndedRunDoesNotReachTheNextRun) {
  auto spec = makeSpec("a");
  spec.readiness.kind = "notify";
  spec.readiness.timeoutMs = 500;
  spec.stopTimeoutMs = 300;
  start({spec});
  (void)holder_.take();
  advance(500);  // not ready: SIGTERM, which it dies of at once
  EXPECT_EQ(holder_.take(), Log{"signal a TERM"});
  EXPECT_EQ(state("a"), ProcessState::kBackoff);
  advance(100);
  EXPECT_EQ(holder_.take(), Log{"respawn a"});
  // 800 ms: the old run's SIGKILL deadline; the new run is not touched.
  advance(200);
  EXPECT_EQ(holder_.take(), Log{});
  // The new run has its own readiness deadline, counted from its spawn.
  advance(299);
  EXPECT_EQ(holder_.take(), Log{});
  advance(1);
  EXPECT_EQ(holder_.take(), Log{"signal a TERM"});
}

TEST_F(SupervisorEngineTest, ReadyBeforeTheSpawnReplyCountsOnceThePidIsKnown) {
  auto spec = makeSpec("a");
  spec.readiness.kind = "notify";
  holder_.useOwnPid("a");
  start({spec});
  (void)holder_.take();
  ASSERT_TRUE(holder_.notify("a", "READY=1"));
  pump();
  ASSERT_EQ(state("a"), ProcessState::kReady);
  holder_.exitCode("a", 1);
  pump();
  holder_.hold();
  advance(100);
  EXPECT_EQ(holder_.take(), Log{"respawn a"});
  // A fast process: READY=1 arrives before the holder's spawned.
  ASSERT_TRUE(holder_.notify("a", "READY=1"));
  pump();
  EXPECT_EQ(state("a"), ProcessState::kStarting);
  holder_.release();
  pump();
  EXPECT_EQ(state("a"), ProcessState::kReady);
}

TEST_F(SupervisorEngineTest, StopAllFinishesWhenTheHolderNeverSaysBye) {
  holder_.neverSayBye();
  start({makeSpec("a")});
  (void)holder_.take();
  bool done = false;
  sup_->stopAll([&] { done = true; });
  pump();
  EXPECT_EQ(holder_.take(), (Log{"signal a TERM", "shutdown"}));
  advance(4'999);  // kHolderByeTimeoutMs
  EXPECT_FALSE(done);
  advance(1);
  EXPECT_TRUE(done);
}

TEST_F(SupervisorEngineTest, CommandsOnUnknownProcessesFail) {
  start({makeSpec("a")});
  EXPECT_FALSE(sup_->startProcess("nope").ok());
  EXPECT_FALSE(sup_->stopProcess("nope").ok());
  EXPECT_FALSE(sup_->restartProcess("nope").ok());
  EXPECT_FALSE(sup_->runCommand("kill", "a").ok());
  EXPECT_TRUE(sup_->runCommand("stop", "a").ok());
  pump();
  EXPECT_EQ(state("a"), ProcessState::kStopped);
}

// A loopback port that refuses connections until listen() is called on it: bound, not listening.
class ClosedPort {
 public:
  ClosedPort() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "bind: " << ::strerror(errno);
    }
    port_ = ntohs(addr.sin_port);
  }
  int port() const { return port_; }
  void open() { ASSERT_EQ(::listen(fd_.get(), 16), 0); }

 private:
  UniqueFd fd_;
  int port_ = 0;
};

TEST_F(SupervisorEngineTest, HealthCheckFailuresMakeItUnhealthyAndStopIt) {
  ClosedPort port;
  auto spec = makeSpec("a");
  spec.health.kind = "tcp";
  spec.health.port = port.port();
  spec.health.intervalMs = 1'000;
  spec.health.timeoutMs = 500;
  spec.health.failures = 3;
  holder_.ignore(SIGTERM);
  start({spec});
  (void)holder_.take();
  ASSERT_EQ(state("a"), ProcessState::kReady);
  advanceSettled(1'000);  // failure 1
  advanceSettled(1'000);  // failure 2
  advanceSettled(999);
  EXPECT_EQ(holder_.take(), Log{});
  EXPECT_EQ(state("a"), ProcessState::kReady);
  advanceSettled(1);  // failure 3
  EXPECT_EQ(holder_.take(), Log{"signal a TERM"});
  EXPECT_EQ(state("a"), ProcessState::kUnhealthy);
  EXPECT_EQ(status("a").detail.rfind("health check failed 3 times: connect 127.0.0.1:", 0), 0u)
      << status("a").detail;
  // It ignores SIGTERM: SIGKILL after stopTimeoutMs, then the policy restarts it.
  advanceSettled(2'000);
  EXPECT_EQ(holder_.take(), Log{"signal a KILL"});
  EXPECT_EQ(state("a"), ProcessState::kBackoff);
}

TEST_F(SupervisorEngineTest, HealthyAgainWhenRestartWhenUnhealthyIsOff) {
  ClosedPort port;
  auto spec = makeSpec("a");
  spec.health.kind = "tcp";
  spec.health.port = port.port();
  spec.health.intervalMs = 1'000;
  spec.health.failures = 1;
  spec.health.restartWhenUnhealthy = false;
  start({spec});
  (void)holder_.take();
  advanceSettled(1'000);
  EXPECT_EQ(state("a"), ProcessState::kUnhealthy);
  EXPECT_EQ(holder_.take(), Log{});  // left running
  port.open();
  advanceSettled(999);
  EXPECT_EQ(state("a"), ProcessState::kUnhealthy);
  advanceSettled(1);
  EXPECT_EQ(state("a"), ProcessState::kReady);
  EXPECT_EQ(status("a").detail, "healthy again");
  EXPECT_EQ(holder_.take(), Log{});
}

TEST_F(SupervisorEngineTest, TcpReadinessRetriesUntilThePortAnswers) {
  ClosedPort port;
  auto a = makeSpec("a");
  a.readiness.kind = "tcp";
  a.readiness.port = port.port();
  a.readiness.timeoutMs = 1'000;
  auto b = makeSpec("b");
  b.dependsOn = {"a"};
  startOnly({a, b});
  settle();
  EXPECT_EQ(holder_.take(), (Log{"hello", "spawn a"}));
  ASSERT_EQ(state("a"), ProcessState::kRunning);
  // Probes at 0, 100, 200, 300 are refused; the port opens at 350; the probe at 400 connects.
  advanceSettled(100);
  advanceSettled(100);
  advanceSettled(100);
  advanceSettled(50);
  port.open();
  advanceSettled(49);
  EXPECT_EQ(state("a"), ProcessState::kRunning);
  EXPECT_EQ(holder_.take(), Log{});
  advanceSettled(1);
  EXPECT_EQ(state("a"), ProcessState::kReady);
  EXPECT_EQ(holder_.take(), Log{"spawn b"});
  advanceSettled(1'000);  // the readiness deadline is gone
  EXPECT_EQ(holder_.take(), Log{});
}

TEST_F(SupervisorEngineTest, TcpReadinessTimeoutSignalsWithStopSignal) {
  ClosedPort port;
  auto spec = makeSpec("a");
  spec.readiness.kind = "tcp";
  spec.readiness.port = port.port();
  spec.readiness.timeoutMs = 1'000;
  spec.stopSignal = SIGHUP;
  start({spec});
  settle();
  (void)holder_.take();
  for (int i = 0; i < 9; ++i) advanceSettled(100);
  advanceSettled(99);
  EXPECT_EQ(holder_.take(), Log{});
  advanceSettled(1);
  EXPECT_EQ(holder_.take(), Log{"signal a HUP"});
  EXPECT_EQ(state("a"), ProcessState::kBackoff);  // it died of SIGHUP: a failed start
}

// A zero-delay restart goes through the same dependency check as any other start: b is not
// respawned while a, its dependency, is down in backoff.
TEST_F(SupervisorEngineTest, DependentWithZeroDelayWaitsForItsDependencyToo) {
  auto a = makeSpec("a");
  a.restart.delayMs = 1'000;
  auto b = makeSpec("b");
  b.dependsOn = {"a"};
  b.restart.delayMs = 0;
  start({a, b});
  EXPECT_EQ(holder_.take(), (Log{"hello", "spawn a", "spawn b"}));
  holder_.exitCode("a", 1);  // a: backoff 1000 ms, not ready meanwhile
  pump();
  holder_.exitCode("b", 1);
  pump();
  EXPECT_EQ(holder_.take(), Log{});
  EXPECT_EQ(state("b"), ProcessState::kStarting);
  advance(1'000);
  EXPECT_EQ(holder_.take(), (Log{"respawn a", "respawn b"}));
}

TEST_F(SupervisorEngineTest, ReadoptsARunningProcessWithoutSpawningIt) {
  holder_.preload("a");
  start({makeSpec("a")});
  EXPECT_EQ(holder_.take(), Log{"hello"});
  EXPECT_EQ(state("a"), ProcessState::kReady);
  EXPECT_EQ(status("a").detail, "re-adopted");
  EXPECT_EQ(status("a").pid, holder_.pid("a"));
  // This ring2d never sent the holder its spec: the restart sends it in full.
  holder_.exitCode("a", 1);
  pump();
  advance(100);
  EXPECT_EQ(holder_.take(), Log{"spawn a"});
  EXPECT_EQ(state("a"), ProcessState::kReady);
}

// A supervisor destroyed with a restart delay and a state-file save still to come leaves no timer
// behind: none of its callbacks runs on it afterwards (ASan once caught a save doing so).
TEST_F(SupervisorEngineTest, ADestroyedSupervisorLeavesNoTimerBehind) {
  start({makeSpec("a")});
  holder_.exitCode("a", 1);
  pump();
  ASSERT_EQ(state("a"), ProcessState::kBackoff);
  ASSERT_TRUE(reactor_->nextDeadline().has_value());
  sup_.reset();
  EXPECT_EQ(reactor_->nextDeadline(), std::nullopt);
  advance(10'000);
}

TEST_F(SupervisorEngineTest, ActsOnAnExitThatHappenedWhileNoRing2dWasThere) {
  ExitInfo crashed;
  crashed.kind = ExitInfo::Kind::kSignaled;
  crashed.signal = SIGSEGV;
  holder_.preload("a", crashed, /*exitReported=*/false);
  start({makeSpec("a")});
  EXPECT_EQ(holder_.take(), Log{"hello"});
  EXPECT_EQ(state("a"), ProcessState::kBackoff);
  EXPECT_EQ(status("a").detail, "signal SIGSEGV; restart in 100 ms");
  advance(99);
  EXPECT_EQ(holder_.take(), Log{});
  advance(1);
  EXPECT_EQ(holder_.take(), Log{"spawn a"});
}

TEST_F(SupervisorEngineTest, StopsAndForgetsAHeldProcessThatLeftTheSpec) {
  holder_.preload("old");
  start({makeSpec("a")});
  EXPECT_EQ(holder_.take(), (Log{"hello", "signal old TERM", "spawn a", "close old"}));
  for (const auto& s : sup_->status()) EXPECT_NE(s.name, "old");
  EXPECT_EQ(state("a"), ProcessState::kReady);
}

}  // namespace
}  // namespace engine_test
}  // namespace enjin::supervise
