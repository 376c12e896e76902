// The host record's pieces (ring/fleet_agent.hpp): a ring-1 node's compact tree and the observe
// endpoint other hosts reach.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "enjin/ring/fleet_agent.hpp"

namespace enjin::ring {
namespace {

using nlohmann::json;

TEST(FleetRecordTest, ACompactTreeKeepsNamesStatesAndPidsDownToProcesses) {
  const json ring1 = json::parse(R"({
    "label": "web", "state": "ready", "pid": 41, "uuid": "u1", "restarts": 2,
    "state_dir": "/s/nodes/web", "heartbeat_age_ms": 312, "observed_state": "ready",
    "nodes": [{"label": "shop", "state": "ready", "pid": 42, "state_dir": "/x",
               "offer": {"cpus": 4},
               "processes": [{"name": "app", "state": "running", "pid": 43,
                              "cpu_seconds": 1.5, "resident_memory_bytes": 1000,
                              "nodes": [{"label": "deeper", "state": "ready"}]},
                             {"name": "job", "state": "backoff", "pid": 0}]}]
  })");
  const json expected = json::parse(R"({
    "label": "web", "state": "ready", "pid": 41,
    "nodes": [{"label": "shop", "state": "ready", "pid": 42,
               "processes": [{"name": "app", "state": "running", "pid": 43},
                             {"name": "job", "state": "backoff"}]}]
  })");
  EXPECT_EQ(compactNodeTree(ring1), expected) << compactNodeTree(ring1).dump(1);
  // A node with nothing below it, and something that is not a node at all.
  EXPECT_EQ(compactNodeTree(json{{"label", "x"}, {"state", "stopped"}, {"pid", 0}}),
            (json{{"label", "x"}, {"state", "stopped"}}));
  EXPECT_EQ(compactNodeTree(json("junk")), json::object());
}

TEST(FleetRecordTest, TheObserveEndpointIsAdvertisedForTcpOnly) {
  EXPECT_EQ(fleetObserveEndpoint("tcp://0.0.0.0:7000", "10.0.0.1"), "tcp://10.0.0.1:7000");
  EXPECT_EQ(fleetObserveEndpoint("tcp://*:7000", "10.0.0.1"), "tcp://10.0.0.1:7000");
  EXPECT_EQ(fleetObserveEndpoint("tcp://10.0.0.1:7000", ""), "tcp://10.0.0.1:7000");
  EXPECT_EQ(fleetObserveEndpoint("ipc:///var/lib/enjin/out.sock", "10.0.0.1"), "");
  EXPECT_EQ(fleetObserveEndpoint("", "10.0.0.1"), "");
}

}  // namespace
}  // namespace enjin::ring
