// enjinctl's subcommands. Each registers its flags on the CLI11 app and returns the exit code
// through the shared ExitCode slot when run.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace enjin::ctl {

// Exit codes of enjinctl, stable for scripts.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // the operation failed; stderr says why
inline constexpr int kExitUsage = 2;    // bad flags or arguments
inline constexpr int kExitTimeout = 3;  // a --timeout-ms ended before the work was done

void addKeygenCommand(CLI::App& app, int& exitCode);
void addBusCommands(CLI::App& app, int& exitCode);
// `stateDir` is read when a command runs (it is a global flag, parsed first).
void addNodeCommands(CLI::App& app, const std::string& stateDir, int& exitCode);
void addWatchCommand(CLI::App& app, const std::string& stateDir, int& exitCode);

}  // namespace enjin::ctl
