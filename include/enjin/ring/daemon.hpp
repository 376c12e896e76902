// What the three ring daemons share: their state dir rules, their lock, their limits (the
// steps around them are DaemonRunner's, runner.hpp), and ring0d and ring1d, which are the same
// program at two rings.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "enjin/base/result.hpp"
#include "enjin/base/unique_fd.hpp"

namespace enjin {
class Reactor;
namespace store {
class Store;
}
namespace supervise {
class ObservationRegistry;
class SpawnRegistry;
}
}  // namespace enjin

namespace enjin::ring {

// NAME in the folder of the running executable (where the build and `make install` put the
// daemons side by side); NAME alone if that cannot be read.
std::string besideSelf(const std::string& name);

// The state dir holds sockets that control every supervised process and the files the daemon
// trusts: it must be this user's alone. Created 0700 if missing; an existing dir owned by
// someone else, or writable by group or others, is refused rather than fixed, since someone
// else may already have put something in it.
Status checkStateDir(const std::string& dir);

// One daemon per state dir: an flock on DIR/lock held by the returned fd for the life of the
// process (close-on-exec; the kernel drops it when the daemon dies, even by kill -9). The file
// holds the owner's pid, for the error message.
Result<UniqueFd> lockStateDir(const std::string& dir, std::string_view daemon);

// Every supervised process costs a few fds: raise the soft limit to the hard one. The
// processes get the soft limit the daemon was started with, through the holder's environment.
void raiseFdLimit();

// Fault injection for tests: the share of received bus messages to drop, from ENJIN_FAULT_DROP
// (0..1), honoured only in builds configured with ENJIN_FAULT_INJECTION=ON; 0 otherwise.
double faultDropFraction();
// Whether to drop this one message, with probability `fraction` (0: never, and no draw).
bool faultDropThis(double fraction, const std::function<uint64_t()>& random);

// The spec a node last applied and its digest, kept in its store (empty: none yet).
struct AppliedSpec {
  std::string json;
  std::string digest;
};
Result<AppliedSpec> loadAppliedSpec(const store::Store& store);

// Applies a spec from the parent, storing it first: a daemon killed in between comes back
// with it. If `apply` fails, the previous spec is stored again and `applied` is unchanged;
// otherwise `applied` is the new one.
Status applyAndStoreSpec(store::Store& store, AppliedSpec& applied, AppliedSpec next,
                         const std::function<Status()>& apply);

// Keeps telling whoever started this daemon (NOTIFY_SOCKET: systemd, or the parent's engine)
// that it lives: WATCHDOG=1 at half the interval asked for, and READY=1 again on every beat
// once `ready()` holds, so a parent that re-adopted the daemon without seeing the first
// READY=1 learns it. A node (`nodeHeartbeatMs` > 0) beats at least once a heartbeat. Nothing
// when no one listens. `reactor` must outlive the beat.
void startNotifyBeat(Reactor& reactor, int64_t nodeHeartbeatMs, std::function<bool()> ready);

struct DaemonConfig;
struct NodeSpec;

// ring0d's config checked as far down as it reaches before anything runs: every node's
// strategy against `nodeStrategies` (the registry its daemon is started with) and every
// process of every ring-2 node against `processStrategies` (what ring2d will check it
// against), so a config that passes --check-config does not fail three rings down.
// One node of `ring` and everything below it, checked as checkConfig checks a file's nodes (the
// API checks the nodes it is given so).
Status checkNodeTree(const NodeSpec& node, int ring, const supervise::SpawnRegistry& nodeStrategies,
                     const supervise::SpawnRegistry& processStrategies);
Status checkConfig(const DaemonConfig& config, const supervise::SpawnRegistry& nodeStrategies,
                   const supervise::SpawnRegistry& processStrategies);

// What ring0d's and ring1d's command lines say (parsed in daemons/common/parent_main.cpp), and
// the registries their main() builds.
struct ParentDaemonOptions {
  int ring = 0;            // 0: ring0d, 1: ring1d
  std::string configPath;  // the config file (TOML)
  std::string stateDir;    // overrides the config's state_dir when set
  std::string logLevel;    // overrides the config's log_level when set
  std::string holderExe;   // path of enjin-holder
  bool checkOnly = false;  // --check-config: check, print a summary, exit
  bool initOnly = false;   // --init (ring0d): create state dir, root key and store, exit
  std::string adminPasswordFile;  // --admin-password-file (with --init): the admin's password
  std::string joinToken;          // --join (ring0d with [fleet]): an enrolment token
  // The strategies a child node's daemon may be started with (ParentOptions::nodeStrategies).
  const supervise::SpawnRegistry* nodeStrategies = nullptr;
  // The strategies ring-2 processes are checked against (ring0d's config, see checkConfig).
  const supervise::SpawnRegistry* processStrategies = nullptr;
  // How a child node's daemon is watched (ParentOptions::nodeObservations).
  const supervise::ObservationRegistry* nodeObservations = nullptr;
};

// The daemon ring0d (ring 0) and ring1d (ring 1) are: returns the process's exit code.
int runParentDaemon(const ParentDaemonOptions& options);

}  // namespace enjin::ring
