// The event log GET /v1/events streams from, and the route itself through a real HTTP server, a
// ControlApi over a store in a temporary directory and a reactor on its own thread.
#include "enjin/api/event_log.hpp"

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "enjin/acl/password.hpp"
#include "enjin/api/control_api.hpp"
#include "enjin/api/http_server.hpp"
#include "enjin/base/clock.hpp"
#include "enjin/directory/directory.hpp"
#include "enjin/metrics/metrics.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/store/store.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::api {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

int64_t msSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

std::vector<uint64_t> idsOf(const std::vector<EventLog::Event>& events) {
  std::vector<uint64_t> out;
  for (const auto& e : events) out.push_back(e.id);
  return out;
}

TEST(EventLogTest, NumbersEventsFromOneAndReturnsThoseAfterAnId) {
  EventLog log;
  EXPECT_EQ(log.lastId(), 0u);
  EXPECT_EQ(log.append("tree_event", "{\"a\":1}"), 1u);
  EXPECT_EQ(log.append("tree_event", "{\"a\":2}"), 2u);
  EXPECT_EQ(log.append("other", "{\"a\":3}"), 3u);
  EXPECT_EQ(log.lastId(), 3u);
  bool missed = true;
  auto all = log.since(0, 0, &missed);
  EXPECT_FALSE(missed);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].type, "tree_event");
  EXPECT_EQ(all[0].data, "{\"a\":1}");
  EXPECT_EQ(all[2].type, "other");
  EXPECT_EQ(idsOf(log.since(1, 0)), (std::vector<uint64_t>{2, 3}));
  EXPECT_TRUE(log.since(3, 0).empty());
  EXPECT_TRUE(log.since(7, 0).empty());
}

TEST(EventLogTest, KeepsOnlyTheNewestAndTellsAReaderWhatItMissed) {
  EventLog log(4);
  for (int i = 1; i <= 10; ++i) log.append("tree_event", std::to_string(i));
  bool missed = false;
  auto e = log.since(0, 0, &missed);
  EXPECT_TRUE(missed);
  EXPECT_EQ(idsOf(e), (std::vector<uint64_t>{7, 8, 9, 10}));
  EXPECT_EQ(e.front().data, "7");
  e = log.since(5, 0, &missed);
  EXPECT_TRUE(missed);
  EXPECT_EQ(idsOf(e), (std::vector<uint64_t>{7, 8, 9, 10}));
  // Event 7 is the next one after 6: nothing missed.
  e = log.since(6, 0, &missed);
  EXPECT_FALSE(missed);
  EXPECT_EQ(idsOf(e), (std::vector<uint64_t>{7, 8, 9, 10}));
  e = log.since(9, 0, &missed);
  EXPECT_FALSE(missed);
  EXPECT_EQ(idsOf(e), (std::vector<uint64_t>{10}));
  e = log.since(10, 0, &missed);
  EXPECT_FALSE(missed);
  EXPECT_TRUE(e.empty());
}

TEST(EventLogTest, WaitsForTheTimeoutWhenNothingComesAndWakesOnAnAppend) {
  EventLog log;
  auto t = Clock::now();
  EXPECT_TRUE(log.since(0, 150).empty());
  EXPECT_GE(msSince(t), 140);

  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    log.append("tree_event", "x");
  });
  t = Clock::now();
  auto e = log.since(0, 10'000);
  const int64_t waited = msSince(t);
  writer.join();
  EXPECT_EQ(idsOf(e), (std::vector<uint64_t>{1}));
  EXPECT_GE(waited, 90);
  EXPECT_LT(waited, 5000);
}

