#include "enjin/metrics/metrics.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "fakes/temp_dir.hpp"

namespace enjin::metrics {
namespace {

TEST(Metrics, RendersASmallRegistryExactly) {
  Registry r;
  r.counter("requests_total", "Requests.", {{"method", "GET"}, {"code", "200"}}).inc(3);
  r.counter("requests_total", "Requests.", {{"code", "500"}, {"method", "GET"}}).inc();
  r.gauge("temperature_celsius", "Temperature.").set(-2.5);
  Histogram& h = r.histogram("latency_seconds", "Latency.", {0.125, 0.5, 1});
  for (double v : {0.0625, 0.125, 0.25, 2.0}) h.observe(v);

  EXPECT_EQ(r.render(),
            "# HELP latency_seconds Latency.\n"
            "# TYPE latency_seconds histogram\n"
            "latency_seconds_bucket{le=\"0.125\"} 2\n"
            "latency_seconds_bucket{le=\"0.5\"} 3\n"
            "latency_seconds_bucket{le=\"1\"} 3\n"
            "latency_seconds_bucket{le=\"+Inf\"} 4\n"
            "latency_seconds_sum 2.4375\n"
            "latency_seconds_count 4\n"
            "# HELP requests_total Requests.\n"
            "# TYPE requests_total counter\n"
            "requests_total{code=\"200\",method=\"GET\"} 3\n"
            "requests_total{code=\"500\",method=\"GET\"} 1\n"
            "# HELP temperature_celsius Temperature.\n"
            "# TYPE temperature_celsius gauge\n"
            "temperature_celsius -2.5\n");
}

TEST(Metrics, HistogramLabelsComeBeforeLe) {
  Registry r;
  r.histogram("size_bytes", "Sizes.", {10, INFINITY}, {{"node", "a"}}).observe(11);
  EXPECT_EQ(r.render(),
            "# HELP size_bytes Sizes.\n"
            "# TYPE size_bytes histogram\n"
            "size_bytes_bucket{node=\"a\",le=\"10\"} 0\n"
            "size_bytes_bucket{node=\"a\",le=\"+Inf\"} 1\n"
            "size_bytes_sum{node=\"a\"} 11\n"
            "size_bytes_count{node=\"a\"} 1\n");
}

TEST(Metrics, EscapesLabelValuesAndHelp) {
  Registry r;
  r.gauge("g", "back\\slash \"quoted\"\nsecond line", {{"path", "a\\b\"c\nd"}}).set(1);
  EXPECT_EQ(r.render(),
            "# HELP g back\\\\slash \"quoted\"\\nsecond line\n"
            "# TYPE g gauge\n"
            "g{path=\"a\\\\b\\\"c\\nd\"} 1\n");
}

TEST(Metrics, SpellsSpecialAndLargeValues) {
  Registry r;
  auto value = [&](double v) {
    r.gauge("v", "V.").set(v);
    std::string text = r.render();
    auto at = text.rfind("\nv ");
    return text.substr(at + 3, text.size() - at - 4);
  };
  EXPECT_EQ(value(INFINITY), "+Inf");
  EXPECT_EQ(value(-INFINITY), "-Inf");
  EXPECT_EQ(value(std::numeric_limits<double>::quiet_NaN()), "NaN");
  EXPECT_EQ(value(12345678), "12345678");
  EXPECT_EQ(value(9007199254740992.0), "9007199254740992");
  EXPECT_EQ(value(-0.0), "0");
  EXPECT_EQ(value(0.1), "0.1");
  EXPECT_EQ(value(1e20), "1e+20");
  EXPECT_EQ(value(1.5e-7), "1.5e-07");
}

TEST(Metrics, SameNameAndLabelsGiveTheSameObject) {
  Registry r;
  Counter& a = r.counter("c_total", "C.", {{"x", "1"}, {"y", "2"}});
  Counter& b = r.counter("c_total", "C.", {{"y", "2"}, {"x", "1"}});
  Counter& other = r.counter("c_total", "C.", {{"x", "2"}, {"y", "2"}});
  EXPECT_EQ(&a, &b);
  EXPECT_NE(&a, &other);
  a.inc(2);
  EXPECT_EQ(b.value(), 2);
  EXPECT_EQ(other.value(), 0);
  EXPECT_EQ(&r.gauge("g", "G."), &r.gauge("g", "G."));
  EXPECT_EQ(&r.histogram("h", "H.", {1, 2}), &r.histogram("h", "H.", {1, 2}));
}

TEST(Metrics, ACounterNeverGoesDown) {
  Registry r;
  Counter& c = r.counter("c_total", "C.");
  c.inc(1.5);
  c.inc(-1);
  c.inc(std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(c.value(), 1.5);
  Gauge& g = r.gauge("g", "G.");
  g.add(3);
  g.add(-5);
  EXPECT_EQ(g.value(), -2);
}

TEST(Metrics, MisuseThrows) {
  Registry r;
  EXPECT_THROW(r.counter("", "C."), std::logic_error);
  EXPECT_THROW(r.counter("1abc", "C."), std::logic_error);
  EXPECT_THROW(r.counter("a-b", "C."), std::logic_error);
  EXPECT_NO_THROW(r.counter("ns:sub_name9", "C."));
  EXPECT_THROW(r.counter("c", "C.", {{"__reserved", "x"}}), std::logic_error);
  EXPECT_THROW(r.counter("c", "C.", {{"1a", "x"}}), std::logic_error);
  EXPECT_THROW(r.counter("c", "C.", {{"a:b", "x"}}), std::logic_error);
  EXPECT_THROW(r.counter("c", "C.", {{"a", "x"}, {"a", "y"}}), std::logic_error);
  EXPECT_THROW(r.histogram("h", "H.", {1}, {{"le", "x"}}), std::logic_error);
  EXPECT_THROW(r.histogram("h", "H.", {2, 1}), std::logic_error);
  EXPECT_THROW(r.histogram("h", "H.", {1, 1}), std::logic_error);
  EXPECT_THROW(r.histogram("h", "H.", {std::numeric_limits<double>::quiet_NaN()}),
               std::logic_error);

  r.counter("taken", "Help.");
  EXPECT_THROW(r.gauge("taken", "Help."), std::logic_error);
  EXPECT_THROW(r.counter("taken", "Other help."), std::logic_error);
  r.histogram("hist", "H.", {1, 2});
  EXPECT_THROW(r.histogram("hist", "H.", {1, 3}, {{"a", "b"}}), std::logic_error);
  // A failed registration leaves nothing behind.
  EXPECT_EQ(r.render().find("# HELP c "), std::string::npos);
}

TEST(Metrics, ExponentialBuckets) {
  EXPECT_EQ(exponentialBuckets(0.5, 2, 4), (std::vector<double>{0.5, 1, 2, 4}));
  EXPECT_THROW(exponentialBuckets(0, 2, 3), std::logic_error);
  EXPECT_THROW(exponentialBuckets(1, 1, 3), std::logic_error);
  EXPECT_THROW(exponentialBuckets(1, 2, 0), std::logic_error);
}

TEST(Metrics, ConcurrentUpdatesFromFourThreadsSumExactly) {
  Registry r;
  constexpr int kThreads = 4, kEach = 100'000;
  std::atomic<bool> done{false};
  // Registered before the renderer starts, which expects to find it in every render.
  Counter& hits = r.counter("hits_total", "Hits.");
  // A renderer and registrations run beside the updates, as the HTTP thread would.
  std::thread renderer([&] {
    while (!done.load()) {
      std::string text = r.render();
      EXPECT_NE(text.find("# TYPE hits_total counter"), std::string::npos);
      r.gauge("renders", "Renders.").add(1);
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Histogram& h = r.histogram("obs", "Observations.", {0.5});
      for (int i = 0; i < kEach; ++i) {
        hits.inc();
        h.observe(t % 2 == 0 ? 0.25 : 1);
      }
    });
  }
  for (auto& t : threads) t.join();
  done = true;
  renderer.join();
  EXPECT_EQ(hits.value(), kThreads * kEach);
  std::string text = r.render();
  EXPECT_NE(text.find("hits_total 400000\n"), std::string::npos) << text;
  EXPECT_NE(text.find("obs_bucket{le=\"0.5\"} 200000\n"), std::string::npos) << text;
  EXPECT_NE(text.find("obs_count 400000\n"), std::string::npos) << text;
  EXPECT_NE(text.find("obs_sum 250000\n"), std::string::npos) << text;
}

TEST(Metrics, CollectorFamiliesAreSortedAmongRegisteredOnes) {
  Registry r;
  r.counter("b_restarts_total", "Restarts.").inc(7);
  int calls = 0;
  r.addCollector([&](Registry::Writer& w) {
    ++calls;
    w.family("c_nodes", "gauge", "Nodes by state.");
    w.sample({{"state", "running"}}, 3);
    w.sample({{"state", "failed"}}, 1);
    w.family("a_up", "gauge", "Up.");
    w.sample({}, 1);
  });
  r.addCollector([](Registry::Writer& w) {
    w.family("c_nodes", "gauge", "Nodes by state.");  // continues the family
    w.sample({{"state", "backoff"}}, 0);
  });
  const std::string expected =
      "# HELP a_up Up.\n"
      "# TYPE a_up gauge\n"
      "a_up 1\n"
      "# HELP b_restarts_total Restarts.\n"
      "# TYPE b_restarts_total counter\n"
      "b_restarts_total 7\n"
      "# HELP c_nodes Nodes by state.\n"
      "# TYPE c_nodes gauge\n"
      "c_nodes{state=\"running\"} 3\n"
      "c_nodes{state=\"failed\"} 1\n"
      "c_nodes{state=\"backoff\"} 0\n";
  EXPECT_EQ(r.render(), expected);
  EXPECT_EQ(r.render(), expected);
  EXPECT_EQ(calls, 2);
}

TEST(Metrics, CollectorMisuseThrowsAtRender) {
  {
    Registry r;
    r.addCollector([](Registry::Writer& w) { w.sample({}, 1); });
    EXPECT_THROW(r.render(), std::logic_error);
  }
  {
    Registry r;
    r.counter("x_total", "X.");
    r.addCollector([](Registry::Writer& w) { w.family("x_total", "counter", "X."); });
    EXPECT_THROW(r.render(), std::logic_error);
  }
  {
    Registry r;
    r.addCollector([](Registry::Writer& w) { w.family("x", "histogram", "X."); });
    EXPECT_THROW(r.render(), std::logic_error);
  }
  {
    Registry r;
    r.addCollector([](Registry::Writer& w) {
      w.family("x", "gauge", "X.");
      w.family("x", "counter", "X.");
    });
    EXPECT_THROW(r.render(), std::logic_error);
  }
  {
    Registry r;
    r.addCollector([](Registry::Writer& w) {
      w.family("x", "gauge", "X.");
      w.sample({{"bad-name", "v"}}, 1);
    });
    EXPECT_THROW(r.render(), std::logic_error);
  }
}

// Runs `promtool check metrics < path`; returns its exit status and everything it printed.
std::pair<int, std::string> promtoolCheck(const std::string& path) {
  const std::string cmd = "promtool check metrics < '" + path + "' 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return {-1, "popen failed"};
  std::string out;
  char buf[512];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(Metrics, PromtoolAcceptsTheRendering) {
  if (::access("/usr/bin/promtool", X_OK) != 0) {
    GTEST_SKIP() << "promtool not found: install the Debian package `prometheus`";
  }
  testing::TempDir dir;
  Registry r;
  r.counter("enjin_restarts_total", "Restarts of a node's process.", {{"node", "web-1"}}).inc(3);
  r.counter("enjin_restarts_total", "Restarts of a node's process.",
            {{"node", "odd \"name\"\\with\nnewline"}})
      .inc(0.5);
  r.gauge("enjin_up", "Whether the daemon is up.\nSecond line \\ backslash.").set(1);
  r.gauge("enjin_temperature_celsius", "Extremes.", {{"which", "hot"}}).set(INFINITY);
  r.gauge("enjin_temperature_celsius", "Extremes.", {{"which", "cold"}}).set(-INFINITY);
  r.gauge("enjin_temperature_celsius", "Extremes.", {{"which", "unknown"}})
      .set(std::numeric_limits<double>::quiet_NaN());
  Histogram& h = r.histogram("enjin_loop_lag_seconds", "Timer lateness.",
                             exponentialBuckets(0.0001, 10, 4), {{"ring", "2"}});
  for (double v : {0.00005, 0.002, 0.002, 3.0, 1e-7}) h.observe(v);
  r.addCollector([](Registry::Writer& w) {
    w.family("enjin_nodes", "gauge", "Nodes by state.");
    w.sample({{"state", "running"}}, 12);
    w.sample({{"state", "failed"}}, 0);
  });
  const std::string good = dir / "good.prom";
  std::ofstream(good) << r.render();
  auto [code, out] = promtoolCheck(good);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out, "");

  // The control: promtool does complain about text it dislikes (a counter without _total).
  Registry bad;
  bad.counter("enjin_restarts", "Restarts.").inc();
  const std::string badPath = dir / "bad.prom";
  std::ofstream(badPath) << bad.render();
  auto [badCode, badOut] = promtoolCheck(badPath);
  EXPECT_NE(badOut, "") << "exit " << badCode;
}

}  // namespace
}  // namespace enjin::metrics
