// What to run and how to look after it: one [[process]] table of a ring2d spec file. Plain data;
// two specs compare equal exactly when a running process need not be restarted to apply them.
#pragma once

#include <csignal>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace enjin::supervise {

enum class RestartMode { kAlways, kOnFailure, kNever };

struct RestartConfig {
  RestartMode mode = RestartMode::kAlways;
  int64_t delayMs = 100;         // first backoff step; 0 = restart at once
  int64_t backoffMaxMs = 30'000; // the backoff doubles up to this
  int64_t stableAfterMs = 10'000;// uptime after which the backoff starts again from delayMs
  uint32_t maxRestarts = 5;      // restart intensity: at most this many restarts ...
  int64_t windowS = 60;          // ... in this many seconds, else the process is failed
  bool operator==(const RestartConfig&) const = default;
};

// How a process tells it is ready. Dependents start only after it is.
struct ReadinessConfig {
  std::string kind = "none";       // an observation strategy by name (observation.hpp): none,
                                   // notify, tcp, http
  std::string host = "127.0.0.1";  // kTcp
  int port = 0;                    // kTcp
  std::string url;                 // kHttp: http://HOST:PORT/PATH
  int64_t timeoutMs = 60'000;      // not ready by then: counted as a failed start
  int64_t watchdogMs = 0;          // kNotify: WATCHDOG=1 expected at least this often; 0 = off
  bool operator==(const ReadinessConfig&) const = default;
};

// A periodic health check (an observation strategy other than the process itself).
struct HealthConfig {
  std::string kind = "none";         // an observation strategy by name: none, tcp, http, exec
  std::string host = "127.0.0.1";    // kTcp
  int port = 0;                      // kTcp
  std::string url;                   // kHttp
  std::vector<std::string> command;  // kExec: healthy when it exits 0
  int64_t intervalMs = 10'000;
  int64_t timeoutMs = 2'000;
  uint32_t failures = 3;             // consecutive failures before the process is unhealthy
  bool restartWhenUnhealthy = true;
  bool operator==(const HealthConfig&) const = default;
};

struct LogConfig {
  uint64_t maxBytes = 10 << 20;  // rotate NAME.log when it would grow past this
  uint32_t keep = 5;             // NAME.log.1 .. NAME.log.KEEP
  bool operator==(const LogConfig&) const = default;
};

// A listening socket the process is handed at fd 3 and up (systemd's socket activation: LISTEN_FDS,
// LISTEN_FDNAMES, LISTEN_PID). The parent daemon holds it in its SocketTable (socket_table.hpp)
// and the holder keeps it across restarts, so a connection made while the process restarts waits
// in the accept queue.
struct SocketRef {
  std::string name;    // what the process sees in LISTEN_FDNAMES: [A-Za-z0-9_.-]{1,64}
  std::string source;  // its key in the parent daemon's socket table; may hold '/'
  bool operator==(const SocketRef&) const = default;
};

// At most this many sockets per process: they travel with the holder's messages, next to the
// output channels and the notify socket, within one message's fds.
inline constexpr size_t kMaxSockets = 16;

// [A-Za-z0-9_.-]{1,64}: a socket's name as LISTEN_FDNAMES carries it (no ':', its separator).
bool validSocketName(std::string_view name);
// A source key: 1 to 256 bytes, no NUL.
bool validSocketSource(std::string_view source);

struct ProcessSpec {
  std::string name;                       // [A-Za-z0-9_.-]{1,64}, unique in a spec
  std::vector<std::string> command;       // argv; command[0] is an absolute path or on PATH
  std::map<std::string, std::string> env; // added to a minimal environment (PATH, HOME, ...)
  std::string cwd;                        // empty: /
  std::string strategy = "exec";          // spawn strategy, by registry name
  // The strategy's own settings (a spec file's [process.<strategy>] table), as canonical JSON
  // text: a JSON object, keys sorted, no spaces; empty when there are none. Opaque here: the
  // strategy reads and checks it (SpawnStrategy::validate), so a new strategy brings new keys
  // without a field in every spec. exec knows "rlimits"; unix-user "user" and "rlimits".
  std::string strategyConfig;
  std::vector<std::string> dependsOn;
  std::vector<SocketRef> sockets;         // fds 3, 4, ... in this order
  RestartConfig restart;
  ReadinessConfig readiness;
  HealthConfig health;
  LogConfig log;
  int stopSignal = SIGTERM;
  int64_t stopTimeoutMs = 10'000;         // then SIGKILL to the whole process group
  // The holder stops the process (stopSignal to its group, SIGKILL after stopTimeoutMs) once no
  // supervisor has been connected to it for this long; 0: never, it waits to be re-adopted. For
  // a process that must not outlive the one who may run it (a fleet's ring-1 node, whose host
  // may hand it to another host once its ring0d has been gone a while).
  int64_t orphanStopMs = 0;

  bool operator==(const ProcessSpec&) const = default;
};

}  // namespace enjin::supervise
