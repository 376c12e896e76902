// Spawn strategies: how a process is started. One interface, implementations registered by name
// in a SpawnRegistry that main() builds, so reading main() shows every strategy in use.
//
// Every strategy gives the same guarantees: the child runs in its own session and process group
// (pgid == pid), with stdin from /dev/null, stdout and stderr on the given fds, its listening
// sockets at fds 3 and up (SpawnRequest::listenFds), no other fd open,
// the signal mask empty and every signal disposition at its default. spawn() returns only after
// the child has exec'd; an exec failure comes back as an error naming the call and the cause
// ("exec /x: No such file or directory"), reported through a close-on-exec pipe.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/base/unique_fd.hpp"
#include "enjin/supervise/process_spec.hpp"

namespace enjin::supervise {

struct SpawnRequest {
  const ProcessSpec* spec = nullptr;
  int stdoutFd = -1;                  // becomes fd 1; -1: /dev/null
  int stderrFd = -1;                  // becomes fd 2; -1: /dev/null
  std::vector<std::string> extraEnv;  // "KEY=VALUE", e.g. NOTIFY_SOCKET; after spec->env
  std::string defaultCwd = "/";       // used when spec->cwd is empty
  // One listening socket per spec->sockets entry, in order: the child gets them at fds 3 and up
  // with LISTEN_FDS, LISTEN_FDNAMES (the entries' names) and LISTEN_PID (socket_table.hpp).
  std::vector<int> listenFds;
};

struct SpawnedProcess {
  pid_t pid = -1;
  UniqueFd pidfd;          // readable when the process exits
  uint64_t startTime = 0;  // /proc/PID/stat field 22: tells this process from a reused pid
};

// How strongly a strategy keeps its processes from the rest of the host, weakest first. A parent
// (or a compartment) may demand a minimum; a stronger strategy satisfies a weaker demand.
enum class IsolationStrength : int {
  kNone = 0,     // exec: the supervisor's own uid
  kUser = 1,     // unix-user: an account of its own
  kSandbox = 2,  // namespaces, a read-only root, a syscall filter
  kVm = 3,       // a kernel of its own
};
// "exec", "unix-user", "sandbox", "vm": each named after the weakest strategy giving it, the
// words a compartment's or a ring-1 node's min_isolation uses.
std::string_view isolationName(IsolationStrength strength);

// What a strategy can do beyond starting a process, for a caller to check a spec against.
struct SpawnCapabilities {
  bool switchesUser = false;    // runs its processes under another uid
  bool resourceLimits = false;  // applies per-process limits (rlimits, cgroups)
  bool namespaces = false;      // starts its processes in namespaces of their own
  bool operator==(const SpawnCapabilities&) const = default;
};

// A process a strategy started (or one it is handed back after re-adoption): what signal(),
// recover() and cleanup() need to find it.
struct SpawnedRef {
  pid_t pid = -1;  // also its process group: every strategy starts a new session
  uint64_t startTime = 0;
};

// The identity and environment an exec health check of a process runs with, so that the check
// sees what the process sees. uid and gid -1: the supervisor's own.
struct ExecIdentity {
  int uid = -1;
  int gid = -1;
  std::vector<std::string> env;  // "KEY=VALUE"; empty: a minimal one with PATH
};

// One way of starting processes. Every hook but spawn() has a default that is right for a
// strategy that only forks and execs, so a new strategy overrides just what it changes.
class SpawnStrategy {
 public:
  virtual ~SpawnStrategy() = default;
  virtual std::string_view name() const = 0;
  virtual SpawnCapabilities capabilities() const { return {}; }
  virtual IsolationStrength isolation() const { return IsolationStrength::kNone; }
  // Checks a spec before anything runs. The default accepts every spec.
  virtual Status validate(const ProcessSpec&) const { return {}; }
  virtual Result<SpawnedProcess> spawn(const SpawnRequest& request) const = 0;
  // Delivers `signal` to a running process: its whole process group when `group`, else the
  // leader alone. The default is kill(2); the leader is unreaped while this can be called, so
  // its pid (and pgid) cannot have been reused.
  virtual Status signal(const SpawnedRef& process, int signal, bool group) const;
  // The identity an exec check of `spec`'s process runs with. The default: the supervisor's
  // uid, with PATH and the spec's env.
  virtual Result<ExecIdentity> execIn(const ProcessSpec& spec) const;
  // Called by the holder for each running process when a new supervisor says hello (ring2d
  // restarted and re-adopts what it left): re-attach whatever the strategy keeps per process
  // outside the holder's own memory. The default has nothing to re-attach.
  virtual Status recover(const ProcessSpec&, const SpawnedRef&) const { return {}; }
  // Called once the process has exited for good and was reaped: remove what spawn() made for
  // it (a cgroup, a scratch dir). The default made nothing.
  virtual void cleanup(const ProcessSpec&, const SpawnedRef&) const {}
};

class SpawnRegistry {
 public:
  void add(std::unique_ptr<SpawnStrategy> strategy);
  // An unknown name is an error that lists the known ones.
  Result<const SpawnStrategy*> find(std::string_view name) const;
  // What spec.strategy's validate() says of `spec` (an unknown strategy is an error too).
  Status validate(const ProcessSpec& spec) const;

