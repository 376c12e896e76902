// Nodes made through the control plane's HTTP APIs, against the real hierarchy: ring0d's meta API
// makes a ring-1 node (with its own API and admin), that node's ring-1 API makes ring-2 nodes
// whose processes really start and stop; what the API made survives a SIGHUP reload and a
// SIGKILL of ring0d (re-adopted, not restarted); the file's nodes are refused to the API; and
// the rules decide who may do what.
#include <httplib.h>

#include <filesystem>
#include <fstream>

#include "enjin/acl/password.hpp"
#include "hierarchy_fixture.hpp"

namespace enjin::testing {
namespace {

constexpr const char* kAdminPassword = "correct-horse-battery";
constexpr const char* kOpsPassword = "ring-one-operator";

struct Answer {
  int status = 0;  // 0: no answer
  json body;
};

// One request to an API on 127.0.0.1:port.
Answer request(int port, const std::string& method, const std::string& path,
               const std::string& token = "", const json& body = nullptr) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(3);
  client.set_read_timeout(10);
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  const std::string text = body.is_null() ? "" : body.dump();
  httplib::Result r = method == "GET"    ? client.Get(path.c_str(), headers)
                      : method == "POST" ? client.Post(path.c_str(), headers, text, "application/json")
                      : method == "PUT"  ? client.Put(path.c_str(), headers, text, "application/json")
                                         : client.Delete(path.c_str(), headers);
  if (!r) return {};
  return {r->status, json::parse(r->body, nullptr, false)};
}

std::string login(int port, const std::string& user, const std::string& password) {
  auto a = request(port, "POST", "/v1/sessions", "", {{"user", user}, {"password", password}});
  return a.status == 201 ? a.body.value("token", "") : "";
}

class ApiNodesTest : public HierarchyTest {
 protected:
  void SetUp() override {
    port_ = freeTcpPort();
    ring1Port_ = freeTcpPort();
    writeConfig(baseConfig() + "[api]\nlisten = \"127.0.0.1:" + std::to_string(port_) + "\"\n");
    const std::string pw = dir_ / "admin.pw";
    std::ofstream(pw) << kAdminPassword << "\n";
    ::chmod(pw.c_str(), 0600);
    const pid_t init = spawnProcess({kBinDir + "/ring0d", "--config", configPath(), "--init",
                                     "--admin-password-file", pw},
                                    dir_ / "init.err");
    ASSERT_EQ(waitExit(init, 20'000), 0) << readFile(dir_ / "init.err");
    startRing0d();
    ASSERT_TRUE(waitFor([&] { return !(token_ = login(port_, "admin", kAdminPassword)).empty(); },
                        15'000))
        << err();
  }

  Answer meta(const std::string& method, const std::string& path, const json& body = nullptr) {
    return request(port_, method, path, token_, body);
  }

  // A ring-1 node with its own API, its admin "ops", and one ring-2 node.
  json madeNode() const {
    auto hash = acl::hashPassword(kOpsPassword);
    return {{"label", "made"},
            {"api_listen", "127.0.0.1:" + std::to_string(ring1Port_)},
            {"admins", {{{"user", "ops"}, {"password_hash", *hash}}}},
            {"nodes",
             {{{"label", "app"}, {"processes", {{{"name", "web"}, {"command", json::parse(sleeper(3))}}}}}}}};
  }

  int port_ = 0;
  int ring1Port_ = 0;
  std::string token_;
};

TEST_F(ApiNodesTest, MadeNodesLiveThroughReloadAndRing0dDeath) {
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << err();
  auto made = meta("POST", "/v1/nodes", madeNode());
  ASSERT_EQ(made.status, 201) << made.body.dump();
  EXPECT_EQ(made.body.value("source", ""), "api");
  EXPECT_FALSE(made.body["admins"][0].contains("password_hash")) << "a hash is not shown";
  ASSERT_TRUE(waitFor([&] { return stateAt("made/app/web") == "ready"; }, 20'000)) << tree().dump(1);
  EXPECT_EQ(pidsWithCmdline("sleep:" + tag(3)).size(), 1u);

  // The file's nodes are the file's.
  auto put = meta("PUT", "/v1/nodes/infra", {{"label", "infra"}});
  EXPECT_EQ(put.status, 409);
  EXPECT_NE(put.body.value("message", "").find(configPath()), std::string::npos) << put.body.dump();
  EXPECT_EQ(meta("DELETE", "/v1/nodes/infra").status, 409);
  EXPECT_EQ(meta("POST", "/v1/nodes", {{"label", "infra"}}).status, 409);
  EXPECT_EQ(meta("POST", "/v1/nodes", madeNode()).status, 409) << "a label is made once";
  // A body the file would refuse is refused the same way, and nothing changes.
  auto bad = meta("POST", "/v1/nodes", {{"label", "odd"}, {"colour", "red"}});
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.value("message", "").find("unknown key 'colour'"), std::string::npos);
  EXPECT_EQ(meta("POST", "/v1/nodes", {{"label", "odd"}, {"strategy", "vm"}}).status, 400);
  EXPECT_EQ(meta("GET", "/v1/nodes/odd").status, 404);
  // A compartment the API does not know is refused; one it knows is shown on the offer.
  EXPECT_EQ(meta("POST", "/v1/nodes", {{"label", "odd"}, {"compartment", "mars"}}).status, 409);
  ASSERT_EQ(meta("POST", "/v1/compartments", {{"name", "eu"}}).status, 201);
  EXPECT_EQ(meta("POST", "/v1/nodes", {{"label", "odd"}, {"compartment", "eu"}}).status, 201);
  EXPECT_TRUE(waitFor([&] {
    for (const auto& o : meta("GET", "/v1/job-offers").body) {
      if (o.value("node", "") == "odd" && o.value("compartment", "") == "eu") return true;
    }
    return false;
  }, 10'000));
  EXPECT_EQ(meta("DELETE", "/v1/nodes/odd").status, 204);

  const int madePid = pidOf("made"), webPid = pidOf("made/app/web");
  // A reload of the file neither removes nor rewrites what the API made.
  ::kill(ring0d_, SIGHUP);
  ASSERT_TRUE(waitFor([&] { return err().find("reloading") != std::string::npos; }, 5000));
  EXPECT_TRUE(waitFor([&] { return allReady(); }, 5000));
  EXPECT_EQ(pidOf("made"), madePid);
  // ring0d dies and comes back: the made node is re-adopted, not restarted; the session holds.
  killRing0d(SIGKILL);
  startRing0d();
  ASSERT_TRUE(waitFor([&] { return meta("GET", "/v1/nodes/made").status == 200; }, 15'000)) << err();
  ASSERT_TRUE(waitFor([&] { return stateAt("made/app/web") == "ready"; }, 15'000));
  EXPECT_EQ(pidOf("made"), madePid);
  EXPECT_EQ(pidOf("made/app/web"), webPid);
  EXPECT_EQ(meta("GET", "/v1/nodes/made").body.value("source", ""), "api");

  // Deleted: stopped, its state moved aside.
  EXPECT_EQ(meta("DELETE", "/v1/nodes/made").status, 204);
  EXPECT_TRUE(waitFor([&] { return pidsWithCmdline("sleep:" + tag(3)).empty(); }, 15'000));
  EXPECT_EQ(meta("GET", "/v1/nodes/made").status, 404);
  EXPECT_EQ(meta("DELETE", "/v1/nodes/made").status, 404);
  bool aside = false;
  for (const auto& e : std::filesystem::directory_iterator(state() + "/nodes")) {
    aside = aside || e.path().filename().string().starts_with("made.removed-");
  }
  EXPECT_TRUE(aside);
}

TEST_F(ApiNodesTest, Ring1ApiRunsTheLifeOfARing2Node) {
  ASSERT_EQ(meta("POST", "/v1/nodes", madeNode()).status, 201);
  std::string ops;
  ASSERT_TRUE(waitFor([&] { return !(ops = login(ring1Port_, "ops", kOpsPassword)).empty(); }, 20'000))
      << err();
  // Each ring's users are its own.
  EXPECT_EQ(request(ring1Port_, "GET", "/v1/nodes", token_).status, 401);
  EXPECT_EQ(request(port_, "GET", "/v1/nodes", ops).status, 401);
  EXPECT_EQ(login(ring1Port_, "admin", kAdminPassword), "");

  // Created: its process really starts.
  json shop{{"label", "shop"},
            {"processes", {{{"name", "web"}, {"command", json::parse(sleeper(4))}}}}};
  auto made = request(ring1Port_, "POST", "/v1/nodes", ops, shop);
  ASSERT_EQ(made.status, 201) << made.body.dump();
  ASSERT_TRUE(waitFor([&] { return stateAt("made/shop/web") == "ready"; }, 20'000)) << tree().dump(1);
  EXPECT_EQ(pidsWithCmdline("sleep:" + tag(4)).size(), 1u);
  // Changed: the old process stops, the new one runs.
  shop["processes"][0]["command"] = json::parse(sleeper(5));
  auto changed = request(ring1Port_, "PUT", "/v1/nodes/shop", ops, shop);
  ASSERT_EQ(changed.status, 200) << changed.body.dump();
  EXPECT_TRUE(waitFor([&] {
    return pidsWithCmdline("sleep:" + tag(4)).empty() && pidsWithCmdline("sleep:" + tag(5)).size() == 1;
  }, 20'000)) << tree().dump(1);
  // A node the parent's spec declares is the parent's.
  EXPECT_EQ(request(ring1Port_, "DELETE", "/v1/nodes/app", ops).status, 409);
  // Deleted: the process stops.
  EXPECT_EQ(request(ring1Port_, "DELETE", "/v1/nodes/shop", ops).status, 204);
  EXPECT_TRUE(waitFor([&] { return pidsWithCmdline("sleep:" + tag(5)).empty(); }, 20'000));
  EXPECT_EQ(pidsWithCmdline("sleep:" + tag(3)).size(), 1u) << "the declared node is untouched";
}

// A tenant node made and deleted through a ring-1 API: its ids are dealt from the ring-1 node's
// tenant_uids, its state goes to root when it is deleted, and a new node of the same label gets
// a fresh pair.
TEST_F(ApiNodesTest, TenantNodesThroughTheRing1Api) {
  if (::geteuid() != 0) GTEST_SKIP() << "tenant nodes need root";
  json ring1 = madeNode();
  ring1["tenant_uids"] = "65000-65099";
  ASSERT_EQ(meta("POST", "/v1/nodes", ring1).status, 201);
  std::string ops;
  ASSERT_TRUE(waitFor([&] { return !(ops = login(ring1Port_, "ops", kOpsPassword)).empty(); }, 20'000))
      << err();
  json shop{{"label", "shop"},
            {"strategy", "unix-user"},
            {"limits", {{"processes", 100}}},
            {"processes", {{{"name", "web"}, {"command", json::parse(sleeper(4))}}}}};
  auto made = request(ring1Port_, "POST", "/v1/nodes", ops, shop);
  ASSERT_EQ(made.status, 201) << made.body.dump();
  ASSERT_TRUE(waitFor([&] { return stateAt("made/shop/web") == "ready"; }, 20'000)) << tree().dump(1);
  auto owner = [](const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? st.st_uid : ~0U;
  };
  const std::string dir = state() + "/nodes/made/nodes/shop";
  const uid_t first = owner(dir);
  EXPECT_GT(first, 65000U);
  EXPECT_EQ(owner(dir + "/home"), first + 1);
  const pid_t web = pidsWithCmdline("sleep:" + tag(4)).at(0);
  EXPECT_EQ(owner("/proc/" + std::to_string(web)), first + 1);

  ASSERT_EQ(request(ring1Port_, "DELETE", "/v1/nodes/shop", ops).status, 204);
  ASSERT_TRUE(waitFor([&] { return pidsWithCmdline("sleep:" + tag(4)).empty(); }, 20'000));
  std::string aside;
  for (const auto& e : std::filesystem::directory_iterator(state() + "/nodes/made/nodes")) {
    if (e.path().filename().string().starts_with("shop.removed-")) aside = e.path().string();
  }
  ASSERT_FALSE(aside.empty());
  EXPECT_EQ(owner(aside), 0U) << "a retired pair's files go to root";
  EXPECT_EQ(owner(aside + "/home"), 0U);

  ASSERT_EQ(request(ring1Port_, "POST", "/v1/nodes", ops, shop).status, 201);
  ASSERT_TRUE(waitFor([&] { return stateAt("made/shop/web") == "ready"; }, 20'000)) << tree().dump(1);
  EXPECT_NE(owner(dir), first) << "a fresh pair while one is left";

  // A compartment that demands a sandbox takes no unix-user node, and says why.
  ASSERT_EQ(request(ring1Port_, "POST", "/v1/compartments", ops,
                    {{"name", "pci"}, {"min_isolation", "sandbox"}})
                .status,
            201);
  json weak{{"label", "till"}, {"strategy", "unix-user"}, {"compartment", "pci"},
            {"processes", {{{"name", "web"}, {"command", json::parse(sleeper(5))}}}}};
  auto refused = request(ring1Port_, "POST", "/v1/nodes", ops, weak);
  EXPECT_EQ(refused.status, 409) << refused.body.dump();
  EXPECT_EQ(refused.body.value("message", ""),
            "compartment 'pci' requires isolation ≥ sandbox; node 'till' asks for unix-user");
  weak["strategy"] = "sandbox";
  EXPECT_EQ(request(ring1Port_, "POST", "/v1/nodes", ops, weak).status, 201);
  EXPECT_TRUE(waitFor([&] { return stateAt("made/till/web") == "ready"; }, 20'000)) << tree().dump(1);
}

TEST_F(ApiNodesTest, RulesDecideWhoMayMakeAndDeleteNodes) {
  // A user with no role may do nothing: 403, nothing started, an audit row says so.
  ASSERT_EQ(meta("POST", "/v1/users", {{"name", "eve"}, {"password", "eve-has-no-roles"}}).status, 201);
  const std::string eve = login(port_, "eve", "eve-has-no-roles");
  ASSERT_FALSE(eve.empty());
  json node{{"label", "evil"}};
  EXPECT_EQ(request(port_, "POST", "/v1/nodes", eve, node).status, 403);
  EXPECT_EQ(meta("GET", "/v1/nodes/evil").status, 404);
  EXPECT_FALSE(std::filesystem::exists(state() + "/nodes/evil"));
  auto audit = meta("GET", "/v1/audit?limit=1000");
  bool denied = false;
  for (const auto& row : audit.body) {
    denied = denied || (row.value("user", "") == "eve" && row.value("action", "") == "nodes:create" &&
                        row.value("result", "") == "denied");
  }
  EXPECT_TRUE(denied) << audit.body.dump(1);

  // allow nodes:* with deny nodes:delete: may make a node, may not delete it.
  ASSERT_EQ(meta("POST", "/v1/access-rule-sets",
                 {{"name", "builders"},
                  {"rules",
                   {{{"effect", "allow"}, {"action", "nodes:*"}, {"resource", "*"}},
                    {{"effect", "deny"}, {"action", "nodes:delete"}, {"resource", "*"}}}}})
                .status,
            201);
  ASSERT_EQ(meta("POST", "/v1/roles", {{"name", "builder"}, {"rule_sets", {"builders"}}}).status, 201);
  ASSERT_EQ(meta("POST", "/v1/memberships", {{"user", "eve"}, {"role", "builder"}}).status, 201);
  EXPECT_EQ(request(port_, "POST", "/v1/nodes", eve, {{"label", "built"}}).status, 201);
  EXPECT_TRUE(waitFor([&] { return stateAt("built") == "ready"; }, 20'000)) << tree().dump(1);
  EXPECT_EQ(request(port_, "DELETE", "/v1/nodes/built", eve).status, 403);
  EXPECT_EQ(meta("GET", "/v1/nodes/built").status, 200);
}

TEST_F(ApiNodesTest, JobOffersAndObservationHistory) {
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << err();
  // Each node offers what it measured, in its observations.
  json offers;
  ASSERT_TRUE(waitFor([&] {
    offers = meta("GET", "/v1/job-offers").body;
    return offers.is_array() && offers.size() == 1 && offers[0].contains("cpus");
  }, 10'000)) << offers.dump();
  EXPECT_EQ(offers[0].value("node", ""), "infra");
  EXPECT_EQ(offers[0].value("cpus", 0), static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN)));
  EXPECT_GT(offers[0].value("memory_bytes", int64_t{0}), 0);
  EXPECT_GT(offers[0].value("process_slots", int64_t{0}), 0);

  // The stored history: infra went running, then ready; a window after now is empty.
  auto all = meta("GET", "/v1/nodes/infra/observations");
  ASSERT_EQ(all.status, 200) << all.body.dump();
  ASSERT_GE(all.body.size(), 2u);
  EXPECT_EQ(all.body.back().value("state", ""), "ready");
  EXPECT_EQ(meta("GET", "/v1/nodes/infra/observations?limit=1").body.size(), 1u);
  EXPECT_EQ(meta("GET", "/v1/nodes/infra/observations?since=2999-01-01T00:00:00Z").body.size(), 0u);
  EXPECT_EQ(meta("GET", "/v1/nodes/infra/observations?until=1000").body.size(), 0u);
  EXPECT_EQ(meta("GET", "/v1/nodes/infra/observations?since=yesterday").status, 400);
  EXPECT_EQ(meta("GET", "/v1/nodes/nope/observations").status, 404);
}

// ring0d --init: one line on stdout with a random password, once; a password file must be 0600.
// Then the daemon serves its API over HTTPS with a certificate made by openssl.
class ApiInitTest : public HierarchyTest {
 protected:
  void SetUp() override {}

  // Runs ring0d with `args`; returns its exit status and stdout.
  std::pair<int, std::string> ring0d(std::vector<std::string> args) {
    args.insert(args.begin(), {kBinDir + "/ring0d", "--config", configPath()});
    const std::string out = dir_ / "stdout";
    std::string cmd;
    for (const auto& a : args) cmd += "'" + a + "' ";
    const int status = std::system((cmd + "> " + out + " 2>>" + std::string(dir_ / "init.err")).c_str());
    return {status, readFile(out)};
  }
};

TEST_F(ApiInitTest, InitPrintsOnePasswordOnceAndTheApiSpeaksTls) {
  const int port = freeTcpPort();
  const std::string cert = dir_ / "api.crt", key = dir_ / "api.key";
  const std::string openssl = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                              "-nodes -days 1 -subj /CN=127.0.0.1 -keyout " + key + " -out " + cert +
                              " 2>/dev/null";
  ASSERT_EQ(std::system(openssl.c_str()), 0);
  writeConfig(baseConfig() + "[api]\nlisten = \"127.0.0.1:" + std::to_string(port) +
              "\"\ntls_cert = \"" + cert + "\"\ntls_key = \"" + key + "\"\n");
  // A password file others may read is refused, and nothing is made.
  const std::string pw = dir_ / "pw";
  std::ofstream(pw) << "a-password-in-a-file\n";
  ::chmod(pw.c_str(), 0644);
  auto refused = ring0d({"--init", "--admin-password-file", pw});
  EXPECT_NE(refused.first, 0);
  EXPECT_NE(readFile(dir_ / "init.err").find("mode 0600"), std::string::npos) << readFile(dir_ / "init.err");
  // The first --init prints exactly one line, the second nothing.
  auto first = ring0d({"--init"});
  ASSERT_EQ(first.first, 0) << readFile(dir_ / "init.err");
  ASSERT_EQ(std::count(first.second.begin(), first.second.end(), '\n'), 1) << first.second;
  ASSERT_TRUE(first.second.starts_with("admin password: ")) << first.second;
  const std::string password = first.second.substr(16, first.second.size() - 17);
  EXPECT_GE(password.size(), 12u);
  auto second = ring0d({"--init"});
  EXPECT_EQ(second.first, 0);
  EXPECT_EQ(second.second, "");

  startRing0d();
  httplib::SSLClient tls("127.0.0.1", port);
  tls.set_ca_cert_path(cert.c_str());
  tls.enable_server_certificate_verification(true);
  tls.set_connection_timeout(3);
  ASSERT_TRUE(waitFor([&] {
    auto r = tls.Post("/v1/sessions", json{{"user", "admin"}, {"password", password}}.dump(),
                      "application/json");
    return r && r->status == 201;
  }, 15'000)) << err();
  // Plain HTTP to the TLS port gets no API.
  httplib::Client plain("127.0.0.1", port);
  plain.set_connection_timeout(2);
  plain.set_read_timeout(2);
  auto p = plain.Get("/v1/tree");
  EXPECT_TRUE(!p || p->status == 400) << p->status;
  // The password from the second --init did not replace the first.
  EXPECT_EQ(tls.Post("/v1/sessions", json{{"user", "admin"}, {"password", password}}.dump(),
                     "application/json")->status,
            201);
}

}  // namespace
}  // namespace enjin::testing
