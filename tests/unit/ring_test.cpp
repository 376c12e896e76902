// The pure parts of the hierarchy: daemon configs, node specs on the wire, tree differences.
#include <gtest/gtest.h>

#include "enjin/ring/config.hpp"
#include "enjin/ring/daemon.hpp"
#include "enjin/ring/messages.hpp"
#include "enjin/ring/node_spec_json.hpp"
#include "enjin/ring/tree.hpp"
#include "enjin/supervise/spawn.hpp"

namespace enjin::ring {
namespace {

using nlohmann::json;

const char* kRing0 = R"(
state_dir = "/srv/enjin/r0"
heartbeat_ms = 250
heartbeat_timeout_ms = 2000
[[ring1]]
label = "infra-1"
compartment = "rack-3"
  [[ring1.ring2]]
  label = "shop"
    [[ring1.ring2.process]]
    name = "web"
    command = ["/bin/sleep", "1000"]
  [[ring1.ring2]]
  label = "blog"
[[ring1]]
label = "infra-2"
)";

TEST(RingConfig, ReadsRing0dsConfigWithDefaults) {
  auto c = parseConfig(kRing0, "r0.toml", 0);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->stateDir, "/srv/enjin/r0");
  EXPECT_EQ(c->heartbeatMs, 250);
  EXPECT_EQ(c->heartbeatTimeoutMs, 2000);
  EXPECT_EQ(c->key, "/srv/enjin/r0/ring0.key");
  EXPECT_EQ(c->down, "ipc:///srv/enjin/r0/down.sock");
  EXPECT_EQ(c->up, "ipc:///srv/enjin/r0/up.sock");
  EXPECT_EQ(c->observe, "ipc:///srv/enjin/r0/out.sock");
  ASSERT_EQ(c->nodes.size(), 2u);
  EXPECT_EQ(c->nodes[0].compartment, "rack-3");
  ASSERT_EQ(c->nodes[0].nodes.size(), 2u);
  ASSERT_EQ(c->nodes[0].nodes[0].processes.size(), 1u);
  EXPECT_EQ(c->nodes[0].nodes[0].processes[0].command[0], "/bin/sleep");
  EXPECT_TRUE(c->nodes[0].nodes[1].processes.empty());
  EXPECT_TRUE(c->nodes[1].nodes.empty());
  // A --state-dir flag moves the defaults with it.
  auto moved = parseConfig(kRing0, "r0.toml", 0, "/other");
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(moved->down, "ipc:///other/down.sock");
}

TEST(RingConfig, ErrorsNameTheFileTheLineAndTheKey) {
  struct Case {
    std::string text, expect;
  };
  const std::vector<Case> cases = {
      {"bogus = 1\n", "r0.toml:1: unknown key 'bogus'"},
      {"[[ring1]]\nlable = \"x\"\n", "unknown key 'lable'"},
      {"[[ring1]]\nlabel = \"a.b\"\n", "label: expected 1 to 64 of"},
      {"[[ring1]]\nlabel = \"a\"\n[[ring1]]\nlabel = \"a\"\n", "r0.toml:3: ring1 node 'a': label: duplicate, already used at line 1"},
      {"[[ring1]]\nlabel = \"a\"\n  [[ring1.ring2]]\n  label = \"s\"\n  [[ring1.ring2]]\n  label = \"s\"\n",
       "duplicate"},
      {"[[ring1]]\nlabel = \"a\"\n  [[ring1.ring2]]\n  label = \"s\"\n    [[ring1.ring2.process]]\n"
       "    name = \"w\"\n    command = [\"/bin/true\"]\n    restart = \"sometimes\"\n",
       "r0.toml:8: process 'w': restart"},
      {"heartbeat_ms = 1000\nheartbeat_timeout_ms = 1000\n", "must be longer than heartbeat_ms"},
      {"heartbeat_ms = \"1s\"\n", "heartbeat_ms: expected an integer"},
      {"state_dir = \"relative\"\n", "must be an absolute path"},
      {"log_level = \"loud\"\n", "log_level: expected one of"},
      {"[ring1\n", "r0.toml:1:"},
      {"[[ring1]]\nlabel = \"a\"\nstrategy = \"\"\n", "r0.toml:3: ring1 node 'a': strategy: must not be empty"},
  };
  for (const auto& c : cases) {
    auto r = parseConfig(c.text, "r0.toml", 0);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.error().message.find(c.expect), std::string::npos)
        << c.text << "\n  got: " << r.error().message;
  }
}

