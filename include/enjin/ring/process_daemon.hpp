// ring2d, the daemon of one customer environment: it supervises the processes of a spec file
// (standalone), or, as a ring-2 node of a ring1d, the processes its parent asks for. Its
// command line is parsed in daemons/ring2d/main.cpp, which also builds the registry of spawn
// strategies every spec is checked against.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/supervise/process_spec.hpp"

namespace enjin::supervise {
class ObservationRegistry;
class SpawnRegistry;
class SocketTable;
}

namespace enjin::ring {

// How often a standalone ring2d republishes its whole state on --observe (level-triggered: a
// lost message heals within one interval). A node republishes every heartbeat instead.
inline constexpr int64_t kDefaultObserveIntervalMs = 10'000;

// What ring2d's command line says.
struct ProcessDaemonOptions {
  std::string specPath;    // standalone: the spec file (TOML, one [[process]] table each)
  std::string configPath;  // as a ring-2 node: the config file its parent wrote
  std::string stateDir;    // standalone: where state, logs and sockets live
  std::string observe;     // standalone: publish signed observations here (bind); empty: none
  std::string keyFile;     // the signing key for `observe`
  std::string node;        // this environment's name in observations; empty: from the hostname
  std::string logLevel = "info";
  std::string holderExe;   // path of enjin-holder
  int64_t observeIntervalMs = kDefaultObserveIntervalMs;
  // Every spec (the file's, a reload's, the parent's) is checked against it before anything
  // runs. Required; must outlive runProcessDaemon.
  const supervise::SpawnRegistry* registry = nullptr;
  // The observation strategies readiness and health checks are made from. Required; must
  // outlive runProcessDaemon.
  const supervise::ObservationRegistry* observations = nullptr;
  // In a tenant node: the isolation its strategy put in force (JSON, supervise::kTenantEnv),
  // reported as "isolation" in every observation. Empty: {"strategy": "exec"}.
  std::string isolationJson;
  // The listening sockets ring2d was handed (LISTEN_FDS), for the processes whose spec names
  // them. Optional; must outlive runProcessDaemon.
  supervise::SocketTable* sockets = nullptr;
};

// Every process of `specs` checked by its spawn strategy; errors name `source` and the process.
Status validateProcessSpecs(const std::vector<supervise::ProcessSpec>& specs,
                            const std::string& source, const supervise::SpawnRegistry& registry);
// A spec file, loaded and checked.
Result<std::vector<supervise::ProcessSpec>> loadProcessSpecs(
    const std::string& path, const supervise::SpawnRegistry& registry);

// The daemon: returns the process's exit code (2: the options do not make sense).
int runProcessDaemon(ProcessDaemonOptions options);

}  // namespace enjin::ring
