// The demo hierarchy (ring0d -> one ring1d -> two ring2d -> one HTTP app each, the app of
// `./enjin demo`), started from an empty state dir, N times:
//   cold start   from exec of ring0d to every node and process ready in ring0d's tree
//   replacement  from SIGKILL of the ring1d to its replacement ready and the whole tree ready
//                again (the restart policy's first delay, 75-100 ms with jitter, is part of it)
//   stop         from SIGTERM of ring0d to its exit, everything stopped in order
// The time is read by polling ring0d's control socket every 2 ms, as `enjinctl wait-ready` does.
// Prints a table and one BENCH_JSON line (tests/bench/run keeps it).
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
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

#include "enjin/ring/tree.hpp"
#include "enjin/supervise/control_server.hpp"
#include "tree_poll.hpp"

namespace {

using nlohmann::json;
using enjin::bench::Clock;
using enjin::bench::msSince;
using enjin::bench::tree;

const std::string kBin = ENJIN_BIN_DIR;

// Polls until the whole tree is ready and `also` holds; that tree, or null after 30 s.
template <class F>
json waitReady(const std::string& state, F also) {
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < deadline) {
    json t = tree(state);
    if (t.is_object() && !enjin::ring::firstNotReady(t) && also(t)) return t;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return nullptr;
}

int pidAt(const json& t, const std::string& path) {
  auto flat = enjin::ring::flattenTree(t);
  auto it = flat.find(path);
  return it == flat.end() ? 0 : it->second.value("pid", 0);
}

struct Stats {
  double median, min, max;
};

Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 10;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      runs = 1;
    } else if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: hierarchy_bench [--quick] [--runs N]\n");
      return 2;
    }
  }
  // Whatever a killed ring1d leaves is reaped here, not by a lazy PID 1.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

  std::vector<double> cold, replace, stop;
  for (int run = 0; run < runs; ++run) {
    char tmpl[] = "/tmp/enjin-hbench.XXXXXX";
    const std::string dir = ::mkdtemp(tmpl);
    const std::string state = dir + "/state";
    std::ofstream(dir + "/ring0d.toml")
        << "state_dir = \"" << state << "\"\n"
        << "[[ring1]]\nlabel = \"infra-1\"\n"
        << "  [[ring1.ring2]]\n  label = \"shop\"\n"
        << "    [[ring1.ring2.process]]\n    name = \"web\"\n    command = [\"" << kBin
        << "/enjin-demo-http\", \"--port\", \"0\", \"--name\", \"shop\"]\n"
        << "    readiness = \"notify\"\n"
        << "  [[ring1.ring2]]\n  label = \"blog\"\n"
        << "    [[ring1.ring2.process]]\n    name = \"web\"\n    command = [\"" << kBin
        << "/enjin-demo-http\", \"--port\", \"0\", \"--name\", \"blog\"]\n"
        << "    readiness = \"notify\"\n";

    const auto t0 = Clock::now();
    const pid_t ring0d = ::fork();
    if (ring0d == 0) {
      int err = ::open((dir + "/ring0d.err").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      ::dup2(err, 2);
      ::execl((kBin + "/ring0d").c_str(), "ring0d", "--config", (dir + "/ring0d.toml").c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    bool ok = !waitReady(state, [](const json&) { return true; }).is_null();
    if (ok) cold.push_back(msSince(t0));

    // Let the tree settle (state files are written in coalesced batches) before the kill: a
    // node dies at a random time, not within milliseconds of its birth.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    json t = tree(state);
    const int ring1 = pidAt(t, "infra-1");
    const int apps[2] = {pidAt(t, "infra-1/shop/web"), pidAt(t, "infra-1/blog/web")};
    if (ok && ring1 > 0) {
      const auto t1 = Clock::now();
      ::kill(ring1, SIGKILL);
      json after = waitReady(state, [&](const json& now) {
        const int p = pidAt(now, "infra-1");
        return p > 0 && p != ring1;
      });
      ok = !after.is_null();
      if (ok) replace.push_back(msSince(t1));
      if (pidAt(after, "infra-1/shop/web") != apps[0] || pidAt(after, "infra-1/blog/web") != apps[1]) {
        std::fprintf(stderr, "hierarchy_bench: an app was restarted with its ring1d:\n%s\n%s\n",
                     t.dump(1).c_str(), after.dump(1).c_str());
        ok = false;
      }
    }
    const auto t2 = Clock::now();
    ::kill(ring0d, SIGTERM);
    int status = 0;
    ::waitpid(ring0d, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) stop.push_back(msSince(t2));
    // Reap whatever came back to us (a killed ring1d's orphans are gone once ring0d stopped).
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    if (!ok) {
      std::fprintf(stderr, "hierarchy_bench: run %d failed; ring0d's log:\n", run + 1);
      std::ifstream in(dir + "/ring0d.err");
      std::fprintf(stderr, "%s\n", std::string((std::istreambuf_iterator<char>(in)), {}).c_str());
      return 1;
    }
    std::filesystem::remove_all(dir);
  }

  const Stats c = stats(cold), r = stats(replace), s = stats(stop);
  std::printf("hierarchy: ring0d -> 1 ring1d -> 2 ring2d -> 2 HTTP apps, %d runs\n", runs);
  std::printf("%-48s %9s %9s %9s\n", "", "median", "min", "max");
  std::printf("%-48s %7.1f ms %6.1f ms %6.1f ms\n", "cold start to all-ready", c.median, c.min, c.max);
  std::printf("%-48s %7.1f ms %6.1f ms %6.1f ms\n", "ring-1 node SIGKILLed to replacement ready",
              r.median, r.min, r.max);
  std::printf("%-48s %7.1f ms %6.1f ms %6.1f ms\n", "SIGTERM of ring0d to everything stopped",
              s.median, s.min, s.max);
  json out{{"runs", runs},
           {"cold_start_ms", {{"median", c.median}, {"min", c.min}, {"max", c.max}}},
           {"ring1_replacement_ms", {{"median", r.median}, {"min", r.min}, {"max", r.max}}},
           {"stop_ms", {{"median", s.median}, {"min", s.min}, {"max", s.max}}}};
  std::printf("BENCH_JSON %s\n", out.dump().c_str());
  return 0;
}
