// Apps through a real ring-1 API, served through a real HAProxy on loopback: each instance a
// tenant ring-2 node running enjin-demo-http on a socket ring1d bound and handed down
// (LISTEN_FDS), rolled, scaled, refused, halted and killed while requests keep being served.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "enjin/acl/password.hpp"
#include "hierarchy_fixture.hpp"

namespace enjin::testing {
namespace {

constexpr const char* kOpsPassword = "ring-one-operator";
const std::string kDemoHttp = std::string(ENJIN_BIN_DIR) + "/enjin-demo-http";

struct Answer {
  int status = 0;  // 0: no answer
  json body;
  std::string text;
};

Answer request(int port, const std::string& method, const std::string& path,
               const std::string& token = "", const json& body = nullptr,
               const std::string& host = "") {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(3);
  client.set_read_timeout(10);
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  if (!host.empty()) headers.emplace("Host", host);
  const std::string text = body.is_null() ? "" : body.dump();
  httplib::Result r =
      method == "GET"    ? client.Get(path.c_str(), headers)
      : method == "POST" ? client.Post(path.c_str(), headers, text, "application/json")
      : method == "PUT"  ? client.Put(path.c_str(), headers, text, "application/json")
                         : client.Delete(path.c_str(), headers);
  if (!r) return {};
  return {r->status, json::parse(r->body, nullptr, false), r->body};
}

// Connects to 127.0.0.1:port; the errno of a refusal, 0 on success.
int connectOnce(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  const int e = rc == 0 ? 0 : errno;
  ::close(fd);
  return e;
}

// The inode of the socket listening on 127.0.0.1:port (/proc/net/tcp), 0 if none.
std::string listeningInode(int port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  char want[32];
  std::snprintf(want, sizeof want, "0100007F:%04X", port);
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string sl, local, remote, st, q, t, r, uid, to, inode;
    f >> sl >> local >> remote >> st >> q >> t >> r >> uid >> to >> inode;
    if (local == want && st == "0A") return inode;
  }
  return "";
}

std::map<std::string, std::string> environOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ");
  std::map<std::string, std::string> env;
  std::string kv;
  while (std::getline(in, kv, '\0')) {
    const auto eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return env;
}

// The app's own process of an instance whose reported pid is `pid`: that one, or under a sandbox
// the child of its PID 1 (enjin-sandbox).
pid_t appProcess(pid_t pid) {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec);
  if (ec || exe.filename() != "enjin-sandbox") return pid;
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  pid_t child = 0;
  in >> child;
  return child;
}

// The pid of `pid` in its own pid namespace (the last NSpid field).
std::string innerPid(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line, last;
  while (std::getline(in, line)) {
    if (line.rfind("NSpid:", 0) != 0) continue;
    std::istringstream f(line.substr(6));
    for (std::string v; f >> v;) last = v;
  }
  return last;
}

