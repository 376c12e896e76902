// Apps (ring/apps.hpp): the bodies the API takes, and the controller that turns apps into
// instance nodes and rolls changes out, driven here by trees the test writes (what the parent's
// tree would say of each instance) on a fake clock, with a real store and real port binds.
#include "enjin/ring/apps.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "enjin/base/unique_fd.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/ring/config.hpp"
#include "enjin/ring/node_spec_json.hpp"
#include "enjin/router/router.hpp"
#include "enjin/store/store.hpp"
#include "enjin/supervise/process_spec.hpp"
#include "fakes/fake_clock.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::ring {
namespace {

using nlohmann::json;

TEST(PortRangeTest, ParsesAndRefuses) {
  auto r = parsePortRange("20000-29999");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->first, 20000);
  EXPECT_EQ(r->last, 29999);
  EXPECT_EQ(r->size(), 10000);
  for (const char* bad : {"", "20000", "2-3", "30000-20000", "20000-70000", "a-b", "1024-"}) {
    EXPECT_FALSE(parsePortRange(bad).ok()) << bad;
  }
  EXPECT_EQ(loopbackSocketKey(20001), "tcp/127.0.0.1:20001");
}

TEST(AppSpecTest, ReadsABodyAndNamesWhatIsWrong) {
  auto a = appFromJson(json{{"name", "shop"},
                            {"command", {"/bin/app", "--x"}},
                            {"instances", 3},
                            {"health", "http:/healthz"},
                            {"env", {{"K", "V"}}}},
                       nullptr, "sandbox");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->strategy, "sandbox");
  EXPECT_EQ(a->instances, 3);
  EXPECT_EQ(a->readiness, "tcp");
  auto back = appFromJson(appToJson(*a), nullptr, "unix-user");
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, *a);

  struct Bad {
    json body;
    const char* says;
  } bads[] = {
      {json{{"command", {"/bin/app"}}}, "name"},
      {json{{"name", 1}, {"command", {"/bin/app"}}}, "name"},
      {json{{"name", "Shop"}, {"command", {"/bin/app"}}}, "DNS label"},
      {json{{"name", "shop"}}, "command: required"},
      {json{{"name", "shop"}, {"command", json::array()}}, "command"},
      {json{{"name", "shop"}, {"command", {"/a"}}, {"instances", 101}}, "instances"},
      {json{{"name", "shop"}, {"command", {"/a"}}, {"strategy", "exec"}}, "unix-user or sandbox"},
      {json{{"name", "shop"}, {"command", {"/a"}}, {"health", "ftp:/x"}}, "health"},
      {json{{"name", "shop"}, {"command", {"/a"}}, {"env", {{"PORT", "1"}}}}, "set by enjin"},
      {json{{"name", "shop"}, {"command", {"/a"}}, {"max_surge", 0}, {"max_unavailable", 0}},
       "both be 0"},
      {json{{"name", "shop"}, {"command", {"/a"}}, {"replicas", 2}}, "unknown field"},
      {json{{"name", "shop"}, {"command", {"/a"}}, {"limits", {{"memory", "1k"}}}}, "limits"},
  };
  for (const auto& b : bads) {
    auto r = appFromJson(b.body, nullptr, "unix-user");
    ASSERT_FALSE(r.ok()) << b.body.dump();
    EXPECT_EQ(r.error().code, 400);
    EXPECT_NE(r.error().message.find(b.says), std::string::npos) << r.error().message;
  }
  // A PUT changes only what it gives; the name stays.
  auto changed = appFromJson(json{{"instances", 5}}, &*a, "unix-user");
  ASSERT_TRUE(changed.ok());
  EXPECT_EQ(changed->instances, 5);
  EXPECT_EQ(changed->command, a->command);
  EXPECT_TRUE(AppSpec::sameRevision(*a, *changed));
  auto renamed = appFromJson(json{{"name", "other"}}, &*a, "unix-user");
  EXPECT_FALSE(renamed.ok());
}

