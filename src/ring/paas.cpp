#include "enjin/ring/paas.hpp"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "enjin/api/http_server.hpp"
#include "enjin/ring/offer.hpp"
#include "enjin/ring/parent.hpp"
#include "enjin/router/router.hpp"
#include "enjin/supervise/observation.hpp"
#include "enjin/supervise/supervisor.hpp"

namespace enjin::ring {

class Paas::Impl {
 public:
  Impl(Reactor& reactor, const Clock& clock, store::Store& store, NodeParent& parent,
       metrics::Registry& metrics, PaasOptions options, std::function<uint64_t()> random,
       std::function<Status()> applyNodes, std::function<bool(const std::string&)> taken)
      : reactor_(reactor),
        opts_(std::move(options)),
        random_(std::move(random)),
        apps_(reactor, clock, store, host(parent, std::move(applyNodes))) {
    apps_.setTakenLabels(std::move(taken));
    // The strongest strategy this host gives: a sandbox needs the ids and namespaces only root
    // can deal.
    apps_.setDefaultStrategy(::geteuid() == 0 ? "sandbox" : "unix-user");
    observations_.add(supervise::makeProcessObservation());
    observations_.add(supervise::makeTcpObservation());
    router::addRouterMetrics(metrics, [this]() -> std::vector<router::RouterAppStats> {
      if (!router_) return {};
      auto s = router_->stats();
      if (!s.ok()) return {};
      return std::move(*s);
    });
  }

  Status load() { return apps_.load(); }

  Status configure(const NodeSpec& own) {
    PortRange ports;
    if (!own.ports.empty()) {
      auto r = parsePortRange(own.ports);
      if (!r.ok()) return r.error();
      ports = *r;
    }
    if (own.routerListen != routerListen_ || own.domain != domain_) {
      if (auto st = startRouter(own.routerListen, own.domain); !st.ok()) {
        apps_.configure(ports, {}, nullptr);
        return st.error().wrap("router_listen " + own.routerListen);
      }
    }
    std::vector<std::string> urls;
    if (router_) {
      const std::string port = ":" + std::to_string(api::parseListen(routerListen_)->second);
      urls.push_back("http://NAME.localhost" + port + "/");
      if (!domain_.empty()) urls.push_back("http://NAME." + domain_ + port + "/");
    }
    apps_.configure(ports, std::move(urls), router_.get());
    apps_.start();
    return {};
  }

  AppManager& apps() { return apps_; }

  void stop(std::function<void()> done) {
    if (!routerSup_) return done();
    routerSup_->stopAll(std::move(done));
  }

 private:
  AppHost host(NodeParent& parent, std::function<Status()> applyNodes) {
    AppHost h;
    h.nodeLabel = opts_.nodeLabel;
    h.offer = [] { return hostOffer(); };
    h.applyNodes = std::move(applyNodes);
    h.holdPort = [&parent](int port, const std::string& label) {
      return parent.holdSocket(port, label);
    };
    h.portOwner = [&parent](int port) { return parent.socketOwner(port); };
    h.releasePort = [&parent](int port) { parent.releaseSocket(port); };
    h.nodeStateDir = [&parent](const std::string& label) { return parent.nodeStateDir(label); };
    h.nodeUid = [&parent](const std::string& label) { return parent.nodeUid(label); };
    return h;
  }

  // The router for `listen` (and `domain`): made, its config written, its process started by
  // its own supervisor (which re-adopts a router still running from before a restart). "" stops
  // it.
  Status startRouter(const std::string& listen, const std::string& domain) {
    if (listen.empty()) {
      apps_.configure(PortRange{}, {}, nullptr);
      if (routerSup_) (void)routerSup_->reload({});
      router_.reset();
      routerListen_.clear();
      domain_ = domain;
      return {};
    }
    auto hp = api::parseListen(listen);
    if (!hp.ok()) return hp.error();
    router::RouterSettings rs;
    rs.listenHost = hp->first;
    rs.listenPort = hp->second;
    if (!domain.empty()) rs.domains.push_back(domain);
    rs.stateDir = opts_.stateDir + "/router/haproxy";
    // The router's supervisor and HAProxy keep their sockets there: root's alone.
    for (const std::string& d : {opts_.stateDir + "/router", rs.stateDir}) {
      if (::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST) {
        return Error{"mkdir " + d + ": " + std::strerror(errno)};
      }
    }
    rs.exe = opts_.routerExe;
    auto next = router::makeHaproxyRouter(rs);
    // The config the process starts from. One a previous ring1d wrote is kept: the router it
    // started may be serving from it still (it outlives ring1d), and the apps are routed anew
    // only once their instances have reported (AppManager).
    struct stat cfg {};
    if (::stat((rs.stateDir + "/haproxy.cfg").c_str(), &cfg) != 0) {
      if (auto written = next->apply({}); !written.ok()) return written;
    }
    const supervise::ProcessSpec spec = next->processSpec();
    if (!routerSup_) {
      supervise::SupervisorOptions so{opts_.stateDir + "/router", opts_.holderExe};
      so.observations = &observations_;
      routerSup_ = std::make_unique<supervise::Supervisor>(reactor_, so, random_);
      routerSup_->setObserver([](const supervise::StateEvent&) {});
      if (auto st = routerSup_->start({spec}); !st.ok()) {
        routerSup_.reset();
        return st;
      }
    } else {
      apps_.configure(PortRange{}, {}, nullptr);
      if (auto st = routerSup_->reload({spec}); !st.ok()) return st;
      (void)routerSup_->runCommand("restart", spec.name);
    }
    router_ = std::move(next);
    routerListen_ = listen;
    domain_ = domain;
    spdlog::info("ring1d: router on {} (HAProxy, state in {})", listen, rs.stateDir);
    return {};
  }

  Reactor& reactor_;
  PaasOptions opts_;
  std::function<uint64_t()> random_;
  supervise::ObservationRegistry observations_;
  std::unique_ptr<router::Router> router_;
  std::unique_ptr<supervise::Supervisor> routerSup_;
  std::string routerListen_;
  std::string domain_;
  AppManager apps_;
};

Paas::Paas(Reactor& reactor, const Clock& clock, store::Store& store, NodeParent& parent,
           metrics::Registry& metrics, PaasOptions options, std::function<uint64_t()> random,
           std::function<Status()> applyNodes, std::function<bool(const std::string&)> taken)
    : impl_(std::make_unique<Impl>(reactor, clock, store, parent, metrics, std::move(options),
                                   std::move(random), std::move(applyNodes), std::move(taken))) {}
Paas::~Paas() = default;
Status Paas::load() {
  return impl_->load();
}
Status Paas::configure(const NodeSpec& own) {
  return impl_->configure(own);
}
AppManager& Paas::apps() {
  return impl_->apps();
}
void Paas::stop(std::function<void()> done) {
  impl_->stop(std::move(done));
}

}  // namespace enjin::ring
