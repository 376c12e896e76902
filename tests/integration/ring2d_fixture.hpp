// Runs the real ring2d (and through it the real enjin-holder) in a temp state dir. The test
// process makes itself a subreaper, so a holder orphaned by a killed ring2d comes back to it and
// is reaped here: no test leaves a zombie behind.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <functional>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "enjin/supervise/control_server.hpp"
#include "enjin/supervise/spawn.hpp"
#include "fakes/free_port.hpp"
#include "fakes/read_file.hpp"
#include "fakes/temp_dir.hpp"
#include "fakes/throwaway_user.hpp"
#include "fakes/wait.hpp"

namespace enjin::testing {

inline const std::string kBinDir = ENJIN_BIN_DIR;

// A TOML array's elements that run tests/helpers/crasher in `mode` ("exit:3", "sleep:600000").
inline std::string crasher(const std::string& mode) {
  return "\"" + kBinDir + "/crasher\", \"" + mode + "\"";
}

// The first JSON object probe_child (tests/helpers) wrote to the log at `logPath`, or null.
inline nlohmann::json probeFacts(const std::string& logPath) {
  const std::string log = readFile(logPath);
  const std::string line = log.substr(0, log.find('\n'));
  const auto brace = line.find('{');
  if (brace == std::string::npos) return nullptr;
  return nlohmann::json::parse(line.substr(brace), nullptr, false);
}

// Every process on the machine whose parent is `ppid` and that is a zombie.
inline int countZombiesOf(pid_t ppid) {
  int zombies = 0;
  DIR* d = ::opendir("/proc");
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const std::string stat = readFile(std::string("/proc/") + e->d_name + "/stat");
    auto close = stat.rfind(')');
    if (close == std::string::npos || close + 4 >= stat.size()) continue;
    const char state = stat[close + 2];
    const pid_t parent = std::atoi(stat.c_str() + close + 4);
    if (state == 'Z' && (ppid == 0 || parent == ppid)) ++zombies;
  }
  ::closedir(d);
  return zombies;
}

// Live (non-zombie) processes whose command line contains `needle`.
inline std::vector<pid_t> pidsWithCmdline(const std::string& needle) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string c = readFile(std::string("/proc/") + e->d_name + "/cmdline");
    for (auto& ch : c) ch = ch == '\0' ? ' ' : ch;
    if (c.find(needle) != std::string::npos) out.push_back(std::atoi(e->d_name));
  }
  ::closedir(d);
  return out;
}

