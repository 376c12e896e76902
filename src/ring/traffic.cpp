#include "enjin/ring/traffic.hpp"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "enjin/api/http_server.hpp"
#include "enjin/router/router.hpp"
#include "enjin/supervise/observation.hpp"
#include "enjin/supervise/supervisor.hpp"

namespace enjin::ring {

namespace {

constexpr auto kRetryInterval = std::chrono::seconds(2);     // a refused apply(), tried again
constexpr auto kStatsEvery = std::chrono::seconds(1);      // counters read while scraped
constexpr auto kStatsFor = std::chrono::minutes(10);       // after the last scrape

bool isDnsLabel(const std::string& s) {
  if (s.empty() || s.size() > 63 || s.front() == '-' || s.back() == '-') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

// "10.0.0.2:8080" or "[fd00::2]:8080" -> address and port; false if it is neither.
bool splitAddress(const std::string& a, std::string& host, int& port) {
  auto colon = a.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  host = a.substr(0, colon);
  if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  port = std::atoi(a.c_str() + colon + 1);
  return port > 0 && port < 65536;
}

}  // namespace

class TrafficManager::Impl {
 public:
  Impl(Reactor& reactor, TrafficOptions options, std::function<uint64_t()> random)
      : reactor_(reactor), opts_(std::move(options)), random_(std::move(random)) {
    observations_.add(supervise::makeProcessObservation());
    observations_.add(supervise::makeTcpObservation());
  }