// [fleet]: the grace defaults to the TTL, and one too short to cover a dead ring0d's orphan stop
// (0.6 x TTL after its lease can end) is refused, naming both.
TEST(RingConfig, FleetGraceDefaultsToTheTtlAndMustCoverTheOrphanStop) {
  const std::string head = "[fleet]\nhost = \"h1\"\netcd = [\"http://127.0.0.1:2379\"]\n";
  auto dflt = parseConfig(head, "r0.toml", 0);
  ASSERT_TRUE(dflt.ok()) << dflt.error().message;
  EXPECT_EQ(dflt->fleet.leaseTtlMs, 2000);
  EXPECT_EQ(dflt->fleet.graceMs, 2000);
  auto longer = parseConfig(head + "lease_ttl_ms = 5000\n", "r0.toml", 0);
  ASSERT_TRUE(longer.ok()) << longer.error().message;
  EXPECT_EQ(longer->fleet.graceMs, 5000);
  auto enough = parseConfig(head + "lease_ttl_ms = 1000\ngrace_ms = 600\n", "r0.toml", 0);
  ASSERT_TRUE(enough.ok()) << enough.error().message;
  EXPECT_EQ(enough->fleet.graceMs, 600);
  // The default TTL (2 s) needs 1.2 s: the 1 s that was once the default is refused.
  auto old = parseConfig(head + "grace_ms = 1000\n", "r0.toml", 0);
  ASSERT_FALSE(old.ok());
  EXPECT_NE(old.error().message.find("1000 is below 0.6 x lease_ttl_ms (1200 ms)"), std::string::npos)
      << old.error().message;
  for (const char* grace : {"0", "599"}) {
    auto r = parseConfig(head + "lease_ttl_ms = 1000\ngrace_ms = " + grace + "\n", "r0.toml", 0);
    ASSERT_FALSE(r.ok()) << grace;
    EXPECT_NE(r.error().message.find("r0.toml:5: fleet: grace_ms: " + std::string(grace) +
                                     " is below 0.6 x lease_ttl_ms (600 ms)"),
              std::string::npos)
        << r.error().message;
  }
}

// A node's strategy is whatever the registry its parent was given knows: the file only names it.
TEST(RingConfig, NodeStrategiesAreTheRegistrysToCheck) {
  supervise::SpawnRegistry nodes;
  nodes.add(supervise::makeExecStrategy());
  supervise::SpawnRegistry processes;
  processes.add(supervise::makeExecStrategy());
  processes.add(supervise::makeUnixUserStrategy());
  auto check = [&](const std::string& text) -> Status {
    auto c = parseConfig(text, "r0.toml", 0);
    if (!c.ok()) return c.error();
    return checkConfig(*c, nodes, processes);
  };
  EXPECT_TRUE(check(kRing0).ok());
  auto unknown = check("[[ring1]]\nlabel = \"a\"\nstrategy = \"unix-user\"\n");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().message,
            "r0.toml: ring-1 node 'a': unknown spawn strategy 'unix-user' (known: exec)");
  auto deeper = check(
      "[[ring1]]\nlabel = \"a\"\n  [[ring1.ring2]]\n  label = \"s\"\n  strategy = \"vm\"\n");
  ASSERT_FALSE(deeper.ok());
  EXPECT_EQ(deeper.error().message,
            "r0.toml: ring-1 node 'a': ring-2 node 's': unknown spawn strategy 'vm' (known: exec)");
  // The strategy's own checks apply too: exec runs as the parent's user.
  auto user = check("[[ring1]]\nlabel = \"a\"\nuser = \"nobody\"\n");
  ASSERT_FALSE(user.ok());
  EXPECT_NE(user.error().message.find("ring-1 node 'a': exec strategy cannot run as user 'nobody'"),
            std::string::npos)
      << user.error().message;
  // Processes are checked against the process registry, naming the node path.
  auto proc = check(
      "[[ring1]]\nlabel = \"a\"\n  [[ring1.ring2]]\n  label = \"s\"\n"
      "    [[ring1.ring2.process]]\n    name = \"w\"\n    command = [\"/bin/true\"]\n"
      "    strategy = \"vm\"\n");
  ASSERT_FALSE(proc.ok());
  EXPECT_EQ(proc.error().message,
            "r0.toml: ring-1 node 'a': ring-2 node 's': process 'w': unknown spawn strategy 'vm' (known: exec, unix-user)");
}