TEST(AppSettingsTest, OnlyARing1NodeRunsApps) {
  NodeSpec n;
  n.label = "infra";
  n.ports = "20000-20010";
  n.routerListen = "127.0.0.1:8080";
  n.domain = "apps.example.com";
  EXPECT_TRUE(checkAppSettings(n, 1).ok());
  EXPECT_FALSE(checkAppSettings(n, 2).ok());
  n.domain = "Bad_Domain";
  EXPECT_FALSE(checkAppSettings(n, 1).ok());
  EXPECT_FALSE(checkNodeSockets({{"http", 20001}, {"http", 20002}}).ok());
  EXPECT_FALSE(checkNodeSockets({{"a:b", 20001}}).ok());
  EXPECT_TRUE(checkNodeSockets({{"http", 20001}, {"admin", 20002}}).ok());
  // The settings travel in the node's spec JSON.
  n.domain = "apps.example.com";
  auto back = nodeSpecFromJson(nodeSpecToJson(n), 1);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->ports, n.ports);
  EXPECT_EQ(back->routerListen, n.routerListen);
  EXPECT_EQ(back->domain, n.domain);
}

// A free run of `count` loopback ports: bound here, then let go.
int freePortRun(int count) {
  for (int base = 21000; base < 60000; base += 97) {
    bool ok = true;
    for (int p = base; p < base + count && ok; ++p) {
      UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<uint16_t>(p));
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      ok = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    }
    if (ok) return base;
  }
  return 0;
}

// A router that keeps every apply() it was given, or refuses them all with `refuse`.
class RecordingRouter : public router::Router {
 public:
  supervise::ProcessSpec processSpec() const override { return {}; }
  Status apply(const std::vector<router::RouterBackend>& backends) override {
    if (!refuse.empty()) return Error{refuse, 500};
    applied.push_back(backends);
    return {};
  }
  Result<std::vector<router::RouterAppStats>> stats() override {
    return std::vector<router::RouterAppStats>{};
  }
  // The state of instance `name` in the last apply(), or nullopt when it was not in it.
  std::optional<router::RouterServer::State> stateOf(const std::string& name) const {
    if (applied.empty()) return std::nullopt;
    for (const auto& b : applied.back()) {
      for (const auto& s : b.servers) {
        if (s.name == name) return s.state;
      }
    }
    return std::nullopt;
  }
  std::vector<std::vector<router::RouterBackend>> applied;
  std::string refuse;
};

class AppManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = store::Store::open(dir_.path() + "/r1.db");
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(*s);
    auto r = Reactor::create(clock_);
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(*r);
    base_ = freePortRun(8);
    ASSERT_NE(base_, 0);
    make(PortRange{base_, base_ + 7});
  }

  void make(PortRange ports) {
    manager_.reset();
    AppHost h;
    h.nodeLabel = "infra";
    h.offer = [this] { return offer_; };
    h.applyNodes = [this]() -> Status {
      ++applies_;
      if (!refuseApply_.empty()) return Error{refuseApply_, 409};
      running_.clear();
      for (const auto& n : manager_->nodes()) running_.insert(n.label);
      return {};
    };
    h.holdPort = [this](int port, const std::string& label) -> Status {
      if (taken_.count(port)) return Error{"in use", 409};
      if (auto it = declared_.find(port); it != declared_.end() && it->second != label) {
        return Error{"port held for node '" + it->second + "'", 409};
      }
      held_.insert(port);
      heldFor_[port] = label;
      return {};
    };
    h.portOwner = [this](int port) -> std::string {
      if (auto it = declared_.find(port); it != declared_.end()) return it->second;
      if (auto it = heldFor_.find(port); it != heldFor_.end() && held_.count(port)) {
        return it->second;
      }
      return "";
    };
    h.releasePort = [this](int port) { held_.erase(port); };
    manager_ = std::make_unique<AppManager>(*reactor_, clock_, *store_, h);
    ASSERT_TRUE(manager_->load().ok());
    manager_->configure(ports, {"http://NAME.localhost:8080/"}, nullptr);
  }

  // The parent's tree with each running instance in `states` (default "running").
  void observe(const std::map<std::string, std::string>& states = {}) {
    json nodes = json::array();
    for (const auto& label : running_) {
      auto it = states.find(label);
      const std::string st = it != states.end() ? it->second : "running";
      const std::string app = label.substr(0, label.rfind('-'));
      nodes.push_back({{"label", label},
                       {"state", st == "ready" ? "ready" : "starting"},
                       {"processes", {{{"name", app}, {"state", st}, {"pid", 100}}}}});
    }
    manager_->observe(json{{"nodes", nodes}});
  }
  void allReady() {
    std::map<std::string, std::string> s;
    for (const auto& l : running_) s[l] = "ready";
    observe(s);
  }
  // Makes the store refuse (or again take) every write of the apps: a trigger on its meta
  // table, through a connection of the test's own.
  void failStoreWrites(bool fail) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_.path() + "/r1.db").c_str(), &db), SQLITE_OK);
    const char* sql = fail ? "CREATE TRIGGER apps_ro_i BEFORE INSERT ON meta WHEN NEW.key = 'apps' "
                             "BEGIN SELECT RAISE(ABORT, 'injected: the disk is full'); END;"
                             "CREATE TRIGGER apps_ro_u BEFORE UPDATE ON meta WHEN NEW.key = 'apps' "
                             "BEGIN SELECT RAISE(ABORT, 'injected: the disk is full'); END;"
                           : "DROP TRIGGER apps_ro_i; DROP TRIGGER apps_ro_u;";
    char* error = nullptr;
    const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &error);
    EXPECT_EQ(rc, SQLITE_OK) << (error != nullptr ? error : "");
    sqlite3_free(error);
    sqlite3_close(db);
  }
  json app(const std::string& name) {
    auto a = manager_->get(name);
    EXPECT_TRUE(a.ok());
    return a.ok() ? *a : json();
  }
  std::vector<std::string> labelsOf(const json& a) {
    std::vector<std::string> out;
    for (const auto& i : a["status"]["instances"]) out.push_back(i["name"]);
    return out;
  }

  testing::TempDir dir_;
  testing::FakeClock clock_;
  std::unique_ptr<Reactor> reactor_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<AppManager> manager_;
  json offer_ = json{{"memory_bytes", uint64_t{8} << 30}, {"process_slots", 10000}};
  std::set<std::string> running_;
  std::set<int> held_, taken_;
  std::map<int, std::string> declared_;  // ports other nodes' specs declare, and the node
  std::map<int, std::string> heldFor_;
  std::string refuseApply_;
  int applies_ = 0;
  int base_ = 0;
};