class AppsTest : public HierarchyTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "apps run as tenants: they need root";
    if (!std::filesystem::exists("/usr/sbin/haproxy")) GTEST_SKIP() << "no /usr/sbin/haproxy";
    apiPort_ = freeTcpPort();
    routerPort_ = freeTcpPort();
    // A range of this test process's own (ctest runs tests side by side).
    portBase_ = 40000 + (::getpid() % 1000) * 12;
    auto hash = acl::hashPassword(kOpsPassword);
    ASSERT_TRUE(hash.ok());
    config_ = std::string(
        "state_dir = \"" + state() + "\"\nheartbeat_ms = 200\nheartbeat_timeout_ms = 1500\n" +
        "[[ring1]]\nlabel = \"paas\"\napi_listen = \"127.0.0.1:" + std::to_string(apiPort_) +
        "\"\nrouter_listen = \"127.0.0.1:" + std::to_string(routerPort_) +
        "\"\ndomain = \"apps.test\"\nports = \"" + std::to_string(portBase_) + "-" +
        std::to_string(portBase_ + 9) + "\"\ntenant_uids = \"" +
        std::to_string(61000 + (::getpid() % 100) * 40) + "-" +
        std::to_string(61000 + (::getpid() % 100) * 40 + 39) + "\"\n" +
        "  [[ring1.admin]]\n  user = \"ops\"\n  password_hash = \"" + *hash + "\"\n");
    writeConfig(config_);
    startRing0d();
    ASSERT_TRUE(waitFor([&] { return !(ops_ = login()).empty(); }, 20'000)) << err();
  }

  std::string login() {
    auto a = request(apiPort_, "POST", "/v1/sessions", "",
                     {{"user", "ops"}, {"password", kOpsPassword}});
    return a.status == 201 ? a.body.value("token", "") : "";
  }
  Answer api(const std::string& method, const std::string& path, const json& body = nullptr) {
    return request(apiPort_, method, path, ops_, body);
  }
  Answer routed(const std::string& host, const std::string& path = "/") {
    return request(routerPort_, "GET", path, "", nullptr, host);
  }
  json demo(const std::string& name, int instances) {
    return {{"name", name},
            {"command", {kDemoHttp, "--name", name}},
            {"instances", instances},
            {"health", "http:/healthz"},
            {"readiness", "http:/healthz"}};
  }
  bool rolledOut(const std::string& name, int ready) {
    auto a = api("GET", "/v1/apps/" + name);
    return a.status == 200 && a.body["status"]["rollout"] == "complete" &&
           a.body["status"]["ready"] == ready;
  }
  // The app as the API shows it, and ring1d's log: what a failure message needs.
  std::string show(const std::string& name) {
    return api("GET", "/v1/apps/" + name).body.dump(1) + "\nring1d's log:\n" +
           readFile(state() + "/logs/paas.log");
  }
  // The pids of the instances' app processes, by instance.
  std::map<std::string, pid_t> instancePids(const std::string& name) {
    std::map<std::string, pid_t> out;
    const json shown = api("GET", "/v1/apps/" + name).body;
    for (const auto& i : shown["status"]["instances"]) {
      out[i["name"]] = i.value("pid", 0);
    }
    return out;
  }

  std::string config_;  // ring0d's file
  int apiPort_ = 0;
  int routerPort_ = 0;
  int portBase_ = 0;
  std::string ops_;
};

