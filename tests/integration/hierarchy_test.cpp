// The real hierarchy: ring0d -> ring1d -> two ring2d -> their processes, from a temp state dir,
// each daemon with its holder, over real ipc buses. The test process is a subreaper, so
// whatever a killed daemon leaves behind comes back to it and is reaped here.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <zmq.hpp>

#include "enjin/base/unique_fd.hpp"
#include "enjin/crypto/keys.hpp"
#include "hierarchy_fixture.hpp"

namespace enjin::testing {
namespace {

using nlohmann::json;

TEST_F(HierarchyTest, ColdStartBringsUpTheWholeTreeWithKeysOwnedByTheRingAbove) {
  startRing0d();
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << tree().dump(1) << err();

  // The root key, generated on first start, private to ring0d.
  struct stat st;
  ASSERT_EQ(::stat((state() + "/ring0.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Each child's secret is in its own state dir only, 0600; it trusts exactly its parent's key.
  const std::string infra = state() + "/nodes/infra";
  for (const std::string& dir : {infra, infra + "/nodes/shop", infra + "/nodes/blog"}) {
    ASSERT_EQ(::stat((dir + "/node.key").c_str(), &st), 0) << dir;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << dir;
    ASSERT_EQ(::stat(dir.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u) << dir;
  }
  auto firstLine = [](const std::string& path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
  };
  EXPECT_EQ(firstLine(infra + "/parent.pub"), firstLine(state() + "/ring0.pub"));
  EXPECT_EQ(firstLine(infra + "/nodes/shop/parent.pub"), firstLine(infra + "/node.pub"));
  // No secret on any command line.
  for (pid_t pid : pidsWithCmdline(dir_.path())) {
    const std::string cmd = readFile("/proc/" + std::to_string(pid) + "/cmdline");
    EXPECT_EQ(cmd.find(".key"), std::string::npos) << cmd;
  }
  // Each daemon keeps its ring in SQLite, in its own state dir.
  for (const std::string& db : {state() + "/ring0.db", infra + "/ring1.db",
                               infra + "/nodes/shop/ring2.db"}) {
    EXPECT_EQ(::stat(db.c_str(), &st), 0) << db;
  }
  // The nodes each daemon knows, with uuids, labels and public keys.
  json t = tree();
  ASSERT_EQ(t["nodes"].size(), 1u);
  EXPECT_EQ(t["nodes"][0]["ring"], 1);
  EXPECT_EQ(t["nodes"][0]["uuid"].get<std::string>().size(), 36u);
  EXPECT_TRUE(t["nodes"][0]["spec_applied"].get<bool>());
  // The whole tree through enjinctl, as text and as JSON.
  auto [rc, text] = run(kBinDir + "/enjinctl --state-dir " + state() + " status");
  EXPECT_EQ(rc, 0);
  for (const char* s : {"ring0", "infra", "shop", "blog", "worker"}) {
    EXPECT_NE(text.find(s), std::string::npos) << text;
  }
  auto [rcj, js] = run(kBinDir + "/enjinctl --state-dir " + state() + " status --json");
  EXPECT_EQ(rcj, 0);
  EXPECT_EQ(json::parse(js)["nodes"][0]["nodes"].size(), 2u);
}

// SIGKILL one thing at each level: exactly it comes back, nothing else restarts.
TEST_F(HierarchyTest, KillAtEachLevelRestartsExactlyThat) {
  startRing0d();
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << err();

  for (const std::string victim : {"infra/shop/web", "infra/blog", "infra"}) {
    auto before = pids();
    auto restartsBefore = restarts();
    ASSERT_GT(before[victim], 0) << victim;
    ::kill(before[victim], SIGKILL);
    ASSERT_TRUE(waitFor(
        [&] { return allReady() && pidOf(victim) != before[victim] && pidOf(victim) > 0; },
        20'000))
        << victim << "\n" << tree().dump(1);
    auto after = pids();
    auto restartsAfter = restarts();
    for (const char* path : kAll) {
      if (path == victim) {
        EXPECT_EQ(restartsAfter[path], restartsBefore[path] + 1) << path;
      } else {
        EXPECT_EQ(after[path], before[path]) << "killing " << victim << " disturbed " << path;
        EXPECT_EQ(restartsAfter[path], restartsBefore[path]) << path;
      }
    }
    EXPECT_FALSE(processAlive(before[victim]));
  }
  // Nothing runs twice: no app, no daemon.
  for (const std::string& t : {"sleep:" + tag(0), "sleep:" + tag(1), "sleep:" + tag(2)}) {
    EXPECT_EQ(pidsWithCmdline(t).size(), 1u) << t;
  }
  const std::string infra = state() + "/nodes/infra";
  EXPECT_EQ(pidsWithCmdline(infra + "/ring1d.toml").size(), 1u);
  EXPECT_EQ(pidsWithCmdline(infra + "/nodes/shop/ring2d.toml").size(), 1u);
  EXPECT_EQ(pidsWithCmdline(infra + "/nodes/blog/ring2d.toml").size(), 1u);
}

// kill -9 of ring0d: the restarted ring0d re-adopts the whole tree without restarting a thing.
TEST_F(HierarchyTest, Ring0dSurvivesItsOwnDeath) {
  startRing0d();
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << err();
  auto before = pids();
  for (int round = 0; round < 2; ++round) {
    killRing0d(SIGKILL);
    for (const char* path : kAll) EXPECT_TRUE(processAlive(before[path])) << path;
    startRing0d();
    ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << err();
    auto after = pids();
    for (const char* path : kAll) EXPECT_EQ(after[path], before[path]) << path;
    for (const auto& [path, n] : restarts()) EXPECT_EQ(n, 0) << path;
  }
  EXPECT_EQ(err().find("is lost"), std::string::npos) << "a re-adopted child was called lost";
}

TEST_F(HierarchyTest, CommandsTravelDownTheBusAndAreAnswered) {
  startRing0d();
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << err();
  const int before = pidOf("infra/blog/web");
  json r = call(state(), {{"cmd", "command"}, {"op", "restart"}, {"path", "infra/blog/web"}});
  EXPECT_EQ(r["ok"], true) << r.dump();
  ASSERT_TRUE(waitFor(
      [&] { return allReady() && pidOf("infra/blog/web") != before; }, 10'000));
  r = call(state(), {{"cmd", "command"}, {"op", "restart"}, {"path", "infra/blog/nosuch"}});
  EXPECT_EQ(r["ok"], false);
  EXPECT_NE(r.value("error", "").find("nosuch"), std::string::npos) << r.dump();
  r = call(state(), {{"cmd", "command"}, {"op", "restart"}, {"path", "infra/nosuch/web"}});
  EXPECT_EQ(r["ok"], false);
  EXPECT_NE(r.value("error", "").find("nosuch"), std::string::npos) << r.dump();
  // A node that does not answer (stopped with SIGSTOP): the command fails, naming it, within
  // the control socket's deadline.
  const int blog = pidOf("infra/blog");
  ::kill(blog, SIGSTOP);
  r = call(state(), {{"cmd", "command"}, {"op", "restart"}, {"path", "infra/blog/web"}});
  ::kill(blog, SIGCONT);
  EXPECT_EQ(r["ok"], false);
  EXPECT_NE(r.value("error", "").find("node 'blog' did not answer within"), std::string::npos)
      << r.dump();
  // The same through enjinctl, and the log of a process deep in the tree.
  const std::string ctl = kBinDir + "/enjinctl --state-dir " + state();
  EXPECT_EQ(run(ctl + " restart infra/shop/worker").first, 0);
  EXPECT_EQ(run(ctl + " restart infra/shop/nosuch 2>/dev/null").first, 1);
  auto [rc, log] = run(ctl + " logs infra/shop");
  EXPECT_EQ(rc, 0);
  EXPECT_NE(log.find("ring2d"), std::string::npos) << log;
}

TEST_F(HierarchyTest, RevokedKeyIsRefusedAsUnknownKey) {
  startRing0d();
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << err();
  const std::string infra = state() + "/nodes/infra";
  const int shopPid = pidOf("infra/shop");
  const int shopWeb = pidOf("infra/shop/web");
  std::string uuid;
  const json t = tree();
  for (const auto& n : t["nodes"][0]["nodes"]) {
    if (n["label"] == "shop") uuid = n["uuid"];
  }
  ASSERT_EQ(uuid.size(), 36u) << t.dump(1);
  auto [rc, out] =
      run(kBinDir + "/enjinctl --state-dir " + state() + " revoke infra/shop");
  ASSERT_EQ(rc, 0) << out;
  ASSERT_TRUE(waitFor(
      [&] { return stateAt("infra/shop") == "revoked"; }, 10'000));
  // The node is stopped with everything under it, and it heard the revocation itself.
  ASSERT_TRUE(waitFor([&] { return !processAlive(shopPid) && !processAlive(shopWeb); },
                                  15'000));
  EXPECT_TRUE(waitFor(
      [&] {
        return readFile(infra + "/logs/shop.log").find("revoked this node's key") !=
               std::string::npos;
      },
      5000));
  // Its key signs a message on ring1d's up bus: counted as unknown_key, never acted on.
  const uint64_t before = call(infra, {{"cmd", "tree"}})["up_bus"].value("unknown_key", uint64_t{0});
  auto [prc, pout] = run(
      kBinDir + "/enjinctl bus pub --connect ipc://" + infra + "/up.sock --key " + infra +
      "/nodes/shop/node.key --no-seq-file --topic obs." + uuid +
      " --type node_observation --count 3 --wait-ms 5000 --drain-ms 500 2>&1");
  ASSERT_EQ(prc, 0) << pout;
  ASSERT_TRUE(waitFor(
      [&] {
        return call(infra, {{"cmd", "tree"}})["up_bus"].value("unknown_key", uint64_t{0}) >= before + 3;
      },
      5000));
  // A sibling's key may not speak for it: blog's key on shop's topic is an acl rejection.
  const uint64_t acl = call(infra, {{"cmd", "tree"}})["up_bus"].value("acl", uint64_t{0});
  std::tie(prc, pout) = run(
      kBinDir + "/enjinctl bus pub --connect ipc://" + infra + "/up.sock --key " + infra +
      "/nodes/blog/node.key --no-seq-file --topic obs." + uuid +
      " --type node_observation --count 2 --wait-ms 5000 --drain-ms 500 2>&1");
  ASSERT_EQ(prc, 0) << pout;
  EXPECT_TRUE(waitFor(
      [&] { return call(infra, {{"cmd", "tree"}})["up_bus"].value("acl", uint64_t{0}) >= acl + 2; },
      5000));
  // The sibling is untouched, and the revocation survives a restart of ring1d: wait for the
  // new ring1d's own report (a fresh heartbeat), not the dead one's last.
  EXPECT_EQ(stateAt("infra/blog"), "ready");
  const int oldInfra = pidOf("infra");
  ::kill(oldInfra, SIGKILL);
  ASSERT_TRUE(waitFor(
      [&] {
        json now = tree();
        if (!now.is_object() || now["nodes"].empty()) return false;
        const json& n = now["nodes"][0];
        return n.value("pid", 0) != oldInfra && n.value("pid", 0) > 0 &&
               n.value("state", "") == "ready" && n.value("heartbeat_age_ms", 100'000) < 150;
      },
      15'000));
  EXPECT_EQ(stateAt("infra/shop"), "revoked");
  EXPECT_TRUE(pidsWithCmdline("sleep:" + tag(0)).empty());
}

// A child whose signed observations are of the wrong shape (a bug, or a taken-over node) is
// refused and logged; its parent keeps running and keeps supervising.
TEST_F(HierarchyTest, MalformedObservationIsRefusedNotFatal) {
  startRing0d();
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << err();
  const std::string infra = state() + "/nodes/infra";
  const int ring1 = pidOf("infra");
  std::string uuid;
  const json t = tree();
  for (const auto& n : t["nodes"][0]["nodes"]) {
    if (n["label"] == "blog") uuid = n["uuid"];
  }
  ASSERT_EQ(uuid.size(), 36u);
  for (const std::string body : {R"({"state":1})", R"({"state":"ready","processes":[{"pid":"x"}]})",
                                 R"({"state":"ready","processes":"many"})"}) {
    auto [rc, out] = run(kBinDir + "/enjinctl bus pub --connect ipc://" + infra +
                         "/up.sock --key " + infra + "/nodes/blog/node.key --no-seq-file --topic obs." +
                         uuid + " --type node_observation --body '" + body +
                         "' --wait-ms 5000 --drain-ms 300 2>&1");
    ASSERT_EQ(rc, 0) << out;
  }
  EXPECT_TRUE(waitFor(
      [&] {
        return readFile(state() + "/logs/infra.log").find("refused a message from node 'blog'") !=
               std::string::npos;
      },
      5000));
  EXPECT_TRUE(waitFor(
      [&] { return call(infra, {{"cmd", "tree"}})["up_bus"].value("refused", uint64_t{0}) == 3; },
      5000));
  EXPECT_TRUE(processAlive(ring1));
  EXPECT_EQ(pidOf("infra"), ring1);
  const int web = pidOf("infra/shop/web");
  ::kill(web, SIGKILL);  // and it still supervises
  EXPECT_TRUE(waitFor([&] { return pidOf("infra/shop/web") != web && stateAt("infra/shop/web") == "ready"; },
                      10'000));
}

// Numbered lines once a millisecond from an app while its ring2d, then its ring1d, then ring0d
// are killed with SIGKILL: none lost (one read repeated at most, if the kill of its ring2d fell
// between writing a read to the log and taking it off the socket).
TEST_F(HierarchyTest, NoLogLineLostWhileEachRingDies) {
  writeConfig(baseConfig() + R"(    [[ring1.ring2.process]]
    name = "talker"
    command = [")" + kBinDir + R"(/crasher", "lines:0:1"]
)");
  startRing0d();
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << err();
  for (const char* victim : {"infra/blog", "infra"}) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    const int pid = pidOf(victim);
    ::kill(pid, SIGKILL);
    ASSERT_TRUE(waitFor([&] { return allReady() && pidOf(victim) != pid; }, 15'000)) << victim;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  killRing0d(SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  startRing0d();
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << err();
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  json r = call(state(), {{"cmd", "command"}, {"op", "stop"}, {"path", "infra/blog/talker"}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  ASSERT_TRUE(waitFor([&] { return stateAt("infra/blog/talker") == "stopped"; }, 10'000));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const NumberedLog log = readNumberedLog(readFile(state() + "/nodes/infra/nodes/blog/logs/talker.log"));
  ASSERT_EQ(log.error, "");
  EXPECT_LE(log.stepsBack, 1) << "more repeats than deaths of the talker's ring2d";
  EXPECT_GT(log.last, 100);
  EXPECT_EQ(restarts()["infra/blog/talker"], 0);  // it ran once: a step back is a repeat
  EXPECT_EQ(pidOf("infra/blog/talker"), 0);
}

// A reload adds and removes nodes: the new one is created and started, the removed one stopped
// with everything under it and forgotten; the others do not move.
TEST_F(HierarchyTest, ReloadAddsAndRemovesNodes) {
  startRing0d();
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << err();
  const int shop = pidOf("infra/shop"), shopWeb = pidOf("infra/shop/web");
  std::string config = baseConfig();
  config = config.substr(0, config.find("  [[ring1.ring2]]\n  label = \"blog\""));
  config += "  [[ring1.ring2]]\n  label = \"wiki\"\n    [[ring1.ring2.process]]\n    name = \"web\"\n"
            "    command = " + sleeper(3) + "\n";
  writeConfig(config);
  ::kill(ring0d_, SIGHUP);
  ASSERT_TRUE(waitFor(
      [&] { return stateAt("infra/wiki/web") == "ready" && stateAt("infra/blog") == ""; }, 15'000))
      << tree().dump(1);
  EXPECT_TRUE(pidsWithCmdline("sleep:" + tag(2)).empty()) << "blog's process outlived blog";
  EXPECT_EQ(pidsWithCmdline("sleep:" + tag(3)).size(), 1u);
  EXPECT_EQ(pidOf("infra/shop"), shop);
  EXPECT_EQ(pidOf("infra/shop/web"), shopWeb);
  // The forgotten node's state is kept aside, not reused.
  bool aside = false;
  for (const auto& e : std::filesystem::directory_iterator(state() + "/nodes/infra/nodes")) {
    aside = aside || e.path().filename().string().starts_with("blog.removed-");
  }
  EXPECT_TRUE(aside);
  // A config that does not check out is refused; what runs stays.
  writeConfig(config + "bogus = 1\n");
  ::kill(ring0d_, SIGHUP);
  EXPECT_TRUE(waitFor([&] { return err().find("reload refused") != std::string::npos; }, 5000));
  EXPECT_FALSE(ring::firstNotReady(tree()).has_value()) << tree().dump(1);
  EXPECT_EQ(pidOf("infra/shop/web"), shopWeb);
}

// Half of all bus messages lost, both ways, at every ring: the level-triggered protocol still
// converges, and a change still gets through.
TEST_F(HierarchyTest, HealsFromMessageLoss) {
  writeConfig(baseConfig(100, 3000));
  startRing0d({"ENJIN_FAULT_DROP=0.5"});
  if (!waitFor([&] { return err().find("running, state in") != std::string::npos; }, 5000) ||
      err().find("fault injection") == std::string::npos) {
    GTEST_SKIP() << "built without ENJIN_FAULT_INJECTION";
  }
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << tree().dump(1);
  const int before = pidOf("infra/shop/web");
  ::kill(before, SIGKILL);
  ASSERT_TRUE(waitFor(
      [&] { return allReady() && pidOf("infra/shop/web") != before; }, 10'000));
  // A new process in a ring-2 node: config -> ring0d -> spec to ring1d -> spec to ring2d.
  writeConfig(baseConfig(100, 3000) + R"(    [[ring1.ring2.process]]
    name = "extra"
    command = )" + sleeper(3) + "\n");
  ::kill(ring0d_, SIGHUP);
  ASSERT_TRUE(waitFor(
      [&] { return stateAt("infra/blog/extra") == "ready"; }, 10'000))
      << tree().dump(1);
  EXPECT_EQ(pidsWithCmdline("sleep:" + tag(3)).size(), 1u);
  // A command two rings down, each hop losing half its messages: sent again every beat until
  // answered, executed once.
  const int extra = pidOf("infra/blog/extra");
  json r = call(state(), {{"cmd", "command"}, {"op", "restart"}, {"path", "infra/blog/extra"}});
  // Each hop resends every 100 ms beat for 3 s or more and a command and its answer each get
  // through half the time: a hop fails with odds of about 0.75^30, under 1 in 1000.
  ASSERT_EQ(r["ok"], true) << r.dump();
  ASSERT_TRUE(waitFor(
      [&] { return pidOf("infra/blog/extra") != extra && stateAt("infra/blog/extra") == "ready"; },
      10'000));
  // Repeats keep arriving for a while (every beat until the answer got through); none
  // restarts it again.
  const int once = pidOf("infra/blog/extra");
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  EXPECT_EQ(pidOf("infra/blog/extra"), once) << "executed more than once";
}

// An outside subscriber (Python, written from proto/ alone) verifies and decodes the stream.
TEST_F(HierarchyTest, OutsideSubscriberVerifiesAndDecodesTheStream) {
  startRing0d();
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << err();
  json info = call(state(), {{"cmd", "tree"}});
  const std::string endpoint = info.value("observe", "");
  const std::string key = info.value("public_key", "");
  ASSERT_FALSE(endpoint.empty());
  std::pair<int, std::string> result;
  const std::string out = dir_ / "observe.out";
  std::thread subscriber([&] {
    result = run("cd " + std::string(ENJIN_SOURCE_DIR) + "/tests/interop && /usr/bin/python3 "
                 "observe_tree.py " + endpoint + " " + key +
                 " --events 2 --timeout-ms 30000 >" + out + " 2>&1; rc=$?; cat " + out +
                 "; exit $rc");
  });
  // Once the subscriber has its first tree (it is connected and verifying), an app dies and
  // comes back: two events.
  const bool subscribed =
      waitFor([&] { return readFile(out).find("tree root") != std::string::npos; }, 20'000);
  ::kill(pidOf("infra/blog/web"), SIGKILL);
  subscriber.join();
  ASSERT_TRUE(subscribed) << result.second;
  EXPECT_EQ(result.first, 0) << result.second;
  EXPECT_NE(result.second.find("tree infra/shop/worker ready"), std::string::npos) << result.second;
  EXPECT_NE(result.second.find("event infra/blog/web (process): ready -> backoff"),
            std::string::npos)
      << result.second;
}

// A child that stops heartbeating (SIGSTOP: alive, but silent) is observed as lost, and as
// ready again once it speaks.
TEST_F(HierarchyTest, SilentChildIsObservedLostThenBack) {
  startRing0d();
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << err();
  const int ring1 = pidOf("infra");
  ::kill(ring1, SIGSTOP);
  const bool lost = waitFor([&] { return stateAt("infra") == "lost"; }, 10'000);
  ::kill(ring1, SIGCONT);
  ASSERT_TRUE(lost) << tree().dump(1);
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 10'000)) << tree().dump(1);
  EXPECT_EQ(pidOf("infra"), ring1);  // observed, not restarted: the watchdog allows longer
  EXPECT_NE(err().find("node 'infra' is lost"), std::string::npos);
}

// One HTTP/1.0 GET on loopback: the whole response, "" when nothing answered.
std::string httpGetRaw(int port, const std::string& target) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  timeval tv{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string raw;
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return raw;
  const std::string req = "GET " + target + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    return raw;
  }
  char buf[8192];
  ssize_t n;
  while ((n = ::read(fd.get(), buf, sizeof buf)) > 0) raw.append(buf, static_cast<size_t>(n));
  return raw;
}

// The value of one sample in a Prometheus text page, -1 when absent.
double sampleValue(const std::string& page, const std::string& series) {
  const size_t at = page.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::strtod(page.c_str() + at + series.size() + 2, nullptr);
}

// The buses over TCP on loopback instead of ipc sockets: CURVE with keys from the daemons'
// ed25519 identities. The ring-1 child connects with its parent's key; an observer connects
// with a key of its own from observers/; a plaintext client, a stranger's key and a watch
// without a key get nothing, and ring0d's /metrics counts the refusals by bus and reason.
TEST_F(HierarchyTest, BusesOverTcp) {
  int ports[4];
  for (int& p : ports) p = freeTcpPort();
  const std::string down = "tcp://127.0.0.1:" + std::to_string(ports[0]);
  writeConfig("down = \"" + down + "\"\nup = \"tcp://127.0.0.1:" + std::to_string(ports[1]) +
              "\"\nobserve = \"tcp://127.0.0.1:" + std::to_string(ports[2]) + "\"\n" +
              baseConfig() + "[metrics]\nlisten = \"127.0.0.1:" + std::to_string(ports[3]) +
              "\"\n");
  // An observer of the tcp:// observation stream: its own key, the public half granted by a
  // file in observers/.
  std::filesystem::create_directories(state() + "/observers");
  ::chmod(state().c_str(), 0700);
  const crypto::SecretKey watcher = crypto::SecretKey::generate();
  ASSERT_TRUE(crypto::writeKeyPair(dir_ / "watcher", watcher, false).ok());
  std::filesystem::copy_file(dir_ / "watcher.pub", state() + "/observers/watcher.pub");
  ASSERT_TRUE(crypto::writeKeyPair(dir_ / "stranger", crypto::SecretKey::generate(), false).ok());

  startRing0d();
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << tree().dump(1) << err();
  const std::string watch =
      kBinDir + "/enjinctl --state-dir " + state() + " watch --tree --count 1";
  auto [rc, out] = run(watch + " --key " + (dir_ / "watcher.key") + " --timeout-ms 5000");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("tree  ready"), std::string::npos) << out;
  auto [noKeyRc, noKeyOut] = run(watch + " --timeout-ms 1000 2>&1");
  EXPECT_EQ(noKeyRc, 1) << noKeyOut;
  EXPECT_NE(noKeyOut.find("give --key"), std::string::npos) << noKeyOut;
  auto [strangerRc, strangerOut] =
      run(watch + " --key " + (dir_ / "stranger.key") + " --timeout-ms 1500");
  EXPECT_EQ(strangerRc, 3) << strangerOut;  // a timeout: the connection never opened

  zmq::context_t ctx(1);
  zmq::socket_t plain(ctx, zmq::socket_type::sub);
  plain.set(zmq::sockopt::linger, 0);
  plain.set(zmq::sockopt::subscribe, "");
  plain.connect(down);
  std::string page;
  auto counted = [&] {
    page = httpGetRaw(ports[3], "/metrics");
    // libzmq reports a NULL-mechanism client to a CURVE server as a protocol error (counted
    // plaintext) or, when the greeting is cut short first, as a handshake failure: either is
    // the refusal.
    const double plaintext = sampleValue(
        page, "enjin_bus_connections_rejected_total{bus=\"down\",reason=\"plaintext\"}");
    const double handshake = sampleValue(
        page, "enjin_bus_connections_rejected_total{bus=\"down\",reason=\"handshake\"}");
    return plaintext + handshake >= 1 &&
           sampleValue(
               page,
               "enjin_bus_connections_rejected_total{bus=\"observe\",reason=\"unknown_key\"}") >= 1;
  };
  ASSERT_TRUE(waitFor(counted, 10'000)) << page;
  EXPECT_GE(sampleValue(page, "enjin_bus_connections_admitted_total{bus=\"down\"}"), 1) << page;
  EXPECT_GE(sampleValue(page, "enjin_bus_connections_admitted_total{bus=\"up\"}"), 1) << page;
  EXPECT_GE(sampleValue(page, "enjin_bus_connections_admitted_total{bus=\"observe\"}"), 1) << page;
  // The parent republishes specs every beat (200 ms): a plaintext client would have had some.
  zmq::message_t m;
  EXPECT_FALSE(plain.recv(m, zmq::recv_flags::dontwait)) << "a plaintext client got data";
  EXPECT_TRUE(allReady()) << tree().dump(1);
}

TEST_F(HierarchyTest, CleanShutdownLeavesNoProcess) {
  startRing0d();
  ASSERT_TRUE(waitFor([&] { return allReady(); }, 20'000)) << err();
  ::kill(ring0d_, SIGTERM);
  const int status = waitExit(ring0d_, 30'000);
  ring0d_ = -1;
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  reapAll(500);
  EXPECT_TRUE(pidsWithCmdline(dir_.path()).empty());
  for (const std::string& t : {"sleep:" + tag(0), "sleep:" + tag(1), "sleep:" + tag(2)}) {
    EXPECT_TRUE(pidsWithCmdline(t).empty()) << t;
  }
  EXPECT_EQ(countZombiesOf(::getpid()), 0);
}

// ring0d under systemd: READY=1 once the tree is up, WATCHDOG=1 from its loop, STATUS= lines.
TEST_F(HierarchyTest, TellsSystemdReadyWatchdogAndStatus) {
  const std::string sockPath = dir_ / "notify.sock";
  UniqueFd sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sockPath.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  startRing0d({"NOTIFY_SOCKET=" + sockPath, "WATCHDOG_USEC=400000"});
  std::string all;
  bool ready = false, watchdog = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while ((!ready || !watchdog) && std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{sock.get(), POLLIN, 0};
    if (::poll(&pfd, 1, 200) != 1) continue;
    char buf[4096];
    const ssize_t n = ::recv(sock.get(), buf, sizeof buf, 0);
    if (n <= 0) continue;
    std::string msg(buf, static_cast<size_t>(n));
    all += msg + "|";
    if (msg.find("READY=1") != std::string::npos && !ready) {
      ready = true;
      // Every daemon is up and every process settled; the tree view converges within a beat.
      for (const std::string& t : {"sleep:" + tag(0), "sleep:" + tag(1), "sleep:" + tag(2)}) {
        EXPECT_EQ(pidsWithCmdline(t).size(), 1u) << t << " not running at READY=1";
      }
      EXPECT_TRUE(waitFor([&] { return allReady(); }, 2000));
    }
    watchdog = watchdog || msg.find("WATCHDOG=1") != std::string::npos;
  }
  EXPECT_TRUE(ready) << all;
  EXPECT_TRUE(watchdog) << all;
  EXPECT_NE(all.find("STATUS=1 node"), std::string::npos) << all;
}

TEST_F(HierarchyTest, RefusesBadConfigAndCorruptStoreClearly) {
  writeConfig(baseConfig() + "[[ring1]]\nlabel = \"infra\"\n");
  auto [rc, out] = run(kBinDir + "/ring0d --check-config --config " + configPath() +
                                   " 2>&1");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("ring0d.toml:"), std::string::npos) << out;
  EXPECT_NE(out.find("duplicate"), std::string::npos) << out;
  writeConfig("bogus = 1\n" + baseConfig());
  std::tie(rc, out) = run(kBinDir + "/ring0d --check-config --config " +
                                      configPath() + " 2>&1");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("unknown key 'bogus'"), std::string::npos) << out;
  writeConfig(baseConfig());
  std::tie(rc, out) = run(kBinDir + "/ring0d --check-config --config " +
                                      configPath() + " 2>&1");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("1 ring-1 nodes, 2 ring-2 nodes, 3 processes"), std::string::npos) << out;

  // --init makes the root key and the store, and says so; a second --init changes nothing.
  std::tie(rc, out) = run(kBinDir + "/ring0d --init --config " + configPath() + " 2>&1");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("store schema 2"), std::string::npos) << out;
  std::ifstream keyIn(state() + "/ring0.key");
  const std::string key((std::istreambuf_iterator<char>(keyIn)), {});
  std::tie(rc, out) = run(kBinDir + "/ring0d --init --config " + configPath() + " 2>&1");
  EXPECT_EQ(rc, 0) << out;
  std::ifstream keyAgain(state() + "/ring0.key");
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(keyAgain)), {}), key);
  std::filesystem::remove(state() + "/ring0.db");

  // A store that is not a database: refused, named, and left as it was.
  std::filesystem::create_directories(state());
  ::chmod(state().c_str(), 0700);
  const std::string garbage(4096, 'x');
  std::ofstream(state() + "/ring0.db") << garbage;
  std::tie(rc, out) = run(kBinDir + "/ring0d --config " + configPath() + " 2>&1");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("ring0.db"), std::string::npos) << out;
  std::ifstream in(state() + "/ring0.db");
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), {}), garbage);
}

}  // namespace
}  // namespace enjin::testing
