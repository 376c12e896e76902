#include "enjin/supervise/spec_file.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <csignal>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <toml++/toml.h>
#include <utility>
#include <vector>

#include "enjin/base/file.hpp"
#include "enjin/supervise/endpoint.hpp"
#include "enjin/supervise/spec_json.hpp"
#include "enjin/supervise/spec_toml.hpp"
#include "enjin/supervise/toml_fields.hpp"

namespace enjin::supervise {

namespace {

// Ranges, chosen here:
//  - every *_ms value is at most a year, so converting it to nanoseconds anywhere (int64) is far
//    from overflowing; delays and stop_timeout_ms may be 0 (at once), timeouts and intervals
//    must be >= 1 (0 would mean "fail at once" or a busy loop);
//  - backoff_max_ms >= restart_delay_ms, else the first delay would already be cut;
//  - max_restarts >= 1: 0 would turn restart = "always" into "fail on the first exit", which no
//    one means; restart = "never" says "do not restart";
//  - restart_window_s 1 s .. a year; health failures 1 .. 1000; keep 0 .. 100;
//    max_bytes >= 4096.
constexpr int64_t kMaxMs = int64_t{365} * 24 * 3600 * 1000;
constexpr int64_t kMaxWindowS = kMaxMs / 1000;
constexpr size_t kMaxNameBytes = 64;

struct NamedInt {
  std::string_view name;
  int value;
};

// With and without the SIG prefix. An integer stop_signal covers any other.
constexpr NamedInt kSignals[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT},   {"ABRT", SIGABRT},
    {"KILL", SIGKILL}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2},   {"ALRM", SIGALRM},
    {"TERM", SIGTERM}, {"WINCH", SIGWINCH},
};

constexpr std::string_view kProcessKeys[] = {
    "name", "command", "env", "cwd", "strategy", "depends_on", "sockets", "restart",
    "restart_delay_ms", "backoff_max_ms", "stable_after_ms", "max_restarts", "restart_window_s",
    "readiness", "readiness_timeout_ms", "watchdog_ms", "health", "log", "stop_signal",
    "stop_timeout_ms",
};
constexpr std::string_view kHealthKeys[] = {"check", "interval_ms", "timeout_ms", "failures",
                                            "restart"};
constexpr std::string_view kLogKeys[] = {"max_bytes", "keep"};

template <size_t N>
bool contains(const std::string_view (&list)[N], std::string_view s) {
  return std::find(std::begin(list), std::end(list), s) != std::end(list);
}