TEST(RingConfig, ChildConfigRoundTripsAndIsForItsRingOnly) {
  DaemonConfig child;
  child.ring = 1;
  child.uuid = newUuid();
  child.label = "infra-1";
  child.stateDir = "/srv/r0/nodes/infra-1";
  child.key = child.stateDir + "/node.key";
  child.parentKey = child.stateDir + "/parent.pub";
  child.parentDown = "ipc:///srv/r0/down.sock";
  child.parentUp = "tcp://127.0.0.1:7101";
  child.down = "ipc:///srv/r0/nodes/infra-1/down.sock";
  child.up = "ipc:///srv/r0/nodes/infra-1/up.sock";
  child.observe = "ipc:///srv/r0/nodes/infra-1/out.sock";
  child.heartbeatMs = 300;
  child.heartbeatTimeoutMs = 3000;
  const std::string text = renderChildConfig(child);
  auto back = parseConfig(text, "ring1d.toml", 1);
  ASSERT_TRUE(back.ok()) << back.error().message << "\n" << text;
  EXPECT_EQ(back->uuid, child.uuid);
  EXPECT_EQ(back->label, child.label);
  EXPECT_EQ(back->stateDir, child.stateDir);
  EXPECT_EQ(back->key, child.key);
  EXPECT_EQ(back->parentKey, child.parentKey);
  EXPECT_EQ(back->parentDown, child.parentDown);
  EXPECT_EQ(back->parentUp, child.parentUp);
  EXPECT_EQ(back->down, child.down);
  EXPECT_EQ(back->heartbeatMs, 300);
  // A ring1d config handed to ring2d is refused, naming both.
  auto wrong = parseConfig(text, "ring1d.toml", 2);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.error().message.find("this file is for ring1d, not ring2d"), std::string::npos)
      << wrong.error().message;
  // Identity is required.
  auto bare = parseConfig("ring = 2\n", "ring2d.toml", 2);
  ASSERT_FALSE(bare.ok());
  EXPECT_NE(bare.error().message.find("uuid: required"), std::string::npos);
}

TEST(RingConfig, UuidsAreVersion4AndDistinct) {
  const std::string a = newUuid(), b = newUuid();
  EXPECT_NE(a, b);
  ASSERT_EQ(a.size(), 36u);
  EXPECT_EQ(a[14], '4');
  EXPECT_NE(std::string("89ab").find(a[19]), std::string::npos);
  for (char c : a) EXPECT_TRUE(c == '-' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
}

TEST(NodeSpecJson, RoundTripsAndDigestsFollowTheContent) {
  auto c = parseConfig(kRing0, "r0.toml", 0);
  ASSERT_TRUE(c.ok());
  const NodeSpec& infra = c->nodes[0];
  const json j = nodeSpecToJson(infra);
  auto back = nodeSpecFromJson(j, 1);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, infra);
  // Through text and back: the same digest; any change: another.
  EXPECT_EQ(specDigest(json::parse(j.dump())), specDigest(j));
  EXPECT_EQ(specDigest(j).size(), 32u);
  NodeSpec changed = infra;
  changed.nodes[0].processes[0].command.push_back("x");
  EXPECT_NE(specDigest(nodeSpecToJson(changed)), specDigest(j));
}

