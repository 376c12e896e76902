// The supervision benchmark: what keeping processes alive costs, side by side on this machine,
// for enjin's ring2d and for what it must beat. docs/benchmarks.md ("Supervision") has the method
// and the figures.
//
//   supervise_bench                 full run, 12-18 minutes on a 2-core machine
//   supervise_bench --quick         smoke test (ctest): bare loop and enjin only, 20 kills, 50
//                                   children, 2 s idle; figures meaningless
//   --only LIST                     comma-separated subset of bare,enjin,s6,runit,supervisord
//   --kills N (300)  --services N (8)  --siblings N (--children)  --children N (1000)
//   --idle-s S (10)  --scale N (5000)  --scale-targets LIST (bare,enjin,s6)
//   --max-seconds S (2400; quick 100)
//
// Supervisors:
//   bare         a fork+exec+pidfd loop (this binary, --bare-loop): the mechanism's limit
//   enjin        ring2d + enjin-holder, restart_delay_ms = 0, max_restarts 1e9, restart_window_s 1
//   s6           s6-svscan + one s6-supervise per service, run = a symlink to stamp_child
//   runit        runsvdir + one runsv per service, run = a symlink to stamp_child
//   supervisord  one supervisord -n, autorestart=true, startsecs=0
// Those not installed are reported as such (./enjin bench installs them).
//
// 1. Restart latency: the bench reads CLOCK_MONOTONIC just before kill(SIGKILL); the replacement
//    (tests/helpers/stamp_child.c) reads it first thing in main and writes it to a FIFO the bench
//    reads. One restart is in flight at a time; every victim has been up for at least 1.1 s,
//    because s6 and runit refuse to restart a service within 1 s of its previous start:
//    their throttle is then never what is measured, for every supervisor alike. A random pause of
//    0-30 ms before each kill keeps kills out of phase with any periodic timer. A supervisor whose
//    median is over 200 ms after 20 kills (supervisord) stops at 60 kills. Then again with
//    --siblings idle children beside the victims: what a restart costs in a full supervisor.
//    (s6 also needs a readiness notification for that: see S6Target.)
// 2. Memory: the PSS (/proc/PID/smaps_rollup) of every supervisor-side process (the supervisor's
//    process tree minus the stamp children) with --children children, and with none.
// 3. Idle cost: over --idle-s seconds with those children: utime+stime (/proc/PID/stat), on-CPU
//    time (/proc/PID/task/*/schedstat) and context switches (voluntary + involuntary, every
//    thread), summed over the same processes.
// 4. Scale: --scale children started, all SIGKILLed at once, all back; nothing lost or doubled
//    (for enjin also checked against ring2d's status). RLIMIT_NOFILE and pid_max are checked
//    first: a size that cannot fit fails with the reason, and the largest size that fits runs.
//
// The bench is a child subreaper and every supervisor gets PR_SET_PDEATHSIG: everything it
// started is SIGKILLed and reaped after each case, on errors, on SIGINT/SIGTERM and at the
// deadline.
//
// Output: tables on stdout and one line "BENCH_JSON {...}". Exit 0 whether or not enjin meets its
// targets; 1 if something broke (a restart that never came, a lost or doubled child, a
// supervisor that died, a scale that does not fit this machine); 2 on a bad command line.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench_proc.hpp"
#include "enjin/supervise/control_server.hpp"
#include "supervise_targets.hpp"

extern char** environ;