// The parent of `pid` from /proc, or 0 if it is gone.
inline pid_t parentOf(pid_t pid) {
  const std::string stat = readFile("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 4 >= stat.size()) return 0;
  return static_cast<pid_t>(std::atoi(stat.c_str() + close + 4));  // ") S PPID"
}

// pidsWithCmdline, but only this test's own processes: descendants of this process (a
// subreaper, so they stay descendants when a daemon between dies). Tests that run at the same
// time may start the same helper with the same arguments.
inline std::vector<pid_t> ownPidsWithCmdline(const std::string& needle) {
  std::vector<pid_t> out;
  for (pid_t pid : pidsWithCmdline(needle)) {
    for (pid_t up = parentOf(pid); up > 1; up = parentOf(up)) {
      if (up == ::getpid()) {
        out.push_back(pid);
        break;
      }
    }
  }
  return out;
}

// Runs a shell command; its exit code and stdout.
inline std::pair<int, std::string> run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// Alive and not a zombie (a zombie still answers kill(pid, 0)).
inline bool processAlive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  const std::string stat = readFile("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

// What a log written by `crasher lines:N:MS` shows: the last line number and how many times the
// numbers stepped back. ring2d writes a line to the log before it takes it off the socket, so a
// kill between the two repeats the lines of that one read; `error` names a line that is missing
// or a line that is not one of the talker's. (A talker that ran twice also steps back: callers
// check its restart count.)
struct NumberedLog {
  long last = 0;
  long stepsBack = 0;
  std::string error;
};

inline NumberedLog readNumberedLog(const std::string& text) {
  NumberedLog r;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const size_t at = line.find(" stdout line ");
    if (at != 27 || line.size() <= at + 13) return {r.last, r.stepsBack, "not a talker line: " + line};
    const long n = std::strtol(line.c_str() + at + 13, nullptr, 10);
    if (n != r.last + 1) {
      if (n > r.last) return {r.last, r.stepsBack, "line " + std::to_string(r.last + 1) + " is missing"};
      ++r.stepsBack;
    }
    r.last = n;
  }
  return r;
}

class Ring2dTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }

  void TearDown() override {
    if (ring2d_ > 0) {
      ::kill(ring2d_, SIGTERM);
      waitExit(ring2d_, 15'000);
    }
    // A holder left by a killed ring2d: stop its children and it. state.json may be stale and a
    // pid in it reused by now, so only a pid whose start time still matches is killed.
    for (pid_t pid : heldPids()) ::kill(-pid, SIGKILL);
    if (auto holder = holderPid(); holder > 0) ::kill(holder, SIGKILL);
    reapAll(2000);
  }

  std::string state() const { return dir_ / "state"; }
  std::string specPath() const { return dir_ / "spec.toml"; }
  static std::string helper(const std::string& name) { return kBinDir + "/" + name; }

  void writeSpec(const std::string& toml) {
    std::ofstream(specPath()) << toml;
  }

  // Starts ring2d; its stderr goes to DIR/ring2d.err.
  void startRing2d(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{helper("ring2d"), "--spec", specPath(), "--state-dir", state(),
                                  "--holder", helper("enjin-holder"), "--log-level", "debug"};
    args.insert(args.end(), extra.begin(), extra.end());
    ring2d_ = spawnProcess(args, dir_ / "ring2d.err");
    ASSERT_TRUE(waitFor([&] { return controlOk(); }, 10'000)) << ring2dErr();
  }

  static pid_t spawnProcess(const std::vector<std::string>& args, const std::string& errPath) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
      int err = ::open(errPath.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(err, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    return pid;
  }

  void killRing2d(int sig = SIGKILL) {
    ::kill(ring2d_, sig);
    waitExit(ring2d_, 10'000);
    ring2d_ = -1;
  }

  static void reapAll(int timeoutMs) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
    while (std::chrono::steady_clock::now() < deadline) {
      int status;
      pid_t p = ::waitpid(-1, &status, WNOHANG);
      if (p < 0) return;  // no children left
      if (p == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  std::string ring2dErr() const { return readFile(dir_ / "ring2d.err"); }

  bool controlOk() { return supervise::controlCall(state() + "/control.sock", {{"cmd", "status"}}).ok(); }

  nlohmann::json call(const nlohmann::json& req) {
    auto r = supervise::controlCall(state() + "/control.sock", req);
    return r.ok() ? *r : nlohmann::json{{"error", r.error().message}};
  }

  // The status entry of `name`, or null.
  nlohmann::json proc(const std::string& name) {
    auto s = call({{"cmd", "status"}});
    if (!s.contains("processes")) return nullptr;
    for (const auto& p : s["processes"]) {
      if (p["name"] == name) return p;
    }
    return nullptr;
  }

  std::string stateOf(const std::string& name) {
    auto p = proc(name);
    return p.is_object() ? p["state"].get<std::string>() : "";
  }

  pid_t holderPid() {
    auto pids = pidsWithCmdline(state() + "/holder.sock");
    return pids.empty() ? 0 : pids.front();
  }

  // state.json's processes, or an empty object.
  nlohmann::json stateJsonProcesses() const {
    std::ifstream in(state() + "/state.json");
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (!j.is_object()) return nlohmann::json::object();
    auto procs = j.value("processes", nlohmann::json::object());
    return procs.is_object() ? procs : nlohmann::json::object();
  }

  // The pid state.json records for `name`, or 0.
  pid_t stateJsonPid(const std::string& name) const {
    const auto procs = stateJsonProcesses();
    if (!procs.contains(name) || !procs[name].is_object()) return 0;
    return procs[name].value("pid", 0);
  }

  // The processes state.json names that still run: the pid alone may have been reused since the
  // file was written, so its start time must match too.
  std::vector<pid_t> heldPids() const {
    std::vector<pid_t> out;
    const nlohmann::json procs = stateJsonProcesses();  // items() would not keep a temporary
    for (const auto& [name, p] : procs.items()) {
      if (!p.is_object()) continue;
      const pid_t pid = p.value("pid", 0);
      const uint64_t startTime = p.value("start_time", uint64_t{0});
      if (pid <= 0 || startTime == 0) continue;
      auto now = supervise::processStartTime(pid);
      if (now.ok() && *now == startTime) out.push_back(pid);
    }
    return out;
  }

  // An account for the unix-user strategy, made on first use. A member, so that it goes only
  // after TearDown has stopped everything that runs as it.
  const ThrowawayUser& throwawayUser() {
    if (!user_) user_.emplace();
    return *user_;
  }

  TempDir dir_;
  pid_t ring2d_ = -1;
  std::optional<ThrowawayUser> user_;
};

}  // namespace enjin::testing
