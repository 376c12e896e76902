// ring0d with its control API and a ring-1 node: a mutating request comes out as a signed
// `audit` message on the daemon's out bus, verified by a subscriber that trusts only ring0d's
// key, and GET /v1/events streams the tree events of a process that dies and is restarted.
#include <fcntl.h>
#include <httplib.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>
#include <zmq.hpp>

#include "enjin/base/clock.hpp"
#include "enjin/bus/subscriber.hpp"
#include "enjin/bus/trust_store.hpp"
#include "enjin/crypto/keys.hpp"
#include "enjin/ring/tree.hpp"
#include "fakes/free_port.hpp"
#include "ring2d_fixture.hpp"

namespace enjin::testing {
namespace {

using nlohmann::json;

constexpr char kPassword[] = "an admin password for the test";

// Borrows ring2d's fixture for its temp dir, subreaper and process helpers.
class ApiEventsTest : public Ring2dTest {
 protected:
  void SetUp() override {
    port_ = freeTcpPort();
    ASSERT_GT(port_, 0);
    std::ofstream(configPath()) << "state_dir = \"" + state() + "\"\nheartbeat_ms = 200\n"
        "[api]\nlisten = \"127.0.0.1:" + std::to_string(port_) + "\"\n" + R"(
[[ring1]]
label = "infra"
  [[ring1.ring2]]
  label = "shop"
    [[ring1.ring2.process]]
    name = "web"
    command = [")" + kBinDir + R"(/crasher", "sleep:600000"]
)";
    const std::string pwFile = dir_ / "admin.pw";
    std::ofstream(pwFile) << kPassword << "\n";
    ::chmod(pwFile.c_str(), 0600);
    auto init = run(kBinDir + "/ring0d --config " + configPath() + " --init --admin-password-file " +
                    pwFile + " 2>&1");
    ASSERT_EQ(init.first, 0) << init.second;
    ring0d_ = spawnProcess({kBinDir + "/ring0d", "--config", configPath(), "--log-level", "debug"},
                           dir_ / "ring0d.err");
    ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << err();
  }

