#include "enjin/ring/daemon_metrics.hpp"

#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "enjin/acl/password.hpp"
#include "enjin/api/control_api.hpp"
#include "enjin/base/clock.hpp"
#include "enjin/bus/envelope.hpp"
#include "enjin/bus/verifier.hpp"
#include "enjin/directory/directory.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/ring/config.hpp"
#include "enjin/ring/tree.hpp"
#include "enjin/store/store.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::ring {
namespace {

using nlohmann::json;

// A ring-1 node's observation as ring1d sends it (one ring-2 node running two processes, one
// stopped, as ring2d reports them), passed through the parent's cleaning, and the tree ring0d
// makes of it: what NodeParent::tree() returns.
json ring0Tree() {
  const json obs = json::parse(R"({
    "ring": 1, "uuid": "u-r1", "label": "r1", "pid": 4001, "state": "ready",
    "state_dir": "/s/r1", "spec_digest": "d1",
    "nodes": [{
      "label": "web", "uuid": "u-web", "ring": 2, "state": "ready", "pid": 4002,
      "restarts": 1, "started_wall_ms": 1700000000000, "detail": "", "last_exit": null,
      "state_dir": "/s/r1/web", "observed_state": "ready", "spec_applied": true,
      "heartbeat_age_ms": 12,
      "processes": [
        {"name": "app", "state": "ready", "pid": 4100, "restarts": 3,
         "started_wall_ms": 1700000000100, "detail": "", "last_exit": {"kind": "exited", "code": 1},
         "cpu_seconds": 1.5, "resident_memory_bytes": 4096000},
        {"name": "idle", "state": "stopped", "pid": 0, "restarts": 0, "started_wall_ms": 0,
         "detail": "", "last_exit": null}
      ]
    }]
  })");
  auto clean = cleanObservation(obs, 1);
  EXPECT_TRUE(clean.ok()) << clean.error().message;
  json r1{{"label", "r1"},
          {"uuid", "u-r1"},
          {"ring", 1},
          {"state", "ready"},
          {"pid", 4001},
          {"restarts", 2},
          {"observed_state", "ready"},
          {"spec_applied", true},
          {"nodes", (*clean)["nodes"]}};
  json failed{{"label", "r9"},     {"uuid", "u-r9"}, {"ring", 1},
              {"state", "failed"}, {"pid", 0},       {"restarts", 10}};
  return json{{"ring", 0},   {"uuid", "u-root"},    {"label", "root"},
              {"pid", 4000}, {"state", "degraded"}, {"nodes", json::array({r1, failed})}};
}

std::string renderTree(const json& tree) {
  metrics::Registry reg;
  reg.addCollector([&](metrics::Registry::Writer& w) { writeTreeMetrics(w, tree); });
  return reg.render();
}