json shop(int instances) {
  return json{{"name", "shop"}, {"command", {"/bin/shop"}}, {"instances", instances}};
}

TEST_F(AppManagerTest, DeployMakesEveryInstanceWithAPortAndASocket) {
  auto a = manager_->create(shop(3));
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(running_, (std::set<std::string>{"shop-1", "shop-2", "shop-3"}));
  EXPECT_EQ(held_, (std::set<int>{base_, base_ + 1, base_ + 2}));
  auto nodes = manager_->nodes();
  ASSERT_EQ(nodes.size(), 3u);
  const NodeSpec& n = nodes[0];
  EXPECT_EQ(n.strategy, "unix-user");
  ASSERT_EQ(n.sockets.size(), 1u);
  EXPECT_EQ(n.sockets[0].name, "http");
  ASSERT_EQ(n.processes.size(), 1u);
  EXPECT_EQ(n.processes[0].env.at("PORT"), std::to_string(n.sockets[0].port));
  ASSERT_EQ(n.processes[0].sockets.size(), 1u);
  EXPECT_EQ(n.processes[0].sockets[0].name, "http");
  EXPECT_EQ(n.processes[0].readiness.kind, "tcp");
  EXPECT_EQ(n.processes[0].readiness.port, n.sockets[0].port);
  EXPECT_EQ((*a)["status"]["rollout"], "in progress");
  EXPECT_EQ((*a)["status"]["urls"][0], "http://shop.localhost:8080/");
  allReady();
  EXPECT_EQ(app("shop")["status"]["rollout"], "complete");
  EXPECT_EQ(app("shop")["status"]["ready"], 3);
  // A second app of the same name is refused; the first is untouched.
  auto again = manager_->create(shop(1));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, 409);
  EXPECT_EQ(running_.size(), 3u);
}

