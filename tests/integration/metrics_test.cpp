// GET /metrics of a real ring0d (one ring-1 node, one ring-2 node, one sleeping process), on its
// token-less [metrics] listener: promtool finds the text clean, and a real Prometheus scrapes it
// and answers queries about it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <filesystem>

#include "enjin/ring/tree.hpp"
#include "ring2d_fixture.hpp"

namespace enjin::testing {
namespace {

using nlohmann::json;

std::string tag() {
  return std::to_string(8'000'000 + (::getpid() % 100'000) * 10);
}

// One HTTP/1.0 GET on loopback: {status, body}; status 0 when nothing answered.
std::pair<int, std::string> httpGet(int port, const std::string& target) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {0, ""};
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string raw;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string req = "GET " + target + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[8192];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof buf)) > 0) raw.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  const auto end = raw.find("\r\n\r\n");
  if (!raw.starts_with("HTTP/") || end == std::string::npos) return {0, raw};
  return {std::atoi(raw.c_str() + raw.find(' ') + 1), raw.substr(end + 4)};
}

// A child process killed (and reaped) when the guard goes, whatever the test's outcome.
struct ChildGuard {
  pid_t pid = -1;
  ~ChildGuard() {
    if (pid <= 0) return;
    ::kill(pid, SIGTERM);
    if (waitExit(pid, 10'000) == -1) {
      ::kill(pid, SIGKILL);
      waitExit(pid, 5'000);
    }
  }
};

// The single value of an instant query's answer, or nullopt while there is none.
std::optional<double> queryValue(int port, const std::string& encodedQuery, std::string* seen) {
  auto [status, body] = httpGet(port, "/api/v1/query?query=" + encodedQuery);
  if (seen != nullptr) *seen = std::to_string(status) + " " + body;
  if (status != 200) return std::nullopt;
  json j = json::parse(body, nullptr, false);
  if (!j.is_object() || j.value("status", "") != "success") return std::nullopt;
  const json& result = j["data"]["result"];
  if (!result.is_array() || result.size() != 1) return std::nullopt;
  const json& value = result[0]["value"];
  if (!value.is_array() || value.size() != 2 || !value[1].is_string()) return std::nullopt;
  return std::stod(value[1].get<std::string>());
}

class MetricsTest : public Ring2dTest {
 protected:
  void TearDown() override {
    if (ring0d_ > 0) {
      ::kill(ring0d_, SIGTERM);
      if (waitExit(ring0d_, 30'000) == -1) ::kill(ring0d_, SIGKILL);
    }
    for (pid_t pid : pidsWithCmdline(dir_.path())) ::kill(pid, SIGKILL);
    for (pid_t pid : pidsWithCmdline("sleep:" + tag())) ::kill(pid, SIGKILL);
    reapAll(3000);
    Ring2dTest::TearDown();
  }

  json tree() {
    auto r = supervise::controlCall(state() + "/control.sock", {{"cmd", "tree"}});
    return r.ok() ? r->value("tree", json()) : json();
  }

  bool allReady() {
    json t = tree();
    if (!t.is_object() || t.value("state", "") != "ready") return false;
    auto f = ring::flattenTree(t);
    for (const char* path : {"infra", "infra/shop", "infra/shop/nap"}) {
      auto it = f.find(path);
      if (it == f.end() || it->second.value("state", "") != "ready") return false;
    }
    return true;
  }

  pid_t ring0d_ = -1;
};

TEST_F(MetricsTest, PromtoolFindsRing0dsMetricsCleanAndPrometheusScrapesThem) {
  const int metricsPort = freeTcpPort();
  ASSERT_GT(metricsPort, 0);
  std::ofstream(dir_ / "ring0d.toml")
      << "state_dir = \"" + state() + "\"\nheartbeat_ms = 200\nheartbeat_timeout_ms = 1500\n"
      << "[metrics]\nlisten = \"127.0.0.1:" << metricsPort << "\"\n"
      << R"(
[[ring1]]
label = "infra"
  [[ring1.ring2]]
  label = "shop"
    [[ring1.ring2.process]]
    name = "nap"
    command = [)" +
             crasher("sleep:" + tag()) + "]\n";
  ring0d_ = spawnProcess({helper("ring0d"), "--config", dir_ / "ring0d.toml"}, dir_ / "ring0d.err");
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000))
      << tree().dump(1) << readFile(dir_ / "ring0d.err");

  // The process's cost travels up from ring2d through ring1d to ring0d's tree, then to metrics.
  std::string text;
  ASSERT_TRUE(waitFor(
      [&] {
        auto [status, body] = httpGet(metricsPort, "/metrics");
        text = body;
        return status == 200 &&
               body.find(
                   "enjin_process_resident_memory_bytes{node=\"infra/shop\",process=\"nap\"}") !=
                   std::string::npos;
      },
      10'000))
      << text;
  for (const char* line :
       {"\nenjin_nodes{ring=\"1\",state=\"ready\"} 1\n",
        "\nenjin_nodes{ring=\"2\",state=\"ready\"} 1\n",
        "\nenjin_process_up{node=\"infra/shop\",process=\"nap\"} 1\n",
        "\nenjin_process_restarts_total{node=\"infra/shop\",process=\"nap\"} 0\n",
        "\nenjin_process_cpu_seconds_total{node=\"infra/shop\",process=\"nap\"} ",
        "\nenjin_bus_messages_rejected_total{reason=\"bad_signature\"} 0\n",
        "\n# TYPE enjin_reactor_lag_seconds histogram\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
  }
  const auto acceptedAt = text.find("\nenjin_bus_messages_accepted_total ");
  ASSERT_NE(acceptedAt, std::string::npos) << text;
  EXPECT_GT(std::atof(text.c_str() + acceptedAt + 35), 0) << text;
  // Nothing but the metrics on this listener, and no token asked for them.
  EXPECT_EQ(httpGet(metricsPort, "/v1/tree").first, 404);

  // The scrapes above started the lag probe (a timer every 50 ms): over the next second the
  // histogram counts its firings, about 20, on top of the daemon's own timers (a few per
  // heartbeat).
  const auto lagCount = [&] {
    auto [status, body] = httpGet(metricsPort, "/metrics");
    const auto at = body.find("\nenjin_reactor_lag_seconds_count ");
    return status == 200 && at != std::string::npos ? std::atof(body.c_str() + at + 32) : -1.0;
  };
  const double before = lagCount();
  ASSERT_GE(before, 0) << "no enjin_reactor_lag_seconds_count in the scrape";
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const double after = lagCount();
  std::printf("enjin_reactor_lag_seconds_count: %.0f more in 1 s\n", after - before);
  EXPECT_GE(after - before, 15) << before << " then " << after;

  if (::access("/usr/bin/promtool", X_OK) == 0) {
    std::ofstream(dir_ / "scrape.prom") << text;
    const std::string cmd = "promtool check metrics < '" + (dir_ / "scrape.prom") + "' 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string out;
    char buf[512];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int st = ::pclose(p);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << out;
    EXPECT_EQ(out, "");
  }

  if (::access("/usr/bin/prometheus", X_OK) != 0) {
    GTEST_SKIP() << "prometheus not found: install the Debian package `prometheus`";
  }
  const int promPort = freeTcpPort();
  ASSERT_GT(promPort, 0);
  std::ofstream(dir_ / "prometheus.yml")
      << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      << "scrape_configs:\n  - job_name: enjin\n    static_configs:\n"
      << "      - targets: ['127.0.0.1:" << metricsPort << "']\n";
  std::filesystem::create_directories(dir_ / "tsdb");
  ChildGuard prometheus;
  prometheus.pid =
      spawnProcess({"/usr/bin/prometheus", "--config.file=" + (dir_ / "prometheus.yml"),
                    "--storage.tsdb.path=" + (dir_ / "tsdb"),
                    "--web.listen-address=127.0.0.1:" + std::to_string(promPort)},
                   dir_ / "prometheus.err");
  ASSERT_GT(prometheus.pid, 0);

  int readyNodes = 0;
  for (const auto& [path, e] : ring::flattenTree(tree())) {
    if (e.value("kind", "") == "node" && e.value("state", "") == "ready") ++readyNodes;
  }
  ASSERT_EQ(readyNodes, 2);
  std::optional<double> up, ready;
  std::string seenUp, seenReady;
  const bool answered = waitFor(
      [&] {
        up = queryValue(promPort, "up%7Bjob%3D%22enjin%22%7D", &seenUp);
        ready = queryValue(promPort, "sum(enjin_nodes%7Bstate%3D%22ready%22%7D)", &seenReady);
        return up && *up == 1 && ready;
      },
      30'000);
  ASSERT_TRUE(answered) << "up: " << seenUp << "\nready: " << seenReady << "\n"
                        << readFile(dir_ / "prometheus.err");
  EXPECT_EQ(*up, 1);
  EXPECT_EQ(*ready, readyNodes);
}

}  // namespace
}  // namespace enjin::testing