bool has(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

TEST(DaemonMetrics, NodesByRingAndStateAndProcessesFromTheTree) {
  const std::string text = renderTree(ring0Tree());
  EXPECT_TRUE(has(text, "enjin_nodes{ring=\"1\",state=\"ready\"} 1")) << text;
  EXPECT_TRUE(has(text, "enjin_nodes{ring=\"1\",state=\"failed\"} 1")) << text;
  EXPECT_TRUE(has(text, "enjin_nodes{ring=\"2\",state=\"ready\"} 1")) << text;
  EXPECT_TRUE(has(text, "enjin_nodes{ring=\"2\",state=\"backoff\"} 0")) << text;
  EXPECT_TRUE(has(text, "enjin_node_restarts_total{node=\"r1\"} 2")) << text;
  EXPECT_TRUE(has(text, "enjin_node_restarts_total{node=\"r9\"} 10")) << text;
  EXPECT_TRUE(has(text, "enjin_node_restarts_total{node=\"r1/web\"} 1")) << text;
  EXPECT_TRUE(has(text, "enjin_process_up{node=\"r1/web\",process=\"app\"} 1")) << text;
  EXPECT_TRUE(has(text, "enjin_process_up{node=\"r1/web\",process=\"idle\"} 0")) << text;
  EXPECT_TRUE(has(text, "enjin_process_restarts_total{node=\"r1/web\",process=\"app\"} 3")) << text;
  EXPECT_TRUE(has(text, "enjin_process_cpu_seconds_total{node=\"r1/web\",process=\"app\"} 1.5"))
      << text;
  EXPECT_TRUE(
      has(text, "enjin_process_resident_memory_bytes{node=\"r1/web\",process=\"app\"} 4096000"))
      << text;
  // A process not running has no cost to report: no sample rather than a made-up 0.
  EXPECT_EQ(text.find("enjin_process_cpu_seconds_total{node=\"r1/web\",process=\"idle\"}"),
            std::string::npos);
  // A ring1d's tree: its nodes are ring 2, named without a prefix.
  json r1 = ring0Tree()["nodes"][0];
  r1["state"] = "ready";
  const std::string own = renderTree(r1);
  EXPECT_TRUE(has(own, "enjin_nodes{ring=\"2\",state=\"ready\"} 1")) << own;
  EXPECT_EQ(own.find("ring=\"1\""), std::string::npos) << own;
  EXPECT_TRUE(has(own, "enjin_process_up{node=\"web\",process=\"app\"} 1")) << own;
}

TEST(DaemonMetrics, BusCountersByReason) {
  bus::BusCounters c;
  c.accepted = 42;
  c.rejected[static_cast<size_t>(bus::RejectReason::kBadSignature)] = 3;
  metrics::Registry reg;
  reg.addCollector([&](metrics::Registry::Writer& w) { writeBusMetrics(w, c, 7); });
  const std::string text = reg.render();
  EXPECT_TRUE(has(text, "enjin_bus_messages_accepted_total 42")) << text;
  EXPECT_TRUE(has(text, "enjin_bus_messages_refused_total 7")) << text;
  const std::string bad(bus::rejectReasonName(bus::RejectReason::kBadSignature));
  EXPECT_TRUE(has(text, "enjin_bus_messages_rejected_total{reason=\"" + bad + "\"} 3")) << text;
  for (size_t i = 0; i < bus::kRejectReasonCount; ++i) {
    const std::string reason(bus::rejectReasonName(static_cast<bus::RejectReason>(i)));
    EXPECT_NE(text.find("enjin_bus_messages_rejected_total{reason=\"" + reason + "\"}"),
              std::string::npos)
        << reason;
  }
}

TEST(DaemonMetrics, PromtoolAcceptsTheTreeAndBusFamilies) {
  if (::access("/usr/bin/promtool", X_OK) != 0) {
    GTEST_SKIP() << "promtool not found: install the Debian package `prometheus`";
  }
  testing::TempDir dir;
  metrics::Registry reg;
  const json tree = ring0Tree();
  bus::BusCounters c;
  reg.histogram("enjin_reactor_lag_seconds", "How late the reactor fires its timers",
                metrics::exponentialBuckets(0.0001, 4, 9))
      .observe(0.002);
  reg.addCollector([&](metrics::Registry::Writer& w) {
    writeTreeMetrics(w, tree);
    writeBusMetrics(w, c, 0);
  });
  const std::string path = dir / "m.prom";
  std::ofstream(path) << reg.render();
  FILE* p = ::popen(("promtool check metrics < '" + path + "' 2>&1").c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_EQ(out, "");
}

TEST(DaemonMetrics, TheParentKeepsWhatProcessesCostAndRefusesNonsense) {
  const json t = ring0Tree();
  const json& app = t["nodes"][0]["nodes"][0]["processes"][0];
  EXPECT_EQ(app.value("cpu_seconds", 0.0), 1.5);
  EXPECT_EQ(app.value("resident_memory_bytes", 0), 4096000);

  json obs{
      {"ring", 2},
      {"uuid", "u"},
      {"label", "web"},
      {"pid", 1},
      {"state", "ready"},
      {"state_dir", "/s"},
      {"processes", json::array({json{{"name", "app"}, {"state", "ready"}, {"cpu_seconds", -1}}})}};
  auto neg = cleanObservation(obs, 2);
  ASSERT_FALSE(neg.ok());
  EXPECT_NE(neg.error().message.find("cpu_seconds"), std::string::npos) << neg.error().message;
  obs["processes"][0]["cpu_seconds"] = "lots";
  EXPECT_FALSE(cleanObservation(obs, 2).ok());
  obs["processes"][0]["cpu_seconds"] = 0.25;
  obs["processes"][0]["resident_memory_bytes"] = "big";
  EXPECT_FALSE(cleanObservation(obs, 2).ok());
  obs["processes"][0]["resident_memory_bytes"] = 1024;
  auto ok = cleanObservation(obs, 2);
  ASSERT_TRUE(ok.ok()) << ok.error().message;

  // Costs that move are no change to pass up; anything else is.
  json later = *ok;
  later["processes"][0]["cpu_seconds"] = 0.5;
  later["processes"][0]["resident_memory_bytes"] = 2048;
  EXPECT_TRUE(sameApartFromUsage(*ok, later));
  later["processes"][0]["state"] = "backoff";
  EXPECT_FALSE(sameApartFromUsage(*ok, later));
  json deep = t, deeper = t;
  deeper["nodes"][0]["nodes"][0]["processes"][0]["cpu_seconds"] = 9.0;
  EXPECT_TRUE(sameApartFromUsage(deep, deeper));
  deeper["nodes"][0]["nodes"][0]["processes"][0]["restarts"] = 4;
  EXPECT_FALSE(sameApartFromUsage(deep, deeper));
  // A job offer moves with the host's free memory: no change either, at any depth.
  json offered = t;
  offered["offer"] = {{"cpus", 2}, {"memory_bytes", 1}, {"process_slots", 3}};
  offered["nodes"][0]["offer"] = {{"cpus", 2}, {"memory_bytes", 5}, {"process_slots", 3}};
  EXPECT_TRUE(sameApartFromUsage(t, offered));
}

TEST(DaemonMetrics, ConfigMetricsListen) {
  auto c = parseConfig("[metrics]\nlisten = \"127.0.0.1:9480\"\n", "r0.toml", 0);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->metricsListen, "127.0.0.1:9480");
  EXPECT_EQ(parseConfig("", "r0.toml", 0)->metricsListen, "");
  struct Case {
    const char* text;
    const char* expect;
  };
  const Case cases[] = {
      {"[metrics]\nlisten = \"nowhere\"\n",
       "r0.toml:2: metrics: listen: 'nowhere': expected HOST:PORT"},
      {"[metrics]\nlisten = \"127.0.0.1:99999\"\n", "r0.toml:2:"},
      {"[metrics]\nlisten = \"example.com:80\"\n", "not a numeric"},
      {"[metrics]\nlisten = 9480\n", "r0.toml:2:"},
      {"[metrics]\n", "listen"},
      {"[metrics]\nlisten = \"127.0.0.1:1\"\nport = 3\n", "unknown key 'port'"},
      {"metrics = 1\n", "r0.toml:1: metrics: expected a table"},
      {"[api]\nlisten = \"127.0.0.1:8480\"\n[metrics]\nlisten = \"127.0.0.1:8480\"\n",
       "r0.toml:4:"},
  };
  for (const auto& k : cases) {
    auto r = parseConfig(k.text, "r0.toml", 0);
    ASSERT_FALSE(r.ok()) << k.text;
    EXPECT_NE(r.error().message.find(k.expect), std::string::npos)
        << k.text << "\n  got: " << r.error().message;
  }
  // A ring1d's settings come from its parent: no [metrics] there.
  EXPECT_FALSE(parseConfig("[metrics]\nlisten = \"127.0.0.1:1\"\n", "r1.toml", 1).ok());
}

TEST(DaemonMetrics, TheMetricsListenerServesOnlyMetricsRenderedOnTheReactor) {
  SystemClock clock;
  auto reactor = Reactor::create(clock);
  ASSERT_TRUE(reactor.ok()) << reactor.error().message;
  metrics::Registry reg;
  std::thread::id renderedOn;
  reg.addCollector([&](metrics::Registry::Writer& w) {
    renderedOn = std::this_thread::get_id();
    w.family("enjin_test_things", "gauge", "Things");
    w.sample({}, 5);
  });
  auto server = MetricsServer::start("127.0.0.1:0", **reactor, reg);
  ASSERT_TRUE(server.ok()) << server.error().message;
  const std::string url = (*server)->url();
  const int port = std::stoi(url.substr(url.rfind(':') + 1));

  std::atomic<bool> done{false};
  int metricsStatus = 0, otherStatus = 0, postStatus = 0;
  std::string body, type, otherBody;
  std::thread client([&] {
    httplib::Client c("127.0.0.1", port);
    if (auto r = c.Get("/metrics")) {
      metricsStatus = r->status;
      body = r->body;
      type = r->get_header_value("Content-Type");
    }
    if (auto r = c.Get("/v1/tree")) {
      otherStatus = r->status;
      otherBody = r->body;
    }
    if (auto r = c.Post("/metrics", "", "text/plain")) postStatus = r->status;
    done = true;
  });
  while (!done) (*reactor)->runOnce(50);
  client.join();
  EXPECT_EQ(metricsStatus, 200);
  EXPECT_NE(body.find("\nenjin_test_things 5\n"), std::string::npos) << body;
  EXPECT_NE(type.find("text/plain"), std::string::npos) << type;
  EXPECT_EQ(renderedOn, std::this_thread::get_id());
  EXPECT_EQ(otherStatus, 404);
  EXPECT_EQ(json::parse(otherBody, nullptr, false).value("error", ""), "not_found") << otherBody;
  EXPECT_EQ(postStatus, 404);

  // A port in use is an error naming the address.
  auto again = MetricsServer::start(url.substr(url.find("//") + 2), **reactor, reg);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message.find(std::to_string(port)), std::string::npos)
      << again.error().message;
}