TEST_F(AppManagerTest, AnAppThatDoesNotFitIsRefusedAndLeavesNothing) {
  ASSERT_TRUE(manager_->create(shop(3)).ok());
  auto big = manager_->create(json{{"name", "big"}, {"command", {"/bin/big"}}, {"instances", 5}});
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code, 409);
  EXPECT_NE(big.error().message.find("ports: 6 needed"), std::string::npos) << big.error().message;
  auto mem = manager_->create(json{{"name", "mem"},
                                   {"command", {"/bin/mem"}},
                                   {"instances", 2},
                                   {"limits", {{"memory", "6G"}}}});
  ASSERT_FALSE(mem.ok());
  EXPECT_NE(mem.error().message.find("memory: 3 instances"), std::string::npos)
      << mem.error().message;
  EXPECT_TRUE(manager_->get("big").error().code == 404);
  EXPECT_EQ(running_.size(), 3u);
  EXPECT_EQ(held_.size(), 3u);
  // The parent refusing the nodes (no tenant ids left, say): nothing stays either.
  refuseApply_ = "no tenant ids left in 60000-60009";
  auto r = manager_->create(json{{"name", "late"}, {"command", {"/bin/x"}}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("no tenant ids left"), std::string::npos);
  EXPECT_EQ(manager_->get("late").error().code, 404);
  EXPECT_EQ(held_.size(), 3u);
  // A port some other program holds is skipped.
  refuseApply_.clear();
  taken_.insert(base_ + 3);
  ASSERT_TRUE(manager_->create(json{{"name", "next"}, {"command", {"/bin/x"}}}).ok());
  EXPECT_EQ(app("next")["status"]["instances"][0]["port"], base_ + 4);
}

TEST_F(AppManagerTest, APortAnotherNodeDeclaresIsNeverDealt) {
  // A hand-made node declares the range's first two ports: the instances get the next ones,
  // and the free count leaves them out.
  declared_[base_] = "web";
  declared_[base_ + 2] = "admin";
  EXPECT_EQ(manager_->portsFree(), 6);
  ASSERT_TRUE(manager_->create(shop(2)).ok());
  json a = app("shop");
  std::set<int> ports;
  for (const auto& i : a["status"]["instances"]) ports.insert(i["port"].get<int>());
  EXPECT_EQ(ports, (std::set<int>{base_ + 1, base_ + 3}));
  EXPECT_EQ(manager_->portsFree(), 4);
  // 2 instances + 1 surge against the 4 left of 8: fits; 4 + 1 does not, naming the ports.
  auto big = manager_->create(json{{"name", "big"}, {"command", {"/bin/big"}}, {"instances", 4}});
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.error().message.find("ports: 5 needed"), std::string::npos) << big.error().message;
}

TEST_F(AppManagerTest, ARestartRollsOneInstanceAtATime) {
  ASSERT_TRUE(manager_->create(shop(3)).ok());
  allReady();
  ASSERT_TRUE(manager_->restart("shop").ok());
  // One new instance (the surge), the three old ones still serving.
  EXPECT_EQ(running_, (std::set<std::string>{"shop-1", "shop-2", "shop-3", "shop-4"}));
  observe({{"shop-1", "ready"}, {"shop-2", "ready"}, {"shop-3", "ready"}});
  EXPECT_EQ(running_.size(), 4u);  // shop-4 is not ready: nothing else moves
  EXPECT_EQ(app("shop")["status"]["rollout"], "in progress");
  allReady();  // shop-4 ready: an old one drains (still running, out of rotation)
  json a = app("shop");
  int draining = 0;
  for (const auto& i : a["status"]["instances"]) draining += i["state"] == "draining" ? 1 : 0;
  EXPECT_EQ(draining, 1);
  EXPECT_EQ(running_.size(), 4u);
  clock_.advanceMillis(1000);  // drained: stopped, and the next new one starts
  allReady();
  EXPECT_EQ(running_.count("shop-1"), 0u);
  EXPECT_EQ(running_.count("shop-5"), 1u);
  for (int round = 0; round < 10; ++round) {
    clock_.advanceMillis(1000);
    allReady();
  }
  EXPECT_EQ(running_, (std::set<std::string>{"shop-4", "shop-5", "shop-6"}));
  EXPECT_EQ(app("shop")["status"]["rollout"], "complete");
  const json rolled = app("shop");
  for (const auto& i : rolled["status"]["instances"]) EXPECT_EQ(i["revision"], 2);
  EXPECT_EQ(held_.size(), 3u);  // the old instances' ports are free again
}

TEST_F(AppManagerTest, MaxUnavailableStopsAnOldOneFirst) {
  auto body = shop(2);
  body["max_surge"] = 0;
  body["max_unavailable"] = 1;
  ASSERT_TRUE(manager_->create(body).ok());
  allReady();
  ASSERT_TRUE(manager_->update("shop", json{{"env", {{"V", "2"}}}}).ok());
  // No surge: an old one leaves before a new one comes.
  EXPECT_EQ(running_.size(), 2u);
  clock_.advanceMillis(1000);
  allReady();
  EXPECT_EQ(running_.size(), 2u);
  EXPECT_EQ(running_.count("shop-3"), 1u);
}

