#include "parent_main.hpp"

#include <malloc.h>

#include <CLI/CLI.hpp>
#include <string>

#include "enjin/ring/daemon.hpp"
#include "enjin/supervise/observation.hpp"
#include "enjin/supervise/spawn.hpp"

namespace enjin::daemons {

namespace {
// More than a daemon's threads: the API's pool (32 by default), the metrics listener, the fleet's
// etcd workers, libzmq's I/O threads.
constexpr int kMallocArenas = 128;
}  // namespace

int parentMain(int ring, int argc, char** argv) {
  // glibc gives threads malloc arenas up to 8 per core and then makes them share, the main
  // thread's arena included: the reactor (the main thread) then waits on the arena's lock while an
  // HTTP thread, at a lower priority, holds it. Enough arenas for every thread of the daemon keep
  // the reactor's to itself. Set before any thread starts.
  (void)::mallopt(M_ARENA_MAX, kMallocArenas);
  CLI::App app{ring == 0
                   ? "ring0d - enjin's meta ring: creates, keys and supervises the ring-1 nodes"
                   : "ring1d - enjin's infrastructure ring: creates, keys and supervises the "
                     "ring-2 nodes its parent asks for"};
  ring::ParentDaemonOptions o;
  o.ring = ring;
  o.configPath = ring == 0 ? "/etc/enjin/ring0d.toml" : "";
  o.holderExe = ring::besideSelf("enjin-holder");
  auto* cfgOpt = app.add_option("--config", o.configPath, "The config file (TOML)");
  if (ring == 0) {
    cfgOpt->capture_default_str();
  } else {
    cfgOpt->required();
  }
  app.add_flag("--check-config", o.checkOnly,
               "Check the config, print a summary and exit (0 valid, 1 not)");
  if (ring == 0) {
    app.add_flag("--init", o.initOnly,
                 "Create the state dir, the root key and the store, print the public key and exit "
                 "(a plain start does the same when they are missing); the first --init also "
                 "creates the API user 'admin' and prints 'admin password: ...' once");
    app.add_option("--admin-password-file", o.adminPasswordFile,
                   "With --init: take the admin's password from this file (mode 0600) instead of "
                   "making one up");
    app.add_option("--join", o.joinToken,
                   "Join the fleet of the [fleet] table's etcd with this enrolment token (from "
                   "`enjinctl fleet token` on a member; single use, expiring). Needed once: a "
                   "member stays one");
  }
  app.add_option("--state-dir", o.stateDir, "Overrides the config's state_dir");
  app.add_option("--log-level", o.logLevel, "Overrides the config's log_level");
  app.add_option("--holder", o.holderExe, "Path of enjin-holder")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  // How a child node's daemon is started. A ring-2 node may also be a tenant with ids of its
  // own (unix-user, sandbox: include/enjin/ring/tenant.hpp); a ring-1 node runs as ring0d's
  // user (checkNodeStrategy says so). ring0d knows them all, to check its whole file.
  supervise::SpawnRegistry nodeStrategies;
  nodeStrategies.add(supervise::makeExecStrategy());
  nodeStrategies.add(supervise::makeUnixUserStrategy());
  nodeStrategies.add(supervise::makeSandboxStrategy());
  // What ring2d checks processes against (daemons/ring2d/main.cpp), for ring0d's config.
  supervise::SpawnRegistry processStrategies;
  processStrategies.add(supervise::makeExecStrategy());
  processStrategies.add(supervise::makeUnixUserStrategy());
  // A child node's daemon is watched by its exit and by READY=1 on its notify socket.
  supervise::ObservationRegistry nodeObservations;
  nodeObservations.add(supervise::makeProcessObservation());
  nodeObservations.add(supervise::makeNotifyObservation());
  o.nodeStrategies = &nodeStrategies;
  o.nodeObservations = &nodeObservations;
  o.processStrategies = &processStrategies;
  return ring::runParentDaemon(o);
}

}  // namespace enjin::daemons