  void TearDown() override {
    if (ring0d_ > 0) {
      ::kill(ring0d_, SIGTERM);
      if (waitExit(ring0d_, 30'000) == -1) ::kill(ring0d_, SIGKILL);
    }
    for (pid_t pid : pidsWithCmdline(dir_.path())) ::kill(pid, SIGKILL);
    reapAll(3000);
    Ring2dTest::TearDown();
  }

  std::string configPath() const { return dir_ / "ring0d.toml"; }
  std::string err() const { return readFile(dir_ / "ring0d.err"); }

  json call(const json& req) {
    auto r = supervise::controlCall(state() + "/control.sock", req);
    return r.ok() ? *r : json{{"ok", false}, {"error", r.error().message}};
  }
  ring::FlatTree flat() {
    json t = call({{"cmd", "tree"}}).value("tree", json());
    return t.is_object() ? ring::flattenTree(t) : ring::FlatTree{};
  }
  bool allReady() {
    auto f = flat();
    for (const char* path : {"infra", "infra/shop", "infra/shop/web"}) {
      auto it = f.find(path);
      if (it == f.end() || it->second.value("state", "") != "ready") return false;
    }
    return true;
  }

  std::string login() {
    httplib::Client c("127.0.0.1", port_);
    auto r = c.Post("/v1/sessions", json{{"user", "admin"}, {"password", kPassword}}.dump(),
                    "application/json");
    EXPECT_TRUE(r);
    if (!r) return "";
    EXPECT_EQ(r->status, 201) << r->body;
    return json::parse(r->body, nullptr, false).value("token", "");
  }

  int port_ = 0;
  pid_t ring0d_ = -1;
};

TEST_F(ApiEventsTest, AMutatingRequestIsPublishedAsASignedAuditMessage) {
  json info = call({{"cmd", "tree"}});
  const std::string endpoint = info.value("observe", "");
  auto key = crypto::PublicKey::fromHex(info.value("public_key", ""));
  ASSERT_TRUE(key.ok());
  ASSERT_FALSE(endpoint.empty());
  // Only ring0d's key is trusted: a message that is not signed by it is never handed over.
  bus::TrustStore trust;
  ASSERT_TRUE(trust.add(*key, "ring0d", {""}).ok());
  SystemClock clock;
  zmq::context_t ctx(1);
  bus::SubscriberOptions opts;
  opts.endpoint = endpoint;
  opts.verify.prefixes = {"audit", "tree"};
  auto sub = bus::Subscriber::open(ctx, trust, clock, opts);
  ASSERT_TRUE(sub.ok()) << sub.error().message;
  std::vector<bus::Message> audits;
  bool haveTree = false;
  auto pump = [&](int timeoutMs, const std::function<bool()>& done) {
    return waitFor([&] {
      zmq::pollitem_t item{(*sub)->socket().handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(50));
      (*sub)->drain([&](bus::Message&& m) {
        if (m.type == "tree") haveTree = true;
        if (m.type == "audit") audits.push_back(std::move(m));
      });
      return done();
    }, timeoutMs);
  };
  // Subscribed once the first tree arrives (pub/sub drops what comes before).
  ASSERT_TRUE(pump(10'000, [&] { return haveTree; }));

  const std::string token = login();
  httplib::Client c("127.0.0.1", port_);
  auto made = c.Post("/v1/users", {{"Authorization", "Bearer " + token}},
                     json{{"name", "bob"}, {"password", "bob's long password"}}.dump(),
                     "application/json");
  ASSERT_TRUE(made);
  EXPECT_EQ(made->status, 201) << made->body;
  auto isUserCreate = [](const bus::Message& m) { return m.body.value("action", "") == "users:create"; };
  ASSERT_TRUE(pump(10'000, [&] { return std::any_of(audits.begin(), audits.end(), isUserCreate); }))
      << audits.size() << " audit messages\n" << err();
  EXPECT_EQ((*sub)->counters().rejectedTotal(), 0u);
  const auto& m = *std::find_if(audits.begin(), audits.end(), isUserCreate);
  EXPECT_EQ(m.topic, "audit");
  EXPECT_EQ(m.from.hex(), key->hex());
  EXPECT_EQ(m.body["user"], "admin");
  EXPECT_EQ(m.body["resource"], "users");
  EXPECT_EQ(m.body["result"], "ok");
  EXPECT_EQ(m.body["status"], 201);
  EXPECT_EQ(m.body["source"], "127.0.0.1");
  // The same record as the store keeps (GET /v1/audit).
  auto stored = c.Get("/v1/audit", {{"Authorization", "Bearer " + token}});
  ASSERT_TRUE(stored);
  ASSERT_EQ(stored->status, 200);
  bool found = false;
  for (const auto& row : json::parse(stored->body)) found = found || row == m.body;
  EXPECT_TRUE(found) << stored->body << "\n" << m.body.dump();
  // The login before it was published too.
  EXPECT_TRUE(std::any_of(audits.begin(), audits.end(), [](const bus::Message& a) {
    return a.body.value("action", "") == "sessions:create";
  }));
}

TEST_F(ApiEventsTest, EventsStreamsTheTreeEventsOfARestartedProcess) {
  const std::string token = login();
  std::mutex mutex;
  std::string got;
  int status = 0;
  std::atomic<bool> stop{false};
  httplib::Client c("127.0.0.1", port_);
  c.set_read_timeout(std::chrono::seconds(30));
  std::thread reader([&] {
    c.Get("/v1/events", {{"Authorization", "Bearer " + token}},
          [&](const httplib::Response& res) {
            std::lock_guard lock(mutex);
            status = res.status;
            return true;
          },
          [&](const char* data, size_t len) {
            std::lock_guard lock(mutex);
            got.append(data, len);
            return !stop.load();
          });
  });
  ASSERT_TRUE(waitFor([&] {
    std::lock_guard lock(mutex);
    return status != 0;
  }, 5000));
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(status, 200);
  }
  // Give the stream a moment to be past its start (it sends only events after it).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const int before = flat()["infra/shop/web"].value("pid", 0);
  ASSERT_GT(before, 0);
  ::kill(before, SIGKILL);
  // Frames: "id: N\nevent: tree_event\ndata: {...}\n\n".
  struct Frame {
    uint64_t id;
    json data;
  };
  auto frames = [&] {
    std::lock_guard lock(mutex);
    std::vector<Frame> out;
    size_t i = 0;
    for (size_t end; (end = got.find("\n\n", i)) != std::string::npos; i = end + 2) {
      const std::string block = got.substr(i, end - i);
      if (block.rfind("id: ", 0) != 0) continue;
      const auto ev = block.find("\nevent: tree_event\ndata: ");
      if (ev == std::string::npos) continue;
      out.push_back({std::stoull(block.substr(4, ev - 4)),
                     json::parse(block.substr(ev + 25), nullptr, false)});
    }
    return out;
  };
  auto sawState = [&](const std::string& state, int pidNot) {
    for (const auto& f : frames()) {
      if (f.data.value("path", "") == "infra/shop/web" && f.data.value("kind", "") == "process" &&
          f.data.value("state", "") == state &&
          (pidNot == 0 || (f.data.value("pid", 0) != pidNot && f.data.value("pid", 0) > 0))) {
        return true;
      }
    }
    return false;
  };
  EXPECT_TRUE(waitFor([&] { return sawState("backoff", 0); }, 15'000)) << got;
  EXPECT_TRUE(waitFor([&] { return sawState("ready", before); }, 15'000)) << got;
  auto all = frames();
  ASSERT_GE(all.size(), 2u);
  for (size_t i = 1; i < all.size(); ++i) EXPECT_LT(all[i - 1].id, all[i].id);
  for (const auto& f : all) EXPECT_TRUE(f.data.is_object() && f.data.contains("path")) << got;
  stop = true;
  c.stop();
  reader.join();
}

}  // namespace
}  // namespace enjin::testing