TEST(EventLogTest, CloseWakesEveryWaiterAndNoneWaitsAfterIt) {
  EventLog log;
  log.append("tree_event", "x");
  std::vector<std::thread> waiters;
  std::atomic<int> woken{0};
  const auto t = Clock::now();
  for (int i = 0; i < 4; ++i) {
    waiters.emplace_back([&] {
      EXPECT_TRUE(log.since(1, 30'000).empty());
      ++woken;
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(woken.load(), 0);
  EXPECT_FALSE(log.closed());
  log.close();
  for (auto& w : waiters) w.join();
  EXPECT_EQ(woken.load(), 4);
  EXPECT_LT(msSince(t), 5000);
  EXPECT_TRUE(log.closed());
  const auto again = Clock::now();
  EXPECT_TRUE(log.since(1, 30'000).empty());
  EXPECT_LT(msSince(again), 100);
  // What was kept is still there for a last read.
  EXPECT_EQ(idsOf(log.since(0, 30'000)), (std::vector<uint64_t>{1}));
}

TEST(EventLogTest, ConcurrentAppendsGetUniqueRisingIds) {
  EventLog log(100'000);
  constexpr int kThreads = 4, kEach = 2000;
  std::vector<std::vector<uint64_t>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        got[t].push_back(log.append("tree_event", std::to_string(t) + ":" + std::to_string(i)));
      }
    });
  }
  // A reader meanwhile sees ids that only rise, without holes.
  uint64_t after = 0;
  while (after < uint64_t{kThreads * kEach}) {
    for (const auto& e : log.since(after, 1000)) {
      ASSERT_EQ(e.id, after + 1);
      after = e.id;
    }
  }
  for (auto& t : threads) t.join();
  std::set<uint64_t> all;
  for (const auto& ids : got) {
    for (size_t i = 1; i < ids.size(); ++i) EXPECT_LT(ids[i - 1], ids[i]);
    all.insert(ids.begin(), ids.end());
  }
  EXPECT_EQ(all.size(), size_t{kThreads * kEach});
  EXPECT_EQ(*all.begin(), 1u);
  EXPECT_EQ(*all.rbegin(), uint64_t{kThreads * kEach});
  EXPECT_EQ(log.lastId(), uint64_t{kThreads * kEach});
  // Each event holds the data it was appended with.
  for (const auto& e : log.since(0, 0)) {
    const auto colon = e.data.find(':');
    const int t = std::stoi(e.data.substr(0, colon)), i = std::stoi(e.data.substr(colon + 1));
    EXPECT_EQ(got[t][i], e.id);
  }
}

// ---------------------------------------------------------------------------------------------
// GET /v1/events through the whole API.

constexpr char kAdminPassword[] = "correct horse battery staple";

// A ControlApi over a fresh store, served by a real HttpServer, with its reactor on a thread.
class ApiFixture {
 public:
  explicit ApiFixture(EventLog* events, size_t maxStreams = 4) {
    store_ = store::Store::open(dir_ / "state.db").value();
    directory_ = std::make_unique<directory::Directory>(*store_, clock_);
    auto hash = acl::hashPassword(kAdminPassword);
    EXPECT_TRUE(hash.ok());
    EXPECT_TRUE(directory_->ensureAdmin(*hash).ok());
    reactor_ = Reactor::create(clock_).value();
    DaemonView view;
    view.tree = [] { return json{{"nodes", json::array()}}; };
    view.events = events;
    view.onAudit = [this](const json& record) {
      std::lock_guard lock(mutex_);
      audits_.push_back(record);
      auditOnReactor_ = auditOnReactor_ && std::this_thread::get_id() == reactorThread_;
    };
    // Made before the reactor's thread runs, destroyed after it stopped: the reactor is only ever
    // used by one thread at a time.
    api_ = std::make_unique<ControlApi>(*reactor_, clock_, *directory_, *store_, metrics_,
                                        ControlApiOptions{}, std::move(view));
    thread_ = std::thread([this] {
      reactorThread_ = std::this_thread::get_id();
      while (!stop_) reactor_->runOnce(20);
    });
    HttpServerOptions o;
    o.listen = "127.0.0.1:0";
    o.maxStreams = static_cast<int>(maxStreams);
    auto s = HttpServer::start(o, [this](const HttpRequest& q, HttpResponse& a) {
      api_->handle(q, a);
    });
    EXPECT_TRUE(s.ok());
    if (s.ok()) server_ = std::move(*s);
  }
  ~ApiFixture() {
    server_.reset();
    stop_ = true;
    thread_.join();
    api_.reset();
  }

  HttpServer* server() { return server_.get(); }
  void stopServer() { server_.reset(); }
  int port() const { return port_ != 0 ? port_ : server_->port(); }

  std::string login() {
    httplib::Client c("127.0.0.1", server_->port());
    auto r = c.Post("/v1/sessions", json{{"user", "admin"}, {"password", kAdminPassword}}.dump(),
                    "application/json");
    EXPECT_TRUE(r);
    if (!r) return "";
    EXPECT_EQ(r->status, 201) << r->body;
    return json::parse(r->body).value("token", "");
  }

  std::vector<json> audits() {
    std::lock_guard lock(mutex_);
    return audits_;
  }
  bool auditOnReactor() {
    std::lock_guard lock(mutex_);
    return auditOnReactor_;
  }

 private:
  testing::TempDir dir_;
  SystemClock clock_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<directory::Directory> directory_;
  std::unique_ptr<Reactor> reactor_;
  metrics::Registry metrics_;
  std::unique_ptr<ControlApi> api_;
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  std::thread::id reactorThread_;
  std::atomic<bool> stop_{false};
  int port_ = 0;
  std::mutex mutex_;
  std::vector<json> audits_;
  bool auditOnReactor_ = true;
};

struct Frame {
  std::string id, event, data;
};

// Reads one GET /v1/events on a thread of its own, splitting it into SSE frames as they come.
class SseReader {
 public:
  SseReader(int port, std::string token, httplib::Headers extra = {}, std::string target = "/v1/events")
      : client_("127.0.0.1", port) {
    client_.set_read_timeout(std::chrono::seconds(30));
    extra.emplace("Authorization", "Bearer " + token);
    thread_ = std::thread([this, extra, target] {
      auto r = client_.Get(
          target.c_str(), extra,
          [this](const httplib::Response& res) {
            std::lock_guard lock(m_);
            status_ = res.status;
            contentType_ = res.get_header_value("Content-Type");
            cv_.notify_all();
            return true;
          },
          [this](const char* data, size_t len) {
            std::lock_guard lock(m_);
            buffer_.append(data, len);
            for (size_t end; (end = buffer_.find("\n\n")) != std::string::npos;) {
              parse(buffer_.substr(0, end));
              buffer_.erase(0, end + 2);
            }
            cv_.notify_all();
            return !stopping_;
          });
      std::lock_guard lock(m_);
      ended_ = true;
      if (r && status_ == 0) status_ = r->status;
      if (r) body_ = r->body;
      cv_.notify_all();
    });
  }
  ~SseReader() {
    {
      std::lock_guard lock(m_);
      stopping_ = true;
    }
    client_.stop();
    thread_.join();
  }

  // The frames other than comments, once there are at least n (or what there is after timeoutMs).
  std::vector<Frame> frames(size_t n, int64_t timeoutMs = 5000) {
    std::unique_lock lock(m_);
    cv_.wait_for(lock, std::chrono::milliseconds(timeoutMs),
                 [&] { return frames_.size() >= n || ended_; });
    return frames_;
  }
  int status(int64_t timeoutMs = 5000) {
    std::unique_lock lock(m_);
    cv_.wait_for(lock, std::chrono::milliseconds(timeoutMs), [&] { return status_ != 0 || ended_; });
    return status_;
  }
  std::string contentType() {
    std::lock_guard lock(m_);
    return contentType_;
  }
  bool waitEnded(int64_t timeoutMs) {
    std::unique_lock lock(m_);
    return cv_.wait_for(lock, std::chrono::milliseconds(timeoutMs), [&] { return ended_; });
  }
  std::string body() {
    std::lock_guard lock(m_);
    return body_;
  }

 private:
  void parse(const std::string& block) {
    Frame f;
    bool any = false;
    size_t i = 0;
    while (i <= block.size()) {
      size_t j = block.find('\n', i);
      if (j == std::string::npos) j = block.size();
      const std::string line = block.substr(i, j - i);
      i = j + 1;
      if (line.empty() || line[0] == ':') continue;
      const auto colon = line.find(": ");
      const std::string field = line.substr(0, colon), value = line.substr(colon + 2);
      any = true;
      if (field == "id") f.id = value;
      if (field == "event") f.event = value;
      if (field == "data") f.data += (f.data.empty() ? "" : "\n") + value;
    }
    if (any) frames_.push_back(f);
  }

  httplib::Client client_;
  std::thread thread_;
  std::mutex m_;
  std::condition_variable cv_;
  std::string buffer_, contentType_, body_;
  std::vector<Frame> frames_;
  int status_ = 0;
  bool ended_ = false, stopping_ = false;
};

std::string eventJson(int n) { return json{{"path", "r1/app"}, {"restarts", n}}.dump(); }

// Waits until the server serves `n` streams (a stream is open once its handler ran).
bool waitStreams(HttpServer& s, int n) {
  for (int i = 0; i < 500; ++i) {
    if (s.openStreams() == n) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST(EventsStreamTest, StreamsNewEventsWithRisingIdsAndResumesAfterLastEventId) {
  EventLog log;
  log.append("tree_event", eventJson(0));  // before the stream: not sent without Last-Event-ID
  ApiFixture api(&log);
  ASSERT_TRUE(api.server());
  const std::string token = api.login();
  {
    SseReader r(api.port(), token);
    EXPECT_EQ(r.status(), 200);
    EXPECT_EQ(r.contentType(), "text/event-stream");
    ASSERT_TRUE(waitStreams(*api.server(), 1));
    for (int i = 1; i <= 3; ++i) log.append("tree_event", eventJson(i));
    auto f = r.frames(3);
    ASSERT_EQ(f.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(f[i].id, std::to_string(i + 2));
      EXPECT_EQ(f[i].event, "tree_event");
      EXPECT_EQ(json::parse(f[i].data)["restarts"], static_cast<int>(i + 1));
    }
  }
  // Reconnecting with the last id seen: only what came after it.
  for (int i = 4; i <= 5; ++i) log.append("tree_event", eventJson(i));
  {
    SseReader r(api.port(), token, {{"Last-Event-ID", "3"}});
    auto f = r.frames(3);
    ASSERT_EQ(f.size(), 3u);
    EXPECT_EQ(f[0].id, "4");
    EXPECT_EQ(f[1].id, "5");
    EXPECT_EQ(f[2].id, "6");
    EXPECT_EQ(json::parse(f[2].data)["restarts"], 5);
  }
  // ?after=0: everything still buffered.
  {
    SseReader r(api.port(), token, {}, "/v1/events?after=0");
    auto f = r.frames(6);
    ASSERT_EQ(f.size(), 6u);
    EXPECT_EQ(f[0].id, "1");
    EXPECT_EQ(f[5].id, "6");
  }
}

TEST(EventsStreamTest, AReaderThatFellOutOfTheBufferGetsAGapFirst) {
  EventLog log(4);
  for (int i = 1; i <= 10; ++i) log.append("tree_event", eventJson(i));
  ApiFixture api(&log);
  const std::string token = api.login();
  SseReader r(api.port(), token, {{"Last-Event-ID", "2"}});
  auto f = r.frames(5);
  ASSERT_EQ(f.size(), 5u);
  EXPECT_EQ(f[0].event, "gap");
  EXPECT_EQ(f[0].id, "");
  EXPECT_EQ(json::parse(f[0].data)["first"], 7);
  EXPECT_EQ(f[1].id, "7");
  EXPECT_EQ(f[4].id, "10");
  // Then new events as they come, without a further gap.
  log.append("tree_event", eventJson(11));
  f = r.frames(6);
  ASSERT_EQ(f.size(), 6u);
  EXPECT_EQ(f[5].id, "11");
  EXPECT_EQ(f[5].event, "tree_event");
}

TEST(EventsStreamTest, AnIdFromAnEarlierRunGetsAGapAndWhatIsKept) {
  EventLog log;
  for (int i = 1; i <= 2; ++i) log.append("tree_event", eventJson(i));
  ApiFixture api(&log);
  SseReader r(api.port(), api.login(), {{"Last-Event-ID", "500"}});
  auto f = r.frames(3);
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0].event, "gap");
  EXPECT_EQ(json::parse(f[0].data)["first"], 1);
  EXPECT_EQ(f[1].id, "1");
  EXPECT_EQ(f[2].id, "2");
}

TEST(EventsStreamTest, RefusesBadIdsNoSessionAndADaemonWithoutEvents) {
  EventLog log;
  ApiFixture api(&log);
  const std::string token = api.login();
  httplib::Client c("127.0.0.1", api.port());
  auto bad = c.Get("/v1/events", {{"Authorization", "Bearer " + token}, {"Last-Event-ID", "x1"}});
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(bad->body.find("'x1'"), std::string::npos);
  auto anon = c.Get("/v1/events");
  ASSERT_TRUE(anon);
  EXPECT_EQ(anon->status, 401);

  ApiFixture none(nullptr);
  httplib::Client c2("127.0.0.1", none.port());
  auto r = c2.Get("/v1/events", {{"Authorization", "Bearer " + none.login()}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(json::parse(r->body)["error"], "method_not_allowed");
}

TEST(EventsStreamTest, ClosingTheLogEndsTheStream) {
  EventLog log;
  ApiFixture api(&log);
  SseReader r(api.port(), api.login());
  ASSERT_TRUE(waitStreams(*api.server(), 1));
  log.append("tree_event", eventJson(1));
  ASSERT_EQ(r.frames(1).size(), 1u);
  const auto t = Clock::now();
  log.close();
  EXPECT_TRUE(r.waitEnded(3000));
  EXPECT_LT(msSince(t), 3000);
  EXPECT_TRUE(waitStreams(*api.server(), 0));
}

TEST(EventsStreamTest, TheServersDestructorReturnsPromptlyWithStreamsOpen) {
  EventLog log;  // never closed
  ApiFixture api(&log);
  const std::string token = api.login();
  SseReader a(api.port(), token), b(api.port(), token);
  ASSERT_TRUE(waitStreams(*api.server(), 2));
  const auto t = Clock::now();
  api.stopServer();
  EXPECT_LT(msSince(t), 2000);
  EXPECT_TRUE(a.waitEnded(3000));
  EXPECT_TRUE(b.waitEnded(3000));
}

TEST(EventsStreamTest, StreamsBeyondTheLimitAre503AndTheApiStillAnswers) {
  EventLog log;
  ApiFixture api(&log, 1);
  const std::string token = api.login();
  SseReader a(api.port(), token);
  ASSERT_TRUE(waitStreams(*api.server(), 1));
  SseReader b(api.port(), token);
  EXPECT_EQ(b.status(), 503);
  EXPECT_TRUE(b.waitEnded(3000));
  httplib::Client c("127.0.0.1", api.port());
  auto r = c.Get("/v1/audit", {{"Authorization", "Bearer " + token}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(api.server()->openStreams(), 1);
}

TEST(AuditHookTest, EachStoredRecordGoesToOnAuditOnTheReactorThreadAsGetAuditShowsIt) {
  EventLog log;
  ApiFixture api(&log);
  const std::string token = api.login();
  httplib::Client c("127.0.0.1", api.port());
  const httplib::Headers auth{{"Authorization", "Bearer " + token}};
  auto made = c.Post("/v1/users", auth,
                     json{{"name", "bob"}, {"password", "a long enough password"}}.dump(),
                     "application/json");
  ASSERT_TRUE(made);
  EXPECT_EQ(made->status, 201) << made->body;
  auto twice = c.Post("/v1/users", auth,
                      json{{"name", "bob"}, {"password", "a long enough password"}}.dump(),
                      "application/json");
  ASSERT_TRUE(twice);
  EXPECT_EQ(twice->status, 409);
  // The hook runs after the store, on the reactor: a read through the reactor comes after it.
  auto stored = c.Get("/v1/audit", auth);
  ASSERT_TRUE(stored);
  ASSERT_EQ(stored->status, 200);
  const json rows = json::parse(stored->body);
  const auto audits = api.audits();
  ASSERT_EQ(audits.size(), 3u);  // the login, then both creations
  ASSERT_EQ(rows.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(audits[i], rows[i]);
  EXPECT_EQ(audits[0]["action"], "sessions:create");
  EXPECT_EQ(audits[1]["action"], "users:create");
  EXPECT_EQ(audits[1]["resource"], "users");
  EXPECT_EQ(audits[1]["user"], "admin");
  EXPECT_EQ(audits[1]["result"], "ok");
  EXPECT_EQ(audits[1]["status"], 201);
  EXPECT_EQ(audits[2]["result"], "failed");
  EXPECT_EQ(audits[2]["status"], 409);
  EXPECT_LT(audits[1]["id"].get<int64_t>(), audits[2]["id"].get<int64_t>());
  EXPECT_TRUE(api.auditOnReactor());
}

}  // namespace
}  // namespace enjin::api
