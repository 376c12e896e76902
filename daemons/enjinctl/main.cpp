// enjinctl: the command-line client of enjin.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>

#include "commands.hpp"
#include "enjin/ring/config.hpp"

int main(int argc, char** argv) {
  CLI::App app{"enjinctl - drive and inspect an enjin ring hierarchy"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "enjinctl 0.1.0");
  std::string logLevel = "error";
  app.add_option("--log-level", logLevel, "trace, debug, info, warn, error or off")
      ->capture_default_str();

  // The daemon to talk to: ring0d's state dir by default (the whole tree), or any ring1d's or
  // ring2d's. ENJIN_STATE_DIR changes the default.
  std::string stateDir = enjin::ring::defaultStateDir(0);
  if (const char* env = ::getenv("ENJIN_STATE_DIR"); env != nullptr && *env != '\0') stateDir = env;
  app.add_option("--state-dir", stateDir, "The state directory of ring0d, ring1d or ring2d")
      ->capture_default_str();

  int exitCode = enjin::ctl::kExitOk;
  enjin::ctl::addKeygenCommand(app, exitCode);
  enjin::ctl::addBusCommands(app, exitCode);
  enjin::ctl::addNodeCommands(app, stateDir, exitCode);
  enjin::ctl::addWatchCommand(app, stateDir, exitCode);
  enjin::ctl::addApiCommands(app, stateDir, exitCode);
  enjin::ctl::addAppCommands(app, exitCode);
  enjin::ctl::addFleetCommands(app, exitCode);
  // Last: the script covers every command registered above.
  enjin::ctl::addCompletionCommand(app, exitCode);
  app.footer(enjin::ctl::kExitCodesHelp);

  // Logs go to stderr so stdout carries only the command's output.
  spdlog::set_default_logger(spdlog::stderr_color_mt("enjinctl"));
  app.parse_complete_callback([&] { spdlog::set_level(spdlog::level::from_str(logLevel)); });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : enjin::ctl::kExitUsage;
  }
  return exitCode;
}
