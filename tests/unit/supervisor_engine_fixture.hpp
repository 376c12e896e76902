// The fixture of the supervision engine's in-process tests (supervisor_engine_*_test.cpp): a
// Supervisor on a FakeClock, talking to a FakeHolder. No process is forked and no test sleeps,
// so every delay is checked to the millisecond: a timer that fires 1 ms early or late fails.
#pragma once
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "enjin/reactor/reactor.hpp"
#include "enjin/supervise/observation.hpp"
#include "enjin/supervise/supervisor.hpp"
#include "fakes/fake_clock.hpp"
#include "fakes/fake_holder.hpp"
#include "fakes/observations.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::supervise {

// Failures name the state rather than print its bytes. Found by gtest through ADL.
inline void PrintTo(ProcessState s, std::ostream* os) {
  *os << stateName(s);
}

namespace engine_test {

using Log = std::vector<std::string>;

// A process that restarts on the 100 ms backoff, with room for many restarts.
inline ProcessSpec makeSpec(const std::string& name) {
  ProcessSpec s;
  s.name = name;
  s.command = {"/bin/true"};
  s.restart.mode = RestartMode::kAlways;
  s.restart.delayMs = 100;
  s.restart.backoffMaxMs = 30'000;
  s.restart.stableAfterMs = 10'000;
  s.restart.maxRestarts = 100;
  s.restart.windowS = 60;
  s.stopSignal = SIGTERM;
  s.stopTimeoutMs = 2'000;
  return s;
}

class SupervisorEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Reactor::create(clock_);
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(r).value();
  }
  void TearDown() override {
    sup_.reset();  // before the fake it talks to
  }

  // Starts the supervisor on `specs`; the holder's answers are not read yet.
  void startOnly(std::vector<ProcessSpec> specs) {
    SupervisorOptions options(dir_.path(), "/nonexistent/enjin-holder");
    options.connectHolder = holder_.connector();
    options.observations = &observations_;
    sup_ = std::make_unique<Supervisor>(*reactor_, std::move(options), [this] { return random_; });
    sup_->setObserver([this](const StateEvent& e) { events_.push_back(e); });
    auto st = sup_->start(std::move(specs));
    ASSERT_TRUE(st.ok()) << st.error().message;
  }
  void start(std::vector<ProcessSpec> specs) {
    startOnly(std::move(specs));
    pump();
  }

  // Runs everything that is ready now (replies, due timers, and what they cause), without
  // letting the clock move.
  void pump() {
    for (int i = 0; i < 1000 && reactor_->runOnce(0) > 0; ++i) {
    }
  }
  void advance(int64_t ms) {
    clock_.advanceMillis(ms);
    pump();
  }
  // For tests with real sockets (tcp probes on loopback): also gives the kernel a few real
  // milliseconds to answer, until nothing has happened for 5 ms. The fake clock stands still.
  void settle() {
    for (int i = 0, idle = 0; i < 500 && idle < 5; ++i)
      idle = reactor_->runOnce(1) > 0 ? 0 : idle + 1;
  }
  void advanceSettled(int64_t ms) {
    clock_.advanceMillis(ms);
    settle();
  }

  ProcessStatus status(const std::string& name) const {
    for (auto& s : sup_->status()) {
      if (s.name == name) return s;
    }
    ADD_FAILURE() << "no process " << name;
    return {};
  }
  ProcessState state(const std::string& name) const { return status(name).state; }

  // The states published for `name` since the last call, by name.
  std::vector<std::string> takeStates(const std::string& name) {
    std::vector<std::string> out;
    for (const auto& e : events_) {
      if (e.status.name == name) out.emplace_back(stateName(e.status.state));
    }
    std::erase_if(events_, [&](const StateEvent& e) { return e.status.name == name; });
    return out;
  }

  // `name` exits with `code` and the supervisor has read it; then it must respawn exactly
  // `delayMs` later, and not a millisecond sooner.
  void expectRespawnAfter(const std::string& name, int64_t delayMs, int code = 1) {
    SCOPED_TRACE("restart after " + std::to_string(delayMs) + " ms");
    holder_.exitCode(name, code);
    pump();
    EXPECT_EQ(state(name), ProcessState::kBackoff);
    EXPECT_EQ(status(name).detail, "exit code " + std::to_string(code) + "; restart in " +
                                       std::to_string(delayMs) + " ms");
    advance(delayMs - 1);
    EXPECT_EQ(holder_.take(), Log{});
    EXPECT_EQ(state(name), ProcessState::kBackoff);
    advance(1);
    EXPECT_EQ(holder_.take(), Log{"respawn " + name});
    EXPECT_EQ(state(name), ProcessState::kReady);
  }

  testing::FakeClock clock_;
  std::unique_ptr<Reactor> reactor_;
  testing::TempDir dir_;
  testing::FakeHolder holder_;
  ObservationRegistry observations_ = testing::allObservations();
  // The top of the jitter range: each backoff delay is exactly its step.
  uint64_t random_ = std::numeric_limits<uint64_t>::max();
  std::vector<StateEvent> events_;
  std::unique_ptr<Supervisor> sup_;
};

}  // namespace engine_test
}  // namespace enjin::supervise
