// The observation registry: kinds by name, each fit for some uses, probes only from polled ones.
#include <gtest/gtest.h>

#include "enjin/base/clock.hpp"
#include "enjin/supervise/observation.hpp"
#include "fakes/observations.hpp"

namespace enjin::supervise {
namespace {

ObservationRegistry standard() { return testing::allObservations(); }

TEST(ObservationRegistry, FindsEachKindByNameAndListsTheKnownOnesOtherwise) {
  const auto r = standard();
  for (const char* name : {"process", "notify", "heartbeat", "tcp", "http", "exec"}) {
    auto found = r.find(name);
    ASSERT_TRUE(found.ok()) << name;
    EXPECT_EQ((*found)->name(), name);
  }
  auto missing = r.find("grpc");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message,
            "unknown observation 'grpc' (known: exec, heartbeat, http, notify, process, tcp)");
}

TEST(ObservationRegistry, ChecksWhatEachKindMayBeUsedFor) {
  const auto r = standard();
  EXPECT_TRUE(r.check("none", CheckUse::kReadiness).ok());
  EXPECT_TRUE(r.check("none", CheckUse::kHealth).ok());
  EXPECT_TRUE(r.check("notify", CheckUse::kReadiness).ok());
  EXPECT_TRUE(r.check("tcp", CheckUse::kHealth).ok());
  EXPECT_TRUE(r.check("http", CheckUse::kReadiness).ok());
  EXPECT_TRUE(r.check("exec", CheckUse::kHealth).ok());
  auto notifyHealth = r.check("notify", CheckUse::kHealth);
  ASSERT_FALSE(notifyHealth.ok());
  EXPECT_EQ(notifyHealth.error().message,
            "observation 'notify' cannot be a health check (these can: exec, http, tcp)");
  auto execReady = r.check("exec", CheckUse::kReadiness);
  ASSERT_FALSE(execReady.ok());
  EXPECT_EQ(execReady.error().message,
            "observation 'exec' cannot be a readiness check (these can: http, notify, tcp)");
  EXPECT_FALSE(r.check("process", CheckUse::kReadiness).ok());
  EXPECT_FALSE(r.check("nope", CheckUse::kHealth).ok());
}

TEST(ObservationRegistry, OnlyPolledKindsMakeProbes) {
  const auto r = standard();
  SystemClock clock;
  auto reactor = Reactor::create(clock);
  ASSERT_TRUE(reactor.ok());
  CheckTarget target;
  target.host = "127.0.0.1";
  target.port = 1;
  target.url = "http://127.0.0.1:1/";
  target.command = {"/bin/true"};
  target.timeoutMs = 100;
  for (const char* name : {"tcp", "http", "exec"}) {
    const auto* s = *r.find(name);
    EXPECT_TRUE(s->polled()) << name;
    auto probe = s->makeProbe(**reactor, target);
    ASSERT_TRUE(probe.ok()) << name << ": " << probe.error().message;
    EXPECT_NE(*probe, nullptr);
  }
  for (const char* name : {"process", "notify", "heartbeat"}) {
    const auto* s = *r.find(name);
    EXPECT_FALSE(s->polled()) << name;
    auto probe = s->makeProbe(**reactor, target);
    ASSERT_FALSE(probe.ok()) << name;
    EXPECT_EQ(probe.error().message, "observation '" + std::string(name) + "' is not polled");
  }
  target.url = "ftp://x/";
  EXPECT_FALSE((*r.find("http"))->makeProbe(**reactor, target).ok());
}

}  // namespace
}  // namespace enjin::supervise
