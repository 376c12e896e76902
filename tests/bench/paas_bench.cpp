// The PaaS illusion under load: an app of three instances (enjin-demo-http, sandbox or unix-user
// tenants of a ring1d) served through the ring1d's HAProxy, with `wrk -t2 -c32 --latency` for
// D seconds (default 30) in each scenario, counting every answer other than 2xx and every socket
// error wrk saw:
//   direct     wrk straight at one instance's port (no router): the baseline
//   router     wrk through the router, nothing happening: the router's overhead
//   kill       one instance SIGKILLed every second, round robin
//   rolling    a rolling restart of the app (POST /v1/apps/NAME/restart) 1 s in
//   deploy     a second app deployed 1 s in (the router reloads)
//   ring1d     ring1d SIGKILLed 1 s in (the router and the instances outlive it)
// Target (from the issue): 0 errors and 0 non-2xx in kill, rolling, deploy and ring1d. Prints a
// table and one BENCH_JSON line. Exit 0 when everything was measured (whether or not the
// targets were met), 1 when something broke, 77 when wrk, haproxy or root is missing.
//   --smoke  3 s per scenario: that it runs, not how it does (ctest)
//   --duration S   --max-seconds S (400)
#include <httplib.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench_proc.hpp"
#include "enjin/acl/password.hpp"
#include "enjin/ring/tree.hpp"
#include "enjin/supervise/control_server.hpp"

namespace {

using nlohmann::json;
using namespace enjin::bench;

const std::string kBin = ENJIN_BIN_DIR;
constexpr const char* kPassword = "paas-bench-operator";

struct Options {
  bool smoke = false;
  int durationS = 30;
  int maxSeconds = 400;
};

struct Http {
  int status = 0;
  json body;
};

Http http(int port, const std::string& method, const std::string& path, const std::string& token,
          const json& body = nullptr) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(3);
  c.set_read_timeout(15);
  httplib::Headers h;
  if (!token.empty()) h.emplace("Authorization", "Bearer " + token);
  const std::string text = body.is_null() ? "" : body.dump();
  httplib::Result r = method == "GET"    ? c.Get(path.c_str(), h)
                      : method == "POST" ? c.Post(path.c_str(), h, text, "application/json")
                      : method == "PUT"  ? c.Put(path.c_str(), h, text, "application/json")
                                         : c.Delete(path.c_str(), h);
  if (!r) return {};
  return {r->status, json::parse(r->body, nullptr, false)};
}

// Polls `done` every 50 ms for `ms`; throws Failure with `what` when it never holds.
void await(const std::function<bool()>& done, int64_t ms, const std::string& what) {
  const int64_t t0 = monoNs();
  while (!done()) {
    checkAbort();
    if (msSinceNs(t0) > ms) throw Failure(what);
    sleepMs(50);
  }
}

struct Scenario {
  std::string name;
  std::string what;
  WrkResult wrk;
  long actions = 0;      // kills, restarts ...
  bool counted = false;  // the zero-error target applies
};

class Bench {
 public:
  Bench(const Options& o, std::string dir) : o_(o), dir_(std::move(dir)) {}

  int run() {
    wrk_ = findOnPath("wrk");
    if (wrk_.empty() || !std::filesystem::exists("/usr/sbin/haproxy") || ::geteuid() != 0) {
      std::printf(
          "paas_bench: needs root, wrk and haproxy (./enjin bench installs them): skipped\n");
      return 77;
    }
    start();
    std::vector<Scenario> out;
    const int d = o_.durationS;
    const std::string routed = "http://127.0.0.1:" + std::to_string(routerPort_) + "/";
    out.push_back(load("direct", "wrk straight at one instance",
                       "http://127.0.0.1:" + std::to_string(instances().at(0).second) + "/", "", d,
                       nullptr, false));
    out.push_back(load("router", "through the router, nothing happening", routed, "app.localhost",
                       d, nullptr, false));
    out.push_back(load(
        "kill", "one instance SIGKILLed every second", routed, "app.localhost", d,
        [this](long& n, int64_t t0) {
          int k = 0;
          while (msSinceNs(t0) < (o_.durationS - 1) * 1000.0) {
            sleepMs(1000);
            auto inst = instances();
            const pid_t pid = inst.at(k++ % inst.size()).first;
            if (pid > 0 && ::kill(pid, SIGKILL) == 0) ++n;
          }
        },
        true));
    out.push_back(load(
        "rolling", "a rolling restart of the three", routed, "app.localhost", d,
        [this](long& n, int64_t) {
          sleepMs(1000);
          if (http(apiPort_, "POST", "/v1/apps/app/restart", token_).status == 202) ++n;
        },
        true));
    awaitRolledOut("app", 3);
    out.push_back(load(
        "deploy", "a second app deployed (router reload)", routed, "app.localhost", d,
        [this](long& n, int64_t) {
          sleepMs(1000);
          if (http(apiPort_, "POST", "/v1/apps", token_, app("two", 1)).status == 201) ++n;
        },
        true));
    out.push_back(load(
        "ring1d", "ring1d SIGKILLed", routed, "app.localhost", d,
        [this](long& n, int64_t) {
          sleepMs(1000);
          const pid_t pid = ring1dPid();
          if (pid > 0 && ::kill(pid, SIGKILL) == 0) ++n;
        },
        true));
    report(out);
    return 0;
  }

