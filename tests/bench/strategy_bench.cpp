// The cost of isolation: the three node strategies of a ring-2 node (exec, unix-user, sandbox)
// measured in one run, against one ring0d -> ring1d that stays up the whole time:
//   spawn    the config gains the ring-2 node, SIGHUP to ring0d, until the node and its process
//            are ready in ring0d's tree (repeated --runs times, the node removed between runs:
//            config without it, SIGHUP, until it is gone from the tree)
//   restart  SIGKILL of the node's process (its pid from the tree) until a new pid is ready
//            (repeated --restarts times, with restart_delay_ms = 0: no backoff in it)
// The process is stamp_child (it sleeps until killed). Times are read by polling ring0d's
// control socket every 2 ms, as `enjinctl wait-ready` does, so each figure includes the
// reports up the hierarchy (ring2d -> ring1d -> ring0d), not only the start of the process.
// unix-user and sandbox need root (ring1d hands out uids of tenant_uids); without it they are
// skipped. Every wait is bounded; at the end, whatever still runs with the temp dir on its
// command line is SIGKILLed. Prints a table and one BENCH_JSON line (tests/bench/run keeps it).
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "enjin/base/file.hpp"
#include "enjin/ring/tree.hpp"
#include "enjin/supervise/control_server.hpp"
#include "tree_poll.hpp"