 private:
  std::vector<std::unique_ptr<SpawnStrategy>> strategies_;
};

// What a strategy applies to every process it starts, unless the spec says otherwise.
struct SpawnDefaults {
  // The soft RLIMIT_NOFILE of a process whose spec sets no "nofile" limit (capped at the hard
  // limit, which stays the inherited one). ring2d raises its own soft limit to the hard one, since
  // a supervisor needs many fds, and the holder inherits that; this gives the supervised
  // processes back the limit ring2d was started with (select() and old code expect 1024).
  // Unset: the limit is inherited as it is.
  std::optional<uint64_t> nofileSoft;
  // Inside a tenant node: every process runs as the node's app ids (set in the child with no
  // supplementary groups and PR_SET_NO_NEW_PRIVS), with this umask and HOME.
  struct RunAs {
    uid_t uid = 0;
    gid_t gid = 0;
    mode_t umask = 077;
    std::string home = "/";
  };
  std::optional<RunAs> runAs;
  // Inside a sandbox node: every process is started through enjin-sandbox (daemons/sandbox) as
  // PID 1 of new mount, pid, ipc, uts and network namespaces, with `hide` covered, its home
  // bound read-write and the seccomp filter; runAs gives the ids it drops to.
  struct Sandbox {
    std::string exe;                // enjin-sandbox
    std::vector<std::string> hide;  // host folders the process must not see (the tree's state)
  };
  std::optional<Sandbox> sandbox;
};

// fork/exec in a new session; the base of every other strategy.
std::unique_ptr<SpawnStrategy> makeExecStrategy(SpawnDefaults defaults = {});
// As exec, then setgroups -> setgid -> setuid to spec.user (every return checked),
// PR_SET_NO_NEW_PRIVS and spec.rlimits. Refuses uid 0. Or, with the numeric block of a tenant
// node ({"uid", "gid", "app_uid", "app_gid", ...}, src/supervise/spawn/unix_user.cpp), a node's
// daemon as root of a user namespace holding only its supervisor and app ids, in its cgroup.
std::unique_ptr<SpawnStrategy> makeUnixUserStrategy(SpawnDefaults defaults = {});
// unix-user's tenant form, whose node daemon also starts each of its processes in namespaces of
// their own (enjin-sandbox). Refuses the named form.
std::unique_ptr<SpawnStrategy> makeSandboxStrategy(SpawnDefaults defaults = {});

// Set by the unix-user and sandbox strategies in a tenant node daemon's environment: the
// isolation they put in force, as JSON ({"strategy", "namespaces", "uid", "app_uid", "cgroup",
// "limits", "seccomp", "sandbox_processes"}). The node's daemon reports it and, seeing it, runs
// every process of its own as the app uid (inside its namespace: 1).
inline constexpr const char* kTenantEnv = "ENJIN_TENANT";

// This process's tenant settings, from kTenantEnv: nullopt outside a tenant node (or when the
// variable is not the JSON the strategies write, which is logged by the caller as an error).
struct TenantEnv {
  SpawnDefaults::RunAs runAs;  // the app ids inside the node's user namespace: 1 and 1
  bool sandbox = false;        // each process goes into namespaces of its own
  std::vector<std::string> hide;  // with sandbox: what its processes must not see
  std::string isolationJson;   // what the strategy put in force, for the node's observations
};
Result<std::optional<TenantEnv>> tenantFromEnv();

// The start time of `pid` from /proc (clock ticks since boot), or an error if it is gone. A zombie
// still has one: it is readable until the process is reaped.
Result<uint64_t> processStartTime(pid_t pid);
// Field 22 (starttime) of a /proc/PID/stat line. The comm field (2) may hold spaces and ')', so
// fields are counted from the last ')'.
Result<uint64_t> parseProcStatStartTime(std::string_view statLine);

}  // namespace enjin::supervise
