// A fleet of real ring0d hosts on the test hosts of test_fleet.hpp: three network namespaces,
// one etcd member and one ring0d each (compartments dc/rack-a/h1, dc/rack-a/h2, dc/rack-b/h3), h1
// founding the fleet and h2, h3 joining with enrolment tokens minted on h1. Shared by the fleet
// demo (daemons/demo/fleet_demo.cpp) and the fleet bench (tests/bench/fleet_bench.cpp); no gtest.
//
// Ownership: a Ring0Fleet owns its TestFleet, and so every process, namespace and dir; the
// destructor tears everything down. Not thread-safe, except ring1dHosts(), which only reads
// /proc and so may run on a sampler thread while another drives the fleet.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "enjin/base/result.hpp"
#include "test_fleet.hpp"

namespace enjin::testing {

struct Ring0FleetOptions {
  std::string binDir;  // where ring0d, ring1d, ring2d, enjin-holder and enjinctl are
  int leaseTtlMs = 1000;
  int graceMs = 1000;
  // etcd's raft timing (ms), as in FleetOptions.
  int etcdHeartbeatMs = 20;
  int etcdElectionMs = 200;
  // Set (by a signal handler) to stop: every wait of the fleet returns false at once.
  const std::atomic<bool>* stop = nullptr;
};

// An answer of a host's meta API; status 0: no answer.
struct ApiAnswer {
  int status = 0;
  nlohmann::json body;
};

class Ring0Fleet {
 public:
  // Makes the namespaces and forms etcd (one member per host). No ring0d runs yet.
  static Result<std::unique_ptr<Ring0Fleet>> create(const Ring0FleetOptions& options);
  ~Ring0Fleet() = default;
  Ring0Fleet(const Ring0Fleet&) = delete;
  Ring0Fleet& operator=(const Ring0Fleet&) = delete;

  TestFleet& net() { return *fleet_; }
  const std::vector<std::string>& hosts() const { return fleet_->hosts(); }
  static std::string compartmentOf(const std::string& host);  // "dc/rack-a/h1"
  std::string stateOf(const std::string& host) const;

  // Brings up the three ring0d: h1 founds the fleet, h2 and h3 join with tokens minted on h1;
  // returns when every host is in h1's view of the fleet.
  Status start();
  // Starts the ring0d of `host` (--init first when it has no store yet), joining with `token` if
  // given, and waits until its API signs the admin in.
  Status startRing0(const std::string& host, const std::string& token = "");
  HostProcess* ring0(const std::string& host);
  // After killHost(): starts the host's etcd member (its data kept) and its ring0d again, and
  // waits until the host holds a lease again.
  Status restartHost(const std::string& host);

  // The meta API of `host`, through a socket made inside its namespace, as the admin.
  ApiAnswer api(const std::string& host, const std::string& method, const std::string& path,
                const nlohmann::json& body = nullptr);
  // A node as POST /v1/nodes takes it.
  static nlohmann::json node(const std::string& label, const std::string& compartment,
                             const std::string& spread = "");

  // The hosts `viewer`'s GET /v1/fleet lists; nullopt when it gives no 200 answer or lists not
  // even `viewer` (an answer made while its etcd is electing a leader is no evidence of a loss).
  std::optional<std::set<std::string>> hostsSeenBy(const std::string& viewer);

  // ring0d's tree (its control socket): nodes with their states, and its view of the fleet.
  nlohmann::json treeOf(const std::string& host);
  bool readyOn(const std::string& host, const std::string& label);
  std::string schedulerSeenBy(const std::string& host);  // "" when it knows none
  bool holdsLease(const std::string& host);              // a lease, not fenced

  // label -> the hosts running a ring1d of it: every process of the machine whose command line
  // is a ring1d of a fleet host's state dir, put on the host whose network namespace it is in.
  std::map<std::string, std::set<std::string>> ring1dHosts() const;
  std::string hostOf(const std::string& label) const;  // "" when on none or several

  // Polls `cond` every 10 ms until it holds (true), `timeoutMs` passed or stop is set (false).
  bool waitFor(const std::function<bool()>& cond, int timeoutMs) const;
  bool stopping() const { return options_.stop != nullptr && options_.stop->load(); }
  // Every ring0d's log, for failure messages.
  std::string logs() const;
  // Kills and reaps everything, deletes the namespaces, removes the dir (TestFleet::teardown).
  Status teardown() { return fleet_->teardown(); }

 private:
  Ring0Fleet(std::unique_ptr<TestFleet> fleet, Ring0FleetOptions options);
  void writeConfig(const std::string& host);
  bool loggedIn(const std::string& host);

  std::unique_ptr<TestFleet> fleet_;
  Ring0FleetOptions options_;
  std::map<std::string, HostProcess*> ring0_;
  std::map<std::string, std::string> tokens_;
  std::map<std::pair<dev_t, ino_t>, std::string> hostOfNetns_;  // a namespace's identity -> host
};

}  // namespace enjin::testing
