// Per-node resource limits (memory, processes, CPU share, open files) and the means the host
// allows for enforcing them: a node's own cgroup (v2 when a delegated subtree is writable, else
// the v1 memory, pids and cpu controllers), and rlimits set in the child when no cgroup is
// usable. The level in force is found by probing (CgroupHost::detect) and reported with the
// node's observation (isolationReport), never assumed.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "enjin/base/result.hpp"

namespace enjin::supervise {

struct Limits {
  std::optional<uint64_t> memoryBytes;
  std::optional<uint64_t> processes;
  std::optional<double> cpu;  // a fraction of one CPU: 0.5 is half of one, 2 is two whole CPUs
  std::optional<uint64_t> openFiles;

  bool empty() const { return !memoryBytes && !processes && !cpu && !openFiles; }
  bool operator==(const Limits&) const = default;
};

// The `limits` table of a node, as JSON: {"memory": "256M", "processes": 128, "cpu": 0.5,
// "open_files": 1024}, every key optional. memory is a byte count or a string with a binary unit
// suffix K, M, G or T ("512K", "256M", "1G"), at least 1M; processes and open_files are positive
// integers; cpu is a number in [0.01, cpus] (0.01: the kernel's smallest CFS quota, 1 ms per
// 100 ms period). Errors (code 400) name the key and the cause: "memory: '12X': unknown unit
// 'X' (K, M, G or T)".
Result<Limits> parseLimits(const nlohmann::json& table, unsigned cpus);
// With the number of CPUs online.
Result<Limits> parseLimits(const nlohmann::json& table);

// The set limits only, memory as a byte count: {"memory": 268435456, "cpu": 0.5}. parseLimits
// reads it back to the same Limits.
nlohmann::json limitsToJson(const Limits& limits);

enum class CgroupLevel { kNone, kV1, kV2 };

// What the host lets enjin use, found by looking (nothing is created). v2: a cgroup2 mount
// (ROOT itself, or ROOT/unified) where our own cgroup lists memory, pids and cpu in
// cgroup.controllers and cgroup.subtree_control is writable. v1: ROOT/memory, ROOT/pids and
// ROOT/cpu are controller hierarchies and our own cgroup in each is writable. Otherwise none.
// Node cgroups go under our own cgroup (read from /proc/self/cgroup), in an `enjin` directory:
// they are nested in whatever holds us, so the host's limits on us bound them too.
class CgroupHost {
 public:
  // `selfCgroup` is the /proc/PID/cgroup file to read our own cgroup paths from; a fake tree's
  // tests pass their own.
  static CgroupHost detect(std::string root = "/sys/fs/cgroup",
                           std::string selfCgroup = "/proc/self/cgroup");

  CgroupLevel kind() const { return kind_; }
  // "v2", "v1" or "none".
  std::string level() const;
  // Why the levels above the one found were not usable, one line each ("v2: ...: cgroup.controllers
  // lacks pids"), for the daemon's log.
  const std::vector<std::string>& reasons() const { return reasons_; }

  // Where node cgroups are made. v1: the `enjin` directory in each of memory, pids and cpu
  // (in that order); v2: one directory. Empty at level none.
  const std::vector<std::string>& bases() const { return bases_; }
  // v2 only: the delegated directory (our own cgroup) whose subtree_control enables the
  // controllers for `enjin`.
  const std::string& delegated() const { return delegated_; }

  // A host at level none; what a node gets where nothing was probed.
  static CgroupHost none() { return CgroupHost{}; }

 private:
  CgroupLevel kind_ = CgroupLevel::kNone;
  std::vector<std::string> bases_;
  std::string delegated_;
  std::vector<std::string> reasons_;
};

// One node's cgroup: BASE/NAME in each controller of the host's level. Limits not set are
// written as "no limit", so a directory reused after a restart holds only what was asked.
class NodeCgroup {
 public:
  // Makes the node's directories (an existing one is reused) and writes the limits: v1
  // memory.limit_in_bytes, memory.oom_control (0: the kernel kills inside the cgroup, rather
  // than pausing it), pids.max, cpu.cfs_period_us and cpu.cfs_quota_us; v2 memory.max, pids.max,
  // cpu.max. `name` is a node name: letters, digits, '.', '_' and '-' (400 otherwise). Errors
  // name the file and the errno. Fails at level none (409).
  static Result<NodeCgroup> create(const CgroupHost& host, const std::string& name,
                                   const Limits& limits);
  // Re-attaches to a node's cgroup that exists already (after the daemon restarted); 404 when a
  // directory is missing.
  static Result<NodeCgroup> open(const CgroupHost& host, const std::string& name);

