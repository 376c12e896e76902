// The HAProxy router: one master-worker haproxy that ring1d supervises, driven through its two
// CLI sockets. Each app is a backend be_NAME with a fixed number of server slots s1..sN; an
// instance takes a free slot (set server addr + state over admin.sock) and gives it back, so
// instances come and go without a reload. A new set of apps, or an app that outgrew its slots,
// re-renders haproxy.cfg and asks the master to reload (master.sock `reload`): the new worker
// takes the listening sockets over from the old one, which finishes what it serves and exits.
//
// The rendered file always holds the latest addresses and states, so a router that restarts, or
// a reload, starts from the right servers; the runtime commands after a reload only bring back
// what a file cannot say (drain).
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <string_view>
#include <thread>

#include "enjin/base/file.hpp"
#include "enjin/base/unique_fd.hpp"
#include "enjin/router/router.hpp"

extern char** environ;

namespace enjin::router {

Router::~Router() = default;

namespace {

using State = RouterServer::State;
using Clock = std::chrono::steady_clock;

constexpr int kIoTimeoutMs = 500;         // each read or write on a CLI socket
constexpr int kCliTotalMs = 3'000;        // one whole CLI exchange
constexpr int kMinSlots = 8;              // server slots of a backend, at least
constexpr int kCheckTimeoutMs = 10'000;   // haproxy -c
constexpr int kReloadTimeoutMs = 10'000;  // until the new worker answers
constexpr int kNotRunning = 503;          // Error::code of a CLI socket nobody listens on

bool isLabel(std::string_view s) {
  if (s.empty() || s.size() > 63 || s.front() == '-' || s.back() == '-') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

bool isDomain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    if (!isLabel(s.substr(start, dot == std::string_view::npos ? dot : dot - start))) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

bool isInstanceName(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

bool isIpv6(const std::string& host) {
  in6_addr a6{};
  return ::inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}

bool isAddress(const std::string& host) {
  in_addr a4{};
  return ::inet_pton(AF_INET, host.c_str(), &a4) == 1 || isIpv6(host);
}

const char* stateWord(State s) {
  switch (s) {
    case State::kReady:
      return "ready";
    case State::kDrain:
      return "drain";
    case State::kMaint:
      return "maint";
  }
  return "maint";
}

int remainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

// Waits for `events` on `fd`, at most `timeoutMs`; false on timeout.
Result<bool> waitFor(int fd, short events, int timeoutMs) {
  pollfd p{fd, events, 0};
  while (true) {
    int n = ::poll(&p, 1, timeoutMs);
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return errnoError("poll", errno);
  }
}

// One exchange with an haproxy CLI socket (the worker's stats socket or the master's socket),
// in non-interactive mode: connect, send `command`, shut our side down, read until haproxy
// closes. Every wait is bounded, so a stuck haproxy costs at most kCliTotalMs. A socket nobody
// listens on is an error with code kNotRunning.
Result<std::string> cliExchange(const std::string& path, const std::string& command) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return Error{"socket path too long: " + path, 500};
  std::memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return errnoError("socket", errno);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    if (err == ENOENT || err == ECONNREFUSED) {
      return Error{"connect " + path + ": " + std::strerror(err), kNotRunning};
    }
    if (err != EINPROGRESS && err != EAGAIN) return errnoError("connect " + path, err);
  }
  auto deadline = Clock::now() + std::chrono::milliseconds(kCliTotalMs);
  std::string out = command + "\n";
  size_t sent = 0;
  while (sent < out.size()) {
    auto ready = waitFor(fd.get(), POLLOUT, std::min(kIoTimeoutMs, remainingMs(deadline)));
    if (!ready) return ready.error().wrap(path);
    if (!*ready) return Error{path + ": timed out sending '" + command + "'", 504};
    ssize_t n = ::send(fd.get(), out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) return errnoError("send to " + path, errno);
    if (n > 0) sent += static_cast<size_t>(n);
  }
  ::shutdown(fd.get(), SHUT_WR);
  std::string reply;
  char buf[16 * 1024];
  while (true) {
    auto ready = waitFor(fd.get(), POLLIN, std::min(kIoTimeoutMs, remainingMs(deadline)));
    if (!ready) return ready.error().wrap(path);
    if (!*ready)
      return Error{path + ": timed out waiting for the answer to '" + command + "'", 504};
    ssize_t n = ::recv(fd.get(), buf, sizeof(buf), 0);
    if (n == 0) return reply;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      if (errno == ECONNRESET) return reply;
      return errnoError("recv from " + path, errno);
    }
    reply.append(buf, static_cast<size_t>(n));
  }
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r'))
    s.remove_suffix(1);
  while (!s.empty() && (s.front() == '\n' || s.front() == ' ')) s.remove_prefix(1);
  return std::string(s);
}

// Runs `argv` with stdout and stderr into a pipe, at most `timeoutMs` (then SIGKILL). Returns the
// exit status (or 128 + signal) and the output.
Result<std::pair<int, std::string>> runCaptured(const std::vector<std::string>& argv,
                                                int timeoutMs) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return errnoError("pipe", errno);
  UniqueFd readEnd(fds[0]);
  UniqueFd writeEnd(fds[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, writeEnd.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, writeEnd.get(), 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  writeEnd.reset();
  if (rc != 0) return errnoError("spawn " + argv[0], rc);

  std::string output;
  auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  bool timedOut = false;
  char buf[4096];
  while (true) {
    auto ready = waitFor(readEnd.get(), POLLIN, remainingMs(deadline));
    if (!ready || !*ready) {
      timedOut = true;
      break;
    }
    ssize_t n = ::read(readEnd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (output.size() < 64 * 1024) output.append(buf, static_cast<size_t>(n));
  }
  if (timedOut) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timedOut)
    return Error{argv[0] + ": no answer within " + std::to_string(timeoutMs) + " ms", 500};
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return std::pair<int, std::string>{code, std::move(output)};
}

// One server slot of a backend: free (no instance, maint, port 1) or an instance's.
struct Slot {
  std::string instance;  // empty: free
  std::string host = "127.0.0.1";
  int port = 1;
  State state = State::kMaint;
  bool leaving = false;  // gone from the last apply(): drained now, freed at the next one
  bool operator==(const Slot&) const = default;
};

struct App {
  std::string name;
  std::vector<Slot> slots;
};

// The raw counters of one backend, as one worker reports them.
struct Counters {
  uint64_t requests = 0, r2xx = 0, r4xx = 0, r5xx = 0, econ = 0, eresp = 0, wretr = 0, wredis = 0;
  double rtimeMs = 0;
};

uint64_t toU64(std::string_view s) {
  uint64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

std::vector<std::string_view> splitCsv(std::string_view line) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t comma = line.find(',', start);
    out.push_back(line.substr(start, comma == std::string_view::npos ? comma : comma - start));
    if (comma == std::string_view::npos) return out;
    start = comma + 1;
  }
}

// `show stat` CSV -> BACKEND rows by proxy name. Columns are found by the header's names, so a
// version that adds columns reads the same.
Result<std::map<std::string, Counters>> parseShowStat(const std::string& csv) {
  std::istringstream in(csv);
  std::string line;
  if (!std::getline(in, line) || line.rfind("# ", 0) != 0) {
    return Error{"show stat: no CSV header in '" + trim(csv.substr(0, 200)) + "'", 502};
  }
  std::map<std::string, size_t> col;
  auto names = splitCsv(std::string_view(line).substr(2));
  for (size_t i = 0; i < names.size(); ++i) col[std::string(names[i])] = i;
  for (const char* need : {"pxname", "svname", "hrsp_2xx", "hrsp_4xx", "hrsp_5xx", "econ", "eresp",
                           "wretr", "wredis", "rtime"}) {
    if (!col.count(need)) return Error{std::string("show stat: no column ") + need, 502};
  }
  std::map<std::string, Counters> out;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto f = splitCsv(line);
    auto get = [&](const char* name) -> std::string_view {
      auto it = col.find(name);
      return it == col.end() || it->second >= f.size() ? std::string_view{} : f[it->second];
    };
    if (get("svname") != "BACKEND") continue;
    Counters c;
    c.r2xx = toU64(get("hrsp_2xx"));
    c.r4xx = toU64(get("hrsp_4xx"));
    c.r5xx = toU64(get("hrsp_5xx"));
    c.requests = toU64(get("req_tot"));
    if (c.requests == 0) {  // older versions leave a backend's req_tot empty
      c.requests = toU64(get("hrsp_1xx")) + c.r2xx + toU64(get("hrsp_3xx")) + c.r4xx + c.r5xx +
                   toU64(get("hrsp_other"));
    }
    c.econ = toU64(get("econ"));
    c.eresp = toU64(get("eresp"));
    c.wretr = toU64(get("wretr"));
    c.wredis = toU64(get("wredis"));
    c.rtimeMs = static_cast<double>(toU64(get("rtime")));
    out[std::string(get("pxname"))] = c;
  }
  return out;
}

