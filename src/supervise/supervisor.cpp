#include "enjin/supervise/supervisor.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <set>
#include <cerrno>
#include <nlohmann/json.hpp>

#include "enjin/base/file.hpp"
#include "enjin/supervise/holder.hpp"
#include "enjin/supervise/log_writer.hpp"
#include "enjin/supervise/probe.hpp"
#include "enjin/supervise/spawn.hpp"
#include "enjin/supervise/spec_file.hpp"
#include "enjin/supervise/spec_json.hpp"

namespace enjin::supervise {

using nlohmann::json;

std::string_view stateName(ProcessState s) {
  switch (s) {
    case ProcessState::kStopped: return "stopped";
    case ProcessState::kStarting: return "starting";
    case ProcessState::kRunning: return "running";
    case ProcessState::kReady: return "ready";
    case ProcessState::kUnhealthy: return "unhealthy";
    case ProcessState::kBackoff: return "backoff";
    case ProcessState::kFailed: return "failed";
    case ProcessState::kStopping: return "stopping";
  }
  return "unknown";
}

namespace {

constexpr int64_t kReadinessRetryMs = 100;   // between readiness probes until ready
constexpr int64_t kSaveDelayMs = 50;         // state.json writes are coalesced this long
constexpr size_t kEarlyNotifyKept = 8;       // notify datagrams kept while a spawn is pending
constexpr int64_t kTrimDelayMs = 1000;       // the heap is trimmed after this long without a save
constexpr int64_t kHolderByeTimeoutMs = 5000;
constexpr size_t kLogReadChunk = 64 * 1024;
constexpr size_t kLogReadsPerWakeup = 4;     // then let other fds have a turn
constexpr idtype_t kPidfdIdType = static_cast<idtype_t>(3);  // P_PIDFD (Linux 5.4)
constexpr size_t kNotifyPerWakeup = 16;      // datagrams read per wake-up, then others' turn
constexpr size_t kMaxStatusBytes = 256;

// STATUS= text as the process sent it, made safe to show and to serialize: valid UTF-8 only
// (anything else becomes '?'), no control characters, bounded.
std::string cleanStatus(std::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size() && out.size() < kMaxStatusBytes;) {
    const auto c = static_cast<unsigned char>(in[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool ok = len > 0 && i + len <= in.size();
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
    for (size_t k = 1; ok && k < len; ++k) {
      const auto b = static_cast<unsigned char>(in[i + k]);
      ok = (b >> 6) == 0x2;
      cp = (cp << 6) | (b & 0x3f);
    }
    // Strictly valid UTF-8, as JSON writers demand: no overlong forms, no surrogates, nothing
    // past U+10FFFF.
    static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
    ok = ok && cp >= kMinForLength[len] && !(cp >= 0xD800 && cp <= 0xDFFF) && cp <= 0x10FFFF;
    if (!ok) {
      out += '?';
      ++i;
    } else if (len == 1 && (c < 0x20 || c == 0x7f)) {
      out += ' ';
      ++i;
    } else {
      out.append(in.substr(i, len));
      i += len;
    }
  }
  return out;
}

std::string describeExit(const ExitInfo& e) {
  switch (e.kind) {
    case ExitInfo::Kind::kExited: return "exit code " + std::to_string(e.code);
    case ExitInfo::Kind::kSignaled: {
      const char* name = ::sigabbrev_np(e.signal);
      return std::string("signal ") + (name ? std::string("SIG") + name : std::to_string(e.signal));
    }
    case ExitInfo::Kind::kUnknown: return "exit status unknown";
  }
  return "?";
}

ExitInfo exitFromJson(const json& j, int64_t startedAtNs, int64_t nowNs) {
  ExitInfo e;
  e.startedAtNs = startedAtNs;
  e.exitedAtNs = nowNs;
  if (!j.is_object()) return e;  // kUnknown
  const std::string kind = j.value("kind", "");
  if (kind == "exited") {
    e.kind = ExitInfo::Kind::kExited;
    e.code = j.value("code", 0);
  } else if (kind == "signaled") {
    e.kind = ExitInfo::Kind::kSignaled;
    e.signal = j.value("signal", 0);
  }
  return e;
}

bool isLive(ProcessState s) {
  return s == ProcessState::kRunning || s == ProcessState::kReady ||
         s == ProcessState::kUnhealthy || s == ProcessState::kStopping;
}

bool isDown(ProcessState s) { return s == ProcessState::kStopped || s == ProcessState::kFailed; }

}  // namespace

struct Proc {
  ProcessSpec spec;
  std::string specJson;  // spec serialized once per spec change, not once per spawn
  bool holderHasSpec = false;  // the holder holds this spec: a respawn needs only the name
  ProcessState state = ProcessState::kStopped;
  bool wanted = true;     // should be running now (false while stopping or held down)
  bool heldDown = false;  // an operator's stop or the policy's stop/fail: survives a restart
  bool spawnPending = false;
  // Notify datagrams that came while the spawn was on its way, before the holder told us the
  // new pid: a fast process says READY=1 before that (sender pid, text; a few at most).
  std::vector<std::pair<pid_t, std::string>> earlyNotify;
  bool restartAfterStop = false;
  bool removeAfterStop = false;
  std::optional<ProcessSpec> nextSpec;
  int pid = 0;
  uint64_t startTime = 0;
  int64_t startedMonoNs = 0;
  int64_t startedWallMs = 0;
  uint64_t restarts = 0;
  RestartHistory history;
  std::optional<ExitInfo> lastExit;
  std::string detail;
  bool ready = false;
  UniqueFd out, err, notify;
  std::optional<LogWriter> log;
  Reactor::TimerId backoffTimer = 0, stopTimer = 0, readyTimer = 0, watchdogTimer = 0,
                   healthTimer = 0, retryTimer = 0;
  std::unique_ptr<Probe> readinessProbe, healthProbe;
  uint32_t healthFailures = 0;

  void setSpec(ProcessSpec s) {
    spec = std::move(s);
    specJson = specToJson(spec).dump();
    holderHasSpec = false;
    // Checks follow the spec: the next run builds them afresh.
    readinessProbe.reset();
    healthProbe.reset();
  }
};

class Supervisor::Impl {
 public:
  Impl(Reactor& reactor, SupervisorOptions options, std::function<uint64_t()> random)
      : reactor_(reactor), options_(std::move(options)), random_(std::move(random)) {}

  ~Impl() {
    for (auto& [name, p] : procs_) detachFds(*p);
    if (holder_) reactor_.removeFd(holder_->fd());
    if (holderPidfd_) reactor_.removeFd(holderPidfd_.get());
  }

  Observer observer_;

  Status start(std::vector<ProcessSpec> specs);
  Status reload(std::vector<ProcessSpec> specs);
  void stopAll(std::function<void()> done);
  Status startProcess(const std::string& name);
  Status stopProcess(const std::string& name);
  Status restartProcess(const std::string& name);
  std::vector<ProcessStatus> status() const;
  bool settled() const {
    return std::none_of(procs_.begin(), procs_.end(), [](const auto& entry) {
      const ProcessState s = entry.second->state;
      return s == ProcessState::kStarting || s == ProcessState::kRunning ||
             s == ProcessState::kStopping;
    });
  }
  std::string logPath(const std::string& name) const {
    return options_.stateDir + "/logs/" + name + ".log";
  }