// Probes connect without a resolver (the reactor never blocks on DNS): numeric addresses only.
bool validHost(const std::string& host) {
  if (host == "localhost") return true;
  unsigned char buf[16];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::string numericOnly(const std::string& host) {
  return "host '" + host + "': expected a numeric IPv4 or IPv6 address or localhost";
}

// "HOST:PORT" (see parseHostPort) with a numeric HOST; or a bare "PORT" when `portOnly` is
// allowed. Returns an error text, or nothing and fills host and port.
std::optional<std::string> readHostPort(std::string_view s, bool portOnlyAllowed,
                                        std::string& host, int& port) {
  if (portOnlyAllowed && s.find(':') == std::string_view::npos) {
    auto p = parsePort(s);
    if (!p.ok()) return p.error().message;
    port = *p;
    return std::nullopt;
  }
  auto hp = parseHostPort(s);
  if (!hp.ok()) return hp.error().message;
  if (!validHost(hp->host)) return numericOnly(hp->host);
  host = std::move(hp->host);
  port = hp->port;
  return std::nullopt;
}

// http://HOST[:PORT][/PATH], HOST numeric. Returns an error text, or nothing.
std::optional<std::string> checkHttpUrl(std::string_view url) {
  auto e = parseEndpoint(url);
  if (!e.ok()) return e.error().message;
  const std::string quoted = "URL '" + std::string(url) + "': ";
  if (e->scheme == "https") return quoted + "https is not supported, only http://";
  if (e->scheme != "http") return quoted + "expected http://HOST[:PORT][/PATH]";
  if (!validHost(e->host)) return quoted + numericOnly(e->host);
  return std::nullopt;
}

using ProcessReader = TomlTable;

// Lines kept for the checks that span processes.
struct ProcessLines {
  uint32_t table = 0;
  uint32_t name = 0;
  std::vector<uint32_t> dependsOn;  // one per depends_on entry
};

void readMs(ProcessReader& r, const toml::table& t, std::string_view key, std::string_view path,
            int64_t min, int64_t& out) {
  if (const toml::node* n = t.get(key)) {
    if (auto v = r.integer(*n, path, min, kMaxMs)) out = *v;
  }
}

void readRestart(ProcessReader& r, const toml::table& t, RestartConfig& out) {
  if (const toml::node* n = t.get("restart")) {
    if (auto s = r.string(*n, "restart")) {
      if (*s == "always") {
        out.mode = RestartMode::kAlways;
      } else if (*s == "on-failure") {
        out.mode = RestartMode::kOnFailure;
      } else if (*s == "never") {
        out.mode = RestartMode::kNever;
      } else {
        r.fail(n, "restart", "expected one of always, on-failure, never, got '" + *s + "'");
      }
    }
  }
  readMs(r, t, "restart_delay_ms", "restart_delay_ms", 0, out.delayMs);
  readMs(r, t, "backoff_max_ms", "backoff_max_ms", 0, out.backoffMaxMs);
  readMs(r, t, "stable_after_ms", "stable_after_ms", 0, out.stableAfterMs);
  if (const toml::node* n = t.get("max_restarts")) {
    if (auto v = r.integer(*n, "max_restarts", 1, std::numeric_limits<uint32_t>::max())) {
      out.maxRestarts = static_cast<uint32_t>(*v);
    }
  }
  if (const toml::node* n = t.get("restart_window_s")) {
    if (auto v = r.integer(*n, "restart_window_s", 1, kMaxWindowS)) out.windowS = *v;
  }
  if (out.backoffMaxMs < out.delayMs) {
    const toml::node* n = t.get("backoff_max_ms");
    if (n == nullptr) n = t.get("restart_delay_ms");
    r.fail(n, "backoff_max_ms",
           "must be at least restart_delay_ms (" + std::to_string(out.delayMs) + "), got " +
               std::to_string(out.backoffMaxMs));
  }
}

void readReadiness(ProcessReader& r, const toml::table& t, ReadinessConfig& out) {
  if (const toml::node* n = t.get("readiness")) {
    if (auto s = r.string(*n, "readiness")) {
      std::string_view v = *s;
      if (v == "none") {
        out.kind = "none";
      } else if (v == "notify") {
        out.kind = "notify";
      } else if (v.substr(0, 4) == "tcp:") {
        out.kind = "tcp";
        if (auto err = readHostPort(v.substr(4), true, out.host, out.port)) {
          r.fail(n, "readiness", *err);
        }
      } else if (v.substr(0, 5) == "http:") {
        out.kind = "http";
        // "http:http://..." and a bare "http://..." both name the URL.
        out.url = std::string(v.substr(0, 7) == "http://" ? v : v.substr(5));
        if (auto err = checkHttpUrl(out.url)) r.fail(n, "readiness", *err);
      } else {
        r.fail(n, "readiness",
               "expected none, notify, tcp:PORT, tcp:HOST:PORT or http://URL, got '" + *s + "'");
      }
    }
  }
  readMs(r, t, "readiness_timeout_ms", "readiness_timeout_ms", 1, out.timeoutMs);
  if (const toml::node* n = t.get("watchdog_ms")) {
    if (out.kind != "notify") {
      r.fail(n, "watchdog_ms", "only with readiness = \"notify\"");
    } else if (auto v = r.integer(*n, "watchdog_ms", 0, kMaxMs)) {
      out.watchdogMs = *v;
    }
  }
}

void readHealth(ProcessReader& r, const toml::node& node, HealthConfig& out) {
  const toml::table* t = r.table(node, "health");
  if (t == nullptr) return;
  r.checkKeys(*t, "health.", kHealthKeys);
  const toml::node* check = t->get("check");
  if (check == nullptr) {
    r.fail(&node, "health.check", "missing");
    return;
  }
  if (check->is_array()) {
    out.kind = "exec";
    if (auto cmd = r.strings(*check, "health.check", 1)) {
      out.command = std::move(*cmd);
      if (out.command[0].empty()) r.fail(check, "health.check[0]", "must not be empty");
    }
  } else if (auto s = r.string(*check, "health.check")) {
    std::string_view v = *s;
    if (v.substr(0, 4) == "tcp:") {
      out.kind = "tcp";
      if (auto err = readHostPort(v.substr(4), true, out.host, out.port)) {
        r.fail(check, "health.check", *err);
      }
    } else if (v.substr(0, 5) == "http:") {
      out.kind = "http";
      out.url = std::string(v.substr(0, 7) == "http://" ? v : v.substr(5));
      if (auto err = checkHttpUrl(out.url)) r.fail(check, "health.check", *err);
    } else {
      r.fail(check, "health.check",
             "expected tcp:PORT, tcp:HOST:PORT, http://URL or a command (an array of strings), "
             "got '" + *s + "'");
    }
  }
  readMs(r, *t, "interval_ms", "health.interval_ms", 1, out.intervalMs);
  readMs(r, *t, "timeout_ms", "health.timeout_ms", 1, out.timeoutMs);
  if (const toml::node* n = t->get("failures")) {
    if (auto v = r.integer(*n, "health.failures", 1, 1000)) out.failures = static_cast<uint32_t>(*v);
  }
  if (const toml::node* n = t->get("restart")) {
    if (auto v = r.boolean(*n, "health.restart")) out.restartWhenUnhealthy = *v;
  }
}

void readLog(ProcessReader& r, const toml::node& node, LogConfig& out) {
  const toml::table* t = r.table(node, "log");
  if (t == nullptr) return;
  r.checkKeys(*t, "log.", kLogKeys);
  if (const toml::node* n = t->get("max_bytes")) {
    if (auto v = r.integer(*n, "log.max_bytes", 4096, std::numeric_limits<int64_t>::max())) {
      out.maxBytes = static_cast<uint64_t>(*v);
    }
  }
  if (const toml::node* n = t->get("keep")) {
    if (auto v = r.integer(*n, "log.keep", 0, 100)) out.keep = static_cast<uint32_t>(*v);
  }
}

void readStopSignal(ProcessReader& r, const toml::node& node, int& out) {
  if (node.is_integer()) {
    if (auto v = r.integer(node, "stop_signal", 1, SIGRTMAX)) out = static_cast<int>(*v);
    return;
  }
  auto s = r.string(node, "stop_signal");
  if (!s) return;
  std::string_view name = *s;
  if (name.substr(0, 3) == "SIG") name.remove_prefix(3);
  for (const NamedInt& sig : kSignals) {
    if (sig.name == name) {
      out = sig.value;
      return;
    }
  }
  std::string known;
  for (const NamedInt& sig : kSignals) {
    if (!known.empty()) known += ", ";
    known += "SIG";
    known += sig.name;
  }
  r.fail(&node, "stop_signal", "unknown signal '" + *s + "': expected " + known + " or a number");
}

// A strategy's table as JSON, for the strategy to read (ProcessSpec::strategyConfig): strings,
// integers, floats, booleans, arrays and tables. Dates and times have no JSON form: refused.
std::optional<nlohmann::json> tomlToJson(ProcessReader& r, const toml::node& node,
                                         const std::string& path) {
  switch (node.type()) {
    case toml::node_type::string: {
      auto s = r.string(node, path);
      if (!s) return std::nullopt;
      return nlohmann::json(std::move(*s));
    }
    case toml::node_type::integer: return nlohmann::json(node.as_integer()->get());
    case toml::node_type::floating_point: return nlohmann::json(node.as_floating_point()->get());
    case toml::node_type::boolean: return nlohmann::json(node.as_boolean()->get());
    case toml::node_type::array: {
      nlohmann::json out = nlohmann::json::array();
      const toml::array& arr = *node.as_array();
      for (size_t i = 0; i < arr.size(); ++i) {
        auto v = tomlToJson(r, *arr.get(i), path + "[" + std::to_string(i) + "]");
        if (!v) return std::nullopt;
        out.push_back(std::move(*v));
      }
      return out;
    }
    case toml::node_type::table: {
      nlohmann::json out = nlohmann::json::object();
      for (auto&& [key, value] : *node.as_table()) {
        auto v = tomlToJson(r, value, path + "." + std::string(key.str()));
        if (!v) return std::nullopt;
        out[std::string(key.str())] = std::move(*v);
      }
      return out;
    }
    default:
      r.fail(&node, path, "expected a string, number, boolean, array or table, got " +
                              std::string(tomlTypeName(node)));
      return std::nullopt;
  }
}

// The keys of a process table that belong to its spawn strategy: the [process.<strategy>] table,
// kept as JSON for the strategy to check; the keys that moved there; a table named after another
// strategy than the process's.
void readStrategyKeys(ProcessReader& r, const toml::table& t, ProcessSpec& spec) {
  // Before strategy blocks, "user" and "rlimits" sat in the process table itself.
  for (std::string_view moved : {"user", "rlimits"}) {
    const toml::node* n = t.get(moved);
    if (n == nullptr) continue;
    const std::string to = moved == "user" ? "unix-user" : spec.strategy;
    r.fail(n, "", "'" + std::string(moved) + "' moved to [process." + to + "]");
    return;
  }
  for (auto&& [key, node] : t) {
    const std::string k(key.str());
    if (k == spec.strategy || contains(kProcessKeys, k) || !node.is_table()) continue;
    // A typo of a known key is for checkKeys to name ("did you mean").
    if (!closestKey(k, kProcessKeys).empty()) continue;
    r.fail(&node, "",
           "[process." + k + "] holds settings of strategy '" + k + "', but this process's " +
               "strategy is '" + spec.strategy + "' (set strategy = \"" + k + "\")");
    return;
  }
  const toml::node* n = t.get(spec.strategy);
  if (n == nullptr) return;
  const toml::table* block = r.table(*n, spec.strategy);
  if (block == nullptr) return;
  auto json = tomlToJson(r, *block, spec.strategy);
  // No keys is no block: [process.exec] alone changes nothing, and compares equal to nothing.
  if (json && !json->empty()) spec.strategyConfig = json->dump();
}

// sockets = ["http"] (name = source) or [{name = "http", source = "x/http"}], mixed freely; each
// name once.
void readSockets(ProcessReader& r, const toml::node& n, std::vector<SocketRef>& out) {
  const toml::array* arr = n.as_array();
  if (arr == nullptr) {
    return r.fail(&n, "sockets", "expected an array of names or {name, source} tables, got " +
                                     std::string(tomlTypeName(n)));
  }
  if (arr->size() > kMaxSockets) {
    return r.fail(&n, "sockets", std::to_string(arr->size()) + " sockets, more than " +
                                     std::to_string(kMaxSockets));
  }
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::node& item = *arr->get(i);
    const std::string path = "sockets[" + std::to_string(i) + "]";
    SocketRef ref;
    if (item.is_string()) {
      auto s = r.string(item, path);
      if (!s) return;
      ref.name = ref.source = std::move(*s);
    } else if (const toml::table* t = item.as_table()) {
      static constexpr std::string_view kKeys[] = {"name", "source"};
      r.checkKeys(*t, path + ".", kKeys);
      const toml::node* name = t->get("name");
      if (name == nullptr) return r.fail(&item, path + ".name", "missing");
      auto s = r.string(*name, path + ".name");
      if (!s) return;
      ref.name = std::move(*s);
      ref.source = ref.name;
      if (const toml::node* source = t->get("source")) {
        auto src = r.string(*source, path + ".source");
        if (!src) return;
        ref.source = std::move(*src);
      }
    } else {
      return r.fail(&item, path, "expected a socket name or a {name, source} table, got " +
                                     std::string(tomlTypeName(item)));
    }
    if (!validSocketName(ref.name)) {
      return r.fail(&item, "socket '" + ref.name + "'",
                    "expected 1 to 64 of A-Z a-z 0-9 _ . - as its name");
    }
    if (!validSocketSource(ref.source)) {
      return r.fail(&item, "socket '" + ref.name + "'",
                    "source '" + ref.source + "': expected 1 to 256 bytes");
    }
    for (const auto& earlier : out) {
      if (earlier.name == ref.name) {
        return r.fail(&item, "socket '" + ref.name + "'", "listed twice");
      }
    }
    out.push_back(std::move(ref));
  }
}

