// The real hierarchy for integration tests: ring0d -> ring1d -> ring2d -> processes, from a temp
// state dir, each daemon with its holder, over real ipc buses. The test process is a subreaper,
// so whatever a killed daemon leaves behind comes back to it and is reaped here.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "enjin/ring/tree.hpp"
#include "ring2d_fixture.hpp"

namespace enjin::testing {

using json = nlohmann::json;

// A sleeping process whose command line names it, so the test can find (and count) it: the
// sleep, in ms, is the tag, unique to this test process (ctest runs tests side by side).
inline std::string tag(int k) { return std::to_string(7'000'000 + (::getpid() % 100'000) * 10 + k); }
inline std::string sleeper(int k) {
  return "[" + crasher("sleep:" + tag(k)) + "]";
}

// Borrows ring2d's fixture for its temp dir, subreaper and process helpers.
class HierarchyTest : public Ring2dTest {
 protected:
  void SetUp() override { writeConfig(baseConfig()); }

  void TearDown() override {
    if (ring0d_ > 0) {
      ::kill(ring0d_, SIGTERM);
      if (waitExit(ring0d_, 30'000) == -1) ::kill(ring0d_, SIGKILL);
    }
    // Whatever a test's kill -9 left unowned: everything whose command line names this dir.
    for (pid_t pid : pidsWithCmdline(dir_.path())) ::kill(pid, SIGKILL);
    for (int k = 0; k < 8; ++k) {
      for (pid_t pid : pidsWithCmdline("sleep:" + tag(k))) ::kill(pid, SIGKILL);
    }
    reapAll(3000);
    Ring2dTest::TearDown();
  }

  std::string configPath() const { return dir_ / "ring0d.toml"; }

  std::string baseConfig(int heartbeatMs = 200, int timeoutMs = 1500) const {
    return "state_dir = \"" + state() + "\"\nheartbeat_ms = " + std::to_string(heartbeatMs) +
           "\nheartbeat_timeout_ms = " + std::to_string(timeoutMs) + R"(
[[ring1]]
label = "infra"
  [[ring1.ring2]]
  label = "shop"
    [[ring1.ring2.process]]
    name = "web"
    command = )" + sleeper(0) + R"(
    [[ring1.ring2.process]]
    name = "worker"
    command = )" + sleeper(1) + R"(
  [[ring1.ring2]]
  label = "blog"
    [[ring1.ring2.process]]
    name = "web"
    command = )" + sleeper(2) + "\n";
  }

  void writeConfig(const std::string& text) { std::ofstream(configPath()) << text; }

  void startRing0d(std::vector<std::string> env = {}) {
    std::vector<std::string> args{kBinDir + "/ring0d", "--config", configPath(), "--log-level",
                                  "debug"};
    ring0d_ = ::fork();
    if (ring0d_ == 0) {
      int err = ::open((dir_ / "ring0d.err").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(err, 2);
      for (auto& e : env) ::putenv(e.data());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }

  void killRing0d(int sig) {
    ::kill(ring0d_, sig);
    waitExit(ring0d_, 30'000);
    ring0d_ = -1;
  }

  std::string err() const { return readFile(dir_ / "ring0d.err"); }

  json call(const std::string& stateDir, const json& req) {
    auto r = supervise::controlCall(stateDir + "/control.sock", req);
    return r.ok() ? *r : json{{"ok", false}, {"error", r.error().message}};
  }

  json tree() {
    json r = call(state(), {{"cmd", "tree"}});
    return r.value("tree", json());
  }

  // path -> {state, pid, restarts, ...} over the whole tree, or empty while ring0d is not up.
  ring::FlatTree flat() {
    json t = tree();
    return t.is_object() ? ring::flattenTree(t) : ring::FlatTree{};
  }

  static constexpr const char* kAll[] = {"infra", "infra/shop", "infra/shop/web",
                                         "infra/shop/worker", "infra/blog", "infra/blog/web"};

  // Every node and process ready, every spec applied, every heartbeat fresh.
  bool allReady() {
    json t = tree();
    if (!t.is_object() || t.value("state", "") != "ready") return false;
    auto f = ring::flattenTree(t);
    for (const char* path : kAll) {
      auto it = f.find(path);
      if (it == f.end() || it->second.value("state", "") != "ready") return false;
    }
    return true;
  }

  std::map<std::string, int> pids() {
    std::map<std::string, int> out;
    for (const auto& [path, e] : flat()) out[path] = e.value("pid", 0);
    return out;
  }

  std::map<std::string, int> restarts() {
    std::map<std::string, int> out;
    for (const auto& [path, e] : flat()) out[path] = e.value("restarts", 0);
    return out;
  }

  int pidOf(const std::string& path) { return pids()[path]; }

  std::string stateAt(const std::string& path) {
    auto f = flat();
    auto it = f.find(path);
    return it == f.end() ? "" : it->second.value("state", "");
  }

  pid_t ring0d_ = -1;
};

}  // namespace enjin::testing
