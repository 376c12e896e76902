// enjin-fleet-demo (`./enjin demo --fleet`): a fleet of three ring-0 hosts on this machine, each a
// network namespace with its own etcd member and ring0d (tests/fleet/ring0_fleet.hpp), shown at
// work: ring-1 nodes placed on compartments (one pending, fitting nowhere), a host killed (every
// process in its namespace) and its nodes ready elsewhere, another host partitioned for 10 s and
// healed while a sampler reads every host's process table each 50 ms, and nothing left behind.
//
// Usage: enjin-fleet-demo [--duration S] [--bin DIR]
//   without --duration: after the tour, waits for Ctrl-C, then tears everything down
//   --duration S: runs unattended, keeps the fleet up S seconds after the tour, tears down and
//                 exits 0 only if every step held and nothing was left behind
// Exit codes: 0 everything held, 1 a step failed, 2 usage, 77 cannot run here (not root, no
// etcd): what ctest counts as skipped.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "ring0_fleet.hpp"

namespace {

using enjin::testing::Ring0Fleet;
using enjin::testing::TestFleet;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::atomic<bool> gStop{false};

void onSignal(int) {
  gStop = true;
}

int64_t msSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

void bold(const std::string& s) {
  std::cout << "\n\033[1m" << s << "\033[0m\n" << std::flush;
}

// A step that did not hold: the message names what and why.
struct Failed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check(bool ok, const std::string& what) {
  if (gStop) throw Failed("interrupted");
  if (!ok) throw Failed(what);
}
void check(const enjin::Status& st) {
  if (gStop) throw Failed("interrupted");
  if (!st.ok()) throw Failed(st.error().message);
}

// Sleeps until `t` or a stop.
void sleepUntil(Clock::time_point t) {
  while (!gStop && Clock::now() < t) std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

// `enjinctl login` and `enjinctl status --fleet` inside the host, as an operator there runs them.
// Waits (at most 5 s, not an error) until the view shows every node that runs as ready: a host
// publishes its nodes' states in etcd a moment after its tree has them.
void printFleetView(Ring0Fleet& fleet, const std::string& host, const std::string& bin) {
  (void)fleet.waitFor(
      [&] {
        for (const auto& h :
             fleet.api(host, "GET", "/v1/fleet").body.value("hosts", json::array())) {
          for (const auto& n : h.value("nodes", json::array())) {
            if (n.value("state", "") != "ready") return false;
          }
        }
        return true;
      },
      5'000);
  auto& net = fleet.net();
  const std::string dir = net.dir() + "/" + host;
  auto nsFd = ::open(("/run/netns/" + net.netnsOf(host)).c_str(), O_RDONLY | O_CLOEXEC);
  check(nsFd >= 0, "open the namespace of " + host);
  const std::string script = "'" + bin +
                             "/enjinctl' login --server http://127.0.0.1:8480 --user admin " +
                             "--password-stdin <'" + dir + "/admin.pw' >/dev/null && '" + bin +
                             "/enjinctl' status --fleet";
  auto r = enjin::testing::runCommand({"/bin/sh", "-c", script}, 10000, nsFd,
                                      {"XDG_CONFIG_HOME=" + dir + "/config"});
  ::close(nsFd);
  check(r.ok() && r->ok(),
        "enjinctl status --fleet on " + host + ": " + (r.ok() ? r->describe() : r.error().message));
  std::cout << "$ enjinctl status --fleet    # on " << host << "\n" << r->out << std::flush;
}

struct Tour {
  int64_t detectedMs = -1, readyMs = -1;
  int ranTwice = -1;
};

Tour runTour(Ring0Fleet& fleet, const std::string& bin) {
  Tour tour;
  bold("fleet: three hosts in network namespaces, one etcd member and one ring0d each");
  for (const auto& h : fleet.hosts()) {
    std::cout << "  " << h << "  " << fleet.net().addressOf(h) << "  "
              << Ring0Fleet::compartmentOf(h) << "  (namespace " << fleet.net().netnsOf(h) << ")\n";
  }
  check(fleet.start());
  std::cout << "  h1 founded the fleet; h2 and h3 joined with single-use tokens minted on h1\n";

  bold("placing ring-1 nodes through h2's meta API");
  const std::vector<json> nodes{
      Ring0Fleet::node("web-a1", "rack-a"),   Ring0Fleet::node("web-a2", "rack-a"),
      Ring0Fleet::node("web-a3", "rack-a"),   Ring0Fleet::node("db-1", "dc", "rack"),
      Ring0Fleet::node("db-2", "dc", "rack"), Ring0Fleet::node("gpu-1", "rack-c")};
  const std::vector<std::string> placed{"web-a1", "web-a2", "web-a3", "db-1", "db-2"};
  for (const auto& n : nodes) {
    auto made = fleet.api("h2", "POST", "/v1/nodes", n);
    check(made.status == 201, "POST /v1/nodes " + n.dump() + ": " + made.body.dump());
    std::cout << "  " << n.dump() << "\n";
  }
  auto allReady = [&] {
    auto all = fleet.ring1dHosts();
    for (const auto& l : placed) {
      if (all[l].size() != 1 || !fleet.readyOn(*all[l].begin(), l)) return false;
    }
    return true;
  };
  check(fleet.waitFor(allReady, 30'000),
        "the placed nodes are not all ready within 30 s\n" + fleet.logs());
  check(fleet.waitFor(
            [&] {
              for (const auto& n :
                   fleet.api("h1", "GET", "/v1/fleet").body.value("nodes", json::array())) {
                if (n.value("label", "") == "gpu-1") return !n.value("pending", "").empty();
              }
              return false;
            },
            10'000),
        "gpu-1 is not shown pending");
  printFleetView(fleet, "h1", bin);

  // The sampler: every host's process table, every 50 ms, from here to the end.
  std::atomic<bool> sampling{true};
  std::atomic<int> samples{0};
  std::set<std::string> twice;
  std::string twiceSeen;
  std::thread sampler([&] {
    while (sampling) {
      for (const auto& [label, hosts] : fleet.ring1dHosts()) {
        if (hosts.size() > 1) twice.insert(label);
      }
      ++samples;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  struct Join {
    std::atomic<bool>& flag;
    std::thread& t;
    ~Join() {
      flag = false;
      if (t.joinable()) t.join();
    }
  } join{sampling, sampler};

  // The host to lose: the one running most nodes; the view is read from another host.
  std::map<std::string, std::vector<std::string>> onHost;
  for (const auto& l : placed) onHost[fleet.hostOf(l)].push_back(l);
  std::string victim = "h2";
  for (const auto& [h, ls] : onHost) {
    if (ls.size() > onHost[victim].size()) victim = h;
  }
  const std::vector<std::string> lost = onHost[victim];
  const std::string watcher = victim == "h1" ? "h2" : "h1";
  bold("killing " + victim +
       ": SIGKILL to every process in its namespace (etcd member, ring0d, ring1d)");
  std::cout << "  its nodes:";
  for (const auto& l : lost) std::cout << " " << l;
  std::cout << "\n" << std::flush;
  const auto killed = Clock::now();
  check(fleet.net().killHost(victim));
  check(fleet.waitFor(
            [&] {
              auto seen = fleet.hostsSeenBy(watcher);
              if (!seen || seen->count(victim) != 0) return false;
              tour.detectedMs = msSince(killed);
              return true;
            },
            15'000),
        victim + " is still in " + watcher + "'s view 15 s after it was killed");
  check(fleet.waitFor(
            [&] {
              for (const auto& l : lost) {
                const std::string h = fleet.hostOf(l);
                if (h.empty() || h == victim || !fleet.readyOn(h, l)) return false;
              }
              return true;
            },
            20'000),
        victim + "'s nodes are not ready elsewhere within 20 s\n" + fleet.logs());
  tour.readyMs = msSince(killed);
  std::cout << "host lost: detected in " << tour.detectedMs
            << " ms, its ring-1 nodes ready elsewhere in " << tour.readyMs << " ms\n";
  for (const auto& l : lost) {
    std::cout << "  " << l << " now on " << fleet.hostOf(l) << " ("
              << Ring0Fleet::compartmentOf(fleet.hostOf(l)) << ")\n";
  }
  printFleetView(fleet, watcher, bin);

  bold("restarting " + victim +
       " (as systemd would): it rejoins and runs nothing, its nodes moved");
  check(fleet.restartHost(victim));
  std::cout << "  " << victim << " holds a lease again\n";

  // The host to cut: of the other two, the one running most nodes.
  onHost.clear();
  for (const auto& l : placed) onHost[fleet.hostOf(l)].push_back(l);
  std::string cutHost;
  for (const auto& h : fleet.hosts()) {
    if (h != victim && (cutHost.empty() || onHost[h].size() > onHost[cutHost].size())) cutHost = h;
  }
  const std::vector<std::string> fenced = onHost[cutHost];
  bold("partitioning " + cutHost +
       " for 10 s (its bridge port down), sampling every host's processes each 50 ms");
  const auto cut = Clock::now();
  check(fleet.net().cut(cutHost));
  check(fleet.waitFor(
            [&] {
              for (const auto& l : fenced) {
                const std::string h = fleet.hostOf(l);
                if (h.empty() || h == cutHost) return false;
              }
              return true;
            },
            9'000),
        cutHost + "'s nodes do not run elsewhere within 9 s of the cut\n" + fleet.logs());
  std::cout << "  " << cutHost << " fenced itself; its nodes run elsewhere after " << msSince(cut)
            << " ms:";
  for (const auto& l : fenced) std::cout << " " << l << "→" << fleet.hostOf(l);
  std::cout << "\n" << std::flush;
  sleepUntil(cut + std::chrono::seconds(10));
  check(fleet.net().heal(cutHost));
  check(fleet.waitFor([&] { return fleet.holdsLease(cutHost); }, 15'000),
        cutHost + " holds no lease 15 s after the heal\n" + fleet.logs());
  std::this_thread::sleep_for(
      std::chrono::seconds(2));  // time for a duplicate to show, were there one
  sampling = false;
  sampler.join();
  tour.ranTwice = static_cast<int>(twice.size());
  std::cout << "partition healed: " << tour.ranTwice << " nodes ran twice (" << samples.load()
            << " samples of every host's process table)\n";
  for (const auto& l : twice) std::cout << "  ran twice: " << l << "\n";
  check(fleet.waitFor(allReady, 15'000),
        "not every node is ready once after the heal\n" + fleet.logs());
  printFleetView(fleet, cutHost, bin);
  return tour;
}

// What the fleet left: its namespaces, and any process with its dir on the command line.
int leftovers(const std::vector<std::string>& netns, const std::string& dir) {
  int left = 0;
  for (const auto& n : netns) left += std::filesystem::exists("/run/netns/" + n) ? 1 : 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.empty() || name[0] < '0' || name[0] > '9') continue;
    if (enjin::testing::procCmdline(e.path()).find(dir) != std::string::npos) ++left;
  }
  return left + (std::filesystem::exists(dir) ? 1 : 0);
}

}  // namespace

int main(int argc, char** argv) {
  int duration = -1;
  std::string bin = std::filesystem::read_symlink("/proc/self/exe").parent_path();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--duration" && i + 1 < argc) {
      duration = std::atoi(argv[++i]);
    } else if (a == "--bin" && i + 1 < argc) {
      bin = argv[++i];
    } else {
      std::cerr << "fleet demo: unknown argument '" << a << "' (known: --duration S, --bin DIR)\n";
      return 2;
    }
  }
  if (auto why = TestFleet::etcdUnavailableReason()) {
    std::cerr << "fleet demo: cannot make the hosts here: " << *why
              << " (run it as root: sudo ./enjin demo --fleet)\n";
    return 77;
  }
  struct sigaction sa {};
  sa.sa_handler = onSignal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGHUP, &sa, nullptr);

  auto made =
      Ring0Fleet::create({.binDir = bin, .leaseTtlMs = 1000, .graceMs = 1000, .stop = &gStop});
  if (!made.ok()) {
    std::cerr << "fleet demo: " << made.error().message << "\n";
    return 1;
  }
  std::unique_ptr<Ring0Fleet> fleet = std::move(*made);
  const std::vector<std::string> netns = fleet->net().netnsNames();
  const std::string dir = fleet->net().dir();
  int rc = 0;
  try {
    Tour tour = runTour(*fleet, bin);
    if (tour.ranTwice != 0)
      throw Failed(std::to_string(tour.ranTwice) + " nodes ran on two hosts at once");
    if (duration < 0) {
      bold("the fleet runs; Ctrl-C tears it down");
      while (!gStop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    } else {
      sleepUntil(Clock::now() + std::chrono::seconds(duration));
      if (gStop) throw Failed("interrupted");
    }
  } catch (const Failed& f) {
    std::cerr << "fleet demo: " << f.what() << "\n";
    rc = 1;
  }
  bold("tearing down: every process, namespace, link and dir of the fleet");
  enjin::Status st = fleet->teardown();
  fleet.reset();
  if (!st.ok()) {
    std::cerr << "fleet demo: teardown: " << st.error().message << "\n";
    rc = 1;
  }
  const int left = leftovers(netns, dir);
  std::cout << (left == 0 ? "nothing left behind: no namespace, link, process or dir of the fleet\n"
                          : std::to_string(left) + " namespaces, processes or dirs left behind\n");
  if (left != 0) rc = 1;
  return rc;
}