// Reads everything but the cross-process checks (unique names, depends_on targets, cycles).
ProcessSpec readProcess(ProcessReader& r, ProcessLines& lines) {
  const toml::table& t = r.table();
  ProcessSpec spec;
  lines.table = r.lineOf(nullptr);

  if (const toml::node* n = t.get("name")) {
    lines.name = r.lineOf(n);
    if (auto s = r.string(*n, "name")) {
      if (!validName(*s)) {
        r.fail(n, "name", "'" + *s + "': expected 1 to 64 of A-Z a-z 0-9 _ -");
      }
      spec.name = std::move(*s);
    }
  } else {
    r.fail(nullptr, "name", "missing");
  }
  // Read first: the strategy names the table of its own settings.
  if (const toml::node* n = t.get("strategy")) {
    if (auto s = r.string(*n, "strategy", false)) spec.strategy = std::move(*s);
  }
  readStrategyKeys(r, t, spec);
  std::vector<std::string_view> known(std::begin(kProcessKeys), std::end(kProcessKeys));
  known.push_back(spec.strategy);
  r.checkKeys(t, "", known);

  if (const toml::node* n = t.get("command")) {
    if (auto cmd = r.strings(*n, "command", 1)) {
      spec.command = std::move(*cmd);
      if (spec.command[0].empty()) r.fail(n, "command[0]", "must not be empty");
    }
  } else {
    r.fail(nullptr, "command", "missing");
  }

  if (const toml::node* n = t.get("env")) {
    if (const toml::table* env = r.table(*n, "env")) {
      for (auto&& [key, value] : *env) {
        std::string k(key.str());
        std::string path = "env." + k;
        if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos) {
          r.fail(&value, path, "a variable name is non-empty, without '=' or NUL");
        }
        if (auto v = r.string(value, path)) spec.env[k] = std::move(*v);
      }
    }
  }

  if (const toml::node* n = t.get("cwd")) {
    if (auto s = r.string(*n, "cwd", false)) {
      // Relative to what? Not guessing: the state dir is the default, anything else absolute.
      if (s->front() != '/') r.fail(n, "cwd", "'" + *s + "': expected an absolute path");
      spec.cwd = std::move(*s);
    }
  }

  if (const toml::node* n = t.get("depends_on")) {
    if (auto deps = r.strings(*n, "depends_on", 0)) {
      const toml::array& arr = *n->as_array();
      for (size_t i = 0; i < deps->size(); ++i) {
        const std::string& d = (*deps)[i];
        if (std::find(deps->begin(), deps->begin() + static_cast<ptrdiff_t>(i), d) !=
            deps->begin() + static_cast<ptrdiff_t>(i)) {
          r.fail(arr.get(i), "depends_on", "'" + d + "' listed twice");
        }
        lines.dependsOn.push_back(r.lineOf(arr.get(i)));
      }
      spec.dependsOn = std::move(*deps);
    }
  }

  if (const toml::node* n = t.get("sockets")) readSockets(r, *n, spec.sockets);
  readRestart(r, t, spec.restart);
  readReadiness(r, t, spec.readiness);
  if (const toml::node* n = t.get("health")) readHealth(r, *n, spec.health);
  if (const toml::node* n = t.get("log")) readLog(r, *n, spec.log);
  if (const toml::node* n = t.get("stop_signal")) readStopSignal(r, *n, spec.stopSignal);
  readMs(r, t, "stop_timeout_ms", "stop_timeout_ms", 0, spec.stopTimeoutMs);
  return spec;
}

