// The isolation policy: compartments' min_isolation in the directory, the checks of a node's
// strategy against a demand, and the config check refusing a ring-2 node weaker than its ring-1
// node demands.
#include "enjin/ring/isolation_policy.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "enjin/directory/directory.hpp"
#include "enjin/ring/config.hpp"
#include "enjin/ring/daemon.hpp"
#include "enjin/ring/node_spec_json.hpp"
#include "enjin/store/store.hpp"
#include "enjin/supervise/spawn.hpp"
#include "fakes/fake_clock.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::ring {
namespace {

using directory::Directory;
using directory::Kind;
using nlohmann::json;
using supervise::IsolationStrength;

supervise::SpawnRegistry nodeRegistry() {
  supervise::SpawnRegistry r;
  r.add(supervise::makeExecStrategy());
  r.add(supervise::makeUnixUserStrategy());
  r.add(supervise::makeSandboxStrategy());
  return r;
}

NodeSpec node(const std::string& label, const std::string& strategy,
              const std::string& compartment = "") {
  NodeSpec n;
  n.label = label;
  n.strategy = strategy;
  n.compartment = compartment;
  return n;
}

class CompartmentIsolationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = store::Store::open(dir_ / "ring0.db");
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(*s);
    directory_ = std::make_unique<Directory>(*store_, clock_);
  }
  json make(const std::string& bodyText) {
    auto r = directory_->create(Kind::kCompartment, json::parse(bodyText));
    EXPECT_TRUE(r.ok()) << bodyText << ": " << r.error().message;
    return r.ok() ? *r : json();
  }
  Directory::IsolationDemand demand(const std::string& name) {
    auto r = directory_->minIsolation(name);
    EXPECT_TRUE(r.ok()) << name << ": " << r.error().message;
    return r.ok() ? *r : Directory::IsolationDemand{"?", "?"};
  }

  testing::TempDir dir_;
  testing::FakeClock clock_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<Directory> directory_;
};

// The directory's words are the strengths' names, weakest first.
TEST(IsolationNames, DirectoryLevelsAreTheStrengthsNamesInOrder) {
  const auto levels = directory::isolationLevels();
  ASSERT_EQ(levels.size(), 4u);
  const IsolationStrength all[] = {IsolationStrength::kNone, IsolationStrength::kUser,
                                   IsolationStrength::kSandbox, IsolationStrength::kVm};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(levels[i], supervise::isolationName(all[i]));
    EXPECT_EQ(directory::isolationRank(levels[i]), static_cast<int>(i));
    auto parsed = parseIsolation(levels[i]);
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, all[i]);
  }
  EXPECT_EQ(directory::isolationRank("none"), -1);
  auto bad = parseIsolation("strong");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, 400);
  EXPECT_EQ(bad.error().message, "'strong': expected one of exec, unix-user, sandbox, vm");
}

TEST_F(CompartmentIsolationTest, MinIsolationIsOptionalStoredAndReturned) {
  // The shape without it still works; it comes back as null.
  json plain = make(R"({"name":"world"})");
  EXPECT_TRUE(plain["min_isolation"].is_null());
  json pci = make(R"({"name":"pci","parent_compartment":"world","min_isolation":"sandbox"})");
  EXPECT_EQ(pci["min_isolation"], "sandbox");
  auto got = directory_->get(Kind::kCompartment, "pci");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)["min_isolation"], "sandbox");
  EXPECT_EQ((*got)["parent_compartment"], "world");
  // PUT replaces it, and may drop it.
  auto upd = directory_->update(Kind::kCompartment, "pci", {{"min_isolation", "vm"}});
  ASSERT_TRUE(upd.ok()) << upd.error().message;
  EXPECT_EQ((*directory_->get(Kind::kCompartment, "pci"))["min_isolation"], "vm");
  upd = directory_->update(Kind::kCompartment, "pci", {{"min_isolation", nullptr}});
  ASSERT_TRUE(upd.ok()) << upd.error().message;
  EXPECT_TRUE((*directory_->get(Kind::kCompartment, "pci"))["min_isolation"].is_null());
}

