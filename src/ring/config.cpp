#include "enjin/ring/config.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <toml++/toml.h>

#include "enjin/supervise/spec_toml.hpp"
#include "enjin/base/file.hpp"
#include "enjin/supervise/spec_file.hpp"

namespace enjin::ring {
namespace {

// "SOURCE:LINE: what". The first error wins.
class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}
  const std::string& source() const { return source_; }
  bool failed() const { return error_.has_value(); }
  Error error() const { return *error_; }

  void fail(const toml::node* node, std::string_view what) {
    failAt(node != nullptr ? node->source().begin.line : 0, what);
  }
  void failWith(Error e) {
    if (!error_) error_ = std::move(e);
  }
  void failAt(uint32_t line, std::string_view what) {
    if (error_) return;
    error_ = Error{source_ + ":" + std::to_string(line) + ": " + std::string(what)};
  }

  // Every key of `table` must be one of `known`.
  void checkKeys(const toml::table& table, std::string_view where,
                 std::initializer_list<std::string_view> known) {
    for (auto&& [key, node] : table) {
      if (std::find(known.begin(), known.end(), key.str()) != known.end()) continue;
      std::string list;
      for (auto k : known) {
        if (!list.empty()) list += ", ";
        list += k;
      }
      const std::string_view guess =
          supervise::closestKey(key.str(), std::span(known.begin(), known.size()));
      failAt(key.source().begin.line,
             std::string(where) + std::string(where.empty() ? "" : ": ") + "unknown key '" +
                 std::string(key.str()) + "'" +
                 (guess.empty() ? "" : " (did you mean " + std::string(guess) + "?)") +
                 " (known: " + list + ")");
    }
  }

  void str(const toml::table& t, std::string_view key, std::string& out) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return;
    if (const auto* s = n->as_string()) {
      out = s->get();
    } else {
      fail(n, std::string(key) + ": expected a string");
    }
  }

  void ms(const toml::table& t, std::string_view key, int64_t& out, int64_t min, int64_t max) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return;
    const auto* i = n->as_integer();
    if (i == nullptr) {
      fail(n, std::string(key) + ": expected an integer (milliseconds)");
    } else if (i->get() < min || i->get() > max) {
      fail(n, std::string(key) + ": " + std::to_string(i->get()) + " is out of range [" +
                  std::to_string(min) + ", " + std::to_string(max) + "]");
    } else {
      out = i->get();
    }
  }

 private:
  std::string source_;
  std::optional<Error> error_;
};

std::string defaultStateDir(int ring) {
  const std::string leaf = "ring" + std::to_string(ring);
  if (::geteuid() == 0) return "/var/lib/enjin/" + leaf;
  const char* home = ::getenv("HOME");
  return std::string(home != nullptr ? home : "/tmp") + "/.local/state/enjin/" + leaf;
}

// How a node's daemon is spawned. Only `exec` for now: a node daemon under another user needs
// its state dir and the parent's sockets made reachable for that user, which is not built yet.
void checkNodeStrategy(Reader& r, const toml::table& t, const std::string& where,
                       const NodeSpec& node) {
  if (node.strategy != "exec") {
    r.fail(t.get("strategy"), where + ": strategy '" + node.strategy +
                                  "' is not available for nodes yet (known: exec)");
  } else if (!node.user.empty()) {
    r.fail(t.get("user"), where + ": user is only for strategy 'unix-user'");
  }
}

std::string underStateDir(const std::string& stateDir, const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  return stateDir + "/" + path;
}