// Finds a depends_on cycle, as indices with the first repeated at the end (a -> b -> a), starting
// at its member that comes first in the spec; empty when there is none. Names are all known.
std::vector<size_t> findCycle(const std::vector<ProcessSpec>& specs,
                              const std::map<std::string_view, size_t>& index) {
  enum class Color { kWhite, kGray, kBlack };
  std::vector<Color> color(specs.size(), Color::kWhite);
  std::vector<size_t> stack;
  std::vector<size_t> cycle;

  // Recursion depth is bounded by the number of processes in one spec file.
  auto visit = [&](auto& self, size_t i) -> bool {
    color[i] = Color::kGray;
    stack.push_back(i);
    for (const std::string& dep : specs[i].dependsOn) {
      size_t j = index.at(dep);
      if (color[j] == Color::kGray) {
        auto from = std::find(stack.begin(), stack.end(), j);
        cycle.assign(from, stack.end());
        return true;
      }
      if (color[j] == Color::kWhite && self(self, j)) return true;
    }
    stack.pop_back();
    color[i] = Color::kBlack;
    return false;
  };
  for (size_t i = 0; i < specs.size(); ++i) {
    if (color[i] == Color::kWhite && visit(visit, i)) break;
  }
  if (cycle.empty()) return cycle;
  std::rotate(cycle.begin(), std::min_element(cycle.begin(), cycle.end()), cycle.end());
  cycle.push_back(cycle.front());
  return cycle;
}

}  // namespace