 private:
  // --- holder ---
  Status connectHolder(const json& previous);
  void onHolderReadable();
  void handleHolderMessage(const json& msg, std::vector<UniqueFd>& fds);
  void holderLost(const std::string& why);
  void sendHolder(const json& msg);
  // Every message to the holder goes through here. When its socket is full the message waits in
  // HolderClient's queue and the fd is watched for EPOLLOUT until the queue is sent.
  Status sendToHolder(const std::string& text);
  void flushHolderQueue();
  void signalGroup(Proc& p, int signal);

  // --- lifecycle ---
  void maybeStart(Proc& p);
  void spawn(Proc& p);
  void onSpawned(Proc& p, const json& msg);
  void onExit(Proc& p, const ExitInfo& exit);
  void stop(Proc& p, const std::string& why);
  void terminate(Proc& p, const std::string& why);
  void setState(Proc& p, ProcessState s, std::string detail, bool exitEvent = false);
  void setReady(Proc& p, const std::string& detail);
  void beginReadiness(Proc& p);
  void probeReadiness(Proc& p);
  void scheduleHealth(Proc& p);
  void armWatchdog(Proc& p);
  void cancelRunTimers(Proc& p);
  void advanceStopAll();
  void finishRemoval(const std::string& name);
  // Runs the stopAll callback once: after the holder said bye and, if we launched it, exited.
  void finishStop();
  Proc* find(const std::string& name) {
    auto it = procs_.find(name);
    return it == procs_.end() ? nullptr : it->second.get();
  }
  bool dependenciesReady(const Proc& p, std::string& waitingFor) const;
  std::vector<Proc*> dependentsOf(const std::string& name);
  void rebuildOrder();
  // What a previous ring2d recorded about `p` in state.json: counts, history, an operator's or
  // the policy's decision to keep it down, and the state that decision left it in.
  void restore(Proc& p, const json& prev);

  // --- fds ---
  void attachFds(Proc& p, const json& names, std::vector<UniqueFd>& fds);
  void detachFds(Proc& p);
  // Writes the whole lines waiting on `stream`; with `final`, the unterminated rest too.
  void onLogReadable(Proc& p, LogStream stream, bool final = false);
  void drainLogs(Proc& p);  // the process exited: everything it wrote goes to the log
  void reopenLog(Proc& p);  // the log settings may have changed
  void onNotify(Proc& p);
  void applyNotify(Proc& p, std::string_view text);

  // --- state file and events ---
  void scheduleSave();
  void save();
  void flushEvents();
  int64_t nowNs() const { return reactor_.clock().monotonicNanos(); }
  int64_t wallMs() const { return reactor_.clock().wallMillis(); }