TEST(NodeSpecJson, RefusesWhatARingCannotRun) {
  const std::vector<std::pair<json, std::string>> cases = {
      {json::array(), "expected an object"},
      {json{{"label", "a b"}}, "label 'a b'"},
      {json{{"label", 7}}, "label: expected a string"},
      {json{{"label", "infra"}, {"processes", json::array()}}, "a ring-1 node has no processes"},
      {json{{"label", "infra"}, {"nodes", json::array({json{{"label", "s"}}, json{{"label", "s"}}})}},
       "node 's' appears twice"},
      {json{{"label", "infra"}, {"nodes", json::array({json{{"label", "s"}, {"nodes", json::array()}}})}},
       "only a ring-1 node has nodes"},
      {json{{"label", "infra"}, {"nodes", "x"}}, "nodes: expected an array"},
  };
  for (const auto& [j, expect] : cases) {
    auto r = nodeSpecFromJson(j, 1);
    ASSERT_FALSE(r.ok()) << j.dump();
    EXPECT_NE(r.error().message.find(expect), std::string::npos)
        << j.dump() << "\n  got: " << r.error().message;
  }
}

json treeWith(const std::string& webState, int webPid) {
  return json{{"label", "ring0"},
              {"state", "ready"},
              {"nodes",
               json::array({json{{"label", "infra"},
                                 {"state", "ready"},
                                 {"pid", 10},
                                 {"restarts", 0},
                                 {"nodes", json::array({json{
                                               {"label", "shop"},
                                               {"state", "ready"},
                                               {"pid", 11},
                                               {"processes", json::array({json{{"name", "web"},
                                                                               {"state", webState},
                                                                               {"pid", webPid},
                                                                               {"restarts", 0}}})}}})}}})}};
}

TEST(Tree, FlattensToPathsAndDiffsOnlyWhatChanged) {
  FlatTree before = flattenTree(treeWith("ready", 12));
  ASSERT_EQ(before.size(), 3u);
  EXPECT_EQ(before["infra/shop/web"]["kind"], "process");
  EXPECT_EQ(before["infra/shop"]["kind"], "node");

  FlatTree kept;
  auto none = diffTrees(before, flattenTree(treeWith("ready", 12)), &kept);
  EXPECT_TRUE(none.empty());

  auto events = diffTrees(before, flattenTree(treeWith("backoff", 0)), nullptr);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].topicPath, "infra.shop.web");
  EXPECT_EQ(events[0].body["path"], "infra/shop/web");
  EXPECT_EQ(events[0].body["previous"], "ready");
  EXPECT_EQ(events[0].body["state"], "backoff");

  // Gone and new.
  json without = treeWith("ready", 12);
  without["nodes"][0]["nodes"][0]["processes"] = json::array();
  auto removed = diffTrees(before, flattenTree(without), nullptr);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].body["state"], "removed");
  auto added = diffTrees(flattenTree(without), before, nullptr);
  ASSERT_EQ(added.size(), 1u);
  EXPECT_TRUE(added[0].body["previous"].is_null());
}

