// Tenant nodes (unix-user) under one ring1d, against the real hierarchy: each ring-2 node runs as
// a uid of its own with its processes as another, and from inside tenant a's application
// (tests/helpers/tenant_probe) nothing of tenant b, of the tree's daemons or of the tree's keys
// can be read, written, signalled, traced or connected to. Needs root (the ids are real).
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "enjin/supervise/limits.hpp"
#include "hierarchy_fixture.hpp"
#include "fakes/free_port.hpp"
#include "fakes/wait.hpp"

namespace enjin::testing {
namespace {

// The test's tenant_uids: a range of its own per test (ctest runs tests side by side), its first
// id the bus group.
inline uint32_t firstId() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string name = std::string(info->test_suite_name()) + "." + info->name();
  return 61000 + 100 * static_cast<uint32_t>(std::hash<std::string>{}(name) % 300);
}

class TenantTest : public HierarchyTest, public ::testing::WithParamInterface<std::string> {
 protected:
  // The strategy both tenants run with (the refusal test has no parameter: unix-user).
  std::string strategy() const { return sandboxed_ ? "sandbox" : "unix-user"; }
  bool sandboxed_ = false;

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "tenant nodes need root (they run as uids of their own)";
    HierarchyTest::SetUp();
  }

  std::string infra() const { return state() + "/nodes/infra"; }
  std::string nodeDir(const std::string& label) const { return infra() + "/nodes/" + label; }
  std::string home(const std::string& label) const { return nodeDir(label) + "/home"; }
  std::string report() const { return home("a") + "/report.jsonl"; }

  // Two unix-user nodes; a's process is `aCommand` (a TOML array).
  std::string tenantConfig(const std::string& aCommand) const {
    return baseConfig() + "tenant_uids = \"" + std::to_string(firstId()) + "-" +
           std::to_string(firstId() + 99) + R"("
  [[ring1.ring2]]
  label = "a"
  strategy = ")" + strategy() + R"("
  limits = {memory = "256M", processes = 200}
    [[ring1.ring2.process]]
    name = "app"
    command = )" + aCommand + R"(
  [[ring1.ring2]]
  label = "b"
  strategy = ")" + strategy() + R"("
    [[ring1.ring2.process]]
    name = "app"
    command = )" + sleeper(1) + "\n";
  }

  // baseConfig ends inside [[ring1]] infra's table with its ring-2 nodes; this one has its own.
  std::string baseConfig() const {
    std::string base = HierarchyTest::baseConfig();
    return base.substr(0, base.find("  [[ring1.ring2]]"));
  }

  bool tenantsReady(const std::string& aProcess) {
    auto f = flat();
    for (const std::string& path : std::vector<std::string>{"infra", "infra/a", "infra/b",
                                                           "infra/b/app", "infra/a/" + aProcess}) {
      auto it = f.find(path);
      if (it == f.end() || it->second.value("state", "") != "ready") return false;
    }
    return true;
  }

  static uint32_t uidOf(pid_t pid) {
    std::istringstream in(readFile("/proc/" + std::to_string(pid) + "/status"));
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("Uid:", 0) == 0) return static_cast<uint32_t>(std::stoul(line.substr(4)));
    }
    return 0;
  }

  pid_t holderOf(const std::string& label) {
    auto pids = pidsWithCmdline(nodeDir(label) + "/holder.sock");
    return pids.empty() ? 0 : pids.front();
  }

  // The host pid of the running probe (inside a sandbox: the probe itself, not enjin-sandbox).
  pid_t probePid() {
    for (pid_t pid : pidsWithCmdline(report())) {
      if (readFile("/proc/" + std::to_string(pid) + "/cmdline").starts_with(helper("tenant_probe"))) {
        return pid;
      }
    }
    return 0;
  }

  // The probe's report lines, once its last ("done") is written.
  std::vector<json> readReport() {
    std::vector<json> out;
    std::istringstream in(readFile(report()));
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) out.push_back(json::parse(line, nullptr, false));
    }
    return out;
  }
};