// `show proc` on the master: the pids under "# workers" and the master's failed-reload count.
struct ProcView {
  std::set<long> workers;
  long failedReloads = 0;
};

ProcView parseShowProc(const std::string& text) {
  ProcView v;
  std::istringstream in(text);
  std::string line;
  std::string section = "master";
  while (std::getline(in, line)) {
    if (line.rfind("#<PID>", 0) == 0) continue;
    if (line.rfind("# ", 0) == 0) {
      section = line.substr(2);
      continue;
    }
    std::istringstream fields(line);
    long pid = 0;
    std::string type;
    if (!(fields >> pid >> type)) continue;
    if (type == "master") {
      auto at = line.find("[failed: ");
      if (at != std::string::npos) v.failedReloads = std::atol(line.c_str() + at + 9);
    } else if (section == "workers" && type == "worker") {
      v.workers.insert(pid);
    }
  }
  return v;
}

std::string renderAddress(const std::string& host, int port) {
  if (isIpv6(host)) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

class HaproxyRouter final : public Router {
 public:
  explicit HaproxyRouter(RouterSettings settings) : s_(std::move(settings)) {
    if (std::find(s_.domains.begin(), s_.domains.end(), "localhost") == s_.domains.end()) {
      s_.domains.insert(s_.domains.begin(), "localhost");
    }
    ::mkdir(s_.stateDir.c_str(), 0700);
  }

  supervise::ProcessSpec processSpec() const override {
    supervise::ProcessSpec spec;
    spec.name = "router";
    // -W: master-worker; -db: the master stays in the foreground, as a supervised process must.
    spec.command = {s_.exe, "-W", "-db", "-f", cfgPath(), "-S", masterSock() + ",mode,600"};
    spec.cwd = s_.stateDir;
    spec.restart.mode = supervise::RestartMode::kAlways;
    spec.readiness.kind = "tcp";
    spec.readiness.host = s_.listenHost;
    spec.readiness.port = s_.listenPort;
    spec.readiness.timeoutMs = 10'000;
    // SIGTERM to the master stops its workers at once; the holder kills what is left after the
    // timeout.
    spec.stopSignal = SIGTERM;
    spec.stopTimeoutMs = 5'000;
    return spec;
  }

  Status apply(const std::vector<RouterBackend>& backends) override {
    auto planned = plan(backends);
    if (!planned) return planned.error();
    std::vector<App> next = std::move(*planned);

    bool structureChanged = next.size() != apps_.size();
    for (size_t i = 0; !structureChanged && i < next.size(); ++i) {
      structureChanged =
          next[i].name != apps_[i].name || next[i].slots.size() != apps_[i].slots.size();
    }

    if (auto st = writeConfig(render(next)); !st) return st;

    // A fresh Router does not know what a running router serves: the first apply reloads.
    bool reload = structureChanged || !appliedOnce_;
    std::vector<App> previous = std::move(apps_);
    apps_ = std::move(next);
    appliedOnce_ = true;

    if (reload) {
      auto reloaded = reloadRouter();
      if (!reloaded) {
        if (reloaded.error().code == kNotRunning) return {};  // starts from the new file
        pushAll_ = true;
        return reloaded.error();
      }
      pushAll_ = true;  // the new worker: bring back what the file cannot say (drain)
    }
    Status pushed = push(pushAll_ ? std::vector<App>{} : previous);
    if (!pushed) {
      if (pushed.error().code == kNotRunning) {
        pushAll_ = true;
        return {};
      }
      pushAll_ = true;  // the worker's view is unknown now: the next apply sets every slot
      return pushed;
    }
    pushAll_ = false;
    return {};
  }

  Result<std::vector<RouterAppStats>> stats() override {
    auto raw = rawCounters();
    if (!raw) return raw.error();
    std::vector<RouterAppStats> out;
    for (const auto& app : apps_) {
      Counters c;
      if (auto it = raw->find("be_" + app.name); it != raw->end()) c = it->second;
      const Counters& b = base_[app.name];
      RouterAppStats st;
      st.app = app.name;
      st.requests = b.requests + c.requests;
      st.responses2xx = b.r2xx + c.r2xx;
      st.responses4xx = b.r4xx + c.r4xx;
      st.responses5xx = b.r5xx + c.r5xx;
      st.connectErrors = b.econ + c.econ;
      st.responseErrors = b.eresp + c.eresp;
      st.retries = b.wretr + c.wretr;
      st.redispatches = b.wredis + c.wredis;
      st.avgResponseSeconds = c.rtimeMs / 1000.0;
      out.push_back(std::move(st));
    }
    return out;
  }

 private:
  std::string cfgPath() const { return s_.stateDir + "/haproxy.cfg"; }
  std::string masterSock() const { return s_.stateDir + "/master.sock"; }
  std::string adminSock() const { return s_.stateDir + "/admin.sock"; }

  // The slots of every app after `backends`: an instance keeps its slot, a new one takes the
  // first free slot, one that is gone is drained (and its slot freed at the next apply). A
  // backend keeps its slot count while its instances fit, else gets max(8, 2 x instances).
  Result<std::vector<App>> plan(const std::vector<RouterBackend>& backends) const {
    for (const auto& d : s_.domains) {
      if (!isDomain(d)) return Error{"router: domain '" + d + "': not a lower-case DNS name", 400};
    }
    std::vector<App> out;
    std::set<std::string> seenApps;
    for (const auto& be : backends) {
      if (!isLabel(be.app)) {
        return Error{"router: app '" + be.app + "': not a DNS label (a-z, 0-9, '-')", 400};
      }
      if (!seenApps.insert(be.app).second) {
        return Error{"router: app '" + be.app + "': given twice", 400};
      }
      std::set<std::string> seen;
      for (const auto& sv : be.servers) {
        std::string what = "router: app '" + be.app + "': server '" + sv.name + "'";
        if (!isInstanceName(sv.name)) return Error{what + ": bad name", 400};
        if (!seen.insert(sv.name).second) return Error{what + ": given twice", 400};
        if (!isAddress(sv.host))
          return Error{what + ": host '" + sv.host + "' is not an IP address", 400};
        if (sv.port < 1 || sv.port > 65535) return Error{what + ": port out of range", 400};
      }

      App app{be.app, {}};
      auto old =
          std::find_if(apps_.begin(), apps_.end(), [&](const App& a) { return a.name == be.app; });
      if (old != apps_.end()) app.slots = old->slots;
      // Last apply's leavers are freed now; this apply's leavers are drained.
      for (auto& slot : app.slots) {
        if (slot.leaving) slot = Slot{};
      }
      for (auto& slot : app.slots) {
        if (slot.instance.empty() || seen.count(slot.instance)) continue;
        slot.leaving = true;
        if (slot.state == State::kReady) slot.state = State::kDrain;
      }
      size_t needed = be.servers.size();
      for (const auto& slot : app.slots) needed += slot.leaving ? 1 : 0;
      if (app.slots.size() < needed) {
        // Grown: a new configuration; instances keep their slot numbers.
        app.slots.resize(std::max<size_t>(kMinSlots, 2 * needed));
      }
      for (const auto& sv : be.servers) {
        auto it = std::find_if(app.slots.begin(), app.slots.end(),
                               [&](const Slot& s) { return s.instance == sv.name; });
        if (it == app.slots.end()) {
          it = std::find_if(app.slots.begin(), app.slots.end(),
                            [](const Slot& s) { return s.instance.empty(); });
        }
        *it = Slot{sv.name, sv.host, sv.port, sv.state, false};
      }
      out.push_back(std::move(app));
    }
    return out;
  }

  std::string render(const std::vector<App>& apps) const {
    std::ostringstream c;
    c << "# Written by enjin's router at each change of its apps; edits are overwritten.\n"
         "global\n"
         "    master-worker\n"
         // expose-fd listeners: a reload's new worker takes the listening sockets over from the
         // old one, so no connection is refused during a reload.
         "    stats socket "
      << adminSock()
      << " mode 600 level admin expose-fd listeners\n"
         "    stats timeout 10s\n"
         // An old worker still serving a slow client after a reload is stopped after this.
         "    hard-stop-after 30s\n"
         "    log stderr format raw local0 notice\n"
         "\n"
         "defaults\n"
         "    mode http\n"
         "    log global\n"
         "    timeout connect 2s\n"
         "    timeout client 30s\n"
         "    timeout server 30s\n"
         "    timeout http-request 10s\n"
         "    timeout http-keep-alive 5s\n"
         "    timeout queue 5s\n"
         // A refused connection is retried, each time on another server (redispatch 1).
         "    retries 3\n"
         "    option redispatch 1\n"
         "    retry-on conn-failure empty-response response-timeout\n"
         "    option forwardfor\n"
         "\n"
         "frontend fe_router\n"
         "    bind "
      << renderAddress(s_.listenHost, s_.listenPort)
      << "\n"
         // The Host header without its port, lower case.
         "    http-request set-var(txn.host) req.hdr(host),field(1,:),lower\n"
         // Only requests that are safe to send twice are retried once they reached a server
         // (empty response, timeout); a connection that failed is retried for every method.
         "    http-request disable-l7-retry unless METH_GET || METH_OPTIONS\n";
    for (const auto& app : apps) {
      c << "    use_backend be_" << app.name << " if { var(txn.host) -m str";
      for (const auto& d : s_.domains) c << ' ' << app.name << '.' << d;
      c << " }";
      if (s_.subdomains) {
        // -m end on ".NAME.<domain>": a name below it, never one that only ends in the same
        // letters (xNAME.<domain>).
        c << " || { var(txn.host) -m end";
        for (const auto& d : s_.domains) c << " ." << app.name << '.' << d;
        c << " }";
      }
      c << "\n";
    }
    c << "    default_backend no_app\n"
         "\n"
         "backend no_app\n"
         "    http-request return status 404 content-type \"text/html; charset=utf-8\" string "
         "\"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body><h1>404 Not "
         "Found</h1><p>No app answers to this host name.</p></body></html>\"\n";
    for (const auto& app : apps) {
      c << "\nbackend be_" << app.name << "\n"
        << "    balance roundrobin\n";
      for (size_t i = 0; i < app.slots.size(); ++i) {
        const Slot& s = app.slots[i];
        c << "    server s" << (i + 1) << ' ' << renderAddress(s.host, s.port);
        // A file cannot say drain; a fresh worker has nothing to drain, so it is maint there.
        if (s.state != State::kReady) c << " disabled";
        if (!s.instance.empty()) c << "  # " << s.instance;
        c << '\n';
      }
    }
    return c.str();
  }

  // Checks `text` with `haproxy -c` and only then puts it in place of the running config.
  Status writeConfig(const std::string& text) {
    std::string candidate = s_.stateDir + "/haproxy.cfg.candidate";
    if (auto st = writeFileAtomic(candidate, text, 0600, Replace::kYes, Sync::kAtomicOnly); !st) {
      return st.error().wrap("router: write config");
    }
    auto checked = runCaptured({s_.exe, "-c", "-q", "-f", candidate}, kCheckTimeoutMs);
    if (!checked) return checked.error().wrap("router: check config");
    if (checked->first != 0) {
      return Error{"router: haproxy rejects the rendered config (kept in " + candidate +
                       "): " + trim(checked->second),
                   500};
    }
    if (auto st = writeFileAtomic(cfgPath(), text, 0600); !st) {
      return st.error().wrap("router: write config");
    }
    ::unlink(candidate.c_str());
    return {};
  }

  Result<std::map<std::string, Counters>> rawCounters() {
    auto csv = cliExchange(adminSock(), "show stat");
    if (!csv) return csv.error().wrap("router: show stat");
    return parseShowStat(*csv);
  }

  Result<long> workerPid() {
    auto info = cliExchange(adminSock(), "show info");
    if (!info) return info.error();
    auto at = info->find("\nPid: ");
    if (at == std::string::npos) return Error{"router: show info: no Pid", 502};
    return std::atol(info->c_str() + at + 6);
  }

  // Asks the master to reload and waits until the new worker answers on admin.sock. The
  // counters of the old worker are kept first, so that stats() keeps counting across reloads.
  Status reloadRouter() {
    auto before = cliExchange(masterSock(), "show proc");
    if (!before) return before.error().wrap("router: reload");
    ProcView old = parseShowProc(*before);
    // The old worker's counts: read now, and again through the master once the new worker took
    // over (the old one then serves no new connection); the later reading wins when there is one.
    std::map<std::string, Counters> retired;
    if (auto raw = rawCounters()) retired = std::move(*raw);
    auto keepRetired = [&] {
      for (const auto& [px, c] : retired) {
        if (px.rfind("be_", 0) != 0) continue;
        Counters& b = base_[px.substr(3)];
        b.requests += c.requests;
        b.r2xx += c.r2xx;
        b.r4xx += c.r4xx;
        b.r5xx += c.r5xx;
        b.econ += c.econ;
        b.eresp += c.eresp;
        b.wretr += c.wretr;
        b.wredis += c.wredis;
      }
    };
    // The master re-executes itself on `reload` and closes this connection without an answer.
    if (auto r = cliExchange(masterSock(), "reload"); !r && r.error().code != kNotRunning) {
      return r.error().wrap("router: reload");
    }
    auto deadline = Clock::now() + std::chrono::milliseconds(kReloadTimeoutMs);
    while (Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      // While the master re-executes, its socket refuses connections: try again.
      auto now = cliExchange(masterSock(), "show proc");
      if (!now) continue;
      ProcView v = parseShowProc(*now);
      if (v.failedReloads > old.failedReloads) {
        return Error{
            "router: reload: the new haproxy worker failed to start; the old one serves on", 500};
      }
      long fresh = 0;
      for (long pid : v.workers) {
        if (!old.workers.count(pid)) fresh = pid;
      }
      // Done when the master lists only the new worker as current and it answers on admin.sock
      // (the old one, soft-stopping, no longer accepts there).
      if (fresh == 0 || v.workers.size() != 1) continue;
      auto pid = workerPid();
      if (!pid || *pid != fresh) continue;
      for (long oldPid : old.workers) {
        auto csv = cliExchange(masterSock(), "@!" + std::to_string(oldPid) + " show stat");
        if (!csv) continue;
        if (auto later = parseShowStat(*csv)) retired = std::move(*later);
      }
      keepRetired();
      return {};
    }
    return Error{"router: reload: no new haproxy worker answered within " +
                     std::to_string(kReloadTimeoutMs) + " ms",
                 504};
  }

  Status command(const std::string& cmd) {
    auto reply = cliExchange(adminSock(), cmd);
    if (!reply) return reply.error().wrap("router");
    std::string text = trim(*reply);
    // `set server ... state` answers nothing; `set server ... addr` says what changed.
    if (text.empty() || text.find("changed from") != std::string::npos ||
        text.rfind("no need to change", 0) == 0) {
      return {};
    }
    return Error{"router: '" + cmd + "': " + text, 502};
  }

  // Sends the runtime commands that take the worker from `previous` to apps_ (every slot when
  // `previous` is empty or does not match).
  Status push(const std::vector<App>& previous) {
    for (const auto& app : apps_) {
      const App* before = nullptr;
      for (const auto& p : previous) {
        if (p.name == app.name && p.slots.size() == app.slots.size()) before = &p;
      }
      for (size_t i = 0; i < app.slots.size(); ++i) {
        const Slot& s = app.slots[i];
        const Slot* was = before ? &before->slots[i] : nullptr;
        std::string server = "be_" + app.name + "/s" + std::to_string(i + 1);
        bool moved = !was || was->host != s.host || was->port != s.port;
        bool restated = !was || was->state != s.state;
        // A server that moves is out of rotation while it does: a request never reaches a
        // half-changed server.
        if (moved && was && was->state == State::kReady) {
          if (auto st = command("set server " + server + " state maint"); !st) return st;
          restated = true;
        }
        if (moved) {
          if (auto st = command("set server " + server + " addr " + s.host + " port " +
                                std::to_string(s.port));
              !st) {
            return st;
          }
        }
        if (restated) {
          if (auto st = command("set server " + server + " state " + stateWord(s.state)); !st) {
            return st;
          }
        }
      }
    }
    return {};
  }

  RouterSettings s_;
  std::vector<App> apps_;  // as of the last apply(), in its order
  bool appliedOnce_ = false;
  bool pushAll_ = true;                   // the worker may differ from apps_: set every slot
  std::map<std::string, Counters> base_;  // counts of workers that reloads retired, per app
};

}  // namespace