// No '.': a name is one segment of an observation topic, and "." and ".." stay out of paths.
bool validName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
  });
}

Result<toml::table> parseToml(std::string_view text, const std::string& source) {
  try {
    return toml::parse(text, std::string_view(source));
  } catch (const toml::parse_error& e) {
    return Error{source + ":" + std::to_string(e.source().begin.line) + ": " +
                 std::string(e.description())};
  }
}

Result<std::vector<ProcessSpec>> parseSpec(std::string_view text, const std::string& source) {
  auto parsed = parseToml(text, source);
  if (!parsed.ok()) return parsed.error();
  toml::table& root = *parsed;

  TomlFields reader(source);
  for (auto&& [key, node] : root) {
    if (key.str() != "process") {
      reader.failAt(key.source().begin.line, "", key.str(),
                  "unknown key: a spec holds only [[process]] tables");
    } else if (!node.is_array_of_tables()) {
      reader.failAt(node.source().begin.line, "", "process",
                  "expected [[process]] tables, got " + std::string(tomlTypeName(node)));
    }
  }
  if (reader.failed()) return reader.takeError();

  static const toml::array kNone;
  const toml::array* processes = root["process"].as_array();
  return readProcessTables(processes != nullptr ? *processes : kNone, source);
}

Result<std::vector<ProcessSpec>> readProcessTables(const toml::array& processes,
                                                   const std::string& source) {
  TomlFields reader(source);
  std::vector<ProcessSpec> specs;
  std::vector<ProcessLines> lines;
  {
    for (size_t i = 0; i < processes.size(); ++i) {
      const toml::table* tablePtr = processes.get(i)->as_table();
      if (tablePtr == nullptr) {
        reader.failAt(processes.get(i)->source().begin.line, "", "process",
                    "expected a table, got " + std::string(tomlTypeName(*processes.get(i))));
        return reader.takeError();
      }
      const toml::table& table = *tablePtr;
      const toml::node* nameNode = table.get("name");
      const auto* name = nameNode ? nameNode->as_string() : nullptr;
      std::string label = name != nullptr && validName(name->get())
                              ? "process '" + name->get() + "'"
                              : "process #" + std::to_string(i + 1);
      ProcessReader r(reader, table, std::move(label));
      ProcessLines l;
      specs.push_back(readProcess(r, l));
      lines.push_back(std::move(l));
      if (reader.failed()) return reader.takeError();
      // The same serialization the supervisor sends to the holder.
      const size_t bytes = specToJson(specs.back()).dump().size();
      if (bytes > kMaxSerializedSpecBytes) {
        reader.failAt(lines.back().table, "process '" + specs.back().name + "'", "",
                    "spec is " + std::to_string(bytes) + " bytes serialized, more than " +
                        std::to_string(kMaxSerializedSpecBytes) +
                        " (large env values belong in files)");
        return reader.takeError();
      }
    }
  }

  std::map<std::string_view, size_t> index;
  for (size_t i = 0; i < specs.size(); ++i) {
    auto [it, inserted] = index.emplace(specs[i].name, i);
    if (!inserted) {
      reader.failAt(lines[i].name, "process '" + specs[i].name + "'", "name",
                  "duplicate: already used at line " + std::to_string(lines[it->second].name));
      return reader.takeError();
    }
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    for (size_t k = 0; k < specs[i].dependsOn.size(); ++k) {
      const std::string& dep = specs[i].dependsOn[k];
      if (!index.contains(dep)) {
        reader.failAt(lines[i].dependsOn[k], "process '" + specs[i].name + "'", "depends_on",
                    "no process named '" + dep + "'");
        return reader.takeError();
      }
    }
  }
  if (auto cycle = findCycle(specs, index); !cycle.empty()) {
    const ProcessSpec& first = specs[cycle[0]];
    const std::string& next = specs[cycle[1]].name;
    size_t k = static_cast<size_t>(
        std::find(first.dependsOn.begin(), first.dependsOn.end(), next) - first.dependsOn.begin());
    std::string path;
    for (size_t i : cycle) {
      if (!path.empty()) path += " -> ";
      path += specs[i].name;
    }
    reader.failAt(lines[cycle[0]].dependsOn[k], "process '" + first.name + "'", "depends_on",
                "cycle " + path);
    return reader.takeError();
  }
  return specs;
}