TEST(Tree, WhatIsBelowANodeNotHeardFromYetIsCarriedOverNotRemoved) {
  FlatTree before = flattenTree(treeWith("ready", 12));
  json restarted = treeWith("ready", 12);
  restarted["nodes"][0]["nodes"][0].erase("processes");
  restarted["nodes"][0]["nodes"][0]["observed_state"] = "unknown";
  FlatTree kept;
  auto events = diffTrees(before, flattenTree(restarted), &kept);
  EXPECT_TRUE(events.empty()) << events[0].body.dump();
  EXPECT_TRUE(kept.contains("infra/shop/web"));
  // Heard from, without the process: now it is gone.
  restarted["nodes"][0]["nodes"][0]["observed_state"] = "ready";
  restarted["nodes"][0]["nodes"][0]["processes"] = json::array();
  events = diffTrees(kept, flattenTree(restarted), nullptr);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].body["state"], "removed");
}

TEST(Tree, FirstNotReadyNamesWhatHoldsTheTreeBack) {
  EXPECT_FALSE(firstNotReady(treeWith("ready", 12)).has_value());
  EXPECT_EQ(firstNotReady(treeWith("backoff", 0)).value_or(""), "infra/shop/web is backoff");
  json root = treeWith("ready", 12);
  root["state"] = "starting";
  EXPECT_EQ(firstNotReady(root).value_or(""), "ring0 is starting");
  EXPECT_TRUE(firstNotReady(json()).has_value());
}

TEST(RingMessages, EachBodyRoundTrips) {
  const SpecMessage spec{"u-1", "d1g3st", "run-2", json{{"label", "shop"}}};
  auto s = SpecMessage::fromJson(spec.toJson());
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->uuid, "u-1");
  EXPECT_EQ(s->digest, "d1g3st");
  EXPECT_EQ(s->parentInstance, "run-2");
  EXPECT_EQ(s->spec, spec.spec);

  auto c = CommandMessage::fromJson(CommandMessage{"r-7", "restart", "shop/web"}.toJson());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->id, "r-7");
  EXPECT_EQ(c->op, "restart");
  EXPECT_EQ(c->path, "shop/web");

  auto r = ReplyMessage::fromJson(ReplyMessage{"r-7", false, "no node 'x'"}.toJson());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->toAnswer(), (json{{"ok", false}, {"error", "no node 'x'"}}));
  EXPECT_EQ(ReplyMessage::fromAnswer("r-8", json{{"ok", true}}).toJson(),
            (json{{"id", "r-8"}, {"ok", true}}));
  // The wire format is proto/rings.md's, to the letter.
  EXPECT_EQ((RevocationMessage{"u-1", "shop"}.toJson()), (json{{"uuid", "u-1"}, {"label", "shop"}}));
}

TEST(RingMessages, ABodyOfTheWrongShapeIsRefusedWithWhatWasExpected) {
  auto spec = SpecMessage::fromJson(json{{"uuid", "u"}, {"digest", 5}, {"parent_instance", "p"}});
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.error().message, "node_spec: 'digest' must be a string");
  auto noSpec = SpecMessage::fromJson(json{{"uuid", "u"}, {"digest", "d"}, {"parent_instance", "p"}});
  ASSERT_FALSE(noSpec.ok());
  EXPECT_EQ(noSpec.error().message, "node_spec: 'spec' must be an object");
  auto cmd = CommandMessage::fromJson(json{{"id", ""}, {"op", "stop"}, {"path", "web"}});
  ASSERT_FALSE(cmd.ok());
  EXPECT_EQ(cmd.error().message, "command: 'id' is empty");
  EXPECT_FALSE(CommandMessage::fromJson(json::array()).ok());
  EXPECT_FALSE(ReplyMessage::fromJson(json{{"id", "r"}, {"ok", "yes"}}).ok());
  EXPECT_FALSE(ReplyMessage::fromJson(json{{"id", "r"}, {"ok", false}, {"error", 3}}).ok());
  // A failure without a reason still says it failed.
  auto bare = ReplyMessage::fromJson(json{{"id", "r"}, {"ok", false}});
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->error, "failed");
  EXPECT_FALSE(RevocationMessage::fromJson(json{{"uuid", "u"}}).ok());
}

}  // namespace
}  // namespace enjin::ring