  Reactor& reactor_;
  SupervisorOptions options_;
  std::function<uint64_t()> random_;
  std::unique_ptr<HolderClient> holder_;
  UniqueFd holderPidfd_;  // the holder, when this ring2d launched it (so must reap it)
  std::map<std::string, std::unique_ptr<Proc>> procs_;
  std::vector<std::string> order_;      // start order
  std::vector<std::string> specOrder_;  // names in the order the spec lists them
  std::set<std::string> dependedOn_;    // every name in some depends_on (rebuildOrder keeps it)
  std::vector<StateEvent> pending_;
  Reactor::TimerId saveTimer_ = 0;
  bool savedOnce_ = false;       // state.json was written (durably) by this run
  std::string savedDecisions_;   // the held-down and failed processes it last wrote durably
  Reactor::TimerId trimTimer_ = 0;
  bool stoppingAll_ = false;
  bool shutdownSent_ = false;
  bool holderGone_ = false;
  bool holderQueueWatched_ = false;  // the holder fd is watched for EPOLLOUT
  std::function<void()> stopDone_;
  std::string readBuffer_ = std::string(kLogReadChunk, '\0');
  // Test builds (ENJIN_FAULT_INJECTION): ENJIN_FAULT_DIE_AFTER_LOG=N makes this process die
  // right after its Nth write to a log, before it takes those bytes off the socket: the window
  // a kill -9 can hit. 0: off.
  long dieAfterLogWrites_ = faultDieAfterLog();
  static long faultDieAfterLog() {
#ifdef ENJIN_FAULT_INJECTION
    if (const char* v = ::getenv("ENJIN_FAULT_DIE_AFTER_LOG")) return std::strtol(v, nullptr, 10);
#endif
    return 0;
  }
};

// ---------------------------------------------------------------------------------------------
// Start-up and re-adoption

Status Supervisor::Impl::start(std::vector<ProcessSpec> specs) {
  for (const char* sub : {"", "/logs", "/notify"}) {
    const std::string dir = options_.stateDir + sub;
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return errnoError("mkdir " + dir, errno);
  }
  // unix-user children must reach their own notify socket (0600, chowned to them) by path.
  ::chmod((options_.stateDir + "/notify").c_str(), 0711);

  // state.json is replaced without fsync between decisions; after a power cut some filesystems
  // leave it empty. state.durable.json is the copy written (with fsync) at the last decision.
  json previous = json::object();
  for (const char* name : {"/state.json", "/state.durable.json"}) {
    auto text = readFile(options_.stateDir + name);
    if (!text.ok()) continue;
    json parsed = json::parse(*text, nullptr, false);
    if (parsed.is_object()) {
      previous = std::move(parsed);
      break;
    }
    spdlog::warn("{}{} is unreadable; not using it", options_.stateDir, name);
  }
  const json prevProcs = previous.value("processes", json::object());
  for (auto& s : specs) {
    specOrder_.push_back(s.name);
    auto p = std::make_unique<Proc>();
    p->setSpec(std::move(s));
    const auto prev = prevProcs.find(p->spec.name);
    restore(*p, prev == prevProcs.end() ? json() : *prev);
    procs_[p->spec.name] = std::move(p);
  }
  rebuildOrder();
  if (auto st = connectHolder(previous); !st.ok()) return st;
  for (const auto& name : order_) {
    if (Proc* p = find(name); p != nullptr && p->state == ProcessState::kStopped && p->wanted) {
      maybeStart(*p);
    }
  }
  flushEvents();
  return {};
}

Status Supervisor::Impl::connectHolder(const json& previous) {
  auto client = HolderClient::connectOrLaunch(options_.stateDir + "/holder.sock", options_.holderExe,
                                              options_.stateDir + "/holder.log");
  if (!client.ok()) return client.error();
  holder_ = std::move(*client);
  const json prevProcs = previous.value("processes", json::object());
  if (holder_->launched()) {
    // A fresh holder: whatever the state file says still runs was orphaned by a holder that
    // died. It cannot be reaped or re-attached, and must not run twice: kill its group.
    for (const auto& [name, info] : prevProcs.items()) {
      const int pid = info.value("pid", 0);
      const uint64_t startTime = info.value("start_time", uint64_t{0});
      if (pid <= 0) continue;
      // The pid alone could have been reused: only the same start time is the same process.
      auto now = processStartTime(pid);
      if (now.ok() && *now == startTime) {
        spdlog::warn("process '{}' (pid {}) outlived its holder; killing its group", name, pid);
        ::kill(-pid, SIGKILL);
      }
      // Its exit can no longer be collected: say so rather than invent one.
      if (Proc* p = find(name)) {
        p->lastExit = ExitInfo{};  // kUnknown
        p->detail = "its holder was lost; exit status unknown";
      }
    }
    holderPidfd_ = holder_->takeLaunchedPidfd();
    if (holderPidfd_) {
      (void)reactor_.addFd(holderPidfd_.get(), EPOLLIN, [this](uint32_t) {
        // Our own child: collect it so it is never a zombie.
        siginfo_t info{};
        ::waitid(kPidfdIdType, static_cast<id_t>(holderPidfd_.get()), &info, WEXITED | WNOHANG);
        reactor_.removeFd(holderPidfd_.get());
        holderPidfd_.reset();
        finishStop();
      });
    }
  }
  // Hello: the holder answers with every process it holds. This runs before the reactor does,
  // so a bounded blocking wait is fine here.
  sendHolder(json{{"op", "hello"}});
  const int64_t deadline = nowNs() + 5'000'000'000;
  for (;;) {
    std::string text;
    std::vector<UniqueFd> fds;
    auto got = holder_->receive(text, fds);
    if (!got.ok()) return got.error();
    if (!*got) {
      const int64_t left = (deadline - nowNs()) / 1'000'000;
      if (left <= 0) return Error{"holder did not answer hello within 5 s"};
      pollfd pfd{holder_->fd(), POLLIN, 0};
      ::poll(&pfd, 1, static_cast<int>(left));
      continue;
    }
    json msg = json::parse(text, nullptr, false);
    if (msg.value("op", "") == "hello_done") break;
    if (msg.value("op", "") != "slot") continue;
    const std::string name = msg.value("name", "");
    Proc* p = find(name);
    if (p == nullptr) {
      // Held, but no longer in the spec: stop it, then let the holder forget it.
      auto orphan = std::make_unique<Proc>();
      orphan->spec.name = name;
      orphan->wanted = false;
      orphan->removeAfterStop = true;
      p = orphan.get();
      procs_[name] = std::move(orphan);
    }
    attachFds(*p, msg.value("fds", json::array()), fds);
    const json& prev = prevProcs.value(name, json());
    if (msg.value("running", false)) {
      p->pid = msg.value("pid", 0);
      p->startTime = msg.value("start_time", uint64_t{0});
      p->startedMonoNs = nowNs();
      p->startedWallMs = prev.is_object() ? prev.value("started_wall_ms", wallMs()) : wallMs();
      if (!p->wanted) {
        p->state = ProcessState::kRunning;
        stop(*p, "not in the spec any more");
        continue;
      }
      setState(*p, ProcessState::kRunning, "re-adopted");
      const bool wasReady = prev.is_object() && prev.value("ready", false);
      if (p->spec.readiness.kind == ReadinessConfig::Kind::kNone || wasReady) {
        setReady(*p, "re-adopted");
      } else {
        beginReadiness(*p);
      }
    } else if (p->removeAfterStop) {
      finishRemoval(name);
    } else if (p->wanted && msg.value("exit", json()).is_object() && !msg.value("exit_reported", true)) {
      // It exited while no ring2d was there; the holder kept its status for us to act on.
      p->state = ProcessState::kRunning;  // it was running when we lost sight of it
      onExit(*p, exitFromJson(msg["exit"], nowNs(), nowNs()));
    }
    // Otherwise the last ring2d saw the exit and acted on it: state.json says what it decided.
  }
  holderQueueWatched_ = holder_->queued();
  return reactor_.addFd(holder_->fd(), holderQueueWatched_ ? EPOLLIN | EPOLLOUT : EPOLLIN,
                        [this](uint32_t events) {
                          if ((events & EPOLLOUT) != 0 && holder_) flushHolderQueue();
                          if (holder_) onHolderReadable();
                        });
}

// ---------------------------------------------------------------------------------------------
// Holder messages

void Supervisor::Impl::sendHolder(const json& msg) {
  if (!holder_) return;
  if (auto st = sendToHolder(msg.dump()); !st.ok()) holderLost(st.error().message);
}

Status Supervisor::Impl::sendToHolder(const std::string& text) {
  auto st = holder_->send(text);
  if (st.ok() && holder_->queued() && !holderQueueWatched_) {
    holderQueueWatched_ = true;
    (void)reactor_.modifyFd(holder_->fd(), EPOLLIN | EPOLLOUT);
  }
  return st;
}

void Supervisor::Impl::flushHolderQueue() {
  if (auto st = holder_->flush(); !st.ok()) return holderLost(st.error().message);
  if (!holder_->queued()) {
    holderQueueWatched_ = false;
    (void)reactor_.modifyFd(holder_->fd(), EPOLLIN);
  }
}

void Supervisor::Impl::signalGroup(Proc& p, int signal) {
  sendHolder(json{{"op", "signal"}, {"name", p.spec.name}, {"signal", signal}, {"group", true}});
}

void Supervisor::Impl::onHolderReadable() {
  for (int i = 0; holder_ && i < 64; ++i) {
    std::string text;
    std::vector<UniqueFd> fds;
    auto got = holder_->receive(text, fds);
    if (!got.ok()) {
      holderLost(got.error().message);
      break;
    }
    if (!*got) break;
    json msg = json::parse(text, nullptr, false);
    if (msg.is_object()) handleHolderMessage(msg, fds);
  }
  flushEvents();
}

void Supervisor::Impl::handleHolderMessage(const json& msg, std::vector<UniqueFd>& fds) {
  const std::string op = msg.value("op", "");
  if (op == "bye") {
    holderGone_ = true;
    finishStop();
    return;
  }
  if (op == "error") {
    spdlog::error("holder: {}", msg.value("error", "?"));
    return;
  }
  const std::string name = msg.value("name", "");
  Proc* p = find(name);
  if (p == nullptr) return;
  if (msg.contains("fds")) attachFds(*p, msg["fds"], fds);
  if (op == "spawned") {
    onSpawned(*p, msg);
  } else if (op == "spawn_failed") {
    p->spawnPending = false;
    p->holderHasSpec = false;  // the next attempt sends the whole spec again
    p->detail = msg.value("error", "spawn failed");
    spdlog::warn("process '{}': {}", name, p->detail);
    ExitInfo e;
    e.kind = ExitInfo::Kind::kExited;
    e.code = 127;
    e.startedAtNs = e.exitedAtNs = nowNs();
    onExit(*p, e);
  } else if (op == "exited") {
    if (msg.value("pid", 0) != p->pid) return;  // not the run we know: stale
    onExit(*p, exitFromJson(msg.value("exit", json()), p->startedMonoNs, nowNs()));
  }
}

void Supervisor::Impl::holderLost(const std::string& why) {
  if (stoppingAll_ && shutdownSent_) {
    // It left as asked.
    if (holder_) reactor_.removeFd(holder_->fd());
    holder_.reset();
    holderGone_ = true;
    finishStop();
    return;
  }
  // Without the holder nothing can be spawned or reaped. Crash loudly: the ring above (or the
  // operator) restarts ring2d, which starts a new holder and cleans up after the old one.
  spdlog::critical("lost the holder ({}); exiting so a fresh start can recover", why);
  save();
  std::_Exit(70);
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

bool Supervisor::Impl::dependenciesReady(const Proc& p, std::string& waitingFor) const {
  for (const auto& dep : p.spec.dependsOn) {
    auto it = procs_.find(dep);
    if (it == procs_.end()) continue;  // validated at parse time; a removed dependency is gone
    if (!it->second->ready) {
      waitingFor = dep;
      return false;
    }
  }
  return true;
}

std::vector<Proc*> Supervisor::Impl::dependentsOf(const std::string& name) {
  std::vector<Proc*> out;
  // Called on every ready and stop: without this, starting N processes scans all N for each.
  if (!dependedOn_.contains(name)) return out;
  for (auto& [n, p] : procs_) {
    if (std::find(p->spec.dependsOn.begin(), p->spec.dependsOn.end(), name) !=
        p->spec.dependsOn.end()) {
      out.push_back(p.get());
    }
  }
  return out;
}

void Supervisor::Impl::maybeStart(Proc& p) {
  if (!p.wanted || p.spawnPending || isLive(p.state) || stoppingAll_) return;
  if (p.state == ProcessState::kBackoff && p.backoffTimer != 0) return;  // its timer will
  std::string waitingFor;
  if (!dependenciesReady(p, waitingFor)) {
    const std::string detail = "waiting for '" + waitingFor + "' to be ready";
    if (p.state != ProcessState::kStarting || p.detail != detail) {
      setState(p, ProcessState::kStarting, detail);
    }
    return;
  }
  spawn(p);
}

void Supervisor::Impl::spawn(Proc& p) {
  p.spawnPending = true;
  if (p.holderHasSpec) {
    // The fast path: the holder already has everything but the word.
    if (holder_) {
      if (auto st = sendToHolder(R"({"op":"respawn","name":)" + json(p.spec.name).dump() + "}");
          !st.ok()) {
        return holderLost(st.error().message);
      }
    }
    setState(p, ProcessState::kStarting, "");
    return;
  }
  // The request is built from the cached spec text.
  std::string req = R"({"op":"spawn","name":)";
  req += json(p.spec.name).dump();
  req += R"(,"spec":)";
  req += p.specJson;
  if (p.spec.readiness.kind == ReadinessConfig::Kind::kNotify) {
    const std::string path = options_.stateDir + "/notify/" + p.spec.name + ".sock";
    json env = json::array({"NOTIFY_SOCKET=" + path});
    if (p.spec.readiness.watchdogMs > 0) {
      env.push_back("WATCHDOG_USEC=" + std::to_string(p.spec.readiness.watchdogMs * 1000));
    }
    req += R"(,"notify":)" + json(path).dump() + R"(,"env":)" + env.dump();
  }
  req += '}';
  if (holder_) {
    if (auto st = sendToHolder(req); !st.ok()) return holderLost(st.error().message);
  }
  setState(p, ProcessState::kStarting, "");
}

void Supervisor::Impl::onSpawned(Proc& p, const json& msg) {
  p.spawnPending = false;
  p.holderHasSpec = true;
  p.pid = msg.value("pid", 0);
  p.startTime = msg.value("start_time", uint64_t{0});
  p.startedMonoNs = nowNs();
  p.startedWallMs = wallMs();
  p.ready = false;
  p.healthFailures = 0;
  if (!p.wanted || p.state == ProcessState::kStopping) {
    // Stopped while the spawn was on its way.
    p.state = ProcessState::kRunning;
    stop(p, "stopped while starting");
    return;
  }
  setState(p, ProcessState::kRunning, "");
  if (p.spec.readiness.kind == ReadinessConfig::Kind::kNone) {
    setReady(p, "");
  } else {
    beginReadiness(p);
  }
  // What the new run said before we knew its pid counts now, if it was the new run that said it.
  auto early = std::move(p.earlyNotify);
  p.earlyNotify.clear();
  for (const auto& [pid, text] : early) {
    if (pid == p.pid || ::getpgid(pid) == p.pid) applyNotify(p, text);
  }
  scheduleSave();
}

void Supervisor::Impl::cancelRunTimers(Proc& p) {
  for (auto* t : {&p.stopTimer, &p.readyTimer, &p.watchdogTimer, &p.healthTimer, &p.retryTimer}) {
    if (*t != 0) reactor_.cancelTimer(*t);
    *t = 0;
  }
  if (p.readinessProbe) p.readinessProbe->cancel();
  if (p.healthProbe) p.healthProbe->cancel();
}

void Supervisor::Impl::onExit(Proc& p, const ExitInfo& exit) {
  cancelRunTimers(p);
  // The holder already killed what was left of its process group, before reaping it.
  drainLogs(p);
  p.pid = 0;
  p.startTime = 0;
  p.ready = false;
  p.spawnPending = false;
  p.lastExit = exit;
  const std::string what = describeExit(exit);

  if (p.state == ProcessState::kStopping || !p.wanted) {
    setState(p, ProcessState::kStopped, what, true);
    if (p.restartAfterStop) {
      p.restartAfterStop = false;
      if (p.nextSpec) {
        p.setSpec(std::move(*p.nextSpec));
        p.nextSpec.reset();
        reopenLog(p);
      }
      p.wanted = true;
      p.heldDown = false;
      maybeStart(p);
    } else if (p.removeAfterStop) {
      finishRemoval(p.spec.name);
    }
    if (stoppingAll_) advanceStopAll();
    scheduleSave();
    return;
  }

  const RestartDecision d = decideRestart(p.spec.restart, p.history, exit, random_());
  p.history = d.next;
  switch (d.action) {
    case RestartDecision::Action::kRestart:
      ++p.restarts;
      if (d.delayMs == 0) {
        // The fast path: the spawn request goes out before anything is logged or published.
        setState(p, ProcessState::kBackoff, what + "; restarting now", true);
        spawn(p);
      } else {
        setState(p, ProcessState::kBackoff,
                 what + "; restart in " + std::to_string(d.delayMs) + " ms", true);
        p.backoffTimer = reactor_.addTimerAfterMillis(d.delayMs, [this, name = p.spec.name] {
          if (Proc* q = find(name)) {
            q->backoffTimer = 0;
            maybeStart(*q);
            flushEvents();
          }
        });
      }
      break;
    case RestartDecision::Action::kStop:
      p.wanted = false;
      p.heldDown = true;
      setState(p, ProcessState::kStopped, what + " (" + std::string(d.reason) + ")", true);
      break;
    case RestartDecision::Action::kFail:
      p.wanted = false;
      p.heldDown = true;
      setState(p, ProcessState::kFailed,
               what + "; " + std::string(d.reason) + ": " +
                   std::to_string(p.spec.restart.maxRestarts) + " restarts in " +
                   std::to_string(p.spec.restart.windowS) + " s",
               true);
      break;
  }
  scheduleSave();
}

void Supervisor::Impl::stop(Proc& p, const std::string& why) {
  p.wanted = false;
  if (p.backoffTimer != 0) {
    reactor_.cancelTimer(p.backoffTimer);
    p.backoffTimer = 0;
  }
  if (p.spawnPending) {
    setState(p, ProcessState::kStopping, why);  // onSpawned sends the signal
    return;
  }
  if (!isLive(p.state) || p.pid <= 0) {
    if (!isDown(p.state)) setState(p, ProcessState::kStopped, why);
    if (p.removeAfterStop) finishRemoval(p.spec.name);
    return;
  }
  if (p.state == ProcessState::kStopping) return;
  cancelRunTimers(p);
  setState(p, ProcessState::kStopping, why);
  terminate(p, why);
}

void Supervisor::Impl::terminate(Proc& p, const std::string& why) {
  signalGroup(p, p.spec.stopSignal);
  // A stop already under way keeps its deadline: a process cannot postpone its SIGKILL by
  // provoking another stop.
  if (p.stopTimer != 0) return;
  p.stopTimer = reactor_.addTimerAfterMillis(p.spec.stopTimeoutMs, [this, name = p.spec.name, why] {
    if (Proc* q = find(name)) {
      q->stopTimer = 0;
      spdlog::warn("process '{}' still running {} ms after its stop signal ({}); SIGKILL",
                   name, q->spec.stopTimeoutMs, why);
      signalGroup(*q, SIGKILL);
    }
  });
}

void Supervisor::Impl::setState(Proc& p, ProcessState s, std::string detail, bool exitEvent) {
  p.state = s;
  p.detail = std::move(detail);
  StateEvent ev;
  ev.status.name = p.spec.name;
  ev.status.state = s;
  ev.status.pid = p.pid;
  ev.status.startedAtWallMs = isLive(s) ? p.startedWallMs : 0;
  ev.status.restarts = p.restarts;
  ev.status.lastExit = p.lastExit;
  ev.status.detail = p.detail;
  ev.exitEvent = exitEvent;
  pending_.push_back(std::move(ev));
}

void Supervisor::Impl::setReady(Proc& p, const std::string& detail) {
  if (p.readyTimer != 0) reactor_.cancelTimer(p.readyTimer);
  if (p.retryTimer != 0) reactor_.cancelTimer(p.retryTimer);
  p.readyTimer = p.retryTimer = 0;
  p.ready = true;
  setState(p, ProcessState::kReady, detail);
  scheduleHealth(p);
  armWatchdog(p);
  for (Proc* d : dependentsOf(p.spec.name)) {
    // Only a dependent that waits for this; one the policy or an operator stopped stays down.
    if (d->state == ProcessState::kStarting && !d->spawnPending) maybeStart(*d);
  }
  scheduleSave();
}

void Supervisor::Impl::beginReadiness(Proc& p) {
  const auto& r = p.spec.readiness;
  p.readyTimer = reactor_.addTimerAfterMillis(r.timeoutMs, [this, name = p.spec.name] {
    Proc* q = find(name);
    if (q == nullptr) return;
    q->readyTimer = 0;
    const std::string why = "not ready after " + std::to_string(q->spec.readiness.timeoutMs) + " ms";
    setState(*q, ProcessState::kUnhealthy, why);
    terminate(*q, why);
    flushEvents();
  });
  if (r.kind == ReadinessConfig::Kind::kTcp) {
    p.readinessProbe = makeTcpProbe(reactor_, r.host, r.port, 1000);
  } else if (r.kind == ReadinessConfig::Kind::kHttp) {
    auto probe = makeHttpProbe(reactor_, r.url, 1000);
    if (!probe.ok()) {
      setState(p, ProcessState::kUnhealthy, probe.error().message);
      return;
    }
    p.readinessProbe = std::move(*probe);
  } else {
    return;  // notify: READY=1 arrives on the notify socket
  }
  probeReadiness(p);
}

void Supervisor::Impl::probeReadiness(Proc& p) {
  p.readinessProbe->start([this, name = p.spec.name](ProbeResult r) {
    Proc* q = find(name);
    if (q == nullptr || q->ready || q->state != ProcessState::kRunning) return;
    if (r.healthy) {
      setReady(*q, "");
    } else {
      q->retryTimer = reactor_.addTimerAfterMillis(kReadinessRetryMs, [this, name] {
        if (Proc* s = find(name); s != nullptr && s->state == ProcessState::kRunning) {
          s->retryTimer = 0;
          probeReadiness(*s);
        }
      });
    }
    flushEvents();
  });
}

void Supervisor::Impl::scheduleHealth(Proc& p) {
  const auto& h = p.spec.health;
  if (h.kind == HealthConfig::Kind::kNone) return;
  if (!p.healthProbe) {
    if (h.kind == HealthConfig::Kind::kTcp) {
      p.healthProbe = makeTcpProbe(reactor_, h.host, h.port, h.timeoutMs);
    } else if (h.kind == HealthConfig::Kind::kHttp) {
      auto probe = makeHttpProbe(reactor_, h.url, h.timeoutMs);
      if (!probe.ok()) {
        spdlog::error("process '{}': health check: {}", p.spec.name, probe.error().message);
        return;
      }
      p.healthProbe = std::move(*probe);
    } else {
      // The check runs with the process's identity and environment, not ring2d's.
      ExecIdentity id;
      id.env.push_back("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
      for (const auto& [k, v] : p.spec.env) id.env.push_back(k + "=" + v);
      if (!p.spec.user.empty()) {
        passwd* pw = ::getpwnam(p.spec.user.c_str());
        if (pw == nullptr) {
          spdlog::error("process '{}': health check: no user '{}'", p.spec.name, p.spec.user);
          return;
        }
        id.uid = static_cast<int>(pw->pw_uid);
        id.gid = static_cast<int>(pw->pw_gid);
      }
      p.healthProbe = makeExecProbe(reactor_, h.command, h.timeoutMs, std::move(id));
    }
  }
  p.healthTimer = reactor_.addTimerAfterMillis(h.intervalMs, [this, name = p.spec.name] {
    Proc* q = find(name);
    if (q == nullptr) return;
    q->healthTimer = 0;
    q->healthProbe->start([this, name](ProbeResult r) {
      Proc* s = find(name);
      if (s == nullptr || (s->state != ProcessState::kReady && s->state != ProcessState::kUnhealthy)) {
        return;
      }
      if (r.healthy) {
        s->healthFailures = 0;
        if (s->state == ProcessState::kUnhealthy) setState(*s, ProcessState::kReady, "healthy again");
      } else if (++s->healthFailures >= s->spec.health.failures &&
                 s->state != ProcessState::kUnhealthy) {
        const std::string why = "health check failed " + std::to_string(s->healthFailures) +
                                " times: " + r.detail;
        setState(*s, ProcessState::kUnhealthy, why);
        if (s->spec.health.restartWhenUnhealthy) {
          terminate(*s, why);
          flushEvents();
          return;
        }
      }
      scheduleHealth(*s);
      flushEvents();
    });
  });
}

void Supervisor::Impl::armWatchdog(Proc& p) {
  const int64_t ms = p.spec.readiness.watchdogMs;
  if (p.spec.readiness.kind != ReadinessConfig::Kind::kNotify || ms <= 0) return;
  if (p.watchdogTimer != 0) reactor_.cancelTimer(p.watchdogTimer);
  p.watchdogTimer = reactor_.addTimerAfterMillis(ms, [this, name = p.spec.name] {
    Proc* q = find(name);
    if (q == nullptr) return;
    q->watchdogTimer = 0;
    const std::string why = "no WATCHDOG=1 for " + std::to_string(q->spec.readiness.watchdogMs) + " ms";
    setState(*q, ProcessState::kUnhealthy, why);
    terminate(*q, why);
    flushEvents();
  });
}

void Supervisor::Impl::stopAll(std::function<void()> done) {
  stoppingAll_ = true;
  stopDone_ = std::move(done);
  for (auto& [name, p] : procs_) p->wanted = false;
  advanceStopAll();
  flushEvents();
}

void Supervisor::Impl::advanceStopAll() {
  std::vector<std::string> ready;  // stopped after the scan: stop() may reshape order_
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    Proc* p = find(*it);
    if (p == nullptr || isDown(p->state) || p->state == ProcessState::kStopping) continue;
    bool dependentsDown = true;
    for (Proc* d : dependentsOf(p->spec.name)) dependentsDown = dependentsDown && isDown(d->state);
    if (dependentsDown) ready.push_back(*it);
  }
  bool downAtOnce = false;  // a process that was not running stops without an exit to wait for
  for (const auto& name : ready) {
    if (Proc* p = find(name)) {
      stop(*p, "ring2d is stopping");
      downAtOnce = downAtOnce || find(name) == nullptr || isDown(p->state);
    }
  }
  if (downAtOnce) return advanceStopAll();  // its dependencies may stop now
  bool allDown = true;
  for (auto& [name, p] : procs_) allDown = allDown && isDown(p->state);
  if (allDown && !shutdownSent_) {
    shutdownSent_ = true;
    save();
    sendHolder(json{{"op", "shutdown"}});
    reactor_.addTimerAfterMillis(kHolderByeTimeoutMs, [this] {
      if (stopDone_) {
        spdlog::warn("the holder did not confirm its shutdown within {} ms",
                     kHolderByeTimeoutMs);
        auto done = std::move(stopDone_);
        stopDone_ = nullptr;
        done();
      }
    });
  }
}

void Supervisor::Impl::finishStop() {
  if (!stoppingAll_ || !holderGone_ || holderPidfd_ || !stopDone_) return;
  auto done = std::move(stopDone_);
  stopDone_ = nullptr;
  done();
}

void Supervisor::Impl::finishRemoval(const std::string& name) {
  Proc* p = find(name);
  if (p == nullptr) return;
  cancelRunTimers(*p);
  if (p->backoffTimer != 0) reactor_.cancelTimer(p->backoffTimer);
  detachFds(*p);
  sendHolder(json{{"op", "close"}, {"name", name}});
  procs_.erase(name);
  rebuildOrder();
}

void Supervisor::Impl::restore(Proc& p, const json& prev) {
  if (!prev.is_object()) return;
  try {
    p.restarts = prev.value("restarts", uint64_t{0});
    p.heldDown = prev.value("held_down", false);
    p.wanted = !p.heldDown;
    if (p.heldDown) {
      p.state = prev.value("state", "stopped") == "failed" ? ProcessState::kFailed : ProcessState::kStopped;
      p.detail = prev.value("detail", "");
    }
    const json& exit = prev.contains("last_exit") ? prev["last_exit"] : json();
    if (exit.is_object()) p.lastExit = exitFromJson(exit, 0, 0);
    // Restart times were saved as wall-clock times; the window is measured on the monotonic
    // clock, so carry each over as "so long ago".
    const int64_t nowWall = wallMs();
    const json& h = prev.contains("history") ? prev["history"] : json();
    if (h.is_object()) {
      p.history.backoffStep = h.value("backoff_step", 0u);
      for (const auto& at : h.value("restarts_wall_ms", json::array())) {
        if (at.is_number_integer()) {
          p.history.restartsAtNs.push_back(nowNs() - (nowWall - at.get<int64_t>()) * 1'000'000);
        }
      }
    }
  } catch (const json::exception&) {
    spdlog::warn("process '{}': its saved state is unreadable; starting it afresh",
                 p.spec.name);
  }
}

void Supervisor::Impl::rebuildOrder() {
  // Spec order first (independent processes start in the order the file lists them), then
  // anything held but no longer in the spec.
  std::vector<ProcessSpec> specs;
  for (const auto& name : specOrder_) {
    if (Proc* p = find(name)) specs.push_back(p->spec);
  }
  for (auto& [name, p] : procs_) {
    if (std::find(specOrder_.begin(), specOrder_.end(), name) == specOrder_.end()) {
      specs.push_back(p->spec);
    }
  }
  order_.clear();
  for (const ProcessSpec* s : startOrder(specs)) order_.push_back(s->name);
  // A superset is harmless: a spec waiting in nextSpec counts too.
  dependedOn_.clear();
  for (auto& [name, p] : procs_) {
    dependedOn_.insert(p->spec.dependsOn.begin(), p->spec.dependsOn.end());
    if (p->nextSpec) dependedOn_.insert(p->nextSpec->dependsOn.begin(), p->nextSpec->dependsOn.end());
  }
}

// ---------------------------------------------------------------------------------------------
// Commands

Status Supervisor::Impl::reload(std::vector<ProcessSpec> specs) {
  std::map<std::string, ProcessSpec> next;
  specOrder_.clear();
  for (auto& s : specs) {
    specOrder_.push_back(s.name);
    next.emplace(s.name, std::move(s));
  }
  std::vector<std::string> removed;
  for (auto& [name, p] : procs_) {
    if (!next.count(name)) removed.push_back(name);
  }
  for (const auto& name : removed) {
    Proc* p = find(name);
    p->removeAfterStop = true;
    p->restartAfterStop = false;
    p->nextSpec.reset();
    stop(*p, "removed from the spec");
  }
  std::vector<std::string> toStart;  // new, or changed while down
  for (auto& [name, spec] : next) {
    Proc* p = find(name);
    if (p == nullptr) {
      auto fresh = std::make_unique<Proc>();
      fresh->setSpec(std::move(spec));
      procs_[name] = std::move(fresh);
      toStart.push_back(name);
      continue;
    }
    if (p->spec == spec && !p->removeAfterStop) continue;
    p->removeAfterStop = false;
    if (isLive(p->state) || p->spawnPending) {
      spdlog::info("process '{}' changed; restarting it", name);
      p->nextSpec = std::move(spec);
      p->restartAfterStop = true;
      stop(*p, "spec changed");
    } else {
      // Changed while down: a new spec is a new start, as an operator's edit means it.
      p->setSpec(std::move(spec));
      reopenLog(*p);
      p->history = {};
      p->heldDown = false;
      p->wanted = true;
      if (p->state == ProcessState::kFailed) p->state = ProcessState::kStopped;
      toStart.push_back(name);
    }
  }
  rebuildOrder();
  for (const auto& name : order_) {
    if (std::find(toStart.begin(), toStart.end(), name) == toStart.end()) continue;
    if (Proc* p = find(name); p != nullptr && (p->state == ProcessState::kStopped ||
                                               p->state == ProcessState::kStarting)) {
      maybeStart(*p);
    }
  }
  scheduleSave();
  flushEvents();
  return {};
}

Status Supervisor::Impl::startProcess(const std::string& name) {
  Proc* p = find(name);
  if (p == nullptr || p->removeAfterStop) return Error{"no process '" + name + "'"};
  if (stoppingAll_) return Error{"ring2d is stopping"};
  p->heldDown = false;
  if (p->state == ProcessState::kStopping) {
    p->restartAfterStop = true;  // start it again once the stop completes
    flushEvents();
    return {};
  }
  p->wanted = true;
  if (!isLive(p->state) && !p->spawnPending) {
    p->history = {};  // an operator's start forgives past failures
    if (p->backoffTimer != 0) {
      reactor_.cancelTimer(p->backoffTimer);
      p->backoffTimer = 0;
    }
    p->state = ProcessState::kStopped;
    maybeStart(*p);
  }
  flushEvents();
  return {};
}

Status Supervisor::Impl::stopProcess(const std::string& name) {
  Proc* p = find(name);
  if (p == nullptr || p->removeAfterStop) return Error{"no process '" + name + "'"};
  p->heldDown = true;
  p->restartAfterStop = false;
  stop(*p, "stopped by request");
  scheduleSave();
  flushEvents();
  return {};
}

Status Supervisor::Impl::restartProcess(const std::string& name) {
  Proc* p = find(name);
  if (p == nullptr || p->removeAfterStop) return Error{"no process '" + name + "'"};
  if (stoppingAll_) return Error{"ring2d is stopping"};
  p->heldDown = false;
  if (isLive(p->state) || p->spawnPending) {
    p->restartAfterStop = true;
    stop(*p, "restarted by request");
    flushEvents();
    return {};
  }
  return startProcess(name);
}

std::vector<ProcessStatus> Supervisor::Impl::status() const {
  std::vector<ProcessStatus> out;
  for (const auto& name : order_) {
    auto it = procs_.find(name);
    if (it == procs_.end()) continue;
    const Proc& p = *it->second;
    ProcessStatus s;
    s.name = name;
    s.state = p.state;
    s.pid = p.pid;
    s.startedAtWallMs = isLive(p.state) ? p.startedWallMs : 0;
    s.restarts = p.restarts;
    s.lastExit = p.lastExit;
    s.detail = p.detail;
    out.push_back(std::move(s));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Log pipes and notify sockets

void Supervisor::Impl::attachFds(Proc& p, const json& names, std::vector<UniqueFd>& fds) {
  if (!names.is_array() || names.size() != fds.size()) return;
  for (size_t i = 0; i < fds.size(); ++i) {
    const std::string what = names[i].is_string() ? names[i].get<std::string>() : "";
    UniqueFd* slot = what == "out" ? &p.out : what == "err" ? &p.err : what == "notify" ? &p.notify : nullptr;
    if (slot == nullptr) continue;
    if (*slot) reactor_.removeFd(slot->get());
    *slot = std::move(fds[i]);
    const int fl = ::fcntl(slot->get(), F_GETFL);
    ::fcntl(slot->get(), F_SETFL, fl | O_NONBLOCK);
    const std::string name = p.spec.name;
    if (slot == &p.notify) {
      (void)reactor_.addFd(slot->get(), EPOLLIN, [this, name](uint32_t) {
        if (Proc* q = find(name)) onNotify(*q);
      });
    } else {
      const LogStream stream = slot == &p.out ? LogStream::kStdout : LogStream::kStderr;
      // Edge-triggered: a half-written line may wait in the socket for its end, and must not
      // keep the fd ready (and the reactor spinning) meanwhile.
      (void)reactor_.addFd(slot->get(), EPOLLIN | EPOLLET, [this, name, stream](uint32_t) {
        if (Proc* q = find(name)) onLogReadable(*q, stream);
      });
    }
  }
  if (!p.log) {
    auto w = LogWriter::open(logPath(p.spec.name), p.spec.log);
    if (w.ok()) {
      p.log.emplace(std::move(*w));
    } else {
      spdlog::error("process '{}': {}", p.spec.name, w.error().message);
    }
  }
}

void Supervisor::Impl::detachFds(Proc& p) {
  for (UniqueFd* fd : {&p.out, &p.err, &p.notify}) {
    if (*fd) reactor_.removeFd(fd->get());
    fd->reset();
  }
}

void Supervisor::Impl::onLogReadable(Proc& p, LogStream stream, bool final) {
  UniqueFd& fd = stream == LogStream::kStdout ? p.out : p.err;
  if (!fd) return;
  // Peek, write, then consume, and only whole lines: the unfinished end of a line stays in the
  // kernel, where it survives this process's death, instead of in a buffer here; and a line
  // leaves the kernel only after it is in the log file, so a kill between the two steps repeats
  // it rather than losing it.
  for (size_t i = 0; i < kLogReadsPerWakeup; ++i) {
    const ssize_t n = ::recv(fd.get(), readBuffer_.data(), readBuffer_.size(), MSG_PEEK | MSG_DONTWAIT);
    if (n <= 0) {
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) {  // every writer gone
        if (p.log) (void)p.log->finish(stream, reactor_.clock().wallMicros());
        reactor_.removeFd(fd.get());
        fd.reset();
      }
      return;
    }
    std::string_view peeked(readBuffer_.data(), static_cast<size_t>(n));
    size_t take = peeked.rfind('\n');
    if (take != std::string_view::npos) {
      ++take;
    } else if (final || peeked.size() >= LogWriter::kMaxLineBytes) {
      take = peeked.size();  // a line too long to wait for, or the writer is gone
    } else {
      return;  // the rest of this line has not been written yet
    }
    if (p.log) {
      auto st = p.log->append(stream, peeked.substr(0, take), reactor_.clock().wallMicros());
      if (st.ok() && final) st = p.log->finish(stream, reactor_.clock().wallMicros());
      if (!st.ok()) spdlog::error("process '{}': {}", p.spec.name, st.error().message);
    }
    if (dieAfterLogWrites_ > 0 && --dieAfterLogWrites_ == 0) std::_Exit(137);
    // Only this process reads the socket, so the peeked bytes are still its head.
    const ssize_t got = ::recv(fd.get(), readBuffer_.data(), take, MSG_DONTWAIT);
    if (got != static_cast<ssize_t>(take)) {
      spdlog::error("process '{}': took {} of the {} bytes just logged off its output", p.spec.name,
                    got, take);
      return;
    }
  }
  // More is waiting than one turn takes: come back after the other fds had theirs. The socket
  // is edge-triggered, so nothing else would call us for data already there.
  reactor_.addTimerAfterMillis(0, [this, name = p.spec.name, stream, final] {
    if (Proc* q = find(name)) onLogReadable(*q, stream, final);
  });
}

void Supervisor::Impl::drainLogs(Proc& p) {
  // The holder reaped the process (and killed its group) before reporting the exit, so all it
  // ever wrote is already in the sockets.
  onLogReadable(p, LogStream::kStdout, true);
  onLogReadable(p, LogStream::kStderr, true);
}

void Supervisor::Impl::reopenLog(Proc& p) {
  if (!p.log) return;
  auto w = LogWriter::open(logPath(p.spec.name), p.spec.log);
  if (w.ok()) {
    p.log.emplace(std::move(*w));
  } else {
    spdlog::error("process '{}': {}", p.spec.name, w.error().message);
  }
}

void Supervisor::Impl::onNotify(Proc& p) {
  char buf[4096];
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
  for (size_t i = 0; i < kNotifyPerWakeup; ++i) {
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(p.notify.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) break;
    // Only the process or a member of its process group may speak for it (systemd's
    // NotifyAccess=all, within the service); a stale datagram from an earlier run is ignored.
    const cmsghdr* c = CMSG_FIRSTHDR(&msg);
    if (c == nullptr || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_CREDENTIALS) continue;
    ucred cred;
    std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
    if (p.spawnPending) {
      // Judged once the holder says which pid the new run has (onSpawned).
      if (p.earlyNotify.size() < kEarlyNotifyKept) {
        p.earlyNotify.emplace_back(cred.pid, std::string(buf, static_cast<size_t>(n)));
      }
      continue;
    }
    if (p.pid <= 0 || (cred.pid != p.pid && ::getpgid(cred.pid) != p.pid)) continue;
    applyNotify(p, std::string_view(buf, static_cast<size_t>(n)));
  }
  flushEvents();
}

void Supervisor::Impl::applyNotify(Proc& p, std::string_view text) {
  {
    // A process that is being stopped, or not running, has nothing more to say.
    const bool live = p.state == ProcessState::kRunning || p.state == ProcessState::kReady ||
                      p.state == ProcessState::kUnhealthy;
    if (!live) return;
    while (!text.empty()) {
      const size_t nl = text.find('\n');
      std::string_view line = text.substr(0, nl);
      text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
      if (line == "READY=1") {
        if (!p.ready && p.state == ProcessState::kRunning) setReady(p, p.detail);
      } else if (line.starts_with("STATUS=")) {
        p.detail = cleanStatus(line.substr(7));
        scheduleSave();
      } else if (line == "WATCHDOG=1") {
        if (p.ready) armWatchdog(p);
      } else if (line == "WATCHDOG=trigger" && p.stopTimer == 0) {
        setState(p, ProcessState::kUnhealthy, "WATCHDOG=trigger");
        terminate(p, "WATCHDOG=trigger");
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// State file and events

void Supervisor::Impl::scheduleSave() {
  if (saveTimer_ != 0) return;
  saveTimer_ = reactor_.addTimerAfterMillis(kSaveDelayMs, [this] {
    saveTimer_ = 0;
    save();
    // save() builds and drops a JSON tree of every process, which leaves the heap full of holes:
    // once things are quiet, hand the free pages back. Measured with 1000 processes: 3.3 MB of
    // ring2d's 10.6 MB PSS. Not after every save: there a trim took several ms.
    if (trimTimer_ != 0) reactor_.cancelTimer(trimTimer_);
    trimTimer_ = reactor_.addTimerAfterMillis(kTrimDelayMs, [this] {
      trimTimer_ = 0;
      ::malloc_trim(0);
    });
  });
}

namespace {

// `s` as a JSON string; bytes that are not UTF-8 become U+FFFD, as nlohmann's replace handler
// makes them. Names, states and most details need no escaping and take the short way.
void appendJsonString(std::string& out, std::string_view s) {
  const bool plain = std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x80 && c != '"' && c != '\\';
  });
  if (plain) {
    out += '"';
    out += s;
    out += '"';
    return;
  }
  out += json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
}

template <typename Int>
void appendInt(std::string& out, Int v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}

}  // namespace

// Written as text, one process per line, without building a JSON tree: with 1000 processes the
// tree took 8-20 ms of the reactor and left the heap full of holes. Reading it back is
// nlohmann's (restore()), so the shape is the one a tree would have had.
void Supervisor::Impl::save() {
  std::string text = "{\"version\":1,\"processes\":{";
  text.reserve(procs_.size() * 320 + 64);
  // What must survive the machine, not only ring2d: an operator's stop, the policy giving up.
  std::string decisions;
  const int64_t nowWall = wallMs(), now = nowNs();
  bool first = true;
  for (const auto& [name, p] : procs_) {
    text += first ? "\n" : ",\n";
    first = false;
    appendJsonString(text, name);
    text += ":{\"pid\":";
    appendInt(text, p->pid);
    text += ",\"start_time\":";
    appendInt(text, p->startTime);
    text += ",\"started_wall_ms\":";
    appendInt(text, p->startedWallMs);
    text += ",\"restarts\":";
    appendInt(text, p->restarts);
    text += p->ready ? ",\"ready\":true" : ",\"ready\":false";
    text += ",\"state\":\"";
    text += stateName(p->state);
    text += "\",\"detail\":";
    appendJsonString(text, p->detail);
    text += p->heldDown ? ",\"held_down\":true" : ",\"held_down\":false";
    text += ",\"last_exit\":";
    text += exitToJson(p->lastExit).dump();
    text += ",\"history\":{\"backoff_step\":";
    appendInt(text, p->history.backoffStep);
    text += ",\"restarts_wall_ms\":[";
    for (size_t i = 0; i < p->history.restartsAtNs.size(); ++i) {
      if (i > 0) text += ',';
      appendInt(text, nowWall - (now - p->history.restartsAtNs[i]) / 1'000'000);
    }
    text += "]}}";
    if (p->heldDown || p->state == ProcessState::kFailed) {
      decisions += name;
      decisions += p->heldDown ? "\n" : "\t";
    }
  }
  text += "\n}}\n";
  // Pids, counts and histories matter only while the holder lives, and the page cache outlives
  // a ring2d crash: those are written without fsync (the rename alone keeps it whole). A change
  // of decisions is flushed to disk, so a power cut does not bring back a stopped process.
  // Filesystems that do not order a rename after the data it replaces (XFS; ext4 without
  // auto_da_alloc) can leave the file empty after a power cut: the decisions are also kept in
  // state.durable.json, which start() reads when state.json is unreadable.
  const bool durable = !savedOnce_ || decisions != savedDecisions_;
  if (durable) {
    if (auto st = writeFileAtomic(options_.stateDir + "/state.durable.json", text, 0600);
        !st.ok()) {
      spdlog::error("{}", st.error().message);
      return;
    }
  }
  if (auto st = writeFileAtomic(options_.stateDir + "/state.json", text, 0600, Replace::kYes,
                                durable ? Sync::kDurable : Sync::kAtomicOnly);
      !st.ok()) {
    spdlog::error("{}", st.error().message);
    return;
  }
  if (durable) {
    savedOnce_ = true;
    savedDecisions_ = std::move(decisions);
  }
}

void Supervisor::Impl::flushEvents() {
  if (pending_.empty()) return;
  auto events = std::move(pending_);
  pending_.clear();
  for (const auto& ev : events) {
    const auto& s = ev.status;
    if (ev.exitEvent && s.lastExit) {
      spdlog::info("process '{}' {}: {}", s.name, stateName(s.state), s.detail);
    } else {
      spdlog::debug("process '{}' {} {}", s.name, stateName(s.state), s.detail);
    }
    if (observer_) observer_(ev);
  }
}

// ---------------------------------------------------------------------------------------------

Supervisor::Supervisor(Reactor& reactor, SupervisorOptions options, std::function<uint64_t()> random)
    : impl_(std::make_unique<Impl>(reactor, std::move(options), std::move(random))) {}
Supervisor::~Supervisor() = default;
void Supervisor::setObserver(Observer observer) { impl_->observer_ = std::move(observer); }
Status Supervisor::start(std::vector<ProcessSpec> specs) { return impl_->start(std::move(specs)); }
Status Supervisor::reload(std::vector<ProcessSpec> specs) { return impl_->reload(std::move(specs)); }
void Supervisor::stopAll(std::function<void()> done) { impl_->stopAll(std::move(done)); }
Status Supervisor::startProcess(const std::string& n) { return impl_->startProcess(n); }
Status Supervisor::stopProcess(const std::string& n) { return impl_->stopProcess(n); }
Status Supervisor::restartProcess(const std::string& n) { return impl_->restartProcess(n); }
std::vector<ProcessStatus> Supervisor::status() const { return impl_->status(); }
bool Supervisor::settled() const { return impl_->settled(); }
Status Supervisor::runCommand(std::string_view op, const std::string& name) {
  if (op == "start") return startProcess(name);
  if (op == "stop") return stopProcess(name);
  if (op == "restart") return restartProcess(name);
  return Error{"unknown command '" + std::string(op) + "' (known: start, stop, restart)"};
}
std::string Supervisor::logPath(const std::string& n) const { return impl_->logPath(n); }

}  // namespace enjin::supervise