TEST_P(TenantTest, TenantsCannotTouchEachOtherOrTheTree) {
  sandboxed_ = GetParam() == "sandbox";
  writeConfig(tenantConfig(sleeper(0)));
  startRing0d();
  ASSERT_TRUE(waitFor([&] { return tenantsReady("app"); }, 30'000)) << err();

  const pid_t ring1 = pidOf("infra");
  const pid_t aNode = pidOf("infra/a");
  const pid_t bNode = pidOf("infra/b");
  const pid_t bApp = pidOf("infra/b/app");
  const pid_t aHolder = holderOf("a");
  const pid_t bHolder = holderOf("b");
  ASSERT_GT(aHolder, 0);
  ASSERT_GT(bHolder, 0);

  // Each node its own pair: supervisor uid for ring2d and holder, app uid for the process.
  const uint32_t aUid = uidOf(aNode), bUid = uidOf(bNode);
  EXPECT_GT(aUid, firstId());
  EXPECT_GT(bUid, firstId());
  EXPECT_NE(aUid, bUid);
  EXPECT_EQ(uidOf(aHolder), aUid);
  EXPECT_EQ(uidOf(bHolder), bUid);
  // Inside a sandbox, the process the tree knows is enjin-sandbox, PID 1 of its namespaces,
  // which drops to the app uid for what it runs.
  EXPECT_EQ(uidOf(pidOf("infra/a/app")), sandboxed_ ? aUid : aUid + 1);
  EXPECT_EQ(uidOf(bApp), sandboxed_ ? bUid : bUid + 1);
  struct stat st {};
  ASSERT_EQ(::stat(home("a").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, aUid + 1);
  EXPECT_EQ(st.st_mode & 07777, 0700U);

  // Each node says how it is isolated, as its strategy put it in force.
  const std::string level = supervise::CgroupHost::detect().level();
  json t = tree();
  for (const auto& n : t["nodes"][0]["nodes"]) {
    const json iso = n.value("isolation", json());
    ASSERT_TRUE(iso.is_object()) << n.dump();
    EXPECT_EQ(iso.value("strategy", ""), strategy());
    EXPECT_EQ(iso.value("namespaces", json()),
              sandboxed_ ? json::array({"user", "mount", "pid", "ipc", "uts", "net"})
                         : json::array({"user"}));
    EXPECT_EQ(iso.value("seccomp", !sandboxed_), sandboxed_);
    EXPECT_EQ(iso.value("cgroup", ""), level);
    if (n.value("label", "") == "a") {
      EXPECT_EQ(iso["limits"].value("memory", 0ULL), 256ULL << 20) << iso.dump();
      EXPECT_EQ(iso.value("uid", 0U), aUid);
      EXPECT_EQ(iso.value("app_uid", 0U), aUid + 1);
    }
  }

  // Now a's app becomes the probe, aimed at everything it must not reach.
  std::vector<std::string> args{helper("tenant_probe"), "--out", report()};
  auto add = [&](const char* op, const std::string& target) {
    args.push_back(op);
    args.push_back(target);
  };
  add("--list", nodeDir("b"));
  add("--list", home("b"));
  add("--read", nodeDir("b") + "/logs/app.log");
  add("--read", nodeDir("b") + "/ring2d.toml");
  add("--create", home("b"));
  add("--create", nodeDir("b"));
  add("--create", infra());
  add("--create", state());
  add("--write", infra() + "/ring1d.toml");
  add("--write", state() + "/ring0d.db");
  add("--keys", state());  // finds none: the tree's dirs can be passed through, not listed
  for (const std::string& key : {state() + "/ring0.key", infra() + "/node.key",
                                 nodeDir("b") + "/node.key", nodeDir("a") + "/node.key"}) {
    add("--read", key);  // its own node's key too
  }
  add("--read", nodeDir("a") + "/ring2.db");
  for (pid_t pid : {ring0d_, ring1, aNode, aHolder, bNode, bHolder, bApp}) {
    add("--kill", std::to_string(pid));
    add("--ptrace", std::to_string(pid));
  }
  for (const std::string& sock :
       {state() + "/control.sock", state() + "/down.sock", state() + "/up.sock",
        state() + "/holder.sock", infra() + "/control.sock", infra() + "/down.sock",
        infra() + "/up.sock", infra() + "/holder.sock", infra() + "/out.sock",
        nodeDir("a") + "/control.sock", nodeDir("a") + "/holder.sock",
        nodeDir("a") + "/out.sock", nodeDir("b") + "/control.sock",
        nodeDir("b") + "/holder.sock"}) {
    add("--connect", sock);
  }
  // Controls: what a tenant may do works, so a denial above is the kernel's, not the probe's.
  add("--create", home("a"));
  add("--read", "/etc/hostname");
  if (sandboxed_) add("--list", "/home");  // there, but empty: the host's homes are hidden
  args.push_back("--self");
  add("--hold", "600");
  std::string command = "[";
  for (size_t i = 0; i < args.size(); ++i) command += (i ? ", " : "") + json(args[i]).dump();
  command += "]";
  writeConfig(tenantConfig(command));
  ::kill(ring0d_, SIGHUP);
  ASSERT_TRUE(waitFor(
      [&] {
        auto lines = readReport();
        return !lines.empty() && lines.back().value("op", "") == "done";
      },
      30'000))
      << readFile(report()) << err();

  const auto lines = readReport();
  std::set<std::string> allowedControls{"create " + home("a"), "read /etc/hostname",
                                        "list /home"};
  int keys = 0, attempts = 0;
  for (const json& l : lines) {
    const std::string op = l.value("op", "");
    if (!l.contains("ok")) continue;  // self, walk, done: facts, not attempts
    const std::string what = op + " " + l.value("target", "");
    ++attempts;
    if (allowedControls.contains(what)) {
      EXPECT_TRUE(l.value("ok", false)) << "the control failed: " << l.dump();
      if (op == "list") {
        EXPECT_EQ(l.value("entries", -1), 0) << l.dump();
      }
      continue;
    }
    EXPECT_FALSE(l.value("ok", true)) << "tenant a could: " << l.dump();
    if (op == "read" && what.ends_with(".key")) ++keys;
  }
  EXPECT_GE(attempts, 40);
  EXPECT_EQ(keys, 4) << readFile(report());

  json self;
  for (const json& l : lines) {
    if (l.value("op", "") == "self") self = l;
  }
  ASSERT_TRUE(self.is_object()) << readFile(report());
  EXPECT_EQ(self.value("no_new_privs", -1), 1);
  if (sandboxed_) {
    EXPECT_EQ(self.value("seccomp", 0), 2);
    // Its own pids only: enjin-sandbox (1) and itself.
    EXPECT_LE(self.value("pids_visible", 99), 2) << self.dump();
    EXPECT_FALSE(self.value("root_writable", true));
  }
  EXPECT_EQ(self.value("cap_eff", ""), "0000000000000000");
  EXPECT_EQ(self.value("groups", json()), json::array());
  EXPECT_EQ(self.value("fds", json()), json::array({0, 1, 2}));
  EXPECT_FALSE(self.value("ctty", true));
  EXPECT_NE(self.value("tiocsti", ""), "ok");
  EXPECT_EQ(self.value("umask", ""), "0077");

  // Re-adoption keeps every id: ring1d killed, then a's ring2d killed.
  const pid_t probe = probePid();
  ASSERT_GT(probe, 0);
  const pid_t appPid = sandboxed_ ? parentOf(probe) : probe;
  ASSERT_TRUE(waitFor([&] { return pidOf("infra/a/app") == appPid && tenantsReady("app"); },
                      10'000));
  // Each wait ends on one tree that shows it all: a new ring1d's first trees may not list
  // every process yet.
  ::kill(ring1, SIGKILL);
  ASSERT_TRUE(waitFor(
      [&] {
        auto p = pids();
        return p["infra"] != ring1 && p["infra/a"] == aNode && p["infra/b/app"] == bApp &&
               p["infra/a/app"] == appPid && tenantsReady("app");
      },
      30'000))
      << tree().dump(1);
  ::kill(aNode, SIGKILL);
  ASSERT_TRUE(waitFor(
      [&] {
        auto p = pids();
        return p["infra/a"] != aNode && p["infra/a"] > 0 && p["infra/a/app"] == appPid &&
               tenantsReady("app");
      },
      30'000))
      << tree().dump(1);
  EXPECT_EQ(uidOf(pidOf("infra/a")), aUid);
  EXPECT_EQ(uidOf(probe), aUid + 1);
}

INSTANTIATE_TEST_SUITE_P(Strategies, TenantTest, ::testing::Values("unix-user", "sandbox"),
                         [](const auto& p) {
                           return p.param == "sandbox" ? std::string("Sandbox")
                                                          : std::string("UnixUser");
                         });

// The same fixture, without a parameter: unix-user.
class TenantConfigTest : public TenantTest {};

TEST_F(TenantConfigTest, ATenantNodeWithoutTenantUidsIsRefusedByCheckConfig) {
  std::string config = tenantConfig(sleeper(0));
  const std::string range = "tenant_uids = \"" + std::to_string(firstId()) + "-" +
                            std::to_string(firstId() + 99) + "\"\n";
  config.erase(config.find(range), range.size());
  writeConfig(config);
  auto [code, out] = run(kBinDir + "/ring0d --check-config --config " + configPath() + " 2>&1");
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("ring-2 node 'a': strategy unix-user needs tenant_uids in the spec of "
                     "ring-1 node 'infra'"),
            std::string::npos)
      << out;
}

TEST_F(TenantConfigTest, AWeakerStrategyThanTheRingOneNodeDemandsIsRefusedNamingBoth) {
  std::string config = tenantConfig(sleeper(0));
  const std::string range = "tenant_uids = \"" + std::to_string(firstId());
  config.insert(config.find(range), "min_isolation = \"sandbox\"\n");
  writeConfig(config);
  auto [code, out] = run(kBinDir + "/ring0d --check-config --config " + configPath() + " 2>&1");
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("ring-1 node 'infra' requires isolation ≥ sandbox for its ring-2 nodes; node "
                     "'a' asks for unix-user"),
            std::string::npos)
      << out;
}

// A sandbox node past its limits: what it does to itself stays in its own cgroup. Its neighbour
// b (unix-user, so the test can reach its HTTP port; a sandbox's network is its own) serves on.
class TenantLimitsTest : public TenantTest {
 protected:
  void SetUp() override {
    TenantTest::SetUp();
    if (IsSkipped()) return;
    if (supervise::CgroupHost::detect().kind() == supervise::CgroupLevel::kNone) {
      GTEST_SKIP() << "no cgroup this host lets enjin use: limits are rlimits only";
    }
    port_ = freeTcpPort();
  }

  std::string limitsConfig(const std::string& limits, const std::string& aCommand) const {
    return baseConfig() + "tenant_uids = \"" + std::to_string(firstId()) + "-" +
           std::to_string(firstId() + 99) + R"("
  [[ring1.ring2]]
  label = "a"
  strategy = "sandbox"
  limits = )" + limits + R"(
    [[ring1.ring2.process]]
    name = "app"
    command = )" + aCommand + R"(
  [[ring1.ring2]]
  label = "b"
  strategy = "unix-user"
    [[ring1.ring2.process]]
    name = "app"
    command = [")" + kBinDir + "/enjin-demo-http\", \"--port\", \"" + std::to_string(port_) +
           "\"]\n";
  }

  bool bServes() {
    httplib::Client c("127.0.0.1", port_);
    c.set_connection_timeout(1, 0);
    c.set_read_timeout(1, 0);
    auto r = c.Get("/");
    return r && r->status == 200;
  }

  int port_ = 0;
};

TEST_F(TenantLimitsTest, AMemoryHogIsOomKilledInItsOwnCgroupAndSaysSo) {
  // The node's ring2d and holder share its cgroup: the limit leaves them room (under the
  // sanitizers too), and the hog, growing past it 1 MiB at a time, is the biggest in it.
  writeConfig(limitsConfig("{memory = \"384M\"}", "[" + crasher("hog:2048") + "]"));
  startRing0d();
  ASSERT_TRUE(waitFor([&] { return pidOf("infra/b/app") > 0 && bServes(); }, 30'000)) << err();
  const pid_t bApp = pidOf("infra/b/app");
  json exit;
  ASSERT_TRUE(waitFor(
      [&] {
        auto f = flat();
        auto it = f.find("infra/a/app");
        if (it == f.end()) return false;
        exit = it->second.value("last_exit", json());
        return exit.is_object() && exit.value("oom_killed", false);
      },
      30'000))
      << flat()["infra/a/app"].dump();
  EXPECT_NE(flat()["infra/a/app"].value("detail", "").find("OOM killer"), std::string::npos)
      << flat()["infra/a/app"].dump();
  // Nothing outside a was touched.
  EXPECT_EQ(pidOf("infra/b/app"), bApp);
  EXPECT_TRUE(bServes());
  EXPECT_EQ(flat()["infra/a"].value("state", ""), "ready");
}

TEST_F(TenantLimitsTest, AForkBombStaysInsideItsNodeWhileItsNeighbourServes) {
  // 5000 forks that each sleep 8 s, against a limit of 64 processes: the bomb ends by itself.
  writeConfig(limitsConfig("{processes = 64}",
                           "[" + crasher("forkbomb:5000:8") + "]"));
  startRing0d();
  ASSERT_TRUE(waitFor([&] { return pidOf("infra/b/app") > 0 && bServes(); }, 30'000)) << err();
  const std::string aLog = nodeDir("a") + "/logs/app.log";
  ASSERT_TRUE(waitFor([&] { return readFile(aLog).find("forked ") != std::string::npos; },
                      20'000))
      << readFile(aLog);
  const std::string log = readFile(aLog);
  const long forked = std::atol(log.c_str() + log.find("forked ") + 7);
  EXPECT_LT(forked, 64) << log;
  // While the bomb's children hold every pid a may have: b answers, ring1d's heartbeat is on
  // time (infra is not lost), for 3 s.
  int served = 0;
  for (int i = 0; i < 30; ++i) {
    if (bServes()) ++served;
    auto f = flat();
    EXPECT_EQ(f["infra"].value("state", ""), "ready") << f["infra"].dump();
    ::usleep(100'000);
  }
  EXPECT_EQ(served, 30);
}

}  // namespace
}  // namespace enjin::testing