  void stop() {
    if (ring0d_ > 0) {
      ::kill(ring0d_, SIGTERM);
      if (waitExit(ring0d_, 30'000) == -1) ::kill(ring0d_, SIGKILL);
    }
  }

 private:
  json app(const std::string& name, int n) const {
    return {{"name", name},
            {"command", {kBin + "/enjin-demo-http", "--name", name}},
            {"instances", n},
            {"readiness", "http:/healthz"},
            {"health", "http:/healthz"}};
  }

  void start() {
    const std::string state = dir_ + "/state", conf = dir_ + "/ring0d.toml";
    apiPort_ = freeTcpPort();
    routerPort_ = freeTcpPort();
    auto hash = enjin::acl::hashPassword(kPassword);
    if (!hash.ok()) throw Failure(hash.error().message);
    std::ofstream(conf) << "state_dir = \"" << state << "\"\n"
                        << "[[ring1]]\nlabel = \"paas\"\n"
                        << "api_listen = \"127.0.0.1:" << apiPort_ << "\"\n"
                        << "router_listen = \"127.0.0.1:" << routerPort_ << "\"\n"
                        << "ports = \"34000-34099\"\ntenant_uids = \"63000-63099\"\n"
                        << "  [[ring1.admin]]\n  user = \"ops\"\n  password_hash = \"" << *hash
                        << "\"\n";
    ring0d_ = launch({kBin + "/ring0d", "--config", conf}, {}, dir_ + "/ring0d.log");
    state_ = state;
    await(
        [&] {
          if (waitExit(ring0d_, 0) != -1)
            throw Failure("ring0d exited: " + readText(dir_ + "/ring0d.log"));
          auto r = http(apiPort_, "POST", "/v1/sessions", "",
                        {{"user", "ops"}, {"password", kPassword}});
          if (r.status == 201) token_ = r.body.value("token", "");
          return !token_.empty();
        },
        60'000, "the ring-1 API did not come up");
    auto made = http(apiPort_, "POST", "/v1/apps", token_, app("app", 3));
    if (made.status != 201) throw Failure("POST /v1/apps answered " + made.body.dump());
    awaitRolledOut("app", 3);
    strategy_ = made.body.value("strategy", "");
  }

  void awaitRolledOut(const std::string& name, int ready) {
    await(
        [&] {
          auto a = http(apiPort_, "GET", "/v1/apps/" + name, token_);
          return a.status == 200 && a.body["status"]["rollout"] == "complete" &&
                 a.body["status"]["ready"] == ready;
        },
        90'000,
        "app '" + name +
            "' not rolled out: " + http(apiPort_, "GET", "/v1/apps/" + name, token_).body.dump());
  }

  // {pid, port} of each instance of `app`.
  std::vector<std::pair<pid_t, int>> instances() {
    std::vector<std::pair<pid_t, int>> out;
    auto a = http(apiPort_, "GET", "/v1/apps/app", token_);
    for (const auto& i : a.body["status"].value("instances", json::array())) {
      out.emplace_back(i.value("pid", 0), i.value("port", 0));
    }
    if (out.empty()) throw Failure("no instances: " + a.body.dump());
    return out;
  }

  pid_t ring1dPid() {
    auto r = enjin::supervise::controlCall(state_ + "/control.sock", {{"cmd", "status"}});
    if (!r.ok()) return 0;
    for (const auto& p : r->value("processes", json::array())) {
      if (p.value("name", "") == "paas") return p.value("pid", 0);
    }
    return 0;
  }

  Scenario load(const std::string& name, const std::string& what, const std::string& url,
                const std::string& host, int seconds, std::function<void(long&, int64_t)> action,
                bool counted) {
    checkAbort();
    Scenario s{name, what, {}, 0, counted};
    const std::string outPath = dir_ + "/wrk-" + name + ".out";
    std::vector<std::string> argv{
        wrk_, "-t2", "-c32", "-d" + std::to_string(seconds) + "s", "--latency", "--timeout", "5s"};
    if (!host.empty()) argv.insert(argv.end(), {"-H", "Host: " + host});
    argv.push_back(url);
    const int64_t t0 = monoNs();
    const pid_t pid = launch(argv, {}, outPath);
    if (action) action(s.actions, t0);
    const int rc = waitExit(pid, (seconds + 15) * 1000);
    if (rc == -1) {
      ::kill(pid, SIGKILL);
      throw Failure("wrk (" + name + ") did not end");
    }
    const std::string text = readText(outPath);
    s.wrk = parseWrk(text);
    if (rc != 0 || s.wrk.requestsPerS < 0) {
      throw Failure("wrk (" + name + ") exited " + std::to_string(rc) + ":\n" + text);
    }
    // The next scenario starts from a whole app again.
    if (name != "direct" && name != "router") sleepMs(2000);
    return s;
  }

  void report(const std::vector<Scenario>& out) {
    std::printf("\nPaaS under wrk -t2 -c32 -d%ds, app of 3 instances (%s), through HAProxy\n",
                o_.durationS, strategy_.c_str());
    std::printf("  %-8s %-40s %10s %9s %9s %8s %8s %7s\n", "scenario", "what", "req/s", "p50 ms",
                "p99 ms", "non-2xx", "sockerr", "actions");
    json scenarios = json::object();
    bool allZero = true;
    double direct = 0, router = 0;
    for (const auto& s : out) {
      std::printf("  %-8s %-40s %10.0f %9.2f %9.2f %8ld %8ld %7ld\n", s.name.c_str(),
                  s.what.c_str(), s.wrk.requestsPerS, s.wrk.p50Ms, s.wrk.p99Ms, s.wrk.non2xx,
                  s.wrk.socketErrors, s.actions);
      if (s.counted && (s.wrk.non2xx != 0 || s.wrk.socketErrors != 0)) allZero = false;
      if (s.name == "direct") direct = s.wrk.requestsPerS;
      if (s.name == "router") router = s.wrk.requestsPerS;
      scenarios[s.name] = {{"requests_per_s", s.wrk.requestsPerS},
                           {"requests", s.wrk.requests},
                           {"p50_ms", s.wrk.p50Ms},
                           {"p99_ms", s.wrk.p99Ms},
                           {"non_2xx", s.wrk.non2xx},
                           {"socket_errors", s.wrk.socketErrors},
                           {"actions", s.actions}};
    }
    const double ratio = direct > 0 ? router / direct : 0;
    std::printf("  router throughput / direct: %.2f\n", ratio);
    std::printf("  target: 0 non-2xx and 0 socket errors under kill, rolling, deploy, ring1d: %s\n",
                o_.smoke  ? "(not checked: smoke)"
                : allZero ? "PASS"
                          : "FAIL");
    json j{{"smoke", o_.smoke},      {"duration_s", o_.durationS},  {"strategy", strategy_},
           {"scenarios", scenarios}, {"router_over_direct", ratio}, {"zero_errors", allZero}};
    std::printf("BENCH_JSON %s\n", j.dump().c_str());
  }

  Options o_;
  std::string dir_, state_, wrk_, token_, strategy_;
  int apiPort_ = 0, routerPort_ = 0;
  pid_t ring0d_ = -1;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto num = [&](int& v) {
      if (i + 1 >= argc) return false;
      v = std::max(1, std::atoi(argv[++i]));
      return true;
    };
    if (a == "--smoke") {
      o.smoke = true;
      o.durationS = 3;
      o.maxSeconds = 150;
    } else if (!((a == "--duration" && num(o.durationS)) ||
                 (a == "--max-seconds" && num(o.maxSeconds)))) {
      std::fprintf(stderr, "usage: paas_bench [--smoke] [--duration S] [--max-seconds S]\n");
      return 2;
    }
  }
  startBench(o.maxSeconds);
  char tmpl[] = "/var/tmp/enjin-paasbench.XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    std::perror("paas_bench: mkdtemp");
    return 1;
  }
  ::chmod(tmpl, 0755);
  const std::string dir = tmpl;
  Bench b(o, dir);
  int rc = 1;
  try {
    rc = b.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "paas_bench: %s\n", e.what());
    rc = 1;
  }
  b.stop();
  killEverything();
  if (rc == 0 || rc == 77) {
    std::filesystem::remove_all(dir);
  } else {
    std::fprintf(stderr, "paas_bench: logs kept in %s\n", dir.c_str());
  }
  return rc;
}
