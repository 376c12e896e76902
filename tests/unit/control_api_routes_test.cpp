// The control API through real HTTP on loopback, in one process: a real store in a temp dir, a
// directory on a fake clock, the daemon's reactor turning on a thread of its own. The route
// table is walked: no route is reachable without its check.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <random>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "enjin/acl/password.hpp"
#include "enjin/api/control_api.hpp"
#include "enjin/api/http_server.hpp"
#include "enjin/base/clock.hpp"
#include "enjin/directory/directory.hpp"
#include "enjin/metrics/metrics.hpp"
#include "enjin/reactor/handoff.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/store/store.hpp"
#include "fakes/fake_clock.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::api {
namespace {

using nlohmann::json;

constexpr const char* kAdminPassword = "correct-horse-battery";

struct Answer {
  int status = 0;
  json body;
  httplib::Headers headers;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

class ControlApiRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Reactor::create(systemClock_);
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(*r);
    auto s = store::Store::open(dir_.path() + "/ring0.db");
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(*s);
    directory_ = std::make_unique<directory::Directory>(*store_, clock_);
    auto hash = acl::hashPassword(kAdminPassword);
    ASSERT_TRUE(hash.ok());
    ASSERT_TRUE(directory_->ensureAdmin(*hash).ok());
    DaemonView view;
    view.tree = [] {
      return json{{"label", "ring0"},
                  {"state", "ready"},
                  {"nodes", {{{"label", "infra"}, {"uuid", "u-1"}, {"ring", 1}, {"state", "ready"}}}}};
    };
    view.createNode = [this](const json& body) -> Result<json> {
      ++nodeChanges_;
      return body;
    };
    view.updateNode = [this](const std::string&, const json& body) -> Result<json> {
      ++nodeChanges_;
      return body;
    };
    view.deleteNode = [this](const std::string&) -> Status {
      ++nodeChanges_;
      return {};
    };
    ControlApiOptions options;
    options.sessionTtlMs = 60'000;
    api_ = std::make_unique<ControlApi>(*reactor_, clock_, *directory_, *store_, registry_, options,
                                        std::move(view));
    HttpServerOptions ho;
    ho.listen = "127.0.0.1:0";
    auto server = HttpServer::start(
        ho, [this](const HttpRequest& q, HttpResponse& a) { api_->handle(q, a); });
    ASSERT_TRUE(server.ok()) << server.error().message;
    server_ = std::move(*server);
    handoff_ = std::make_unique<Handoff>(*reactor_);
    loop_ = std::thread([this] {
      while (!stop_) reactor_->runOnce(20);
    });
    admin_ = login("admin", kAdminPassword);
    ASSERT_FALSE(admin_.empty());
  }

  void TearDown() override {
    if (api_) api_->close();
    server_.reset();
    stop_ = true;
    if (loop_.joinable()) loop_.join();
    api_.reset();
    handoff_.reset();
  }

  Answer send(const std::string& method, const std::string& path, const std::string& token = "",
              const std::string& body = "", const std::string& type = "application/json") {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(10, 0);
    httplib::Headers h;
    if (!token.empty()) h.emplace("Authorization", "Bearer " + token);
    httplib::Result r = method == "GET"      ? c.Get(path.c_str(), h)
                        : method == "POST"   ? c.Post(path.c_str(), h, body, type.c_str())
                        : method == "PUT"    ? c.Put(path.c_str(), h, body, type.c_str())
                        : method == "DELETE" ? c.Delete(path.c_str(), h)
                        : method == "PATCH"  ? c.Patch(path.c_str(), h, body, type.c_str())
                                             : c.Options(path.c_str(), h);
    if (!r) return {};
    return {r->status, json::parse(r->body, nullptr, false), r->headers};
  }
  Answer send(const std::string& method, const std::string& path, const std::string& token,
              const json& body) {
    return send(method, path, token, body.dump());
  }

  std::string login(const std::string& user, const std::string& password) {
    auto a = send("POST", "/v1/sessions", "", json{{"user", user}, {"password", password}});
    return a.status == 201 ? a.body.value("token", "") : "";
  }

  // Everything the directory holds, and the node changes made, to show nothing changed.
  json snapshot() {
    json all;
    for (const char* coll : {"users", "roles", "memberships", "access-rule-sets", "compartments",
                             "networks", "network-interfaces"}) {
      auto kind = directory::kindFromCollection(coll);
      auto list = directory_call([&] { return directory_->list(*kind); });
      all[coll] = list;
    }
    all["node_changes"] = nodeChanges_.load();
    return all;
  }
  // Reads the directory on the reactor thread, as the API does.
  json directory_call(const std::function<Result<json>()>& fn) {
    auto r = handoff_->call<json>([&] {
      auto v = fn();
      return v.ok() ? *v : json(v.error().message);
    }, 5000);
    EXPECT_TRUE(r.has_value());
    return r.value_or(json());
  }