std::unique_ptr<Router> makeHaproxyRouter(RouterSettings settings) {
  return std::make_unique<HaproxyRouter>(std::move(settings));
}

void writeRouterMetrics(metrics::Registry::Writer& out, const std::vector<RouterAppStats>& stats) {
  auto d = [](uint64_t v) { return static_cast<double>(v); };
  out.family("enjin_router_requests_total", "counter", "HTTP requests the router sent to an app");
  for (const auto& s : stats) out.sample({{"app", s.app}}, d(s.requests));
  out.family("enjin_router_responses_total", "counter",
             "HTTP responses of an app, by status class");
  for (const auto& s : stats) {
    out.sample({{"app", s.app}, {"code", "2xx"}}, d(s.responses2xx));
    out.sample({{"app", s.app}, {"code", "4xx"}}, d(s.responses4xx));
    out.sample({{"app", s.app}, {"code", "5xx"}}, d(s.responses5xx));
  }
  out.family("enjin_router_errors_total", "counter",
             "Failed connections to an app's instances (connect) and broken responses (response)");
  for (const auto& s : stats) {
    out.sample({{"app", s.app}, {"kind", "connect"}}, d(s.connectErrors));
    out.sample({{"app", s.app}, {"kind", "response"}}, d(s.responseErrors));
  }
  out.family("enjin_router_retries_total", "counter", "Connection attempts the router retried");
  for (const auto& s : stats) out.sample({{"app", s.app}}, d(s.retries));
  out.family("enjin_router_redispatches_total", "counter",
             "Requests the router moved to another instance of the app");
  for (const auto& s : stats) out.sample({{"app", s.app}}, d(s.redispatches));
  out.family("enjin_router_response_time_seconds", "gauge",
             "Average time to an app's response head over its last 1024 requests");
  for (const auto& s : stats) out.sample({{"app", s.app}}, s.avgResponseSeconds);
}

void addRouterMetrics(metrics::Registry& registry,
                      std::function<std::vector<RouterAppStats>()> snapshot) {
  registry.addCollector([snapshot = std::move(snapshot)](metrics::Registry::Writer& out) {
    writeRouterMetrics(out, snapshot());
  });
}

}  // namespace enjin::router
