// ring2d: one customer environment; supervises the processes of a spec file, or, as a ring-2
// node, the processes its parent asks for (src/ring/process_daemon.cpp). Here: the command line
// and the spawn strategies in use.
#include <CLI/CLI.hpp>
#include <string>

#include "enjin/ring/config.hpp"
#include "enjin/ring/daemon.hpp"
#include "enjin/ring/process_daemon.hpp"
#include "enjin/supervise/observation.hpp"
#include "enjin/supervise/socket_table.hpp"
#include "enjin/supervise/spawn.hpp"

int main(int argc, char** argv) {
  using namespace enjin;
  CLI::App app{"ring2d - supervise the processes of one enjin environment"};
  ring::ProcessDaemonOptions o;
  o.stateDir = ring::defaultStateDir(2);
  o.holderExe = ring::besideSelf("enjin-holder");
  auto* specOpt =
      app.add_option("--spec", o.specPath, "The spec file (TOML, one [[process]] table each)");
  app.add_option("--config", o.configPath,
                 "Run as a ring-2 node of a ring1d: the config file its parent wrote (identity, "
                 "keys, buses); the processes then come from the parent")
      ->excludes(specOpt);
  app.add_option("--state-dir", o.stateDir, "Where state, logs and sockets live")
      ->capture_default_str();
  auto* obs = app.add_option("--observe", o.observe,
                             "Publish signed observations on this ZeroMQ endpoint (bind)");
  app.add_option("--key", o.keyFile, "Signing key for --observe (mode 0600)")->needs(obs);
  app.add_option("--node", o.node, "This environment's name in observations (default: hostname)");
  app.add_option("--observe-interval-ms", o.observeIntervalMs,
                 "Republish the full state this often (the stream is level-triggered)")
      ->capture_default_str();
  app.add_option("--holder", o.holderExe, "Path of enjin-holder")->capture_default_str();
  app.add_option("--log-level", o.logLevel, "trace, debug, info, warn, error")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  // The listening sockets whoever started ring2d handed down (LISTEN_FDS, as systemd), for the
  // processes whose spec names them; taken before anything else could inherit them.
  auto sockets = supervise::socketsFromEnv();
  if (!sockets.ok()) {
    std::fprintf(stderr, "ring2d: %s\n", sockets.error().message.c_str());
    return 1;
  }
  o.sockets = &*sockets;

  // Every spawn strategy a spec may name; ring2d checks specs against them, and the holder,
  // which spawns (daemons/holder/main.cpp), has the same ones.
  // In a tenant node (the unix-user and sandbox node strategies) every process runs as the
  // node's app uid, so exec is the only strategy there.
  auto tenant = supervise::tenantFromEnv();
  if (!tenant.ok()) {
    std::fprintf(stderr, "ring2d: %s\n", tenant.error().message.c_str());
    return 1;
  }
  supervise::SpawnDefaults defaults;
  if (*tenant) defaults.runAs = (*tenant)->runAs;
  supervise::SpawnRegistry registry;
  registry.add(supervise::makeExecStrategy(defaults));
  if (!*tenant) registry.add(supervise::makeUnixUserStrategy());
  if (*tenant) o.isolationJson = (*tenant)->isolationJson;
  o.registry = &registry;
  // Every observation a spec's readiness and health checks may name, and the pushed ones the
  // supervisor always uses (the process's exit; WATCHDOG=1).
  supervise::ObservationRegistry observations;
  observations.add(supervise::makeProcessObservation());
  observations.add(supervise::makeNotifyObservation());
  observations.add(supervise::makeHeartbeatObservation());
  observations.add(supervise::makeTcpObservation());
  observations.add(supervise::makeHttpObservation());
  observations.add(supervise::makeExecObservation());
  o.observations = &observations;
  return ring::runProcessDaemon(std::move(o));
}