  // A user with the rule set `rules` (none: no role at all), signed in.
  std::string userWith(const std::string& name, const json& rules = nullptr) {
    EXPECT_EQ(send("POST", "/v1/users", admin_, json{{"name", name}, {"password", name + "-password-1"}})
                  .status,
              201);
    if (!rules.is_null()) {
      EXPECT_EQ(send("POST", "/v1/access-rule-sets", admin_, json{{"name", name}, {"rules", rules}})
                    .status,
                201);
      EXPECT_EQ(send("POST", "/v1/roles", admin_, json{{"name", name}, {"rule_sets", {name}}}).status,
                201);
      EXPECT_EQ(send("POST", "/v1/memberships", admin_, json{{"user", name}, {"role", name}}).status,
                201);
    }
    return login(name, name + "-password-1");
  }

  static std::string filled(const std::string& pattern) {
    std::string out;
    for (size_t i = 0; i < pattern.size(); ++i) {
      if (pattern[i] == '{') {
        i = pattern.find('}', i);
        out += "infra";
      } else {
        out += pattern[i];
      }
    }
    return out;
  }

  testing::TempDir dir_;
  SystemClock systemClock_;
  testing::FakeClock clock_;
  std::unique_ptr<Reactor> reactor_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<directory::Directory> directory_;
  metrics::Registry registry_;
  std::unique_ptr<ControlApi> api_;
  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<Handoff> handoff_;
  std::thread loop_;
  std::atomic<bool> stop_{false};
  std::atomic<int> nodeChanges_{0};
  std::string admin_;
};

TEST_F(ControlApiRoutesTest, EveryRouteChecksBeforeItsHandler) {
  const auto routes = api_->routes();
  ASSERT_GT(routes.size(), 40u);
  const std::string nobody = userWith("nobody");
  ASSERT_FALSE(nobody.empty());
  const json before = snapshot();
  const json body{{"name", "infra"}, {"label", "infra"}, {"password", "a-long-password"}};
  for (const auto& r : routes) {
    const std::string path = filled(r.pattern);
    SCOPED_TRACE(r.method + " " + r.pattern);
    if (r.action == "-") continue;  // signing in needs no session
    auto anonymous = send(r.method, path, "", body);
    EXPECT_EQ(anonymous.status, 401);
    EXPECT_EQ(anonymous.body.value("error", ""), "unauthenticated");
    auto forged = send(r.method, path, std::string(43, 'A'), body);
    EXPECT_EQ(forged.status, 401);
    if (r.action.empty()) continue;  // any session may (logging out)
    auto denied = send(r.method, path, nobody, body);
    EXPECT_EQ(denied.status, 403);
    EXPECT_NE(denied.body.value("message", "").find(r.action), std::string::npos)
        << denied.body.dump();
  }
  EXPECT_EQ(snapshot(), before) << "a refused request changed something";
  EXPECT_EQ(nodeChanges_.load(), 0);

  // The walk sees every route: an unknown path is 404, a wrong method 405 with Allow.
  EXPECT_EQ(send("GET", "/v1/nothing", admin_).status, 404);
  EXPECT_EQ(send("GET", "/v1/users/a/b/c", admin_).status, 404);
  std::map<std::string, std::set<std::string>> methods;
  for (const auto& r : routes) methods[r.pattern].insert(r.method);
  for (const auto& [pattern, allowed] : methods) {
    for (const char* m : {"GET", "POST", "PUT", "DELETE", "PATCH"}) {
      if (allowed.contains(m)) continue;
      SCOPED_TRACE(std::string(m) + " " + pattern);
      auto a = send(m, filled(pattern), admin_, json::object());
      EXPECT_EQ(a.status, 405);
      EXPECT_FALSE(a.header("Allow").empty());
    }
  }
}

TEST_F(ControlApiRoutesTest, AnExplicitDenyBeatsAnAllow) {
  const std::string ops = userWith(
      "ops", json{{{"effect", "allow"}, {"action", "users:*"}, {"resource", "*"}},
                  {{"effect", "allow"}, {"action", "nodes:*"}, {"resource", "*"}},
                  {{"effect", "deny"}, {"action", "users:delete"}, {"resource", "*"}},
                  {{"effect", "deny"}, {"action", "nodes:delete"}, {"resource", "*"}}});
  ASSERT_FALSE(ops.empty());
  EXPECT_EQ(send("POST", "/v1/users", ops, json{{"name", "carol"}, {"password", "carol-password"}}).status,
            201);
  EXPECT_EQ(send("DELETE", "/v1/users/carol", ops).status, 403);
  EXPECT_EQ(send("GET", "/v1/users/carol", ops).status, 200);
  EXPECT_EQ(send("POST", "/v1/nodes", ops, json{{"label", "n"}}).status, 201);
  EXPECT_EQ(send("DELETE", "/v1/nodes/n", ops).status, 403);
  EXPECT_EQ(nodeChanges_.load(), 1);
  EXPECT_EQ(send("GET", "/v1/roles", ops).status, 403) << "nothing allowed on roles";
  // The refusal is audited.
  auto audit = send("GET", "/v1/audit?limit=1000", admin_);
  ASSERT_EQ(audit.status, 200);
  int denied = 0;
  for (const auto& row : audit.body) {
    if (row.value("user", "") == "ops" && row.value("result", "") == "denied") ++denied;
  }
  EXPECT_EQ(denied, 2) << audit.body.dump(1);
}