TEST_F(CompartmentIsolationTest, ABadMinIsolationIs400NamingTheValueAndTheKnownNames) {
  auto r = directory_->create(Kind::kCompartment, json{{"name", "pci"}, {"min_isolation", "strong"}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, 400);
  EXPECT_EQ(r.error().message,
            "compartment 'pci': min_isolation: 'strong': expected one of exec, unix-user, sandbox, vm");
  r = directory_->create(Kind::kCompartment, json{{"name", "pci"}, {"min_isolation", 2}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, 400);
  EXPECT_EQ(r.error().message,
            "compartment 'pci': min_isolation: 2: expected one of exec, unix-user, sandbox, vm");
  EXPECT_EQ(directory_->get(Kind::kCompartment, "pci").error().code, 404);
  make(R"({"name":"pci"})");
  auto upd = directory_->update(Kind::kCompartment, "pci", {{"min_isolation", "user"}});
  ASSERT_FALSE(upd.ok());
  EXPECT_EQ(upd.error().code, 400);
  EXPECT_TRUE((*directory_->get(Kind::kCompartment, "pci"))["min_isolation"].is_null());
}

// The effective minimum is the strongest over the compartment and every ancestor, through a DAG.
TEST_F(CompartmentIsolationTest, EffectiveMinimumIsTheMaxOverItselfAndItsAncestors) {
  make(R"({"name":"root","min_isolation":"unix-user"})");
  make(R"({"name":"pci","parent_compartment":"root","min_isolation":"sandbox"})");
  make(R"({"name":"eu","parent_compartment":"root"})");
  make(R"({"name":"pci-eu","parent_compartment":["eu","pci"],"min_isolation":"exec"})");
  make(R"({"name":"free"})");
  auto d = demand("pci-eu");
  EXPECT_EQ(d.level, "sandbox");
  EXPECT_EQ(d.from, "pci");
  d = demand("eu");
  EXPECT_EQ(d.level, "unix-user");
  EXPECT_EQ(d.from, "root");
  d = demand("pci");
  EXPECT_EQ(d.level, "sandbox");
  EXPECT_EQ(d.from, "pci");
  d = demand("free");
  EXPECT_EQ(d.level, "");
  EXPECT_EQ(d.from, "");
  // Raising an ancestor raises everything below it.
  ASSERT_TRUE(directory_->update(Kind::kCompartment, "root", {{"min_isolation", "vm"}}).ok());
  d = demand("pci-eu");
  EXPECT_EQ(d.level, "vm");
  EXPECT_EQ(d.from, "root");
  auto none = directory_->minIsolation("nowhere");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, 404);
  EXPECT_EQ(none.error().message, "compartment 'nowhere' does not exist");
}

TEST(CheckIsolation, RefusesAWeakerStrategyWith409NamingBoth) {
  const auto reg = nodeRegistry();
  auto st = checkIsolation(node("shop", "unix-user"), "sandbox", "compartment 'pci'", reg);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, 409);
  EXPECT_EQ(st.error().message,
            "compartment 'pci' requires isolation ≥ sandbox; node 'shop' asks for unix-user");
  st = checkIsolation(node("shop", "exec"), "unix-user", "compartment 'pci'", reg);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message,
            "compartment 'pci' requires isolation ≥ unix-user; node 'shop' asks for exec");
  st = checkIsolation(node("shop", "sandbox"), "vm", "compartment 'pci'", reg);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message,
            "compartment 'pci' requires isolation ≥ vm; node 'shop' asks for sandbox");
}

TEST(CheckIsolation, AnEqualOrStrongerStrategyOrNoDemandPasses) {
  const auto reg = nodeRegistry();
  EXPECT_TRUE(checkIsolation(node("shop", "sandbox"), "sandbox", "compartment 'pci'", reg).ok());
  EXPECT_TRUE(checkIsolation(node("shop", "sandbox"), "unix-user", "compartment 'pci'", reg).ok());
  EXPECT_TRUE(checkIsolation(node("shop", "unix-user"), "exec", "compartment 'pci'", reg).ok());
  EXPECT_TRUE(checkIsolation(node("shop", "exec"), "", "compartment 'pci'", reg).ok());
  // An unknown strategy is not a policy refusal: the registry's message, as a 400.
  auto st = checkIsolation(node("shop", "vm"), "sandbox", "compartment 'pci'", reg);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, 400);
  EXPECT_EQ(st.error().message,
            "node 'shop': unknown spawn strategy 'vm' (known: exec, sandbox, unix-user)");
}

TEST(CheckIsolation, Ring1NodesDemandForItsRing2Nodes) {
  const auto reg = nodeRegistry();
  NodeSpec infra = node("infra", "exec");
  infra.minIsolation = "sandbox";
  auto st = checkRing1Isolation(infra, node("shop", "exec"), reg);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, 409);
  EXPECT_EQ(st.error().message,
            "ring-1 node 'infra' requires isolation ≥ sandbox for its ring-2 nodes; node 'shop' "
            "asks for exec");
  EXPECT_TRUE(checkRing1Isolation(infra, node("shop", "sandbox"), reg).ok());
  infra.minIsolation.clear();
  EXPECT_TRUE(checkRing1Isolation(infra, node("shop", "exec"), reg).ok());
}

TEST_F(CompartmentIsolationTest, ANodesCompartmentDemandNamesWhereItComesFrom) {
  const auto reg = nodeRegistry();
  make(R"({"name":"pci","min_isolation":"sandbox"})");
  make(R"({"name":"pci-eu","parent_compartment":"pci"})");
  make(R"({"name":"free"})");
  auto st = checkCompartmentIsolation(node("shop", "unix-user", "pci"), *directory_, reg);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, 409);
  EXPECT_EQ(st.error().message,
            "compartment 'pci' requires isolation ≥ sandbox; node 'shop' asks for unix-user");
  st = checkCompartmentIsolation(node("shop", "exec", "pci-eu"), *directory_, reg);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message,
            "compartment 'pci-eu' (through 'pci') requires isolation ≥ sandbox; node 'shop' asks "
            "for exec");
  EXPECT_TRUE(checkCompartmentIsolation(node("shop", "sandbox", "pci-eu"), *directory_, reg).ok());
  EXPECT_TRUE(checkCompartmentIsolation(node("shop", "exec", "free"), *directory_, reg).ok());
  EXPECT_TRUE(checkCompartmentIsolation(node("shop", "exec"), *directory_, reg).ok());
  st = checkCompartmentIsolation(node("shop", "exec", "gone"), *directory_, reg);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, 404);
}

