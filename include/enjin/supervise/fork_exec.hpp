// The fork/exec core shared by the spawn strategies (src/supervise/spawn). Not an API for
// daemons: it is public only so that tests/unit/spawn_test.cpp can drive every clone mode.
//
// A strategy turns a SpawnRequest into a ChildPlan in the parent: every string, path, limit and
// id the child needs is decided there (PATH lookup included), so that between clone and execve
// the child makes only async-signal-safe system calls, touches no lock and allocates nothing.
// forkExec() then runs the plan. In the child, in this order:
//   [kVfork: a private fd table holding only fds 0-2 and the low slots the parent put the
//   child's fds in] -> setsid -> every signal disposition to SIG_DFL -> stdin /dev/null, stdout,
//   stderr, listening sockets at 3 and up (LISTEN_PID written) -> close every fd above them ->
//   rlimits -> [setgroups(plan.groups) -> setgid -> setuid -> setuid(0)
//   must fail -> PR_SET_NO_NEW_PRIVS] -> umask -> chdir -> empty signal mask -> execve.
// A plan with a user namespace or cgroups is started with clone3 (no shared memory) and the child
// first waits at a gate: the parent writes the namespace's maps and the cgroup files, then lets
// it go. In a user namespace the child is that namespace's root on purpose, so the setuid(0)
// check is skipped there.
// Limits come before the credentials because raising a hard limit needs CAP_SYS_RESOURCE, which
// setuid takes away, and because the kernel checks RLIMIT_NPROC at setuid(). chdir comes after
// them so that a user is never started in a folder it could not enter itself.
// The first step that fails is reported to the parent through a close-on-exec pipe as
// {step, errno}; the child then _exit(127)s and the parent reaps it and returns the error.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/supervise/process_spec.hpp"
#include "enjin/supervise/spawn.hpp"

namespace enjin::supervise::spawn_detail {

// PATH of the minimal environment every child starts from.
inline constexpr const char* kBasePath =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct RlimitSetting {
  int resource = 0;
  rlimit value{};            // soft and hard both set to the spec's value
  const char* name = "";     // as in the spec ("nofile"): static storage, for error messages
};

// The RLIMIT_* for a spec name: as, core, cpu, data, fsize, memlock, nofile, nproc, stack.
Result<int> rlimitResource(std::string_view name);

// What every strategy checks: a command.
Status validateCommon(const ProcessSpec& spec);

// What the fork/exec strategies read from ProcessSpec::strategyConfig.
struct ForkExecConfig {
  std::string user;                         // unix-user: the account to run as
  std::map<std::string, uint64_t> rlimits;  // "nofile" -> soft = hard; names as rlimitResource
};

// Parses and checks `spec.strategyConfig` for `strategy` (the name errors start with): keys
// "rlimits", and "user" (required) when `withUser`; any other key is refused. An empty config is
// an empty ForkExecConfig, parsed for free.
Result<ForkExecConfig> parseForkExecConfig(const ProcessSpec& spec, std::string_view strategy,
                                           bool withUser);

struct Credentials {
  uid_t uid = 0;
  gid_t gid = 0;
};

// A user namespace the child is started in (clone3 with CLONE_NEWUSER). Its maps are written by
// the parent, which needs CAP_SETUID and CAP_SETGID, while the child waits at a gate before its
// first step; the child then stays root of that namespace (Credentials are ids inside it).
struct UserNamespace {
  std::string uidMap;  // /proc/PID/uid_map, e.g. "0 60001 1\n1 60002 1\n"
  std::string gidMap;  // /proc/PID/gid_map
};

struct ChildPlan {
  std::string path;               // the executable: command[0], or its match on the child's PATH
  std::vector<std::string> argv;  // the spec's command, command[0] as written
  std::vector<std::string> env;   // "KEY=VALUE", one per key
  std::string cwd;
  std::vector<RlimitSetting> rlimits;
  std::optional<Credentials> credentials;  // drop to these, then PR_SET_NO_NEW_PRIVS
  std::vector<gid_t> groups;               // the supplementary groups set with credentials
  std::optional<UserNamespace> userns;     // start in a user namespace of its own
  // Files the parent writes the child's pid to while the child waits at the gate (a node
  // cgroup's cgroup.procs): the child runs nothing of its own before it is inside.
  std::vector<std::string> cgroupProcs;
  std::optional<mode_t> umask;             // set before exec; unset: inherited
  // CLONE_NEW* namespaces (not CLONE_NEWUSER: see userns) the child starts in; it is then
  // cloned with clone3, without shared memory.
  uint64_t namespaces = 0;
  int stdoutFd = -1;                       // -1: /dev/null
  int stderrFd = -1;
  // Listening sockets, put at fds 3 .. 3 + n - 1 in this order, with LISTEN_FDS=n,
  // LISTEN_FDNAMES=listenNames and LISTEN_PID=<the child's pid> added to env (the pid written
  // by the child itself, into a buffer the envp reserves). None: no LISTEN_* at all.
  std::vector<int> listenFds;
  std::string listenNames;                 // "a:b", one name per fd
};

// request.spec; a request without one is a bug of the caller and aborts.
const ProcessSpec& requireSpec(const SpawnRequest& request);

// Builds the plan for `request`. The environment is `baseEnv` ("KEY=VALUE"), then spec.env, then
// request.extraEnv, a later entry replacing an earlier one with the same key. A command[0]
// without '/' is looked up on that environment's PATH, here, in the parent. The limits are
// `config.rlimits`, then what `defaults` sets for a limit the config leaves out.
Result<ChildPlan> makePlan(const SpawnRequest& request, std::vector<std::string> baseEnv,
                           const SpawnDefaults& defaults = {},
                           const ForkExecConfig& config = {});

// How the child is created. All three are correct; they differ in speed and in what they need.
enum class CloneMode {
  // clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD) on a small stack of its own: no page tables are
  // copied, so the cost does not grow with the parent's memory. The parent thread is suspended
  // until the child execs or exits.
  kVfork,
  // clone3(CLONE_PIDFD) without CLONE_VM: a fork that returns the pidfd atomically.
  kClone3,
  // fork() + pidfd_open(): the portable fallback.
  kFork,
};

// Runs `plan` and returns once the child has exec'd, or the error of the step that failed, the
// child reaped. Falls back to kFork when the kernel refuses the chosen mode.
Result<SpawnedProcess> forkExec(const ChildPlan& plan, CloneMode mode = CloneMode::kVfork);

}  // namespace enjin::supervise::spawn_detail