TEST_F(AppManagerTest, ANewInstanceNeverReadyHaltsTheRollOutAndTheOldOnesServe) {
  ASSERT_TRUE(manager_->create(shop(2)).ok());
  allReady();
  ASSERT_TRUE(manager_->update("shop", json{{"command", {"/bin/broken"}}}).ok());
  ASSERT_EQ(running_.count("shop-3"), 1u);
  // Each instance runs its own revision's definition: the old ones are not changed under way.
  for (const auto& n : manager_->nodes()) {
    EXPECT_EQ(n.processes.at(0).command.at(0), n.label == "shop-3" ? "/bin/broken" : "/bin/shop")
        << n.label;
  }
  clock_.advanceMillis(31'000);
  observe({{"shop-1", "ready"}, {"shop-2", "ready"}, {"shop-3", "backoff"}});
  json a = app("shop");
  EXPECT_EQ(a["status"]["rollout"], "halted");
  const std::string msg = a["status"]["message"];
  EXPECT_NE(msg.find("roll-out halted: instance shop-3 not ready after 30 s: backoff"),
            std::string::npos)
      << msg;
  clock_.advanceMillis(1000);
  observe({{"shop-1", "ready"}, {"shop-2", "ready"}});
  EXPECT_EQ(running_, (std::set<std::string>{"shop-1", "shop-2"}));
  // Nothing more is tried until the definition changes.
  clock_.advanceMillis(5000);
  allReady();
  EXPECT_EQ(running_, (std::set<std::string>{"shop-1", "shop-2"}));
  ASSERT_TRUE(manager_->update("shop", json{{"command", {"/bin/fixed"}}}).ok());
  EXPECT_EQ(app("shop")["status"]["rollout"], "in progress");
  EXPECT_EQ(running_.count("shop-4"), 1u);
}

TEST_F(AppManagerTest, ScalingAndRemovalDrainFirstAndSurviveARestart) {
  ASSERT_TRUE(manager_->create(shop(3)).ok());
  allReady();
  ASSERT_TRUE(manager_->update("shop", json{{"instances", 1}}).ok());
  EXPECT_EQ(running_.size(), 3u);  // draining, not yet stopped
  clock_.advanceMillis(1000);
  allReady();
  EXPECT_EQ(running_.size(), 1u);
  ASSERT_TRUE(manager_->update("shop", json{{"instances", 2}}).ok());
  EXPECT_EQ(running_.size(), 2u);
  // What the store has comes back in a new manager (ring1d restarted).
  const auto before = manager_->nodes();
  make(PortRange{base_, base_ + 7});
  auto after = manager_->nodes();
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) EXPECT_EQ(after[i], before[i]);
  ASSERT_TRUE(manager_->remove("shop").ok());
  EXPECT_EQ(manager_->get("shop").error().code, 404);
  EXPECT_EQ(running_.size(), 2u);  // draining first, as in a roll-out
  clock_.advanceMillis(1000);
  allReady();
  EXPECT_TRUE(running_.empty());
  EXPECT_TRUE(held_.empty());
  EXPECT_EQ(manager_->get("shop").error().code, 404);
}

TEST_F(AppManagerTest, RemovalDrainsFromTheRouterBeforeStopping) {
  RecordingRouter router;
  manager_->configure(PortRange{base_, base_ + 7}, {}, &router);
  ASSERT_TRUE(manager_->create(shop(2)).ok());
  allReady();
  ASSERT_EQ(router.stateOf("shop-1"), router::RouterServer::State::kReady);
  ASSERT_TRUE(manager_->remove("shop").ok());
  // Out of rotation, still running; a new app of that name waits for the drain.
  EXPECT_EQ(router.stateOf("shop-1"), router::RouterServer::State::kDrain);
  EXPECT_EQ(router.stateOf("shop-2"), router::RouterServer::State::kDrain);
  EXPECT_EQ(running_.size(), 2u);
  auto again = manager_->create(shop(1));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, 409);
  EXPECT_NE(again.error().message.find("being removed"), std::string::npos);
  EXPECT_EQ(manager_->list()->size(), 0u);
  // A restart of ring1d meanwhile carries the drain on.
  const size_t applies = router.applied.size();
  make(PortRange{base_, base_ + 7});
  manager_->configure(PortRange{base_, base_ + 7}, {}, &router);
  EXPECT_EQ(manager_->get("shop").error().code, 404);
  clock_.advanceMillis(5000);
  allReady();
  EXPECT_TRUE(running_.empty());
  EXPECT_TRUE(held_.empty());
  ASSERT_GT(router.applied.size(), applies);
  EXPECT_EQ(router.stateOf("shop-1"), std::nullopt);
  ASSERT_TRUE(manager_->create(shop(1)).ok());
}