// ring0d --check-config: a [[ring1]] table's min_isolation holds its ring-2 nodes.
TEST(IsolationConfig, CheckConfigRefusesAWeakRing2NodeUnderMinIsolation) {
  const auto nodes = nodeRegistry();
  supervise::SpawnRegistry processes;
  processes.add(supervise::makeExecStrategy());
  auto check = [&](const std::string& text) -> Status {
    auto c = parseConfig(text, "r0.toml", 0);
    if (!c.ok()) return c.error();
    return checkConfig(*c, nodes, processes);
  };
  const std::string head =
      "[[ring1]]\nlabel = \"infra\"\nmin_isolation = \"sandbox\"\ntenant_uids = \"60000-60999\"\n";
  auto weak = check(head + "  [[ring1.ring2]]\n  label = \"ok\"\n  strategy = \"sandbox\"\n" +
                    "  [[ring1.ring2]]\n  label = \"shop\"\n");
  ASSERT_FALSE(weak.ok());
  EXPECT_EQ(weak.error().code, 409);
  EXPECT_EQ(weak.error().message,
            "r0.toml: ring-1 node 'infra' requires isolation ≥ sandbox for its ring-2 nodes; node "
            "'shop' asks for exec");
  auto user = check(head + "  [[ring1.ring2]]\n  label = \"shop\"\n  strategy = \"unix-user\"\n");
  ASSERT_FALSE(user.ok());
  EXPECT_EQ(user.error().message,
            "r0.toml: ring-1 node 'infra' requires isolation ≥ sandbox for its ring-2 nodes; node "
            "'shop' asks for unix-user");
  EXPECT_TRUE(check(head + "  [[ring1.ring2]]\n  label = \"shop\"\n  strategy = \"sandbox\"\n").ok());
  // Without the demand the same exec node is fine; another ring-1 node's demand is its own.
  EXPECT_TRUE(check("[[ring1]]\nlabel = \"infra\"\n  [[ring1.ring2]]\n  label = \"shop\"\n"
                    "[[ring1]]\nlabel = \"pci\"\nmin_isolation = \"vm\"\n")
                  .ok());
}

TEST(IsolationConfig, MinIsolationIsARing1KeyWithAKnownName) {
  auto bad = parseConfig("[[ring1]]\nlabel = \"infra\"\nmin_isolation = \"strong\"\n", "r0.toml", 0);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find(
                "min_isolation: 'strong': expected one of exec, unix-user, sandbox, vm"),
            std::string::npos)
      << bad.error().message;
  auto ring2 = parseConfig(
      "[[ring1]]\nlabel = \"infra\"\n  [[ring1.ring2]]\n  label = \"s\"\n  min_isolation = \"vm\"\n",
      "r0.toml", 0);
  ASSERT_FALSE(ring2.ok());
  EXPECT_NE(ring2.error().message.find("min_isolation"), std::string::npos) << ring2.error().message;
  auto good = parseConfig("[[ring1]]\nlabel = \"infra\"\nmin_isolation = \"unix-user\"\n", "r0.toml", 0);
  ASSERT_TRUE(good.ok()) << good.error().message;
  EXPECT_EQ(good->nodes.at(0).minIsolation, "unix-user");
}

// The ring-1 node's spec carries it down to its ring1d, which holds the nodes its API makes to it.
TEST(IsolationConfig, MinIsolationTravelsInTheNodeSpec) {
  NodeSpec infra = node("infra", "exec");
  infra.minIsolation = "sandbox";
  json j = nodeSpecToJson(infra);
  EXPECT_EQ(j["min_isolation"], "sandbox");
  auto back = nodeSpecFromJson(j, 1);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, infra);
  // Unset, it is not written, so the digests of existing specs stay as they were.
  EXPECT_FALSE(nodeSpecToJson(node("infra", "exec")).contains("min_isolation"));
  j["min_isolation"] = "strong";
  EXPECT_FALSE(nodeSpecFromJson(j, 1).ok());
  json leaf = nodeSpecToJson(node("shop", "exec"));
  leaf["min_isolation"] = "vm";
  auto ring2 = nodeSpecFromJson(leaf, 2);
  ASSERT_FALSE(ring2.ok());
  EXPECT_EQ(ring2.error().message, "node 'shop': min_isolation: only a ring-1 node has ring-2 nodes");
}

}  // namespace
}  // namespace enjin::ring
