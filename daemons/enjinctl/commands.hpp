// enjinctl's subcommands. Each registers its flags on the CLI11 app and returns the exit code
// through the shared ExitCode slot when run.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace CLI {
class App;
}

namespace enjin::ctl {

// Exit codes of enjinctl, stable for scripts.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;      // the operation failed; stderr says why
inline constexpr int kExitUsage = 2;        // bad flags or arguments
inline constexpr int kExitTimeout = 3;      // a --timeout-ms or a network timeout ended first
inline constexpr int kExitNotFound = 4;     // the server answered 404
inline constexpr int kExitDenied = 5;       // not logged in, or the server answered 401/403
inline constexpr int kExitUnreachable = 6;  // the server cannot be reached (refused, DNS, TLS)

// The footer of every --help: the exit codes above.
extern const char* const kExitCodesHelp;

// Draws what is below tree node `n` (its "nodes", then its "processes"), each through
// `row(prefix, child)` with the box-drawing branch for it under `indent`, and so on down.
using TreeRow = std::function<void(const std::string& prefix, const nlohmann::json& child)>;
void drawChildren(const nlohmann::json& n, const std::string& indent, const TreeRow& row);

void addKeygenCommand(CLI::App& app, int& exitCode);
void addBusCommands(CLI::App& app, int& exitCode);
// `stateDir` is read when a command runs (it is a global flag, parsed first).
void addNodeCommands(CLI::App& app, const std::string& stateDir, int& exitCode);
void addWatchCommand(CLI::App& app, const std::string& stateDir, int& exitCode);
// login, logout, the resource commands, offer, audit, __complete-nodes (api_commands.cpp).
void addApiCommands(CLI::App& app, const std::string& stateDir, int& exitCode);
// app deploy | ls | show | scale | restart | rm | logs, __complete-apps (app_commands.cpp).
void addAppCommands(CLI::App& app, int& exitCode);
// fleet status | token (fleet_commands.cpp); runFleetStatus is `status --fleet` too.
void addFleetCommands(CLI::App& app, int& exitCode);
int runFleetStatus(bool asJson);
// completion bash: a script built from the commands and flags registered on `app` so far.
void addCompletionCommand(CLI::App& app, int& exitCode);

// Whether status (and watch) go through the control API: credentials are stored, and the
// daemon was not named by --state-dir or ENJIN_STATE_DIR.
bool useApi(const CLI::App& app);
// The tree of ring0d through GET /v1/tree; nullopt after printing why on stderr, with the exit
// code in `exitCode`.
std::optional<nlohmann::json> apiTree(int& exitCode);
// One Server-Sent Event.
struct SseEvent {
  std::string id;
  std::string type;  // "message" when the server names none
  std::string data;  // the data: lines joined by '\n'
};
// GET `path` of the control API as a stream of events, each passed to `onEvent` (false: stop).
// Returns the exit code: 0 when stopped by `onEvent`, else why the stream ended (printed).
int apiEvents(const std::string& path, const std::function<bool(const SseEvent&)>& onEvent);
// Prints a tree as `enjinctl status` shows it (node_commands.cpp).
void printTree(const nlohmann::json& tree);

}  // namespace enjin::ctl
