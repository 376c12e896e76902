// What supervise_bench needs from the machine: time and stopping, /proc, starting and killing
// processes, and the FIFO the stamp children report on (tests/helpers/stamp_child.c).
#pragma once

#include <sys/types.h>

#include <csignal>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace enjin::bench {

// ---------------------------------------------------------------------------------------------
// Time, stopping, failures

extern volatile sig_atomic_t gSignal;  // set by the bench's signal handler
extern int64_t gDeadlineNs;            // --max-seconds, on monoNs(); 0: none

int64_t monoNs();

// Thrown when the bench must stop at once (a signal, the deadline): main cleans up.
struct Abort : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws Abort once a signal came or the deadline passed.
void checkAbort();
// Sleeps, checking checkAbort() at least every 100 ms.
void sleepMs(int64_t ms);

// ---------------------------------------------------------------------------------------------
// /proc

std::string readText(const std::string& path);

struct ProcEntry {
  pid_t pid;
  pid_t ppid;
  char state;
};

std::vector<ProcEntry> scanProcs();
// Every process below `root` (not `root` itself).
std::vector<pid_t> descendants(pid_t root, const std::vector<ProcEntry>& procs);
std::string exeOf(pid_t pid);
// "Key:   123 kB" from a /proc file; -1 when absent.
int64_t procField(const std::string& text, const std::string& key);

struct Usage {
  int64_t pssKib = 0;
  int64_t pteKib = 0;
  int64_t threads = 0;
  int64_t cpuTicks = 0;  // utime + stime
  int64_t onCpuNs = 0;   // schedstat, every thread
  int64_t switches = 0;  // voluntary + involuntary, every thread
  int processes = 0;
};

std::string commOf(pid_t pid);
// PSS in KiB and process count per process name.
nlohmann::json pssByName(const std::vector<pid_t>& pids);
// CPU and context switches of `pids` (every thread), and their memory when `memory`.
Usage usageOf(const std::vector<pid_t>& pids, bool memory);

// ---------------------------------------------------------------------------------------------
// Processes the bench starts

extern std::string gBinDir;     // where this binary, ring2d, enjin-holder and stamp_child are
extern std::string gStampPath;  // realpath of stamp_child

std::string findOnPath(const std::string& name);
// Forks and execs `argv` in a session of its own, stdin /dev/null, stdout and stderr to `logPath`,
// with `extraEnv` added; SIGKILLed if the bench dies.
pid_t launch(const std::vector<std::string>& argv, const std::vector<std::string>& extraEnv,
             const std::string& logPath);
void reapAny();
// SIGKILLs every process below the bench (it is their subreaper, so orphans come back to it) and
// reaps them, until none is left.
void killEverything();

// ---------------------------------------------------------------------------------------------
// Stamps

struct Stamp {
  int64_t monotonicNs;
  int32_t pid;
  int32_t ppid;
};
static_assert(sizeof(Stamp) == 16);

// The FIFO the stamp children write their records to (see stamp_child.c). The bench keeps a
// write end open too, so the read end never sees end-of-file between children.
class StampFifo {
 public:
  explicit StampFifo(const std::string& path);
  ~StampFifo();
  StampFifo(const StampFifo&) = delete;
  StampFifo& operator=(const StampFifo&) = delete;
  const std::string& path() const { return path_; }

  // The next stamp, or nothing within `timeoutMs`.
  std::optional<Stamp> next(int64_t timeoutMs);

 private:
  std::string path_;
  int readFd_ = -1;
  int writeFd_ = -1;
  std::string buffered_;  // records are written whole (16 <= PIPE_BUF) but may be read in parts
};


// ---------------------------------------------------------------------------------------------
// Benches of the daemons: a failure that ends the run, loopback ports, wrk's report

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

double msSinceNs(int64_t t0);
// Waits up to `ms` for the child `pid` to exit: its exit code (128 + signal when killed), -1
// while it still runs, -2 when it is not a child.
int waitExit(pid_t pid, int64_t ms);
// What a bench of the daemons does first: it becomes the subreaper of whatever it starts (what a
// killed daemon leaves behind comes back to it), SIGINT, SIGTERM and SIGHUP set gSignal (so
// checkAbort() stops the run and main cleans up), SIGPIPE is ignored, and the run is bounded
// by `maxSeconds`.
void startBench(int maxSeconds);
// A loopback port nothing listens on now (throws Failure if none can be had).
int freeTcpPort();

// What `wrk --latency` printed: requests/s, the latency percentiles, the requests, the
// answers other than 2xx/3xx and the socket errors (connect, read, write, timeout together).
struct WrkResult {
  double requestsPerS = -1;
  double p50Ms = -1, p75Ms = -1, p90Ms = -1, p99Ms = -1;
  long requests = -1;
  long non2xx = 0;
  long socketErrors = 0;
};
WrkResult parseWrk(const std::string& text);

}  // namespace enjin::bench