Result<std::vector<ProcessSpec>> loadSpecFile(const std::string& path) {
  auto text = readFile(path);
  if (!text) return text.error();
  return parseSpec(*text, path);
}

std::vector<const ProcessSpec*> startOrder(const std::vector<ProcessSpec>& specs) {
  std::map<std::string_view, size_t> index;
  for (size_t i = 0; i < specs.size(); ++i) index.emplace(specs[i].name, i);

  // Kahn's algorithm, always taking the ready process that comes first in the spec.
  std::vector<size_t> waitingOn(specs.size(), 0);
  std::vector<std::vector<size_t>> dependents(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    for (const std::string& dep : specs[i].dependsOn) {
      auto it = index.find(dep);
      if (it == index.end()) continue;  // outside this list: imposes no order within it
      ++waitingOn[i];
      dependents[it->second].push_back(i);
    }
  }
  std::set<size_t> ready;
  for (size_t i = 0; i < specs.size(); ++i) {
    if (waitingOn[i] == 0) ready.insert(i);
  }
  std::vector<const ProcessSpec*> order;
  order.reserve(specs.size());
  while (!ready.empty()) {
    size_t i = *ready.begin();
    ready.erase(ready.begin());
    order.push_back(&specs[i]);
    for (size_t d : dependents[i]) {
      if (--waitingOn[d] == 0) ready.insert(d);
    }
  }
  if (order.size() != specs.size()) {
    // A cycle: parseSpec refuses them, but a caller may mix specs of different generations (a
    // supervisor keeps a changed process's old spec until it has stopped), and a start order is
    // no reason to crash. What is left goes last, in spec order.
    std::vector<bool> placed(specs.size(), false);
    for (const ProcessSpec* p : order) placed[static_cast<size_t>(p - specs.data())] = true;
    for (size_t i = 0; i < specs.size(); ++i) {
      if (!placed[i]) order.push_back(&specs[i]);
    }
  }
  return order;
}

}  // namespace enjin::supervise
