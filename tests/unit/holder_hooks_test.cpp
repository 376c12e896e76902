// The holder calls a spawn strategy's hooks: recover() when a new supervisor takes back a running
// process, signal() for every signal, cleanup() after the reaped exit. An in-process Holder with
// a counting strategy, driven through a real HolderClient on its socket, on one thread.
#include <signal.h>
#include <sys/prctl.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "enjin/base/clock.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/supervise/holder.hpp"
#include "enjin/supervise/holder_protocol.hpp"
#include "enjin/supervise/spawn.hpp"
#include "enjin/supervise/spec_json.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::supervise {
namespace {

namespace proto = holder_proto;

struct Calls {
  int spawn = 0, recover = 0, cleanup = 0;
  std::vector<int> signals;
  pid_t recoveredPid = 0;
};

// exec, counting what the holder asks of it.
class CountingStrategy final : public SpawnStrategy {
 public:
  explicit CountingStrategy(Calls& calls) : calls_(calls) {}
  std::string_view name() const override { return "counting"; }
  Result<SpawnedProcess> spawn(const SpawnRequest& request) const override {
    ++calls_.spawn;
    return exec_->spawn(request);
  }
  Status signal(const SpawnedRef& process, int sig, bool group) const override {
    calls_.signals.push_back(sig);
    return SpawnStrategy::signal(process, sig, group);
  }
  Status recover(const ProcessSpec&, const SpawnedRef& process) const override {
    ++calls_.recover;
    calls_.recoveredPid = process.pid;
    return {};
  }
  void cleanup(const ProcessSpec&, const SpawnedRef&) const override { ++calls_.cleanup; }

 private:
  Calls& calls_;
  std::unique_ptr<SpawnStrategy> exec_ = makeExecStrategy();
};

class HolderHooksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The holder blocks SIGCHLD and becomes the subreaper: both are given back afterwards.
    ::pthread_sigmask(SIG_SETMASK, nullptr, &savedMask_);
    auto r = Reactor::create(clock_);
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(*r);
    registry_.add(std::make_unique<CountingStrategy>(calls_));
    holder_ = std::make_unique<Holder>(*reactor_, registry_, socket());
    auto st = holder_->start();
    ASSERT_TRUE(st.ok()) << st.error().message;
  }
  void TearDown() override {
    client_.reset();
    holder_.reset();
    ::prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
    ::pthread_sigmask(SIG_SETMASK, &savedMask_, nullptr);
  }
  std::string socket() const { return dir_.path() + "/holder.sock"; }

  // A new supervisor: connects, says hello, returns the slots the holder reports.
  std::vector<proto::Slot> hello() {
    client_.reset();
    auto c = HolderClient::connectOrLaunch(socket(), "/nonexistent/enjin-holder", dir_.path() + "/log");
    EXPECT_TRUE(c.ok()) << c.error().message;
    if (!c.ok()) return {};
    client_ = std::move(*c);
    send(proto::Hello{});
    std::vector<proto::Slot> slots;
    for (;;) {
      auto reply = next();
      if (!reply) return slots;
      if (std::holds_alternative<proto::HelloDone>(*reply)) return slots;
      if (auto* s = std::get_if<proto::Slot>(&*reply)) slots.push_back(*s);
    }
  }
  void send(const proto::Request& request) {
    auto st = client_->send(proto::encode(request));
    ASSERT_TRUE(st.ok()) << st.error().message;
  }
  // The holder's next reply, turning its reactor meanwhile (bounded: 10 s).
  std::optional<proto::Reply> next() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      reactor_->runOnce(10);
      std::string text;
      std::vector<UniqueFd> fds;
      auto got = client_->receive(text, fds);
      if (!got.ok()) {
        ADD_FAILURE() << got.error().message;
        return std::nullopt;
      }
      if (!*got) continue;
      auto reply = proto::decodeReply(text);
      if (!reply.ok()) {
        ADD_FAILURE() << reply.error().message;
        return std::nullopt;
      }
      return std::move(*reply);
    }
    ADD_FAILURE() << "no reply from the holder within 10 s";
    return std::nullopt;
  }
  template <typename T>
  T expect() {
    for (;;) {
      auto reply = next();
      if (!reply) return T{};
      if (auto* m = std::get_if<T>(&*reply)) return *m;
    }
  }

  SystemClock clock_;
  testing::TempDir dir_;
  std::unique_ptr<Reactor> reactor_;
  Calls calls_;
  SpawnRegistry registry_;
  std::unique_ptr<Holder> holder_;
  std::unique_ptr<HolderClient> client_;
  sigset_t savedMask_;
};