  ~Impl() {
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  Status start(metrics::Registry& metrics) {
    auto hp = api::parseListen(opts_.listen);
    if (!hp.ok()) return hp.error().wrap("traffic_listen " + opts_.listen);
    router::RouterSettings rs;
    rs.listenHost = hp->first;
    rs.listenPort = hp->second;
    if (!opts_.domain.empty()) rs.domains.push_back(opts_.domain);
    rs.subdomains = true;
    const std::string dir = opts_.stateDir + "/traffic";
    rs.stateDir = dir + "/haproxy";
    rs.exe = opts_.routerExe;
    // The router's supervisor and HAProxy keep their sockets there: root's alone.
    for (const std::string& d : {dir, rs.stateDir}) {
      if (::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST) {
        return Error{"traffic manager: mkdir " + d + ": " + std::strerror(errno)};
      }
    }
    router_ = router::makeHaproxyRouter(rs);
    struct stat cfg {};
    if (::stat((rs.stateDir + "/haproxy.cfg").c_str(), &cfg) != 0) {
      if (auto st = router_->apply({}); !st.ok()) return st.error().wrap("traffic manager");
    }
    supervise::SupervisorOptions so{dir, opts_.holderExe};
    so.observations = &observations_;
    sup_ = std::make_unique<supervise::Supervisor>(reactor_, so, random_);
    sup_->setObserver([](const supervise::StateEvent&) {});
    if (auto st = sup_->start({router_->processSpec()}); !st.ok()) {
      return st.error().wrap("traffic manager");
    }
    router::addRouterMetrics(metrics, [this] { return snapshot(); });
    thread_ = std::thread([this] { loop(); });
    spdlog::info("ring0d: traffic manager on {} for *.NODE.{} (HAProxy, state in {})", opts_.listen,
                 opts_.domain.empty() ? std::string("localhost") : opts_.domain, rs.stateDir);
    return {};
  }

  void route(const std::map<std::string, std::string>& routers) {
    std::vector<router::RouterBackend> backends;
    for (const auto& [label, address] : routers) {
      if (!isDnsLabel(label)) continue;
      router::RouterBackend be{label, {}};
      std::string host;
      int port = 0;
      if (splitAddress(address, host, port)) be.servers.push_back({"node", host, port, {}});
      backends.push_back(std::move(be));
    }
    {
      std::lock_guard lk(mu_);
      if (backends == desired_ && !failed_) return;
      desired_ = std::move(backends);
      dirty_ = true;
    }
    cv_.notify_all();
  }

  void stop(std::function<void()> done) {
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    if (!sup_) return done();
    sup_->stopAll(std::move(done));
  }

 private:
  // The router thread: applies the latest routes, and reads the counters once a second from a
  // scrape until kStatsFor after the last one.
  void loop() {
    using SteadyClock = std::chrono::steady_clock;
    std::unique_lock lk(mu_);
    SteadyClock::time_point statsRead{}, applied{};
    while (!stopping_) {
      auto wake = SteadyClock::now() + kRetryInterval;
      if (SteadyClock::now() < statsUntil_) wake = std::min(wake, statsRead + kStatsEvery);
      cv_.wait_until(lk, wake, [this] { return stopping_ || dirty_ || statsWanted_; });
      if (stopping_) break;
      const auto now = SteadyClock::now();
      // A refused apply is tried again every kRetryInterval, however often scrapes wake this.
      const bool doApply = dirty_ || (failed_ && now >= applied + kRetryInterval);
      const bool doStats = statsWanted_ || (now < statsUntil_ && now >= statsRead + kStatsEvery);
      std::vector<router::RouterBackend> want = desired_;
      dirty_ = statsWanted_ = false;
      lk.unlock();
      if (doStats) statsRead = now;
      if (doApply) applied = now;
      Status st;
      if (doApply) st = router_->apply(want);
      std::optional<std::vector<router::RouterAppStats>> stats;
      if (doStats) {
        if (auto s = router_->stats(); s.ok()) stats = std::move(*s);
      }
      lk.lock();
      if (doApply) {
        if (!st.ok() && st.error().message != lastError_) {
          spdlog::warn("ring0d: traffic manager: {}", st.error().message);
        } else if (st.ok() && failed_) {
          spdlog::info("ring0d: traffic manager: routes applied again");
        }
        failed_ = !st.ok();
        lastError_ = st.ok() ? "" : st.error().message;
      }
      if (stats) stats_ = std::move(*stats);
    }
  }

  // For a scrape (reactor), which never waits on the router's admin socket: the counters the
  // router thread last read, at most kStatsEvery old while scrapes come (the first scrape after
  // a pause sees the ones of before it, and wakes the thread to read them again).
  std::vector<router::RouterAppStats> snapshot() {
    std::lock_guard lk(mu_);
    const auto now = std::chrono::steady_clock::now();
    if (now >= statsUntil_) {
      statsWanted_ = true;
      cv_.notify_all();
    }
    statsUntil_ = now + kStatsFor;
    return stats_;
  }

  Reactor& reactor_;
  TrafficOptions opts_;
  std::function<uint64_t()> random_;
  supervise::ObservationRegistry observations_;
  std::unique_ptr<router::Router> router_;  // the router thread's once it runs
  std::unique_ptr<supervise::Supervisor> sup_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<router::RouterBackend> desired_;
  std::vector<router::RouterAppStats> stats_;
  std::string lastError_;
  bool dirty_ = false, failed_ = false, stopping_ = false, statsWanted_ = false;
  std::chrono::steady_clock::time_point statsUntil_{};  // counters are read until then
};

TrafficManager::TrafficManager() = default;
TrafficManager::~TrafficManager() = default;

Result<std::unique_ptr<TrafficManager>> TrafficManager::start(Reactor& reactor,
                                                              metrics::Registry& metrics,
                                                              TrafficOptions options,
                                                              std::function<uint64_t()> random) {
  std::unique_ptr<TrafficManager> t(new TrafficManager());
  t->impl_ = std::make_unique<Impl>(reactor, std::move(options), std::move(random));
  if (auto st = t->impl_->start(metrics); !st.ok()) return st.error();
  return t;
}

void TrafficManager::route(const std::map<std::string, std::string>& routers) {
  impl_->route(routers);
}
void TrafficManager::stop(std::function<void()> done) {
  impl_->stop(std::move(done));
}

}  // namespace enjin::ring