TEST_F(AppsTest, DeployRouteScaleRollAndRemove) {
  auto made = api("POST", "/v1/apps", demo("shop", 2));
  ASSERT_EQ(made.status, 201) << made.body.dump();
  EXPECT_EQ(made.body["status"]["urls"][0],
            "http://shop.localhost:" + std::to_string(routerPort_) + "/")
      << show("shop");
  ASSERT_TRUE(waitFor([&] { return rolledOut("shop", 2); }, 30'000)) << show("shop") << err();

  // Through the router, by Host, both names; an unknown host gets the router's 404.
  std::set<std::string> answered;
  for (int k = 0; k < 20; ++k) {
    auto r = routed(k % 2 ? "shop.localhost" : "shop.apps.test:" + std::to_string(routerPort_));
    ASSERT_EQ(r.status, 200) << r.text;
    answered.insert(r.text);
  }
  EXPECT_EQ(routed("nope.localhost").status, 404);

  // The hand-off: LISTEN_PID is the app's own pid, fd 3 the listening socket of its port, and
  // each instance runs as a uid of its own.
  std::set<uid_t> uids;
  const json shown = api("GET", "/v1/apps/shop").body;
  ASSERT_EQ(shown["status"]["instances"].size(), 2u) << shown.dump(1);
  for (const auto& i : shown["status"]["instances"]) {
    ASSERT_GT(i["pid"].get<int>(), 0);
    const pid_t pid = appProcess(i["pid"]);
    ASSERT_GT(pid, 0);
    auto env = environOf(pid);
    EXPECT_EQ(env["LISTEN_PID"], innerPid(pid));
    EXPECT_EQ(env["LISTEN_FDS"], "1");
    EXPECT_EQ(env["LISTEN_FDNAMES"], "http");
    EXPECT_EQ(env["PORT"], std::to_string(i["port"].get<int>()));
    const auto link = std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/fd/3");
    EXPECT_EQ(link.string(), "socket:[" + listeningInode(i["port"]) + "]");
    struct stat st {};
    ASSERT_EQ(::stat(("/proc/" + std::to_string(pid)).c_str(), &st), 0);
    uids.insert(st.st_uid);
    EXPECT_GE(i["port"].get<int>(), portBase_);
    EXPECT_LE(i["port"].get<int>(), portBase_ + 9);
  }
  EXPECT_EQ(uids.size(), 2u) << "each instance has its own uid";
  EXPECT_EQ(uids.count(0), 0u);

  // Scale up and down.
  ASSERT_EQ(api("PUT", "/v1/apps/shop", {{"instances", 3}}).status, 200);
  ASSERT_TRUE(waitFor([&] { return rolledOut("shop", 3); }, 30'000)) << show("shop");
  ASSERT_EQ(api("PUT", "/v1/apps/shop", {{"instances", 1}}).status, 200);
  ASSERT_TRUE(waitFor(
      [&] {
        return rolledOut("shop", 1) &&
               api("GET", "/v1/apps/shop").body["status"]["instances"].size() == 1;
      },
      30'000))
      << show("shop");

  // A rolling restart replaces the instance, and requests are served all along.
  const auto before = instancePids("shop");
  ASSERT_EQ(api("POST", "/v1/apps/shop/restart").status, 202);
  int failed = 0, served = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = routed("shop.localhost");
    (r.status == 200 ? served : failed)++;
    auto a = api("GET", "/v1/apps/shop");
    if (a.body["revision"] == 2 && a.body["status"]["rollout"] == "complete") break;
  }
  EXPECT_EQ(failed, 0) << "served " << served;
  ASSERT_TRUE(rolledOut("shop", 1)) << show("shop");
  EXPECT_NE(instancePids("shop"), before);

  // The router's counters are ring1d's metrics; the logs of every instance, prefixed.
  auto metrics = request(apiPort_, "GET", "/metrics", ops_);
  EXPECT_NE(metrics.text.find("enjin_router_requests_total{app=\"shop\"}"), std::string::npos)
      << metrics.text.substr(0, 2000);
  EXPECT_NE(metrics.text.find("enjin_router_responses_total{app=\"shop\",code=\"2xx\"}"),
            std::string::npos);
  auto logs = request(apiPort_, "GET", "/v1/apps/shop/logs?lines=5", ops_);
  EXPECT_EQ(logs.status, 200);
  EXPECT_EQ(logs.text.rfind("shop-", 0), 0u) << logs.text;
  EXPECT_NE(logs.text.find(" | "), std::string::npos) << logs.text;

  // Removed: out of the router, its processes gone.
  ASSERT_EQ(api("DELETE", "/v1/apps/shop").status, 204);
  EXPECT_EQ(api("GET", "/v1/apps/shop").status, 404);
  EXPECT_TRUE(waitFor([&] { return routed("shop.localhost").status == 404; }, 10'000));
  EXPECT_TRUE(waitFor([&] { return ownPidsWithCmdline(kDemoHttp).empty(); }, 20'000));
}

TEST_F(AppsTest, AKilledInstanceRefusesNoConnection) {
  ASSERT_EQ(api("POST", "/v1/apps", demo("kill", 1)).status, 201);
  ASSERT_TRUE(waitFor([&] { return rolledOut("kill", 1); }, 30'000)) << show("kill");
  const int port = api("GET", "/v1/apps/kill").body["status"]["instances"][0]["port"];
  std::atomic<bool> stop{false};
  std::atomic<int> refused{0}, connected{0};
  std::thread client([&] {
    while (!stop) {
      const int e = connectOnce(port);
      if (e == ECONNREFUSED) ++refused;
      if (e == 0) ++connected;
    }
  });
  int kills = 0;
  for (int k = 0; k < 20; ++k) {
    const pid_t pid = instancePids("kill").begin()->second;
    if (pid > 0 && ::kill(pid, SIGKILL) == 0) ++kills;
    // The next kill once it is back (bounded).
    waitFor(
        [&] {
          const pid_t now = instancePids("kill").begin()->second;
          return now > 0 && now != pid;
        },
        10'000);
  }
  stop = true;
  client.join();
  EXPECT_EQ(kills, 20);
  EXPECT_EQ(refused.load(), 0) << connected.load() << " connections made";
  EXPECT_GT(connected.load(), 100);
  // The restarted instance first accepts the thousands of connections the loop left in the
  // queue; then a request of ours is served.
  EXPECT_TRUE(waitFor([&] { return request(port, "GET", "/healthz").status == 200; }, 30'000))
      << "the queue was served";
}

TEST_F(AppsTest, AnAppThatCannotBePlacedIsRefusedAndLeavesNothing) {
  auto big = api("POST", "/v1/apps", demo("big", 12));
  EXPECT_EQ(big.status, 409) << big.body.dump();
  EXPECT_NE(big.body.value("message", "").find("ports: 13 needed (12 instances + 1 surge), 10 of"),
            std::string::npos)
      << big.body.dump();
  EXPECT_EQ(api("GET", "/v1/apps/big").status, 404);
  for (const auto& n : tree()["nodes"][0].value("nodes", json::array())) {
    EXPECT_NE(n.value("label", "").rfind("big-", 0), 0u) << "no instance was made";
  }
  auto mem = api("POST", "/v1/apps",
                 json{{"name", "mem"},
                      {"command", {kDemoHttp}},
                      {"instances", 2},
                      {"limits", {{"memory", "100T"}}}});
  EXPECT_EQ(mem.status, 409);
  EXPECT_NE(mem.body.value("message", "").find("memory:"), std::string::npos) << mem.body.dump();
  EXPECT_EQ(
      api("POST", "/v1/apps", json{{"name", "x"}, {"command", {kDemoHttp}}, {"strategy", "exec"}})
          .status,
      400);
}

TEST_F(AppsTest, ASocketIsOneNodesAndAnInstanceLabelTheApps) {
  // A hand-made node declares the range's first port: the app's instance gets the next one.
  auto node = [&](const std::string& label, int port) {
    return json{{"label", label},
                {"sockets", {{{"name", "http"}, {"port", port}}}},
                {"processes", {{{"name", "web"}, {"command", json::parse(sleeper(3))}}}}};
  };
  auto made = api("POST", "/v1/nodes", node("web", portBase_));
  ASSERT_EQ(made.status, 201) << made.body.dump();
  auto app = api("POST", "/v1/apps", demo("shop", 1));
  ASSERT_EQ(app.status, 201) << app.body.dump();
  const int port = app.body["status"]["instances"][0].value("port", 0);
  EXPECT_EQ(port, portBase_ + 1) << app.body.dump();
  // A second node cannot take the instance's port: refused, naming both nodes and the port.
  auto clash = api("POST", "/v1/nodes", node("other", port));
  EXPECT_EQ(clash.status, 409) << clash.body.dump();
  const std::string msg = clash.body.value("message", "");
  for (const std::string& word :
       {"port " + std::to_string(port), std::string("'shop-1'"), std::string("'other'")}) {
    EXPECT_NE(msg.find(word), std::string::npos) << msg;
  }
  EXPECT_EQ(api("GET", "/v1/nodes/other").status, 404);
  ASSERT_TRUE(waitFor([&] { return rolledOut("shop", 1); }, 30'000)) << show("shop");
  EXPECT_EQ(routed("shop.localhost").status, 200);
  // A spec from the parent that declares the instance's label is refused, naming the app; the
  // instance runs on.
  writeConfig(config_ + "  [[ring1.ring2]]\n  label = \"shop-1\"\n    [[ring1.ring2.process]]\n" +
              "    name = \"web\"\n    command = " + sleeper(4) + "\n");
  ::kill(ring0d_, SIGHUP);
  ASSERT_TRUE(waitFor(
      [&] {
        return readFile(state() + "/logs/paas.log").find("is an instance of app 'shop'") !=
               std::string::npos;
      },
      15'000))
      << show("shop");
  EXPECT_TRUE(pidsWithCmdline("sleep:" + tag(4)).empty());
  EXPECT_TRUE(rolledOut("shop", 1)) << show("shop");
  EXPECT_EQ(routed("shop.localhost").status, 200);
}

TEST_F(AppsTest, ARollOutThatNeverGetsReadyHaltsAndTheOldInstancesServe) {
  ASSERT_EQ(api("POST", "/v1/apps", demo("web", 2)).status, 201);
  ASSERT_TRUE(waitFor([&] { return rolledOut("web", 2); }, 30'000)) << show("web");
  // The new revision listens nowhere: never ready.
  auto put = api("PUT", "/v1/apps/web",
                 {{"command", json::parse(sleeper(5))}, {"ready_timeout_ms", 3000}});
  ASSERT_EQ(put.status, 200) << put.body.dump();
  ASSERT_TRUE(waitFor(
      [&] { return api("GET", "/v1/apps/web").body["status"]["rollout"] == "halted"; }, 20'000))
      << show("web");
  const std::string msg = api("GET", "/v1/apps/web").body["status"]["message"];
  EXPECT_EQ(msg.rfind("roll-out halted: instance web-3 not ready after 3 s: ", 0), 0u) << msg;
  for (int k = 0; k < 10; ++k) EXPECT_EQ(routed("web.localhost").status, 200);
  // The failed instance goes (drained, then stopped); the two old ones stay.
  EXPECT_TRUE(waitFor(
      [&] { return api("GET", "/v1/apps/web").body["status"]["instances"].size() == 2; }, 10'000))
      << show("web");
  EXPECT_TRUE(waitFor([&] { return pidsWithCmdline("sleep:" + tag(5)).empty(); }, 10'000));
  EXPECT_EQ(api("GET", "/v1/apps/web").body["status"]["ready"], 2) << show("web");
  EXPECT_EQ(api("GET", "/v1/apps/web").body["status"]["updated"], 0);
}

TEST_F(AppsTest, TwoAppsSideBySideAndTheRouterOutlivesRing1d) {
  ASSERT_EQ(api("POST", "/v1/apps", demo("alpha", 1)).status, 201);
  ASSERT_TRUE(waitFor([&] { return rolledOut("alpha", 1); }, 30'000)) << show("alpha");
  // A second app while the first is served: the router reloads without a failed request.
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, bad{0};
  std::thread load([&] {
    while (!stop) (routed("alpha.localhost").status == 200 ? ok : bad)++;
  });
  ASSERT_EQ(api("POST", "/v1/apps", demo("beta", 1)).status, 201);
  ASSERT_TRUE(waitFor([&] { return rolledOut("beta", 1); }, 30'000)) << show("beta");
  EXPECT_EQ(routed("beta.localhost").status, 200);
  EXPECT_NE(routed("beta.localhost").text, routed("alpha.localhost").text);
  // Their instances run as two uids.
  struct stat a {
  }, b{};
  ASSERT_EQ(::stat(("/proc/" + std::to_string(instancePids("alpha").begin()->second)).c_str(), &a),
            0);
  ASSERT_EQ(::stat(("/proc/" + std::to_string(instancePids("beta").begin()->second)).c_str(), &b),
            0);
  EXPECT_NE(a.st_uid, b.st_uid);

  // The router dies: restarted by ring1d's router supervisor, it serves again from its config.
  stop = true;
  load.join();
  EXPECT_EQ(bad.load(), 0) << ok.load() << " served across the reload";
  auto haproxy = pidsWithCmdline(state() + "/nodes/paas/router/haproxy/haproxy.cfg");
  ASSERT_FALSE(haproxy.empty());
  for (pid_t p : haproxy) ::kill(p, SIGKILL);
  EXPECT_TRUE(waitFor([&] { return routed("alpha.localhost").status == 200; }, 20'000))
      << show("alpha");
  EXPECT_TRUE(waitFor([&] { return routed("beta.localhost").status == 200; }, 20'000));
  ok = 0;
  bad = 0;
  stop = false;
  load = std::thread([&] {
    while (!stop) (routed("alpha.localhost").status == 200 ? ok : bad)++;
  });

  // ring1d dies: the router and the instances do not.
  const int ring1d = pidOf("paas");
  ASSERT_GT(ring1d, 0);
  ASSERT_EQ(::kill(ring1d, SIGKILL), 0);
  ASSERT_TRUE(waitFor([&] { return pidOf("paas") > 0 && pidOf("paas") != ring1d; }, 20'000));
  ASSERT_TRUE(waitFor([&] { return !(ops_ = login()).empty(); }, 20'000));
  // The new ring1d judges nothing until every instance has reported through its ring2d.
  EXPECT_TRUE(waitFor([&] { return rolledOut("alpha", 1); }, 10'000)) << show("alpha");
  stop = true;
  load.join();
  EXPECT_EQ(bad.load(), 0) << ok.load() << " served";
  EXPECT_GT(ok.load(), 10);
}

}  // namespace
}  // namespace enjin::testing
