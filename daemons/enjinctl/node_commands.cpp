// enjinctl status | start | stop | restart | revoke | logs: the daemon at --state-dir (ring0d,
// ring1d or ring2d) through its control socket, and the log files of the tree below it.
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <thread>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "enjin/base/unique_fd.hpp"
#include "enjin/ring/tree.hpp"
#include "enjin/supervise/control_server.hpp"

namespace enjin::ctl {
namespace {

using nlohmann::json;

// One request, one reply, over DIR/control.sock.
Result<json> call(const std::string& stateDir, const json& request) {
  auto reply = supervise::controlCall(stateDir + "/control.sock", request);
  if (!reply.ok() && reply.error().message.starts_with("connect ")) {
    return Error{reply.error().message + " (is a ring daemon running with state dir " + stateDir +
                 "? --state-dir or ENJIN_STATE_DIR name another)"};
  }
  return reply;
}

// The state dir of the node at `path` ("r1" or "r1/web"), from the tree the daemon reports.
Result<std::string> nodeDir(const std::string& stateDir, const std::string& path) {
  auto reply = call(stateDir, {{"cmd", "tree"}});
  if (!reply.ok()) return reply.error();
  const json* node = &(*reply)["tree"];
  size_t start = 0;
  while (start <= path.size()) {
    const size_t slash = path.find('/', start);
    const std::string label = path.substr(start, slash == std::string::npos ? slash : slash - start);
    const json* next = nullptr;
    if (auto nodes = node->find("nodes"); nodes != node->end()) {
      for (const auto& n : *nodes) {
        if (n.value("label", "") == label) next = &n;
      }
    }
    if (next == nullptr) return Error{"no node '" + path.substr(0, slash) + "' in the tree"};
    node = next;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  // A node's dir is below its parent's, as its parent made it: a state dir elsewhere (a
  // child that reports one) is not followed.
  const std::string dir = node->value("state_dir", std::string());
  if (!dir.starts_with(stateDir + "/nodes/") || dir.find("/../") != std::string::npos) {
    return Error{"node '" + path + "' reports state dir '" + dir + "', which is not below " +
                 stateDir + "; not following it"};
  }
  return dir;
}

// The last segment of a path and the state dir of the daemon it belongs to: "web" is the
// daemon at `stateDir`'s; "infra-1/shop/web" is shop's.
struct Owner {
  std::string dir;
  std::string name;
};
Result<Owner> ownerOf(const std::string& stateDir, const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return Owner{stateDir, path};
  auto dir = nodeDir(stateDir, path.substr(0, slash));
  if (!dir.ok()) return dir.error();
  return Owner{*dir, path.substr(slash + 1)};
}

std::string formatDuration(int64_t ms) {
  if (ms < 0) ms = 0;
  const int64_t s = ms / 1000;
  char out[32];
  if (s < 60) {
    std::snprintf(out, sizeof out, "%llds", static_cast<long long>(s));
  } else if (s < 3600) {
    std::snprintf(out, sizeof out, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  } else if (s < 86400) {
    std::snprintf(out, sizeof out, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s / 60 % 60));
  } else {
    std::snprintf(out, sizeof out, "%lldd%02lldh", static_cast<long long>(s / 86400), static_cast<long long>(s / 3600 % 24));
  }
  return out;
}

std::string formatExit(const json& e) {
  if (!e.is_object()) return "-";
  if (e.value("oom_killed", false)) return "OOM";
  const std::string kind = e.value("kind", "");
  if (kind == "exited") return "exit " + std::to_string(e.value("code", 0));
  if (kind == "signaled") {
    const char* name = ::sigabbrev_np(e.value("signal", 0));
    return name ? std::string("SIG") + name : "signal " + std::to_string(e.value("signal", 0));
  }
  return "unknown";
}

int64_t nowWallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A tenant node's isolation in a few words: "sandbox: uid 60001, apps 60002, cgroup v1,
// seccomp, memory 256M, processes 128".
std::string isolationSummary(const json& iso) {
  if (!iso.is_object() || iso.value("strategy", "") == "exec") return "";
  std::string out = iso.value("strategy", "?") + ": uid " + std::to_string(iso.value("uid", 0)) +
                    ", apps " + std::to_string(iso.value("app_uid", 0)) + ", cgroup " +
                    iso.value("cgroup", "none");
  if (iso.value("seccomp", false)) out += ", seccomp";
  if (auto l = iso.find("limits"); l != iso.end() && l->is_object()) {
    for (const auto& [key, value] : l->items()) {
      if (key == "memory" && value.is_number_unsigned()) {
        out += ", memory " + std::to_string(value.get<uint64_t>() >> 20) + "M";
      } else {
        out += ", " + key + " " + value.dump();
      }
    }
  }
  return out;
}

// One row of the status table; `prefix` draws the tree.
void printRow(const std::string& prefix, const json& n, int64_t now) {
  const std::string name = prefix + n.value("label", n.value("name", std::string("?")));
  const int pid = n.value("pid", 0);
  const int64_t started = n.value("started_wall_ms", int64_t{0});
  std::string restarts = n.contains("restarts")
                             ? std::to_string(n.value("restarts", uint64_t{0}))
                             : std::string("-");
  // Padded by characters, not bytes: the tree is drawn with multi-byte box characters.
  size_t width = 0;
  for (unsigned char ch : name) width += (ch & 0xC0) != 0x80;
  const std::string padded = name + std::string(width < 32 ? 32 - width : 0, ' ');
  std::string detail = n.value("detail", "");
  if (detail.empty()) detail = isolationSummary(n.value("isolation", json()));
  std::printf("%s %-10s %8s %9s %8s  %-10s %s\n", padded.c_str(), n.value("state", "").c_str(),
              pid > 0 ? std::to_string(pid).c_str() : "-",
              started > 0 ? formatDuration(now - started).c_str() : "-", restarts.c_str(),
              formatExit(n.value("last_exit", json())).c_str(), detail.c_str());
}


}  // namespace

void printTree(const json& tree) {
  const int64_t now = nowWallMs();
  std::printf("%-32s %-10s %8s %9s %8s  %-10s %s\n", "NAME", "STATE", "PID", "UPTIME", "RESTARTS",
              "LAST EXIT", "DETAIL");
  printRow("", tree, now);
  drawChildren(tree, "", [now](const std::string& prefix, const json& child) {
    printRow(prefix, child, now);
  });
  std::fflush(stdout);
}

namespace {

int runStatus(const std::string& stateDir, bool asJson) {
  auto reply = call(stateDir, {{"cmd", "tree"}});
  if (!reply.ok()) {
    std::cerr << "enjinctl status: " << reply.error().message << "\n";
    return kExitFailure;
  }
  const json& tree = (*reply)["tree"];
  if (asJson) {
    std::cout << tree.dump(2) << "\n";
  } else {
    printTree(tree);
  }
  return kExitOk;
}

// The same, from ring0d's control API (GET /v1/tree).
int runApiStatus(bool asJson) {
  int rc = kExitOk;
  auto tree = apiTree(rc);
  if (!tree) return rc;
  if (asJson) {
    std::cout << tree->dump(2) << "\n";
  } else {
    printTree(*tree);
  }
  return kExitOk;
}

// A path "r1/web/app" names a node or process anywhere below the daemon at the state dir;
// a single name, a child of that daemon.
int runCommand(const std::string& stateDir, const std::string& cmd, const std::string& name) {
  json req = name.find('/') == std::string::npos
                 ? json{{"cmd", cmd}, {"name", name}}
                 : json{{"cmd", "command"}, {"op", cmd}, {"path", name}};
  auto reply = call(stateDir, req);
  if (!reply.ok()) {
    std::cerr << "enjinctl " << cmd << ": " << reply.error().message << "\n";
    return kExitFailure;
  }
  return kExitOk;
}

int runWaitReady(const std::string& stateDir, long timeoutMs) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  std::string last = "no answer from the daemon";
  // Each look makes the daemon build the whole tree: quick at first, then every 250 ms.
  auto pause = std::chrono::milliseconds(20);
  for (;;) {
    if (auto reply = call(stateDir, {{"cmd", "tree"}}); reply.ok()) {
      auto why = ring::firstNotReady((*reply)["tree"]);
      if (!why) return kExitOk;
      last = *why;
    } else {
      last = reply.error().message;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      std::cerr << "enjinctl wait-ready: not ready after " << timeoutMs << " ms: " << last << "\n";
      return kExitTimeout;
    }
    std::this_thread::sleep_for(std::min(pause, std::chrono::duration_cast<std::chrono::milliseconds>(
                                                    deadline - std::chrono::steady_clock::now())));
    pause = std::min(pause * 2, std::chrono::milliseconds(250));
  }
}

int runPid(const std::string& stateDir, const std::string& path) {
  auto reply = call(stateDir, {{"cmd", "tree"}});
  if (!reply.ok()) {
    std::cerr << "enjinctl pid: " << reply.error().message << "\n";
    return kExitFailure;
  }
  const auto flat = ring::flattenTree((*reply)["tree"]);
  auto it = flat.find(path);
  if (it == flat.end() || it->second.value("pid", 0) <= 0) {
    std::cerr << "enjinctl pid: " << (it == flat.end() ? "nothing at '" + path + "' in the tree"
                                                       : "'" + path + "' is not running")
              << "\n";
    return kExitFailure;
  }
  std::cout << it->second.value("pid", 0) << "\n";
  return kExitOk;
}

int runRevoke(const std::string& stateDir, const std::string& path) {
  // A node is revoked by its parent: walk to the daemon that created it.
  auto owner = ownerOf(stateDir, path);
  if (!owner.ok()) {
    std::cerr << "enjinctl revoke: " << owner.error().message << "\n";
    return kExitFailure;
  }
  auto reply = call(owner->dir, {{"cmd", "revoke"}, {"label", owner->name}});
  if (!reply.ok()) {
    std::cerr << "enjinctl revoke: " << reply.error().message << "\n";
    return kExitFailure;
  }
  std::cout << "revoked " << path << "\n";
  return kExitOk;
}

// Copies what `fd` holds from its current offset to stdout.
void drain(int fd) {
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) {
    if (std::fwrite(buf, 1, static_cast<size_t>(n), stdout) != static_cast<size_t>(n)) return;
  }
  std::fflush(stdout);
}

// The offset where the last `lines` lines of a file of `size` bytes begin (0: all of it).
off_t tailOffset(int fd, off_t size, size_t lines) {
  if (lines == 0) return 0;
  size_t seen = 0;
  std::string chunk;
  for (off_t pos = size; pos > 0;) {
    const off_t step = std::min<off_t>(pos, 65536);
    pos -= step;
    chunk.resize(static_cast<size_t>(step));
    if (::pread(fd, chunk.data(), chunk.size(), pos) != step) return 0;
    for (size_t i = chunk.size(); i-- > 0;) {
      const off_t at = pos + static_cast<off_t>(i);
      // The newline that ends the file ends the last line; it does not start another.
      if (chunk[i] == '\n' && at != size - 1 && ++seen == lines) return at + 1;
    }
  }
  return 0;
}

// NAME is a process (or child node) of the daemon at the state dir; NODE/.../NAME one of a
// node below it: the log is in that node's state dir.
int runLogs(const std::string& stateDir, const std::string& target, bool follow, size_t lines) {
  auto owner = ownerOf(stateDir, target);
  if (!owner.ok()) {
    std::cerr << "enjinctl logs: " << owner.error().message << "\n";
    return kExitFailure;
  }
  const std::string& name = owner->name;
  const std::string dir = owner->dir + "/logs";
  const std::string path = dir + "/" + name + ".log";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    std::cerr << "enjinctl logs: no log for '" << name << "' (" << path << ": " << std::strerror(errno) << ")\n";
    return kExitFailure;
  }
  struct stat st;
  ::fstat(fd.get(), &st);
  const off_t start = tailOffset(fd.get(), st.st_size, lines);
  ::lseek(fd.get(), start, SEEK_SET);
  drain(fd.get());
  if (!follow) return kExitOk;
  // Follow, across rotations: when NAME.log is renamed to NAME.log.1, finish the old file and
  // go on with the new one.
  UniqueFd in(::inotify_init1(IN_CLOEXEC));
  if (!in || ::inotify_add_watch(in.get(), dir.c_str(), IN_MODIFY | IN_CREATE | IN_MOVED_TO) < 0) {
    std::cerr << "enjinctl logs: inotify on " << dir << ": " << std::strerror(errno) << "\n";
    return kExitFailure;
  }
  char events[4096];
  for (;;) {
    if (::read(in.get(), events, sizeof events) <= 0 && errno != EINTR) return kExitFailure;
    drain(fd.get());
    struct stat now;
    if (::stat(path.c_str(), &now) == 0) {
      ::fstat(fd.get(), &st);
      if (now.st_ino != st.st_ino) {
        UniqueFd next(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (next) {
          drain(fd.get());
          fd = std::move(next);
          drain(fd.get());
        }
      }
    }
  }
}

}  // namespace