TEST_F(ControlApiRoutesTest, SessionsExpireAndEndWithAPasswordChangeOrTheUser) {
  const std::string bob = userWith("bob", json{{{"effect", "allow"}, {"action", "*"}, {"resource", "*"}}});
  ASSERT_FALSE(bob.empty());
  EXPECT_EQ(send("GET", "/v1/tree", bob).status, 200);
  // The token expires on the API's clock.
  clock_.advanceMillis(61'000);
  EXPECT_EQ(send("GET", "/v1/tree", bob).status, 401);
  admin_ = login("admin", kAdminPassword);
  // A changed password ends every session of the user at once.
  const std::string again = login("bob", "bob-password-1");
  ASSERT_FALSE(again.empty());
  EXPECT_EQ(send("PUT", "/v1/users/bob", admin_, json{{"password", "a-new-bob-password"}}).status, 200);
  EXPECT_EQ(send("GET", "/v1/tree", again).status, 401);
  EXPECT_EQ(login("bob", "bob-password-1"), "");
  const std::string third = login("bob", "a-new-bob-password");
  ASSERT_FALSE(third.empty());
  // So does deleting the user.
  EXPECT_EQ(send("DELETE", "/v1/users/bob", admin_).status, 204);
  EXPECT_EQ(send("GET", "/v1/tree", third).status, 401);
  // Logging out ends the session.
  EXPECT_EQ(send("DELETE", "/v1/sessions/current", admin_).status, 204);
  EXPECT_EQ(send("GET", "/v1/tree", admin_).status, 401);
}

TEST_F(ControlApiRoutesTest, FailedLoginsAreLimitedAndTellNothing) {
  auto wrong = send("POST", "/v1/sessions", "", json{{"user", "admin"}, {"password", "not-the-password"}});
  auto unknown = send("POST", "/v1/sessions", "", json{{"user", "ghost"}, {"password", "not-the-password"}});
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(unknown.status, 401);
  EXPECT_EQ(wrong.body, unknown.body) << "an unknown user answers as a wrong password";
  int limited = 0;
  std::string retryAfter;
  for (int i = 0; i < 20 && limited == 0; ++i) {
    auto a = send("POST", "/v1/sessions", "", json{{"user", "admin"}, {"password", "guess-" + std::to_string(i)}});
    if (a.status == 429) {
      ++limited;
      retryAfter = a.header("Retry-After");
    } else {
      EXPECT_EQ(a.status, 401);
    }
  }
  EXPECT_EQ(limited, 1);
  EXPECT_GT(std::atoi(retryAfter.c_str()), 0);
  // Even the right password waits.
  EXPECT_EQ(send("POST", "/v1/sessions", "", json{{"user", "admin"}, {"password", kAdminPassword}}).status,
            429);
}

TEST_F(ControlApiRoutesTest, BadBodiesAreRefusedClearly) {
  EXPECT_EQ(send("POST", "/v1/users", admin_, "name=x", "application/x-www-form-urlencoded").status, 415);
  EXPECT_EQ(send("POST", "/v1/users", admin_, "{\"name\":", "application/json").status, 400);
  EXPECT_EQ(send("POST", "/v1/users", admin_, "[1,2]", "application/json").status, 400);
  EXPECT_EQ(send("POST", "/v1/users", admin_, std::string(2 << 20, ' '), "application/json").status, 413);
  auto shortPw = send("POST", "/v1/users", admin_, json{{"name", "d"}, {"password", "short"}});
  EXPECT_EQ(shortPw.status, 400);
  EXPECT_NE(shortPw.body.value("message", "").find("12"), std::string::npos) << shortPw.body.dump();
  EXPECT_EQ(send("POST", "/v1/users", admin_, json{{"name", "d"}, {"password_hash", "$argon2id$x"}}).status,
            400);
  EXPECT_EQ(send("POST", "/v1/users", admin_, json{{"name", "d"}, {"password", 12}}).status, 400);
  // Duplicate keys are not guessed at.
  EXPECT_EQ(send("POST", "/v1/compartments", admin_, std::string("{\"name\":\"a\",\"name\":\"b\"}")).status, 400);
  EXPECT_EQ(send("GET", "/v1/audit?after=x", admin_).status, 400);
}

// Thousands of random, truncated and type-confused requests, with an admin's token: none is a
// 5xx but a 503, the server still serves, and what was stored before is intact.
TEST_F(ControlApiRoutesTest, HandlerFuzzNeverFailsTheServer) {
  ASSERT_EQ(send("POST", "/v1/compartments", admin_, json{{"name", "world"}}).status, 201);
  ASSERT_EQ(send("POST", "/v1/users", admin_, json{{"name", "keep"}, {"password", "keep-this-password"}}).status,
            201);
  const json before = snapshot();
  const std::vector<json> shapes = {
      {{"name", "u1"}, {"password", "twelve-chars-ok"}},
      {{"name", "r1"}, {"rules", {{{"effect", "allow"}, {"action", "nodes:*"}, {"resource", "*"}}}}},
      {{"name", "ro"}, {"rule_sets", {"admin"}}},
      {{"user", "admin"}, {"role", "admin"}},
      {{"name", "c1"}, {"parent_compartment", "world"}},
      {{"name", "n1"}, {"ring", 1}, {"strategy", "local"}},
      {{"label", "x"}, {"api_listen", "127.0.0.1:1"}, {"nodes", json::array()}},
      {{"user", "admin"}, {"password", "whatever-password"}},
  };
  const std::vector<json> odd = {nullptr, true, -1, 1e308, "", std::string(5000, 'z'), json::array(),
                                 json::object(), {{"a", {{"b", {{"c", 1}}}}}}, {1, "x", nullptr}};
  std::vector<std::string> paths;
  for (const auto& r : api_->routes()) paths.push_back(filled(r.pattern));
  paths.insert(paths.end(), {"/", "/v1", "/v1/", "//v1//users", "/v1/users/%00", "/v1/users/..",
                             "/v1/nodes/infra/observations/x", "/metrics/x"});
  std::mt19937 rng(20261207);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  const char* methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW"};
  int answered = 0;
  for (int i = 0; i < 3000; ++i) {
    HttpRequest q;
    q.method = methods[pick(8)];
    q.path = paths[pick(paths.size())];
    q.remoteAddr = "127.0.0.1";
    q.headers["authorization"] = pick(10) == 0 ? "Bearer x" : "Bearer " + admin_;
    q.headers["content-type"] = pick(10) == 0 ? "text/plain" : "application/json";
    if (pick(4) == 0) q.query.emplace(pick(2) ? "limit" : "after", std::to_string(static_cast<int64_t>(rng())));
    json body = shapes[pick(shapes.size())];
    switch (pick(5)) {
      case 0:  // a field of another type
        if (body.is_object() && !body.empty()) {
          auto it = body.begin();
          std::advance(it, pick(body.size()));
          *it = odd[pick(odd.size())];
        }
        q.body = body.dump();
        break;
      case 1:  // truncated
        q.body = body.dump();
        q.body.resize(pick(q.body.size() + 1));
        break;
      case 2:  // random bytes
        q.body.resize(pick(64));
        for (auto& c : q.body) c = static_cast<char>(rng());
        break;
      case 3:  // an extra key
        body["extra"] = odd[pick(odd.size())];
        q.body = body.dump();
        break;
      default:
        q.body = body.dump();
    }
    HttpResponse a;
    api_->handle(q, a);
    ++answered;
    // A DELETE /v1/sessions/current logged the admin out: sign in again, so the rest still
    // reaches the handlers.
    if (a.status == 401 && q.headers["authorization"] == "Bearer " + admin_) {
      admin_ = login("admin", kAdminPassword);
    }
    ASSERT_TRUE(a.status < 500 || a.status == 503) << q.method << " " << q.path << " " << q.body
                                                   << " -> " << a.status << " " << a.body;
    if (a.status >= 400) {
      auto j = json::parse(a.body, nullptr, false);
      ASSERT_TRUE(j.is_object() && j.contains("error") && j.contains("message")) << a.body;
    }
  }
  EXPECT_EQ(answered, 3000);
  // What was there before is still there, unchanged: the fuzz addresses objects named "infra"
  // only, and may have added some.
  const json after = snapshot();
  for (const auto& [coll, list] : before.items()) {
    if (!list.is_array()) continue;
    for (const auto& obj : list) {
      bool same = false;
      for (const auto& o : after[coll]) same = same || o == obj;
      EXPECT_TRUE(same) << coll << ": " << obj.dump() << " changed or went";
    }
  }
  EXPECT_EQ(send("GET", "/v1/tree", login("admin", kAdminPassword)).status, 200)
      << "the server still serves";
}

}  // namespace
}  // namespace enjin::api
