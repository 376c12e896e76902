// The fleet's placement (fleet/placement.hpp): compartments, room, spread, stability.
#include "enjin/fleet/placement.hpp"

#include <gtest/gtest.h>

#include <set>

namespace enjin::fleet {
namespace {

constexpr int64_t kMiB = 1024 * 1024;
const std::vector<std::string> kLevels = {"dc", "rack", "host"};

HostInfo host(const std::string& name, const std::string& path, int64_t slots = 100,
              int64_t memMiB = 4096) {
  return HostInfo{name, *parseCompartmentPath(path), {slots, memMiB * kMiB}};
}

NodeRequest node(const std::string& label, const std::string& compartment = "",
                 const std::string& spread = "", std::string assigned = "", int64_t slots = 1,
                 int64_t memMiB = 0) {
  return NodeRequest{label, compartment, spread, {slots, memMiB * kMiB}, std::move(assigned)};
}

// The fleet: dc/rack-a/{h1,h2} and dc/rack-b/h3.
std::vector<HostInfo> threeHosts() {
  return {host("h1", "dc/rack-a/h1"), host("h2", "dc/rack-a/h2"), host("h3", "dc/rack-b/h3")};
}

TEST(CompartmentPathTest, SegmentsAreCheckedAndNamed) {
  EXPECT_EQ(*parseCompartmentPath("dc/rack-a/h1"), (std::vector<std::string>{"dc", "rack-a", "h1"}));
  EXPECT_EQ(*parseCompartmentPath("h1"), std::vector<std::string>{"h1"});
  for (const char* bad : {"", "/dc", "dc/", "dc//h1", "dc/rack a", "dc/r\xc3\xa4"}) {
    auto p = parseCompartmentPath(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_NE(p.error().message.find("compartment path"), std::string::npos);
    EXPECT_EQ(p.error().code, 400);
  }
}

TEST(CompartmentPathTest, InsideBySegmentOrLeadingPath) {
  const auto p = *parseCompartmentPath("dc/rack-a/h1");
  EXPECT_TRUE(insideCompartment(p, ""));
  EXPECT_TRUE(insideCompartment(p, "dc"));
  EXPECT_TRUE(insideCompartment(p, "rack-a"));
  EXPECT_TRUE(insideCompartment(p, "h1"));
  EXPECT_TRUE(insideCompartment(p, "dc/rack-a"));
  EXPECT_FALSE(insideCompartment(p, "rack-b"));
  EXPECT_FALSE(insideCompartment(p, "rack-a/h1"));  // a path must start at the outermost
  EXPECT_FALSE(insideCompartment(p, "dc/rack-a/h1/numa0"));
  EXPECT_FALSE(insideCompartment(p, "rack"));  // whole segments only
}

TEST(PlacementTest, AConstrainedNodeLandsOnlyInsideItsCompartment) {
  std::vector<NodeRequest> nodes;
  for (int i = 0; i < 6; ++i) nodes.push_back(node("a" + std::to_string(i), "rack-a"));
  auto r = place(threeHosts(), nodes, kLevels);
  EXPECT_TRUE(r.pending.empty());
  std::map<std::string, int> per;
  for (const auto& [label, h] : r.assign) ++per[h];
  EXPECT_EQ(per["h1"], 3);  // balanced by node count inside the compartment
  EXPECT_EQ(per["h2"], 3);
  EXPECT_EQ(per.count("h3"), 0u);
  EXPECT_EQ(r.changed.size(), 6u);
}

TEST(PlacementTest, SpreadByRackUsesBothRacks) {
  // Without spread, two nodes could both go to rack-a (two hosts there); with spread they split.
  auto r = place(threeHosts(), {node("s1", "dc", "rack"), node("s2", "dc", "rack")}, kLevels);
  ASSERT_EQ(r.assign.size(), 2u);
  std::set<std::string> racks;
  for (const auto& [label, h] : r.assign) racks.insert(h == "h3" ? "rack-b" : "rack-a");
  EXPECT_EQ(racks.size(), 2u);
  // Four spread nodes: two per rack, and in rack-a one per host.
  r = place(threeHosts(), {node("s1", "dc", "rack"), node("s2", "dc", "rack"), node("s3", "dc", "rack"),
                           node("s4", "dc", "rack")},
            kLevels);
  std::map<std::string, int> per;
  for (const auto& [label, h] : r.assign) ++per[h];
  EXPECT_EQ(per["h3"], 2);
  EXPECT_EQ(per["h1"], 1);
  EXPECT_EQ(per["h2"], 1);
}

TEST(PlacementTest, SpreadGroupsAreCountedApart) {
  // Nodes of another group already in rack-b do not push a new group's node away from it.
  auto r = place(threeHosts(),
                 {node("other1", "rack-b", "", "h3"), node("other2", "rack-b", "", "h3"),
                  node("g1", "dc", "rack"), node("g2", "dc", "rack")},
                 kLevels);
  std::set<std::string> racks;
  for (const char* l : {"g1", "g2"}) racks.insert(r.assign[l] == "h3" ? "rack-b" : "rack-a");
  EXPECT_EQ(racks.size(), 2u);
}

TEST(PlacementTest, ANodeThatFitsNowhereIsPendingWithAReason) {
  auto r = place(threeHosts(), {node("x", "rack-c")}, kLevels);
  EXPECT_TRUE(r.assign.empty());
  EXPECT_EQ(r.pending["x"], "no live host in compartment 'rack-c'");

  std::vector<HostInfo> small = {host("h1", "dc/rack-a/h1", 4, 512), host("h2", "dc/rack-a/h2", 1, 4096)};
  r = place(small, {node("big", "rack-a", "", "", 2, 1024)}, kLevels);
  EXPECT_TRUE(r.assign.empty());
  EXPECT_EQ(r.pending["big"],
            "no host in compartment 'rack-a' has room: h1: 512 MiB of memory left (needs 1024 MiB); "
            "h2: 1 process slots left (needs 2)");

  r = place({}, {node("y")}, kLevels);
  EXPECT_EQ(r.pending["y"], "no live host in the fleet");

  r = place(threeHosts(), {node("z", "dc", "row")}, kLevels);
  EXPECT_EQ(r.pending["z"], "spread 'row' is not a compartment level (dc, rack, host)");
}

TEST(PlacementTest, RoomCountsEveryNodeAssignedThere) {
  std::vector<HostInfo> hosts = {host("h1", "dc/rack-a/h1", 3), host("h2", "dc/rack-a/h2", 3)};
  // h1 is full with what it runs: the new one goes to h2 even though h1 sorts first.
  auto r = place(hosts, {node("old", "", "", "h1", 3), node("new", "", "", "", 2)}, kLevels);
  EXPECT_EQ(r.assign["old"], "h1");
  EXPECT_EQ(r.assign["new"], "h2");
  EXPECT_EQ(r.changed, std::vector<std::string>{"new"});
  // Nothing left anywhere for a third.
  r = place(hosts, {node("old", "", "", "h1", 3), node("new", "", "", "h2", 2), node("more", "", "", "", 2)},
            kLevels);
  EXPECT_EQ(r.pending.count("more"), 1u);
}

TEST(PlacementTest, NothingOnALiveHostMovesAndALostHostsNodesMoveInsideTheirCompartment) {
  // Assigned to h1 although its compartment now says rack-b: it stays (no move by a decision).
  auto r = place(threeHosts(), {node("keep", "rack-b", "", "h1")}, kLevels);
  EXPECT_EQ(r.assign["keep"], "h1");
  EXPECT_TRUE(r.changed.empty());
  // h2 is lost (not among the live hosts): its rack-a node goes to h1, the other rack-a host.
  std::vector<HostInfo> live = {host("h1", "dc/rack-a/h1"), host("h3", "dc/rack-b/h3")};
  r = place(live, {node("n", "rack-a", "", "h2"), node("m", "", "", "h3")}, kLevels);
  EXPECT_EQ(r.assign["n"], "h1");
  EXPECT_EQ(r.assign["m"], "h3");
  EXPECT_EQ(r.changed, std::vector<std::string>{"n"});
}

TEST(PlacementTest, DeterministicWhateverTheInputOrder) {
  std::vector<NodeRequest> a = {node("c"), node("a"), node("b"), node("d", "dc", "rack")};
  std::vector<NodeRequest> b = {node("d", "dc", "rack"), node("b"), node("a"), node("c")};
  auto hosts = threeHosts();
  std::vector<HostInfo> reversed(hosts.rbegin(), hosts.rend());
  EXPECT_EQ(place(hosts, a, kLevels).assign, place(reversed, b, kLevels).assign);
}

}  // namespace
}  // namespace enjin::fleet