TEST_F(HolderHooksTest, RecoverOnReadoptionSignalThroughTheStrategyCleanupAfterTheExit) {
  EXPECT_TRUE(hello().empty());
  ProcessSpec spec;
  spec.name = "sleeper";
  spec.command = {"/bin/sleep", "600"};
  spec.strategy = "counting";
  send(proto::Spawn{spec.name, spec, {}, std::nullopt, {}});
  const auto spawned = expect<proto::Spawned>();
  ASSERT_GT(spawned.pid, 0);
  EXPECT_EQ(calls_.spawn, 1);
  EXPECT_EQ(calls_.recover, 0);  // the first supervisor spawned it: nothing to take back

  // The supervisor goes; the next one says hello and gets the process back.
  const auto slots = hello();
  ASSERT_EQ(slots.size(), 1u);
  EXPECT_TRUE(slots[0].running);
  EXPECT_EQ(slots[0].pid, spawned.pid);
  EXPECT_EQ(calls_.recover, 1);
  EXPECT_EQ(calls_.recoveredPid, spawned.pid);

  send(proto::Signal{spec.name, SIGTERM, true});
  const auto exited = expect<proto::Exited>();
  EXPECT_EQ(exited.pid, spawned.pid);
  EXPECT_EQ(exited.exit.kind, ExitInfo::Kind::kSignaled);
  EXPECT_EQ(exited.exit.signal, SIGTERM);
  // The stop signal, then SIGKILL to what is left of its group before the leader is reaped.
  EXPECT_EQ(calls_.signals, (std::vector<int>{SIGTERM, SIGKILL}));
  EXPECT_EQ(calls_.cleanup, 1);

  // A process that is not running is not recovered again.
  hello();
  EXPECT_EQ(calls_.recover, 1);
}

TEST_F(HolderHooksTest, AnOrphanStopProcessIsStoppedWhenNoSupervisorCameBackInTime) {
  EXPECT_TRUE(hello().empty());
  ProcessSpec fenced;
  fenced.name = "fenced";
  fenced.command = {"/bin/sleep", "600"};
  fenced.strategy = "counting";
  fenced.orphanStopMs = 300;
  ProcessSpec waits = fenced;
  waits.name = "waits";
  waits.orphanStopMs = 0;
  send(proto::Spawn{fenced.name, fenced, {}, std::nullopt, {}});
  const pid_t fencedPid = expect<proto::Spawned>().pid;
  send(proto::Spawn{waits.name, waits, {}, std::nullopt, {}});
  const pid_t waitsPid = expect<proto::Spawned>().pid;
  ASSERT_GT(fencedPid, 0);
  ASSERT_GT(waitsPid, 0);

  // A supervisor that comes back in time keeps both.
  client_.reset();
  for (int i = 0; i < 10; ++i) reactor_->runOnce(10);
  auto slots = hello();
  ASSERT_EQ(slots.size(), 2u);
  for (const auto& s : slots) EXPECT_TRUE(s.running) << s.name;

  // One that stays away longer than 300 ms: the orphan-stop process gets its stop signal and is
  // reaped; the other runs on, waiting to be re-adopted.
  client_.reset();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline && ::kill(fencedPid, 0) == 0) {
    reactor_->runOnce(20);
  }
  EXPECT_NE(::kill(fencedPid, 0), 0) << "the orphan-stop process still runs";
  EXPECT_EQ(::kill(waitsPid, 0), 0);
  slots = hello();
  ASSERT_EQ(slots.size(), 2u);
  for (const auto& s : slots) {
    if (s.name == "fenced") {
      EXPECT_FALSE(s.running);
      ASSERT_TRUE(s.exit.has_value());
      EXPECT_EQ(s.exit->signal, SIGTERM);
    } else {
      EXPECT_TRUE(s.running);
    }
  }
  send(proto::Signal{waits.name, SIGKILL, true});
  expect<proto::Exited>();
}

}  // namespace
}  // namespace enjin::supervise