namespace {

using nlohmann::json;
using enjin::bench::Clock;
using enjin::bench::msSince;
using enjin::bench::tree;

const std::string kBin = ENJIN_BIN_DIR;

// Polls until `done` holds for the tree (flattened); true, or false after `seconds`.
template <class F>
bool waitFor(const std::string& state, int seconds, F done) {
  const auto deadline = Clock::now() + std::chrono::seconds(seconds);
  while (Clock::now() < deadline) {
    json t = tree(state);
    if (t.is_object() && done(t, enjin::ring::flattenTree(t))) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

bool readyAt(const enjin::ring::FlatTree& flat, const std::string& path) {
  auto it = flat.find(path);
  return it != flat.end() && it->second.value("state", "") == "ready";
}

int pidAt(const enjin::ring::FlatTree& flat, const std::string& path) {
  auto it = flat.find(path);
  return it == flat.end() ? 0 : it->second.value("pid", 0);
}

// ring0d's config: one ring-1 node with tenant uids, and the ring-2 node `label` of `strategy`
// when `strategy` is not empty.
void writeConfig(const std::string& dir, const std::string& strategy, const std::string& label) {
  std::ofstream out(dir + "/ring0d.toml.new");
  out << "state_dir = \"" << dir << "/state\"\n"
      << "heartbeat_ms = 200\nheartbeat_timeout_ms = 1500\n"
      << "[[ring1]]\nlabel = \"infra\"\ntenant_uids = \"63000-63099\"\n";
  if (!strategy.empty()) {
    out << "  [[ring1.ring2]]\n  label = \"" << label << "\"\n  strategy = \"" << strategy
        << "\"\n    [[ring1.ring2.process]]\n    name = \"app\"\n    command = [\"" << kBin
        << "/stamp_child\"]\n"
        // Restarted at once, every time: the figure is the strategy's, not the backoff's.
        << "    restart_delay_ms = 0\n    max_restarts = 1000\n";
  }
  out.close();
  std::filesystem::rename(dir + "/ring0d.toml.new", dir + "/ring0d.toml");
}

// SIGKILL to every process whose command line names `dir`, until none is left (bounded).
void killAllNaming(const std::string& dir) {
  for (int round = 0; round < 50; ++round) {
    int found = 0;
    DIR* proc = ::opendir("/proc");
    if (proc == nullptr) return;
    while (dirent* e = ::readdir(proc)) {
      const int pid = std::atoi(e->d_name);
      if (pid <= 0 || pid == ::getpid()) continue;
      // Not an ifstream: one throws when the process exits while it is read (ESRCH).
      auto cmdline = enjin::readFile("/proc/" + std::string(e->d_name) + "/cmdline");
      if (!cmdline.ok() || cmdline->find(dir) == std::string::npos) continue;
      ++found;
      ::kill(pid, SIGKILL);
    }
    ::closedir(proc);
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    if (found == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

struct Stats {
  double p50 = 0, p90 = 0, max = 0;
  size_t n = 0;
};

Stats stats(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))]; };
  return {at(0.5), at(0.9), v.back(), v.size()};
}

json toJson(const Stats& s) {
  return {{"n", s.n}, {"p50", s.p50}, {"p90", s.p90}, {"max", s.max}};
}

struct Result {
  std::string strategy;
  Stats spawn, restart;
  std::string skipped;  // why, when the strategy was not measured
};

}  // namespace

int main(int argc, char** argv) {
  int runs = 10, restarts = 20;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      runs = 1;
      restarts = 2;
    } else if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--restarts") == 0 && i + 1 < argc) {
      restarts = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: strategy_bench [--quick] [--runs N] [--restarts M]\n");
      return 2;
    }
  }
  // Whatever a killed daemon leaves is reaped here, not by a lazy PID 1.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

  char tmpl[] = "/tmp/enjin-sbench.XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  // The ring-2 nodes' homes are under the state dir and must be reachable by their own uids.
  ::chmod(dir.c_str(), 0755);
  const std::string state = dir + "/state";
  writeConfig(dir, "", "");

  const pid_t ring0d = ::fork();
  if (ring0d == 0) {
    int err = ::open((dir + "/ring0d.err").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    ::dup2(err, 2);
    ::execl((kBin + "/ring0d").c_str(), "ring0d", "--config", (dir + "/ring0d.toml").c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }

  std::string failure;
  std::vector<Result> results;
  if (!waitFor(state, 30, [](const json& t, const enjin::ring::FlatTree& flat) {
        return !enjin::ring::firstNotReady(t) && readyAt(flat, "infra");
      })) {
    failure = "ring0d -> ring1d not ready within 30 s";
  }

  for (const std::string strategy : {"exec", "unix-user", "sandbox"}) {
    if (!failure.empty()) break;
    Result res{strategy, {}, {}, ""};
    if (strategy != "exec" && ::geteuid() != 0) {
      res.skipped = "needs root";
      results.push_back(res);
      continue;
    }
    const std::string label = "n-" + strategy;
    const std::string node = "infra/" + label, app = node + "/app";
    std::vector<double> spawn, restart;
    for (int run = 0; run < runs && failure.empty(); ++run) {
      writeConfig(dir, strategy, label);
      const auto t0 = Clock::now();
      ::kill(ring0d, SIGHUP);
      if (!waitFor(state, 20, [&](const json& t, const enjin::ring::FlatTree& flat) {
            return readyAt(flat, node) && readyAt(flat, app) && pidAt(flat, app) > 0 &&
                   !enjin::ring::firstNotReady(t);
          })) {
        failure = strategy + ": spawn run " + std::to_string(run + 1) + ": not ready within 20 s";
        break;
      }
      spawn.push_back(msSince(t0));

      // On the last run, the restarts of the process, before the node goes again.
      for (int k = 0; run == runs - 1 && k < restarts && failure.empty(); ++k) {
        // A process dies at a random time, not within milliseconds of its start.
        std::this_thread::sleep_for(std::chrono::milliseconds(150));
        int old = 0;
        waitFor(state, 1, [&](const json&, const enjin::ring::FlatTree& flat) {
          old = pidAt(flat, app);
          return old > 0;
        });
        if (old <= 0) {
          failure = strategy + ": no pid for " + app;
          break;
        }
        const auto t1 = Clock::now();
        // The pid in the tree is as seen from the host's pid namespace.
        if (::kill(old, SIGKILL) != 0) {
          failure = strategy + ": kill " + std::to_string(old) + ": " + std::strerror(errno);
          break;
        }
        if (!waitFor(state, 20, [&](const json&, const enjin::ring::FlatTree& flat) {
              const int p = pidAt(flat, app);
              return p > 0 && p != old && readyAt(flat, app);
            })) {
          failure = strategy + ": restart " + std::to_string(k + 1) + ": no new pid within 20 s";
          break;
        }
        restart.push_back(msSince(t1));
      }

      writeConfig(dir, "", "");
      ::kill(ring0d, SIGHUP);
      if (failure.empty() &&
          !waitFor(state, 20, [&](const json&, const enjin::ring::FlatTree& flat) {
            return flat.find(node) == flat.end();
          })) {
        failure = strategy + ": node not removed within 20 s";
      }
    }
    res.spawn = stats(spawn);
    res.restart = stats(restart);
    results.push_back(res);
  }

  ::kill(ring0d, SIGTERM);
  for (int i = 0; i < 500; ++i) {
    if (::waitpid(ring0d, nullptr, WNOHANG) == ring0d) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(ring0d, SIGKILL);
  ::waitpid(ring0d, nullptr, WNOHANG);
  killAllNaming(dir);

  if (!failure.empty()) {
    std::fprintf(stderr, "strategy_bench: %s; ring0d's log:\n", failure.c_str());
    std::ifstream in(dir + "/ring0d.err");
    std::fprintf(stderr, "%s\n", std::string((std::istreambuf_iterator<char>(in)), {}).c_str());
    std::filesystem::remove_all(dir);
    return 1;
  }
  std::filesystem::remove_all(dir);

  std::printf("node strategies: ring0d -> ring1d -> one ring-2 node -> stamp_child; %d spawns, %d "
              "restarts each\n",
              runs, restarts);
  std::printf("%-10s %-34s %9s %9s %9s\n", "strategy", "", "p50", "p90", "max");
  json out{{"runs", runs}, {"restarts", restarts}};
  for (const Result& r : results) {
    if (!r.skipped.empty()) {
      std::printf("%-10s skipped: %s\n", r.strategy.c_str(), r.skipped.c_str());
      out[r.strategy] = {{"skipped", r.skipped}};
      continue;
    }
    std::printf("%-10s %-34s %6.1f ms %6.1f ms %6.1f ms\n", r.strategy.c_str(),
                "SIGHUP to node+process ready", r.spawn.p50, r.spawn.p90, r.spawn.max);
    std::printf("%-10s %-34s %6.1f ms %6.1f ms %6.1f ms\n", "", "SIGKILL to new pid ready",
                r.restart.p50, r.restart.p90, r.restart.max);
    out[r.strategy] = {{"spawn_ms", toJson(r.spawn)}, {"restart_ms", toJson(r.restart)}};
  }
  std::printf("BENCH_JSON %s\n", out.dump().c_str());
  return 0;
}