// Reads [[ring1]] tables (ring 1, each with its [[ring1.ring2]] tables) or [[ring1.ring2]]
// tables (ring 2, each with its processes) into `out`. `of` names the enclosing node.
bool readNodes(Reader& r, const toml::node* tables, int ring, const std::string& of,
               std::vector<NodeSpec>& out) {
  if (tables == nullptr) return true;
  const std::string ringName = "ring" + std::to_string(ring);
  const toml::array* arr = tables->as_array();
  if (arr == nullptr || !arr->is_array_of_tables()) {
    r.fail(tables, (of.empty() ? "" : of + ": ") + ringName + ": expected [[" +
                       (ring == 1 ? "ring1" : "ring1.ring2") + "]] tables");
    return false;
  }
  const char* childKey = ring == 1 ? "ring2" : "process";
  std::map<std::string, uint32_t> seen;
  for (const toml::node& n : *arr) {
    const toml::table& t = *n.as_table();
    NodeSpec node;
    r.str(t, "label", node.label);
    std::string where = ringName + " node" + (node.label.empty() ? "" : " '" + node.label + "'");
    if (!of.empty()) where += " of " + of;
    r.checkKeys(t, where, {"label", "strategy", "user", "compartment", childKey});
    if (!r.failed() && !supervise::validName(node.label)) {
      r.fail(&t, where + ": label: expected 1 to 64 of A-Z a-z 0-9 _ -");
    }
    r.str(t, "strategy", node.strategy);
    r.str(t, "user", node.user);
    r.str(t, "compartment", node.compartment);
    if (!r.failed()) checkNodeStrategy(r, t, where, node);
    if (r.failed()) return false;
    if (ring == 1) {
      if (!readNodes(r, t.get("ring2"), 2, where, node.nodes)) return false;
    } else if (const toml::node* procs = t.get("process")) {
      const toml::array* parr = procs->as_array();
      if (parr == nullptr) {
        r.fail(procs, where + ": process: expected [[ring1.ring2.process]] tables");
        return false;
      }
      auto specs = supervise::readProcessTables(*parr, r.source());
      if (!specs.ok()) {
        r.failWith(specs.error());
        return false;
      }
      node.processes = std::move(*specs);
    }
    auto [it, inserted] = seen.emplace(node.label, n.source().begin.line);
    if (!inserted) {
      r.fail(&n, where + ": label: duplicate, already used at line " + std::to_string(it->second));
      return false;
    }
    out.push_back(std::move(node));
  }
  return true;
}

}  // namespace

std::string daemonName(int ring) { return "ring" + std::to_string(ring) + "d"; }