  NodeCgroup() = default;

  const std::string& name() const { return name_; }
  CgroupLevel kind() const { return kind_; }
  // The node's directories, one per controller (v1) or one (v2).
  const std::vector<std::string>& dirs() const { return dirs_; }

  // Moves `pid` (the whole process) into the node's cgroup in every controller.
  Status addProcess(pid_t pid) const;
  // The cgroup.procs files a child writes "0" to, to join before exec (joinCgroupsInChild).
  std::vector<std::string> procsFiles() const;

  // The pids in the node's cgroup (from the first controller's cgroup.procs).
  Result<std::vector<pid_t>> processes() const;

  // How many processes the kernel OOM-killed in this cgroup. v2: memory.events' oom_kill; v1:
  // memory.oom_control's oom_kill line. Kernels before 4.13 have no such line in v1; there the
  // answer is 1 when memory.failcnt > 0 (the limit was hit), which means an OOM kill only
  // together with a SIGKILL exit (wasOomKilled).
  Result<uint64_t> oomKills() const;

  // The limits the kernel holds now, read back from the files create wrote.
  Result<Limits> readLimits() const;

  // Kills what is left in the cgroup (SIGKILL; v2 cgroup.kill where there is one), waits up to
  // `waitMs` for it to empty, and removes the directories. Removing one that is already gone is
  // not an error.
  Status remove(int waitMs = 2000) const;

 private:
  // The checks create() and open() share, and a NodeCgroup with the name and level set.
  static Result<NodeCgroup> forNode(const CgroupHost& host, const std::string& name);
  std::string name_;
  CgroupLevel kind_ = CgroupLevel::kNone;
  std::vector<std::string> dirs_;  // v1: memory, pids, cpu; v2: one
};

// How many processes the kernel OOM-killed in this process's own memory cgroup (v2
// memory.events, v1 memory.oom_control), read from /proc/self/cgroup; nullopt when there is no
// such count (no memory controller, or an old kernel). A node's holder lives in its node's cgroup.
std::optional<uint64_t> ownOomKills(const std::string& root = "/sys/fs/cgroup",
                                    const std::string& selfCgroup = "/proc/self/cgroup");

// An exit was the kernel's OOM kill: SIGKILL, and the cgroup's count went up across the run.
bool wasOomKilled(int waitStatus, uint64_t oomKillsBefore, uint64_t oomKillsAfter);

// In a child between fork and exec: writes "0" (this process) to each file of
// NodeCgroup::procsFiles. Async-signal-safe (open, write, close on the strings' c_str(), made
// before fork). Returns 0, or the errno of the first failure.
int joinCgroupsInChild(const std::vector<std::string>& procsFiles) noexcept;

// The part of `limits` that rlimits enforce at `level`: open files at every level (cgroups have
// no descriptor limit); memory and processes too at level none. CPU has no rlimit (RLIMIT_CPU
// caps total seconds, not a share), so it is enforced only through a cgroup.
Limits rlimitPart(CgroupLevel level, const Limits& limits);

// In a child between fork and exec: sets RLIMIT_AS from memoryBytes, RLIMIT_NPROC from
// processes, RLIMIT_NOFILE from openFiles (soft and hard); cpu is ignored. Async-signal-safe: only
// setrlimit calls, nothing allocated (pass rlimitPart's result, made before fork). Returns 0, or
// the errno of the first failure.
int applyRlimits(const Limits& limits) noexcept;

// What a node's observation says under "isolation": {"cgroup": "v1", "limits": {...}}, the
// limits being those in force at that level (at none: memory, processes and open files through
// rlimits, cpu not enforced). A limit asked for but not enforced is listed under "unenforced".
nlohmann::json isolationReport(std::string_view level, const Limits& limits);

std::string_view levelName(CgroupLevel level);

}  // namespace enjin::supervise