namespace {

using namespace enjin::bench;
using nlohmann::json;

constexpr int64_t kMinUpNs = 1'100'000'000;  // every victim has been up this long
constexpr int kRestartTimeoutMs = 10'000;     // a restart that takes longer is a failure

// ---------------------------------------------------------------------------------------------
// Measurements

// Waits for `n` stamps from distinct pids, taken after `afterNs`; returns pid -> stamp time.
// (By time, not by pid: a pid may be reused by the next generation of children.)
std::map<pid_t, int64_t> collectStamps(StampFifo& sock, size_t n, int64_t timeoutMs,
                                       int64_t afterNs, Target& target, const char* what) {
  std::map<pid_t, int64_t> out;
  const int64_t until = monoNs() + timeoutMs * 1'000'000;
  while (out.size() < n) {
    const int64_t left = (until - monoNs()) / 1'000'000;
    auto s = left > 0 ? sock.next(std::min<int64_t>(left, 1000)) : std::nullopt;
    if (!s) {
      if (!target.alive()) throw Failure(target.name() + " died while " + what);
      if (left <= 0) {
        // What the children are doing, for the report.
        std::map<std::string, int> states;
        const auto procs = scanProcs();
        for (pid_t p : descendants(::getpid(), procs)) {
          if (exeOf(p) != gStampPath) continue;
          std::string wchan = readText("/proc/" + std::to_string(p) + "/wchan");
          for (const auto& e : procs) {
            if (e.pid == p) ++states[std::string(1, e.state) + (wchan.empty() || wchan == "0" ? "" : " " + wchan)];
          }
        }
        std::string seen;
        for (auto& [st, count] : states) seen += " " + std::to_string(count) + " " + st + ";";
        throw Failure(target.name() + ": only " + std::to_string(out.size()) + " of " +
                      std::to_string(n) + " children up after " +
                      std::to_string(timeoutMs / 1000) + " s (" + what + "); stamp children:" +
                      seen);
      }
      continue;
    }
    if (s->monotonicNs > afterNs) out[s->pid] = s->monotonicNs;
  }
  return out;
}

struct Latency {
  std::vector<int64_t> ns;
  int failures = 0;
  int extra = 0;  // stamps from a pid that no kill asked for
  std::string error;
};

double percentileUs(std::vector<int64_t> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  i = std::clamp<size_t>(i, 1, v.size()) - 1;
  return static_cast<double>(v[i]) / 1000.0;
}

// `services` children are killed in turn; `siblings` more run untouched beside them. A
// supervisor whose latency is over kSlowMedianNs after kSlowProbe kills stops at kSlowKills.
constexpr int kSlowProbe = 20;
constexpr int kSlowKills = 60;
constexpr int64_t kSlowMedianNs = 200'000'000;

Latency measureLatency(Target& target, int kills, int services, int siblings,
                       const std::string& tmp, std::mt19937_64& rng) {
  Latency out;
  StampFifo sock(tmp + "/stamps.fifo");
  target.start(services + siblings, sock.path());
  std::map<pid_t, int64_t> all = collectStamps(sock, static_cast<size_t>(services + siblings),
                                               180'000, 0, target, "starting");
  // The victims: `services` of them, at random.
  std::vector<std::pair<pid_t, int64_t>> pool(all.begin(), all.end());
  std::shuffle(pool.begin(), pool.end(), rng);
  std::map<pid_t, int64_t> upSince(pool.begin(), pool.begin() + services);
  sleepMs(2000);  // let the start-up work of every supervisor (status files, logs) settle
  while (sock.next(0)) ++out.extra;
  std::uniform_int_distribution<int64_t> jitterNs(0, 30'000'000);
  for (int k = 0; k < kills; ++k) {
    if (k == kSlowProbe && kills > kSlowKills) {
      std::vector<int64_t> sorted = out.ns;
      std::sort(sorted.begin(), sorted.end());
      if (!sorted.empty() && sorted[sorted.size() / 2] > kSlowMedianNs) kills = kSlowKills;
    }
    auto oldest = std::min_element(upSince.begin(), upSince.end(),
                                   [](auto& a, auto& b) { return a.second < b.second; });
    const pid_t victim = oldest->first;
    const int64_t at = std::max(oldest->second + kMinUpNs, monoNs()) + jitterNs(rng);
    for (int64_t left = at - monoNs(); left > 0; left = at - monoNs()) {
      checkAbort();
      if (left < 2'000'000) {  // the last stretch: sleep it, no polling
        std::this_thread::sleep_for(std::chrono::nanoseconds(left));
        break;
      }
      // Anything that arrives now was not asked for.
      if (auto s = sock.next(left / 1'000'000 - 1)) {
        ++out.extra;
        upSince[s->pid] = s->monotonicNs;
      }
    }
    const int64_t t0 = monoNs();
    ::kill(victim, SIGKILL);
    upSince.erase(victim);
    bool back = false;
    while (!back) {
      auto s = sock.next(t0 / 1'000'000 + kRestartTimeoutMs - monoNs() / 1'000'000);
      if (!s) break;
      if (upSince.contains(s->pid) || s->monotonicNs < t0) {
        ++out.extra;
        continue;
      }
      out.ns.push_back(s->monotonicNs - t0);
      upSince[s->pid] = s->monotonicNs;
      back = true;
    }
    if (!back) {
      ++out.failures;
      out.error = "no replacement within " + std::to_string(kRestartTimeoutMs / 1000) + " s";
      if (!target.alive()) out.error = "the supervisor died";
      break;
    }
  }
  target.stop();
  return out;
}

struct Memory {
  int children = 0;
  Usage with;      // with `children` children, at rest
  Usage idle;      // the difference over the idle window
  Usage without;   // with no child
  int idleRestarts = 0;
  double idleSeconds = 0;
  json byName, byNameWithout;
  bool ran = false;
  std::string error;
};

Memory measureMemory(Target& target, int children, int idleS, const std::string& tmp) {
  Memory m;
  m.children = children;
  {
    StampFifo sock(tmp + "/stamps.fifo");
    target.start(children, sock.path());
    collectStamps(sock, static_cast<size_t>(children), 180'000, 0, target, "starting");
    sleepMs(2000);  // let start-up work (state files, RUNNING transitions) finish
    while (sock.next(0)) {
    }
    auto side = target.supervisorSide();
    const size_t kids = Target::stampChildren().size();
    if (kids != static_cast<size_t>(children)) {
      throw Failure(target.name() + ": " + std::to_string(kids) + " children running, expected " +
                    std::to_string(children));
    }
    m.with = usageOf(side, true);
    m.byName = pssByName(side);
    Usage a = usageOf(side, false);
    const int64_t t0 = monoNs();
    sleepMs(int64_t{idleS} * 1000);
    Usage b = usageOf(side, false);
    m.idleSeconds = static_cast<double>(monoNs() - t0) / 1e9;
    m.idle.cpuTicks = b.cpuTicks - a.cpuTicks;
    m.idle.onCpuNs = b.onCpuNs - a.onCpuNs;
    m.idle.switches = b.switches - a.switches;
    m.idle.processes = b.processes;
    while (sock.next(0)) ++m.idleRestarts;
    target.stop();
  }
  {
    StampFifo sock(tmp + "/stamps.fifo");
    target.start(0, sock.path());
    sleepMs(2000);
    if (!target.alive()) throw Failure(target.name() + " did not run with no child");
    m.without = usageOf(target.supervisorSide(), true);
    m.byNameWithout = pssByName(target.supervisorSide());
    target.stop();
  }
  m.ran = true;
  return m;
}

struct Scale {
  int requested = 0;
  int ran = 0;
  std::string fitError;  // why `requested` cannot fit here
  double startS = 0;     // launch -> every child's first instruction
  double backS = 0;      // first kill -> every replacement's first instruction
  double killS = 0;      // time to send every SIGKILL
  int running = 0;       // children running after it all
  int lost = 0;
  int doubled = 0;
  bool statusChecked = false;
  bool ok = false;
  std::string error;
};

// Fds the busiest single process of `target` needs for `n` children, or 0 when no single
// process holds per-child fds; `who` names that process.
int64_t fdsNeeded(const Target& target, int n, std::string* who = nullptr) {
  // enjin-holder keeps both ends of a stdout and a stderr channel per child (so output survives
  // a ring2d restart); ring2d keeps 3 (two read ends, the log file).
  if (dynamic_cast<const EnjinTarget*>(&target)) {
    if (who) *who = "enjin-holder";
    return 4LL * n + 32;
  }
  if (dynamic_cast<const SupervisordTarget*>(&target)) {
    if (who) *who = "supervisord";
    return 5LL * n + 64;
  }
  return 0;
}

// The largest n <= requested that fits `target` on this machine, and why `requested` does not.
int fitScale(const Target& target, int requested, std::string& why) {
  rlimit nofile{};
  ::getrlimit(RLIMIT_NOFILE, &nofile);
  const int64_t pidMax = std::atoll(readText("/proc/sys/kernel/pid_max").c_str());
  const int64_t threadsMax = std::atoll(readText("/proc/sys/kernel/threads-max").c_str());
  const int64_t live = static_cast<int64_t>(scanProcs().size());
  // Per child: the child and its replacement may briefly coexist; multi-process supervisors add
  // one supervisor process per child.
  const bool perChildSupervisor =
      dynamic_cast<const S6Target*>(&target) || dynamic_cast<const RunitTarget*>(&target);
  const int64_t pidsPerChild = perChildSupervisor ? 3 : 2;
  auto fits = [&](int64_t n, std::string* reason) {
    std::string who;
    const int64_t fds = fdsNeeded(target, static_cast<int>(n), &who);
    if (fds > 0 && static_cast<rlim_t>(fds) > nofile.rlim_max) {
      if (reason) {
        *reason = who + " needs " + std::to_string(fds) + " fds for " + std::to_string(n) +
                  " children (4 a child), RLIMIT_NOFILE hard limit is " +
                  std::to_string(nofile.rlim_max);
      }
      return false;
    }
    if (live + pidsPerChild * n + 200 > std::min(pidMax, threadsMax)) {
      if (reason) {
        *reason = std::to_string(n) + " children need about " +
                  std::to_string(live + pidsPerChild * n + 200) + " pids, pid_max is " +
                  std::to_string(pidMax) + " and threads-max " + std::to_string(threadsMax);
      }
      return false;
    }
    if (target.maxServices() > 0 && n > target.maxServices()) {
      if (reason) {
        *reason = target.name() + " takes at most " + std::to_string(target.maxServices()) +
                  " services";
      }
      return false;
    }
    return true;
  };
  if (fits(requested, &why)) return requested;
  int n = requested;
  while (n > 0 && !fits(n, nullptr)) n -= 100;
  return std::max(n, 0);
}

Scale measureScale(Target& target, int requested, const std::string& tmp) {
  Scale sc;
  sc.requested = requested;
  sc.ran = fitScale(target, requested, sc.fitError);
  if (sc.ran <= 0) return sc;
  const int n = sc.ran;
  StampFifo sock(tmp + "/stamps.fifo");
  const int64_t t0 = monoNs();
  target.start(n, sock.path());
  auto first = collectStamps(sock, static_cast<size_t>(n), 300'000, 0, target, "starting all");
  int64_t last = 0;
  for (auto& [pid, ns] : first) last = std::max(last, ns);
  sc.startS = static_cast<double>(last - t0) / 1e9;
  sleepMs(1500);  // every child up for > 1 s: no throttle applies to the kill below

  auto* enjin = dynamic_cast<EnjinTarget*>(&target);
  std::set<pid_t> old;
  for (auto& [pid, ns] : first) old.insert(pid);
  if (enjin) {
    // ring2d learns each pid from the holder after the child started: give it time to catch
    // up, bounded, rather than judge it on one look.
    const int64_t until = monoNs() + 30'000'000'000;
    auto st = enjin->running();
    while ((!st || st->size() != static_cast<size_t>(n)) && monoNs() < until) {
      sleepMs(100);
      st = enjin->running();
    }
    if (!st || st->size() != static_cast<size_t>(n)) {
      throw Failure("ring2d reports " + std::to_string(st ? st->size() : 0) + " of " +
                    std::to_string(n) + " running before the kill");
    }
  }
  // Through pidfds: while the loop runs, a fast supervisor may already give a killed child's pid
  // to its replacement, which kill(pid) would then hit.
  std::vector<int> pidfds;
  for (pid_t p : old) {
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, p, 0U));
    if (fd < 0) throw Failure(target.name() + ": child " + std::to_string(p) + " gone before the kill");
    pidfds.push_back(fd);
  }
  const int64_t k0 = monoNs();
  for (int fd : pidfds) ::syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0U);
  sc.killS = static_cast<double>(monoNs() - k0) / 1e9;
  for (int fd : pidfds) ::close(fd);
  auto second = collectStamps(sock, static_cast<size_t>(n), 300'000, k0, target, "restarting all");
  last = 0;
  for (auto& [pid, ns] : second) last = std::max(last, ns);
  sc.backS = static_cast<double>(last - k0) / 1e9;

  // Nothing lost, nothing twice: every new pid is alive, no old one is, and no more stamps come.
  sleepMs(1000);
  while (auto s = sock.next(0)) {
    if (s->monotonicNs > k0 && !second.contains(s->pid)) ++sc.doubled;
  }
  auto live = Target::stampChildren();
  std::set<pid_t> liveSet(live.begin(), live.end());
  sc.running = static_cast<int>(live.size());
  for (auto& [pid, ns] : second) {
    if (!liveSet.contains(pid)) ++sc.lost;
  }
  for (pid_t p : live) {
    if (!second.contains(p)) ++sc.doubled;
  }
  if (enjin) {
    const int64_t until = monoNs() + 30'000'000'000;
    std::optional<std::map<std::string, int>> st;
    while (monoNs() < until) {
      st = enjin->running();
      if (st && st->size() == static_cast<size_t>(n)) break;
      sleepMs(100);
    }
    sc.statusChecked = true;
    std::set<int> pids;
    for (auto& [name, pid] : st ? *st : std::map<std::string, int>{}) {
      pids.insert(pid);
      if (!second.contains(pid)) ++sc.doubled;  // a pid ring2d reports that is not a new child
    }
    if (!st || pids.size() != static_cast<size_t>(n) || enjin->total() != static_cast<size_t>(n)) {
      sc.error = "ring2d reports " + std::to_string(pids.size()) + " distinct running pids of " +
                 std::to_string(n);
    }
  }
  sc.ok = sc.error.empty() && sc.lost == 0 && sc.doubled == 0 && sc.running == n;
  target.stop();
  return sc;
}

// ---------------------------------------------------------------------------------------------

void onSignal(int sig) { gSignal = sig; }

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "supervise_bench: %s\nusage: supervise_bench [--quick] [--only LIST] [--kills N] "
               "[--services N] [--siblings N] [--children N] [--idle-s S] [--scale N] "
               "[--scale-targets LIST] "
               "[--max-seconds S]\n",
               why);
  std::exit(2);
}