TEST_F(AppManagerTest, ARouterThatTakesNoChangeHaltsTheRollOutNamingItsError) {
  RecordingRouter router;
  manager_->configure(PortRange{base_, base_ + 7}, {}, &router);
  ASSERT_TRUE(manager_->create(shop(2)).ok());
  allReady();
  ASSERT_EQ(app("shop")["status"]["rollout"], "complete");
  router.refuse = "admin.sock: connect: Connection refused";
  ASSERT_TRUE(manager_->restart("shop").ok());
  ASSERT_EQ(running_.count("shop-3"), 1u);
  allReady();  // shop-3 is ready, but never gets into the rotation
  EXPECT_EQ(app("shop")["status"]["rollout"], "in progress");
  clock_.advanceMillis(31'000);
  allReady();
  const json a = app("shop");
  EXPECT_EQ(a["status"]["rollout"], "halted");
  const std::string msg = a["status"]["message"];
  EXPECT_NE(msg.find("roll-out halted: instance shop-3 not in the router after 30 s: router: "
                     "admin.sock: connect: Connection refused"),
            std::string::npos)
      << msg;
  // The old instances were never drained: they serve on.
  EXPECT_EQ(running_.count("shop-1") + running_.count("shop-2"), 2u);
}

TEST_F(AppManagerTest, AChangeTheStoreRefusesChangesNothing) {
  ASSERT_TRUE(manager_->create(shop(2)).ok());
  allReady();
  const json before = app("shop");
  failStoreWrites(true);
  auto up = manager_->update("shop", json{{"instances", 3}, {"env", {{"V", "2"}}}});
  ASSERT_FALSE(up.ok());
  EXPECT_NE(up.error().message.find("app 'shop': not changed"), std::string::npos)
      << up.error().message;
  EXPECT_NE(up.error().message.find("disk is full"), std::string::npos) << up.error().message;
  auto rs = manager_->restart("shop");
  ASSERT_FALSE(rs.ok());
  auto rm = manager_->remove("shop");
  ASSERT_FALSE(rm.ok());
  // Memory is as before: the same definition and revision, nothing rolls, nothing drains.
  for (int round = 0; round < 3; ++round) {
    clock_.advanceMillis(1000);
    allReady();
  }
  const json after = app("shop");
  for (const char* field : {"revision", "instances", "env"}) {
    EXPECT_EQ(after[field], before[field]) << field;
  }
  EXPECT_EQ(after["status"]["rollout"], "complete");
  EXPECT_EQ(running_, (std::set<std::string>{"shop-1", "shop-2"}));
  // And the store still has it as it was.
  failStoreWrites(false);
  make(PortRange{base_, base_ + 7});
  EXPECT_EQ(app("shop")["revision"], before["revision"]);
  EXPECT_EQ(app("shop")["instances"], 2);
}

TEST_F(AppManagerTest, AStoredSetThatDoesNotParseIsRefusedNamingTheStore) {
  for (const char* bad : {"{}", "[1]", R"([{"spec":5}])", R"([{"spec":{"name":"a","command":["/x"]},
        "revision":"two"}])", R"([{"spec":{"name":"a","command":["/x"]},"instances":[7]}])"}) {
    ASSERT_TRUE(store_->setMeta("apps", bad).ok());
    AppHost h;
    AppManager m(*reactor_, clock_, *store_, h);
    auto st = m.load();
    ASSERT_FALSE(st.ok()) << bad;
    EXPECT_NE(st.error().message.find("meta apps"), std::string::npos) << st.error().message;
  }
}

TEST_F(AppManagerTest, WithoutAPortRangeAppsAreRefused) {
  make(PortRange{});
  auto r = manager_->create(shop(1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, 409);
  EXPECT_NE(r.error().message.find("no ports range"), std::string::npos);
}

}  // namespace
}  // namespace enjin::ring