Result<DaemonConfig> parseConfig(std::string_view text, const std::string& source, int ring,
                                 const std::string& stateDirOverride) {
  auto parsed = supervise::parseToml(text, source);
  if (!parsed.ok()) return parsed.error();
  toml::table& root = *parsed;
  DaemonConfig c;
  c.ring = ring;
  c.source = source;
  Reader r(source);
  if (ring == 0) {
    r.checkKeys(root, "", {"state_dir", "log_level", "key", "down", "up", "observe",
                           "heartbeat_ms", "heartbeat_timeout_ms", "ring1"});
  } else {
    r.checkKeys(root, "", {"ring", "uuid", "label", "state_dir", "log_level", "key", "parent_key",
                           "parent_down", "parent_up", "down", "up", "observe", "heartbeat_ms",
                           "heartbeat_timeout_ms"});
  }
  r.str(root, "state_dir", c.stateDir);
  r.str(root, "log_level", c.logLevel);
  r.str(root, "key", c.key);
  r.str(root, "down", c.down);
  r.str(root, "up", c.up);
  r.str(root, "observe", c.observe);
  r.ms(root, "heartbeat_ms", c.heartbeatMs, 10, 3'600'000);
  r.ms(root, "heartbeat_timeout_ms", c.heartbeatTimeoutMs, 10, 24 * 3'600'000LL);
  if (ring != 0) {
    r.str(root, "uuid", c.uuid);
    r.str(root, "label", c.label);
    r.str(root, "parent_key", c.parentKey);
    r.str(root, "parent_down", c.parentDown);
    r.str(root, "parent_up", c.parentUp);
    int64_t fileRing = ring;
    if (const toml::node* n = root.get("ring"); n != nullptr && !n->is_integer()) {
      r.fail(n, "ring: expected 1 or 2");
    }
    r.ms(root, "ring", fileRing, 0, 9);
    if (!r.failed() && fileRing != ring) {
      r.fail(root.get("ring"), "ring: this file is for ring" + std::to_string(fileRing) +
                                   "d, not " + daemonName(ring));
    }
    for (auto [key, value] : {std::pair<const char*, std::string*>{"uuid", &c.uuid},
                              {"label", &c.label},
                              {"parent_key", &c.parentKey},
                              {"parent_down", &c.parentDown},
                              {"parent_up", &c.parentUp}}) {
      if (!r.failed() && value->empty()) r.failAt(1, std::string(key) + ": required");
    }
  }
  static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn", "error", "off"};
  if (!r.failed() && !kLevels.contains(c.logLevel)) {
    r.fail(root.get("log_level"), "log_level: expected one of trace, debug, info, warn, error, off");
  }
  if (!r.failed() && c.heartbeatTimeoutMs <= c.heartbeatMs) {
    r.fail(root.get("heartbeat_timeout_ms"),
           "heartbeat_timeout_ms: must be longer than heartbeat_ms (" +
               std::to_string(c.heartbeatMs) + "), or every child would be lost between beats");
  }
  // Process tables are read by the spec reader, whose errors carry their own file:line.
  if (ring == 0 && !r.failed()) (void)readNodes(r, root.get("ring1"), 1, "", c.nodes);
  if (r.failed()) return r.error();

  if (!stateDirOverride.empty()) c.stateDir = stateDirOverride;
  if (c.stateDir.empty()) c.stateDir = defaultStateDir(ring);
  if (c.stateDir[0] != '/') {
    return Error{source + ": state_dir: '" + c.stateDir + "' must be an absolute path"};
  }
  while (c.stateDir.size() > 1 && c.stateDir.back() == '/') c.stateDir.pop_back();
  if (c.key.empty()) c.key = ring == 0 ? "ring0.key" : "node.key";
  c.key = underStateDir(c.stateDir, c.key);
  c.parentKey = underStateDir(c.stateDir, c.parentKey);
  fillDefaultEndpoints(c);
  if (ring == 0 && c.label.empty()) c.label = "ring0";
  return c;
}

void fillDefaultEndpoints(DaemonConfig& c) {
  if (c.observe.empty()) c.observe = "ipc://" + c.stateDir + "/out.sock";
  if (c.ring < 2) {
    if (c.down.empty()) c.down = "ipc://" + c.stateDir + "/down.sock";
    if (c.up.empty()) c.up = "ipc://" + c.stateDir + "/up.sock";
  }
}

Result<DaemonConfig> loadConfig(const std::string& path, int ring,
                                const std::string& stateDirOverride) {
  auto text = readFile(path);
  if (!text.ok()) return text.error().wrap("config");
  return parseConfig(*text, path, ring, stateDirOverride);
}

std::string renderChildConfig(const DaemonConfig& c) {
  // toml++ quotes and escapes every string, so no value can break out of its line.
  toml::table t;
  t.insert("ring", c.ring);
  t.insert("uuid", c.uuid);
  t.insert("label", c.label);
  t.insert("state_dir", c.stateDir);
  t.insert("log_level", c.logLevel);
  t.insert("key", c.key);
  t.insert("parent_key", c.parentKey);
  t.insert("parent_down", c.parentDown);
  t.insert("parent_up", c.parentUp);
  if (c.ring < 2) {
    t.insert("down", c.down);
    t.insert("up", c.up);
  }
  t.insert("observe", c.observe);
  t.insert("heartbeat_ms", c.heartbeatMs);
  t.insert("heartbeat_timeout_ms", c.heartbeatTimeoutMs);
  std::ostringstream out;
  out << "# Written by " << daemonName(c.ring - 1) << " when it created this node; it rewrites\n"
      << "# this file on every start, so edits here do not last.\n"
      << t << "\n";
  return out.str();
}

}  // namespace enjin::ring