std::set<std::string> splitList(const std::string& s) {
  std::set<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.insert(item);
  }
  return out;
}

std::string cpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "?";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "--bare-loop") == 0) {
    return bareLoop(std::atoi(argv[2]), argv[3]);
  }
  bool quick = false;
  int kills = 300, services = 8, children = 1000, idleS = 10, scale = 5000, siblings = -1;
  int64_t maxSeconds = 0;
  std::string only = "bare,enjin,s6,runit,supervisord", scaleTargets = "bare,enjin,s6";
  bool onlyGiven = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value after " + a).c_str());
      return argv[++i];
    };
    auto number = [&]() {
      const std::string v = value();
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 0 || n > 1'000'000) usage(("bad number " + v).c_str());
      return static_cast<int>(n);
    };
    if (a == "--quick") {
      quick = true;
    } else if (a == "--only") {
      only = value();
      onlyGiven = true;
    } else if (a == "--kills") {
      kills = number();
    } else if (a == "--services") {
      services = std::max(1, number());
    } else if (a == "--children") {
      children = number();
    } else if (a == "--siblings") {
      siblings = number();
    } else if (a == "--idle-s") {
      idleS = number();
    } else if (a == "--scale") {
      scale = number();
    } else if (a == "--scale-targets") {
      scaleTargets = value();
    } else if (a == "--max-seconds") {
      maxSeconds = number();
    } else {
      usage(("unknown argument " + a).c_str());
    }
  }
  if (quick) {
    kills = 20;
    services = 4;
    children = 50;
    idleS = 2;
    scale = 50;
    if (siblings < 0) siblings = 50;
    if (!onlyGiven) only = "bare,enjin";
    scaleTargets = "enjin";
    if (maxSeconds == 0) maxSeconds = 100;
  }
  if (maxSeconds == 0) maxSeconds = 2400;
  if (siblings < 0) siblings = children;
  gDeadlineNs = monoNs() + maxSeconds * 1'000'000'000;
  const std::set<std::string> wanted = splitList(only);
  const std::set<std::string> scaleWanted = splitList(scaleTargets);

  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  gBinDir = self.parent_path().string();
  gStampPath = std::filesystem::weakly_canonical(gBinDir + "/stamp_child", ec).string();
  for (const char* need : {"stamp_child", "ring2d", "enjin-holder"}) {
    if (::access((gBinDir + "/" + need).c_str(), X_OK) != 0) {
      std::fprintf(stderr, "supervise_bench: %s/%s missing (build it first)\n", gBinDir.c_str(), need);
      return 1;
    }
  }

  // Orphans (children of a killed supervisor) come back here, to be killed and reaped.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  struct sigaction sa{};
  sa.sa_handler = onSignal;
  for (int s : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(s, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  rlimit nofile{};
  ::getrlimit(RLIMIT_NOFILE, &nofile);
  nofile.rlim_cur = nofile.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &nofile);

  char tmpl[] = "/tmp/enjin-sbench-stamps-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return 1;
  const std::string tmp = tmpl;

  std::vector<std::unique_ptr<Target>> targets;
  targets.push_back(std::make_unique<BareTarget>());
  targets.push_back(std::make_unique<EnjinTarget>());
  targets.push_back(std::make_unique<S6Target>());
  targets.push_back(std::make_unique<RunitTarget>());
  targets.push_back(std::make_unique<SupervisordTarget>());
  const std::map<std::string, std::string> keyOf = {{"bare loop", "bare"},   {"enjin ring2d", "enjin"},
                                                    {"s6", "s6"},           {"runit", "runit"},
                                                    {"supervisord", "supervisord"}};
  for (const auto& w : wanted) {
    bool known = false;
    for (auto& [n, k] : keyOf) known = known || k == w;
    if (!known) usage(("unknown supervisor " + w + " (known: bare,enjin,s6,runit,supervisord)").c_str());
  }

  std::string load = readText("/proc/loadavg");
  load = load.substr(0, load.find(' ', load.find(' ', load.find(' ') + 1) + 1));
  utsname uts{};
  ::uname(&uts);
  std::printf("supervise_bench%s: %ld cores, %s, kernel %s, load average %s\n",
              quick ? " --quick (smoke test: figures meaningless)" : "", ::sysconf(_SC_NPROCESSORS_ONLN),
              cpuModel().c_str(), uts.release, load.c_str());
  std::fflush(stdout);

  json result = {{"bench", "supervise"},
                 {"quick", quick},
                 {"kills", kills},
                 {"services", services},
                 {"children", children},
                 {"idle_s", idleS},
                 {"min_up_ms", kMinUpNs / 1'000'000},
                 {"loadavg_start", load}};
  json jl = json::object(), jlSiblings = json::object(), jm = json::object(), js = json::object();
  bool broke = false;
  std::vector<std::string> problems;
  std::mt19937_64 rng(0x5eed);

  auto note = [&](const std::string& what) {
    problems.push_back(what);
    std::printf("  !! %s\n", what.c_str());
    std::fflush(stdout);
  };

  try {
    // ---- 1. restart latency, alone and beside many idle siblings
    auto latencySection = [&](int idleSiblings, const std::string& title, json& into) {
      std::printf("\n%s: SIGKILL -> the replacement's first instruction (%d kills, %d services "
                  "killed in turn, %d idle siblings, every victim up >= %lld ms, one restart at "
                  "a time)\n",
                  title.c_str(), kills, services, idleSiblings,
                  static_cast<long long>(kMinUpNs / 1'000'000));
      std::printf("%-14s %6s %10s %10s %10s %10s %10s %5s %5s  %s\n", "supervisor", "kills", "min",
                  "median", "p90", "p99", "max", "fail", "load", "throttle (fact)");
      std::fflush(stdout);
      for (auto& t : targets) {
        const std::string key = keyOf.at(t->name());
        if (!wanted.contains(key)) continue;
        if (auto why = t->missing(); !why.empty()) {
          std::printf("%-14s %s\n", t->name().c_str(), why.c_str());
          into[key] = {{"skipped", why}};
          continue;
        }
        int sibs = idleSiblings;
        if (t->maxServices() > 0) sibs = std::min(sibs, t->maxServices() - services);
        try {
          std::string rowLoad = readText("/proc/loadavg");
          rowLoad = rowLoad.substr(0, rowLoad.find(' '));
          Latency l = measureLatency(*t, kills, services, sibs, tmp, rng);
          auto us = [&](double q) { return percentileUs(l.ns, q); };
          std::printf("%-14s %6zu %8.0fus %8.0fus %8.0fus %8.0fus %8.0fus %5d %5s  %s%s\n",
                      t->name().c_str(), l.ns.size(), us(0.0), us(0.5), us(0.9), us(0.99),
                      us(1.0), l.failures, rowLoad.c_str(), t->throttle().c_str(),
                      sibs != idleSiblings ? (" [" + std::to_string(sibs) + " siblings]").c_str() : "");
          std::fflush(stdout);
          const double mean =
              l.ns.empty() ? 0.0
                           : std::accumulate(l.ns.begin(), l.ns.end(), 0.0) / 1000.0 /
                                 static_cast<double>(l.ns.size());
          into[key] = {{"kills", l.ns.size()},      {"siblings", sibs},
                       {"loadavg_1min_before", rowLoad},
                       {"min_us", us(0.0)},         {"median_us", us(0.5)},
                       {"p90_us", us(0.9)},         {"p99_us", us(0.99)},
                       {"max_us", us(1.0)},         {"mean_us", mean},
                       {"failures", l.failures},    {"unexpected_stamps", l.extra},
                       {"throttle", t->throttle()}, {"settings", t->settings()}};
          if (l.failures > 0 || l.extra > 0) {
            broke = true;
            note(t->name() + ": " + (l.failures > 0 ? l.error : "") +
                 (l.extra > 0 ? " " + std::to_string(l.extra) + " unexpected stamps" : ""));
          }
        } catch (const Failure& f) {
          t->stop();
          broke = true;
          into[key] = {{"error", f.what()}};
          note(f.what());
        }
      }
    };
    latencySection(0, "1. Restart latency", jl);
    if (siblings > 0) {
      latencySection(siblings, "1b. Restart latency beside " + std::to_string(siblings) +
                                   " idle children", jlSiblings);
    }

    // ---- 2 + 3. memory and idle cost
    std::printf("\n2. Memory: PSS of every supervisor-side process with %d children and with 0\n",
                children);
    std::printf("%-14s %6s %11s %11s %10s %14s %16s\n", "supervisor", "procs", "PSS total",
                "PSS/child", "PSS, 0 ch.", "(PSS-PSS0)/ch", "+kernel/child*");
    std::fflush(stdout);
    std::vector<std::pair<std::string, Memory>> mems;
    for (auto& t : targets) {
      const std::string key = keyOf.at(t->name());
      if (!wanted.contains(key) || !t->missing().empty()) continue;
      if (t->maxServices() > 0 && children > t->maxServices()) {
        std::printf("%-14s takes at most %d services\n", t->name().c_str(), t->maxServices());
        continue;
      }
      try {
        Memory m = measureMemory(*t, children, idleS, tmp);
        const double n = std::max(1, children);
        const double kernel = static_cast<double>(m.with.pteKib) + 16.0 * static_cast<double>(m.with.threads);
        std::printf("%-14s %6d %8lld KiB %7.1f KiB %6lld KiB %10.1f KiB %12.1f KiB\n",
                    t->name().c_str(), m.with.processes, static_cast<long long>(m.with.pssKib),
                    static_cast<double>(m.with.pssKib) / n, static_cast<long long>(m.without.pssKib),
                    static_cast<double>(m.with.pssKib - m.without.pssKib) / n, kernel / n);
        std::fflush(stdout);
        jm[key] = {{"children", children},
                   {"processes", m.with.processes},
                   {"threads", m.with.threads},
                   {"pss_kib", m.with.pssKib},
                   {"pss_per_child_kib", static_cast<double>(m.with.pssKib) / n},
                   {"pss_no_children_kib", m.without.pssKib},
                   {"pss_marginal_per_child_kib", static_cast<double>(m.with.pssKib - m.without.pssKib) / n},
                   {"page_tables_kib", m.with.pteKib},
                   {"kernel_per_child_kib_estimate", kernel / n},
                   {"idle_seconds", m.idleSeconds},
                   {"idle_cpu_ms_stat", static_cast<double>(m.idle.cpuTicks) * 1000.0 / static_cast<double>(::sysconf(_SC_CLK_TCK))},
                   {"idle_cpu_ms_schedstat", static_cast<double>(m.idle.onCpuNs) / 1e6},
                   {"idle_context_switches", m.idle.switches},
                   {"idle_restarts", m.idleRestarts},
                   {"pss_by_process", m.byName},
                   {"pss_by_process_no_children", m.byNameWithout}};
        mems.emplace_back(t->name(), m);
      } catch (const Failure& f) {
        t->stop();
        broke = true;
        jm[key] = {{"error", f.what()}};
        note(f.what());
      }
    }
    std::printf("  * page tables (VmPTE) + 16 KiB kernel stack per thread, per child: kernel memory PSS does not show\n");
    for (auto& [name, m] : mems) {
      std::string line;
      for (auto& [comm, v] : m.byName.items()) {
        line += "  " + comm + " " + std::to_string(v["pss_kib"].get<int64_t>()) + " KiB";
        if (v["processes"].get<int>() > 1) line += " (" + std::to_string(v["processes"].get<int>()) + " processes)";
      }
      std::printf("  %-12s with children:%s\n", name.c_str(), line.c_str());
    }
    std::printf("\n3. Idle cost over %d s with %d children (sum over the same processes)\n", idleS, children);
    std::printf("%-14s %14s %18s %18s %10s\n", "supervisor", "utime+stime", "on-CPU (schedstat)",
                "context switches", "per second");
    for (auto& [name, m] : mems) {
      std::printf("%-14s %11.0f ms %15.2f ms %18lld %10.1f\n", name.c_str(),
                  static_cast<double>(m.idle.cpuTicks) * 1000.0 / static_cast<double>(::sysconf(_SC_CLK_TCK)),
                  static_cast<double>(m.idle.onCpuNs) / 1e6, static_cast<long long>(m.idle.switches),
                  static_cast<double>(m.idle.switches) / std::max(0.001, m.idleSeconds));
      if (m.idleRestarts > 0) note(name + ": " + std::to_string(m.idleRestarts) + " restarts while idle");
    }
    std::fflush(stdout);

    // ---- 4. scale
    if (scale > 0) {
      std::printf("\n4. Scale: %d children started, all SIGKILLed at once, all back\n", scale);
      std::printf("%-14s %8s %12s %12s %12s %8s %6s %8s  %s\n", "supervisor", "children", "all up",
                  "kill all", "all back", "running", "lost", "doubled", "result");
      std::fflush(stdout);
      for (auto& t : targets) {
        const std::string key = keyOf.at(t->name());
        if (!wanted.contains(key) || !scaleWanted.contains(key)) continue;
        if (auto why = t->missing(); !why.empty()) {
          std::printf("%-14s %s\n", t->name().c_str(), why.c_str());
          continue;
        }
        try {
          Scale sc = measureScale(*t, scale, tmp);
          if (!sc.fitError.empty()) {
            broke = true;
            note("scale " + std::to_string(scale) + " does not fit: " + sc.fitError +
                 (sc.ran > 0 ? "; running " + std::to_string(sc.ran) + " instead" : ""));
          }
          if (sc.ran > 0) {
            std::printf("%-14s %8d %10.2f s %10.3f s %10.2f s %8d %6d %8d  %s\n", t->name().c_str(),
                        sc.ran, sc.startS, sc.killS, sc.backS, sc.running, sc.lost, sc.doubled,
                        sc.ok ? (sc.statusChecked ? "ok (status agrees)" : "ok") : ("FAILED " + sc.error).c_str());
          }
          std::fflush(stdout);
          js[key] = {{"requested", sc.requested}, {"ran", sc.ran},         {"fit_error", sc.fitError},
                     {"all_up_s", sc.startS},     {"kill_all_s", sc.killS}, {"all_back_s", sc.backS},
                     {"running", sc.running},     {"lost", sc.lost},        {"doubled", sc.doubled},
                     {"status_checked", sc.statusChecked}, {"ok", sc.ok},   {"error", sc.error}};
          if (sc.ran > 0 && !sc.ok) {
            broke = true;
            note(t->name() + " scale: " + (sc.error.empty() ? "lost or doubled children" : sc.error));
          }
        } catch (const Failure& f) {
          t->stop();
          broke = true;
          js[key] = {{"error", f.what()}};
          note(f.what());
        }
      }
    }
  } catch (const Abort& a) {
    killEverything();
    broke = true;
    note(std::string("aborted: ") + a.what());
  } catch (const std::exception& e) {
    killEverything();
    broke = true;
    note(std::string("error: ") + e.what());
  }
  killEverything();
  std::filesystem::remove_all(tmp, ec);

  std::string loadEnd = readText("/proc/loadavg");
  loadEnd = loadEnd.substr(0, loadEnd.find(' ', loadEnd.find(' ', loadEnd.find(' ') + 1) + 1));
  result["latency"] = jl;
  result["latency_with_siblings"] = jlSiblings;
  result["siblings"] = siblings;
  result["memory"] = jm;
  result["scale"] = js;
  result["loadavg_end"] = loadEnd;
  result["problems"] = problems;
  result["ok"] = !broke;
  std::printf("\nload average at the end: %s\n", loadEnd.c_str());
  std::printf("BENCH_JSON %s\n", result.dump().c_str());
  return broke ? 1 : 0;
}