// The API's GET /metrics renders on the reactor thread too (the collectors read the daemon's
// state), behind the metrics:read check.
TEST(DaemonMetrics, TheApiRendersMetricsOnTheReactorForASignedInUser) {
  testing::TempDir dir;
  SystemClock clock;
  auto reactor = Reactor::create(clock);
  ASSERT_TRUE(reactor.ok()) << reactor.error().message;
  auto store = store::Store::open(dir / "r0.db");
  ASSERT_TRUE(store.ok()) << store.error().message;
  directory::Directory directory(**store, clock);
  const std::string password = "correct horse battery staple";
  auto hash = acl::hashPassword(password);
  ASSERT_TRUE(hash.ok());
  ASSERT_TRUE(directory.ensureAdmin(*hash).ok());
  metrics::Registry reg;
  std::thread::id renderedOn;
  reg.addCollector([&](metrics::Registry::Writer& w) {
    renderedOn = std::this_thread::get_id();
    w.family("enjin_test_things", "gauge", "Things");
    w.sample({}, 5);
  });
  api::ControlApi controlApi(**reactor, clock, directory, **store, reg, {}, {});

  std::atomic<bool> done{false};
  api::HttpResponse anonymous, metricsRes;
  std::string token;
  std::thread client([&] {
    api::HttpRequest login;
    login.method = "POST";
    login.path = "/v1/sessions";
    login.body = json{{"user", "admin"}, {"password", password}}.dump();
    login.headers["content-type"] = "application/json";
    api::HttpResponse res;
    controlApi.handle(login, res);
    token = json::parse(res.body, nullptr, false).value("token", "");
    api::HttpRequest get;
    get.method = "GET";
    get.path = "/metrics";
    controlApi.handle(get, anonymous);
    get.headers["authorization"] = "Bearer " + token;
    controlApi.handle(get, metricsRes);
    done = true;
  });
  while (!done) (*reactor)->runOnce(50);
  client.join();
  ASSERT_FALSE(token.empty());
  EXPECT_EQ(anonymous.status, 401) << anonymous.body;
  EXPECT_EQ(metricsRes.status, 200) << metricsRes.body;
  EXPECT_NE(metricsRes.body.find("\nenjin_test_things 5\n"), std::string::npos) << metricsRes.body;
  EXPECT_NE(
      metricsRes.body.find("enjin_api_requests_total{code=\"201\",route=\"POST /v1/sessions\"} 1"),
      std::string::npos)
      << metricsRes.body;
  EXPECT_EQ(renderedOn, std::this_thread::get_id());
}

}  // namespace
}  // namespace enjin::ring