void drawChildren(const json& n, const std::string& indent, const TreeRow& row) {
  std::vector<const json*> kids;
  for (const char* key : {"nodes", "processes"}) {
    if (auto it = n.find(key); it != n.end() && it->is_array()) {
      for (const auto& k : *it) kids.push_back(&k);
    }
  }
  for (size_t i = 0; i < kids.size(); ++i) {
    const bool last = i + 1 == kids.size();
    row(indent + (last ? "\u2514\u2500 " : "\u251c\u2500 "), *kids[i]);
    drawChildren(*kids[i], indent + (last ? "   " : "\u2502  "), row);
  }
}

void addNodeCommands(CLI::App& app, const std::string& stateDir, int& exitCode) {
  auto* status = app.add_subcommand(
      "status", "Show the tree: ring 0, its ring-1 nodes, their ring-2 nodes, their processes, "
                "with state, pid, uptime, restarts, last exit. From the control API when logged "
                "in and no --state-dir is given, else from the daemon's control socket");
  auto asJson = std::make_shared<bool>(false);
  status->add_flag("--json", *asJson, "The whole tree as one JSON object");
  auto fleet = std::make_shared<bool>(false);
  status->add_flag("--fleet", *fleet,
                   "The whole fleet instead (through the control API): every host, its "
                   "compartment and nodes, and pending nodes with reasons");
  // Logged in (enjinctl login) and no --state-dir or ENJIN_STATE_DIR: through the control API.
  status->callback([&, asJson, fleet] {
    if (*fleet) {
      exitCode = runFleetStatus(*asJson);
      return;
    }
    exitCode = useApi(app) ? runApiStatus(*asJson) : runStatus(stateDir, *asJson);
  });

  for (const char* cmd : {"start", "stop", "restart"}) {
    std::string what = std::string(cmd) + " one node or process (a command down the buses)";
    what[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(what[0])));
    auto* sub = app.add_subcommand(cmd, what);
    auto name = std::make_shared<std::string>();
    sub->add_option("PATH", *name,
                    "A child of the daemon at --state-dir (NAME), or anything below it "
                    "(NODE/.../NAME, as `enjinctl status` shows the tree)")
        ->required();
    sub->callback([&, name, c = std::string(cmd)] { exitCode = runCommand(stateDir, c, *name); });
  }

  auto* revoke = app.add_subcommand(
      "revoke", "Revoke a node's key: its parent stops trusting it and stops it");
  auto revoked = std::make_shared<std::string>();
  revoke->add_option("NODE", *revoked, "The node's path in the tree (r1, or r1/web)")->required();
  revoke->callback([&, revoked] { exitCode = runRevoke(stateDir, *revoked); });

  auto* wait = app.add_subcommand(
      "wait-ready", "Wait until every node and process in the tree is ready (exit 0), or until "
                    "--timeout-ms (exit 3, naming what is not)");
  auto waitMs = std::make_shared<long>(60'000);
  wait->add_option("--timeout-ms", *waitMs, "How long to wait")->capture_default_str();
  wait->callback([&, waitMs] { exitCode = runWaitReady(stateDir, *waitMs); });

  auto* pid = app.add_subcommand("pid", "Print the pid of a node's daemon or a process");
  auto pidPath = std::make_shared<std::string>();
  pid->add_option("PATH", *pidPath, "As in the tree: r1, r1/web or r1/web/app")->required();
  pid->callback([&, pidPath] { exitCode = runPid(stateDir, *pidPath); });

  auto* logs = app.add_subcommand(
      "logs", "Print the log of a process or node daemon (NODE/.../NAME, as in the tree)");
  auto name = std::make_shared<std::string>();
  auto follow = std::make_shared<bool>(false);
  auto lines = std::make_shared<size_t>(0);
  logs->add_option("PATH", *name, "NAME of the daemon at --state-dir, or NODE/.../NAME")->required();
  logs->add_flag("-f,--follow", *follow, "Keep printing new lines, across rotations");
  logs->add_option("-n,--lines", *lines, "Start this many lines from the end (0: all)");
  logs->callback([&, name, follow, lines] { exitCode = runLogs(stateDir, *name, *follow, *lines); });
}

}  // namespace enjin::ctl
