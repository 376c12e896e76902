#include "test_fleet.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "enjin/base/file.hpp"

namespace enjin::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
constexpr const char* kEtcd = "/usr/bin/etcd";
constexpr const char* kEtcdctl = "/usr/bin/etcdctl";
constexpr int kClientPort = 2379, kPeerPort = 2380;

std::atomic<int> gFleetCounter{0};

// Where a fleet's dir goes: memory (/dev/shm) when the machine has it with room to spare. etcd
// fsyncs its log on every write, and on a disk shared with other jobs a slow fsync stalls a
// member's raft loop for longer than the short election timeout the fleet uses: elections
// nobody asked for. Each member preallocates about 128 MB of log, so a small /dev/shm (a
// container's 64 MB) is passed over.
fs::path fleetDirRoot() {
  constexpr uint64_t kRoom = uint64_t{1} << 30;
  struct statvfs st {};
  if (::statvfs("/dev/shm", &st) == 0 && uint64_t{st.f_bavail} * st.f_frsize >= kRoom) {
    return "/dev/shm";
  }
  return fs::temp_directory_path();
}

int64_t msSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

int pidfdOpen(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}
int pidfdSignal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// Waits until the process behind `pidfd` has exited, at most `timeoutMs`; true if it has.
bool pollExit(int pidfd, int timeoutMs) {
  pollfd p{pidfd, POLLIN, 0};
  for (;;) {
    int r = ::poll(&p, 1, timeoutMs);
    if (r >= 0) return r > 0;
    if (errno != EINTR) return false;
  }
}

std::string joinArgv(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    out += a;
  }
  return out;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

// argv[0] as a path: as given if it holds a '/', else the first executable in PATH's folders.
std::string resolve(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  for (const char* dir :
       {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}) {
    std::string p = std::string(dir) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return name;
}

const std::string& ipPath() {
  static const std::string path = resolve("ip");
  return path;
}

// Owns the char* arrays execve wants, built before fork (nothing allocates after it).
struct ExecArgs {
  std::string path;
  std::vector<std::string> argvStore, envStore;
  std::vector<char*> argv, envp;

  ExecArgs(const std::vector<std::string>& args, const std::vector<std::string>& env)
      : path(resolve(args.at(0))), argvStore(args), envStore(env) {
    envStore.emplace_back(kPath);
    for (auto& a : argvStore) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : envStore) envp.push_back(e.data());
    envp.push_back(nullptr);
  }
};

// The part of a spawned child between fork and exec: only async-signal-safe calls. On failure
// it writes errno to `errFd` (close-on-exec, so the parent reads EOF on a successful exec).
[[noreturn]] void childExec(const ExecArgs& args, int netnsFd, int stdinFd, int outFd, int errFd,
                            int reportFd, pid_t parent, bool ownGroup) {
  int err = 0;
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  signal(SIGPIPE, SIG_DFL);
  // Dies with the test process, even when it crashes; exits at once if it died already.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) _exit(127);
  if (ownGroup) ::setpgid(0, 0);
  if (netnsFd >= 0 && ::setns(netnsFd, CLONE_NEWNET) != 0) {
    err = errno;
  } else if (::dup2(stdinFd, 0) < 0 || ::dup2(outFd, 1) < 0 || ::dup2(errFd, 2) < 0) {
    err = errno;
  } else {
    ::execve(args.path.c_str(), args.argv.data(), args.envp.data());
    err = errno;
  }
  ssize_t ignored = ::write(reportFd, &err, sizeof err);
  (void)ignored;
  _exit(127);
}

// Forks and execs; returns the pid once the exec succeeded, or why it failed.
Result<pid_t> forkExec(const ExecArgs& args, int netnsFd, int outFd, int errFd, bool ownGroup) {
  UniqueFd devNull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devNull) return errnoError("open /dev/null", errno);
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return errnoError("pipe2", errno);
  UniqueFd reportRead(report[0]), reportWrite(report[1]);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return errnoError("fork", errno);
  if (pid == 0) {
    childExec(args, netnsFd, devNull.get(), outFd, errFd, reportWrite.get(), parent, ownGroup);
  }
  reportWrite.reset();
  int childErr = 0;
  ssize_t n;
  do {
    n = ::read(reportRead.get(), &childErr, sizeof childErr);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    int status;
    ::waitpid(pid, &status, 0);
    return errnoError("exec " + args.path, childErr);
  }
  return pid;
}

// The namespace file's identity, to compare with /proc/PID/ns/net.
std::optional<std::pair<dev_t, ino_t>> netnsIdentity(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return std::make_pair(st.st_dev, st.st_ino);
}

std::vector<pid_t> pidsInIdentity(const std::pair<dev_t, ino_t>& id) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return out;
  const pid_t self = ::getpid();
  while (dirent* e = ::readdir(d)) {
    char* end;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == self) continue;
    auto pidId = netnsIdentity("/proc/" + std::string(e->d_name) + "/ns/net");
    if (pidId && *pidId == id) out.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(d);
  return out;
}

// SIGKILLs every process inside the namespace and waits (bounded) until none is left. Each kill
// goes through a pidfd opened and re-checked against the namespace first, so a pid reused by an
// unrelated process between the scan and the kill is never signalled. Processes that are
// children of this one are reaped: through `owned` when it knows the pid (so the HostProcess
// records how it ended), with waitpid otherwise (orphans reparented to this subreaper).
Status killAllIn(const std::string& netns, const std::function<HostProcess*(pid_t)>& owned) {
  auto id = netnsIdentity("/run/netns/" + netns);
  if (!id) return Status{};  // no such namespace: nothing runs in it
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  std::vector<pid_t> left;
  for (;;) {
    left = pidsInIdentity(*id);
    if (left.empty()) return Status{};
    if (Clock::now() > deadline) break;
    std::vector<std::pair<pid_t, UniqueFd>> killed;
    for (pid_t pid : left) {
      UniqueFd pidfd(pidfdOpen(pid));
      if (!pidfd) continue;  // gone already
      auto pidId = netnsIdentity("/proc/" + std::to_string(pid) + "/ns/net");
      if (!pidId || *pidId != *id) continue;
      if (pidfdSignal(pidfd.get(), SIGKILL) == 0) killed.emplace_back(pid, std::move(pidfd));
    }
    for (auto& [pid, pidfd] : killed) {
      pollExit(pidfd.get(), 2000);
      if (HostProcess* p = owned ? owned(pid) : nullptr) {
        p->wait(2000);
      } else {
        int status;
        ::waitpid(pid, &status, WNOHANG);  // ECHILD: not ours to reap
      }
    }
  }
  std::string pids;
  for (pid_t p : left) pids += (pids.empty() ? "" : " ") + std::to_string(p);
  return Error{"namespace '" + netns + "': processes still running after SIGKILL: " + pids};
}

Status ip(const std::vector<std::string>& args) {
  std::vector<std::string> argv{ipPath()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = runCommand(argv, 10000);
  if (!r) return r.error().wrap("`" + joinArgv(argv) + "`");
  if (!r->ok()) return Error{"`" + joinArgv(argv) + "`: " + r->describe()};
  return Status{};
}

// Whether the pid in a fleet name (decimal digits) no longer runs. Out of range: not a pid of
// ours, so not dead (never swept); and never kill(-1, ...).
bool namedPidIsDead(const std::string& digits) {
  long pid = std::strtol(digits.c_str(), nullptr, 10);
  if (pid <= 0 || pid > 4194304) return false;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

}  // namespace

// ---- CommandResult, runCommand ----------------------------------------------------------------

bool CommandResult::ok() const {
  return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int CommandResult::exitCode() const {
  if (status < 0) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::string CommandResult::describe() const {
  std::string what = status < 0 ? "timed out" : "exit " + std::to_string(exitCode());
  std::string text = trimmed(err.empty() ? out : err);
  return text.empty() ? what : what + ": " + text;
}

Result<CommandResult> runCommand(const std::vector<std::string>& argv, int timeoutMs, int netnsFd,
                                 const std::vector<std::string>& env) {
  if (argv.empty()) return Error{"runCommand: empty argv"};
  ExecArgs args(argv, env);
  int outPipe[2], errPipe[2];
  if (::pipe2(outPipe, O_CLOEXEC) != 0) return errnoError("pipe2", errno);
  UniqueFd outRead(outPipe[0]), outWrite(outPipe[1]);
  if (::pipe2(errPipe, O_CLOEXEC) != 0) return errnoError("pipe2", errno);
  UniqueFd errRead(errPipe[0]), errWrite(errPipe[1]);
  auto pid = forkExec(args, netnsFd, outWrite.get(), errWrite.get(), true);
  if (!pid) return pid.error();
  outWrite.reset();
  errWrite.reset();

  CommandResult result;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  bool timedOut = false;
  // Reads until the command exits (its pidfd), not until EOF: a background process it left
  // (`sh -c "x &"`) may hold the pipes open for long. What is buffered at the exit is read.
  UniqueFd pidfd(pidfdOpen(*pid));
  ::fcntl(outRead.get(), F_SETFL, O_NONBLOCK);
  ::fcntl(errRead.get(), F_SETFL, O_NONBLOCK);
  pollfd fds[3] = {
      {outRead.get(), POLLIN, 0}, {errRead.get(), POLLIN, 0}, {pidfd.get(), POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  auto drain = [&](int i) {
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) fds[i].fd = -1;  // EOF; poll ignores negative fds
      return;
    }
  };
  for (bool exited = false; !exited;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      timedOut = true;
      break;
    }
    int r = ::poll(fds, 3, static_cast<int>(left.count()));
    if (r <= 0) continue;  // EINTR, or the deadline (checked above)
    exited = pidfd && fds[2].revents != 0;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd >= 0 && (fds[i].revents != 0 || exited)) drain(i);
    }
    if (!pidfd) exited = fds[0].fd < 0 && fds[1].fd < 0;  // no pidfd: until EOF
  }
  if (timedOut) ::kill(*pid, SIGKILL);
  int status;
  while (::waitpid(*pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.status = timedOut ? -1 : status;
  return result;
}

// ---- HostProcess -------------------------------------------------------------------------------

bool HostProcess::running() {
  if (pid_ == 0) return false;
  int status;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    waitStatus_ = r == pid_ ? std::optional<int>(status) : std::nullopt;
    pid_ = 0;  // reaped: the pid may be reused from now on
    return false;
  }
  return true;
}

bool HostProcess::signal(int sig) {
  return running() && ::kill(pid_, sig) == 0;
}

std::optional<int> HostProcess::wait(int timeoutMs) {
  if (!running()) return waitStatus_;
  UniqueFd pidfd(pidfdOpen(pid_));
  if (pidfd) pollExit(pidfd.get(), timeoutMs);
  if (running()) return std::nullopt;
  return waitStatus_;
}

void HostProcess::stop(int graceMs) {
  if (!signal(SIGTERM)) return;
  if (wait(graceMs)) return;
  signal(SIGKILL);
  wait(5000);
}

std::string HostProcess::log() const {
  std::ifstream in(logPath_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ---- TestFleet ---------------------------------------------------------------------------------

std::optional<std::string> TestFleet::unavailableReason() {
  static const std::optional<std::string> reason = []() -> std::optional<std::string> {
    if (::geteuid() != 0) {
      return "not root (euid " + std::to_string(::geteuid()) +
             "): test hosts are network namespaces, which need CAP_SYS_ADMIN";
    }
    if (::access(ipPath().c_str(), X_OK) != 0) return "iproute2's `ip` not found (no netns)";
    std::string probe =
        "ej" + std::to_string(::getpid()) + "x" + std::to_string(gFleetCounter++) + "-probe";
    if (Status s = ip({"netns", "add", probe}); !s) {
      return "cannot make a network namespace: " + s.error().message;
    }
    if (Status s = ip({"netns", "del", probe}); !s) {
      return "cannot delete a network namespace: " + s.error().message;
    }
    return std::nullopt;
  }();
  return reason;
}

std::optional<std::string> TestFleet::etcdUnavailableReason() {
  if (auto r = unavailableReason()) return r;
  for (const char* bin : {kEtcd, kEtcdctl}) {
    if (::access(bin, X_OK) != 0) {
      return std::string(bin) + " not found (Debian packages etcd-server, etcd-client)";
    }
  }
  return std::nullopt;
}

TestFleet::TestFleet(std::string tag, int hosts) : tag_(std::move(tag)) {
  for (int i = 1; i <= hosts; ++i) hosts_.push_back(hostOfIndex(i));
}

Result<std::unique_ptr<TestFleet>> TestFleet::create(const FleetOptions& options) {
  if (options.hosts < 1 || options.hosts > 250) {
    return Error{"fleet: hosts must be 1..250, not " + std::to_string(options.hosts)};
  }
  // Orphans of the hosts' processes (a ring0d's daemons) are reparented here, not to init, so
  // teardown reaps them.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  sweepStaleFleets();
  const int counter = gFleetCounter++;
  const pid_t pid = ::getpid();
  std::unique_ptr<TestFleet> fleet(
      new TestFleet(std::to_string(pid) + "x" + std::to_string(counter), options.hosts));
  fleet->options_ = options;
  // Fleets are isolated from each other anyway (each has its own bridge); distinct subnets only
  // keep logs and captures of concurrent fleets unambiguous.
  fleet->octetA_ = 200 + static_cast<int>(pid % 50);
  fleet->octetB_ = (static_cast<int>(pid / 50) * 7 + counter) % 256;
  Status built = fleet->build();
  if (built && options.tls) built = fleet->makeCertificates();
  if (Status s = built; !s) {
    Status t = fleet->teardown();
    Error e = s.error().wrap("fleet " + fleet->tag_);
    if (!t) e.message += " (and teardown: " + t.error().message + ")";
    return e;
  }
  return fleet;
}

Status TestFleet::build() {
  std::string tmpl = (fleetDirRoot() / ("enjin-fleet-" + tag_ + "-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) return errnoError("mkdtemp " + tmpl, errno);
  dir_ = tmpl;
  std::error_code ec;
  fs::create_directories(dir_ + "/logs", ec);
  if (ec) return Error{"mkdir " + dir_ + "/logs: " + ec.message()};

  const std::string sw = switchNetns();
  if (Status s = ip({"netns", "add", sw}); !s) return s;
  madeNetns_.push_back(sw);
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"-n", sw, "link", "set", "lo", "up"},
           {"-n", sw, "link", "add", "br0", "type", "bridge", "forward_delay", "0"},
           {"-n", sw, "link", "set", "br0", "up"}}) {
    if (Status s = ip(args); !s) return s;
  }
  for (size_t i = 0; i < hosts_.size(); ++i) {
    const std::string& host = hosts_[i];
    const std::string ns = netnsOf(host);
    const std::string port = "v" + std::to_string(i + 1);
    if (Status s = ip({"netns", "add", ns}); !s) return s;
    madeNetns_.push_back(ns);
    // The veth pair is made inside the switch namespace and its peer put straight into the
    // host's: no link ever exists in the machine's own namespace.
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"-n", ns, "link", "set", "lo", "up"},
             {"-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
             {"-n", sw, "link", "set", port, "master", "br0"},
             {"-n", sw, "link", "set", port, "up"},
             {"-n", ns, "addr", "add", addressOf(host) + "/24", "dev", "eth0"},
             {"-n", ns, "link", "set", "eth0", "up"}}) {
      if (Status s = ip(args); !s) return s;
    }
  }
  return Status{};
}

TestFleet::~TestFleet() {
  if (Status s = teardown(); !s) {
    std::fprintf(stderr, "TestFleet %s: teardown: %s\n", tag_.c_str(), s.error().message.c_str());
  }
}

Status TestFleet::teardown() {
  if (tornDown_) return Status{};
  tornDown_ = true;
  std::string errors;
  auto note = [&](const Status& s) {
    if (!s) errors += (errors.empty() ? "" : "; ") + s.error().message;
  };
  // Hosts first (the switch runs nothing of its own), each emptied before it is deleted, since a
  // namespace with a process left in it lives on after `ip netns del`.
  for (auto it = madeNetns_.rbegin(); it != madeNetns_.rend(); ++it) {
    note(killAllIn(*it, [this](pid_t pid) -> HostProcess* {
      for (auto& p : procs_) {
        if (p->pid() == pid) return p.get();
      }
      return nullptr;
    }));
  }
  for (auto& p : procs_) {
    if (p->running()) p->stop(1000);  // not in a namespace any more: only if it left one
  }
  etcd_.clear();
  for (auto it = madeNetns_.rbegin(); it != madeNetns_.rend(); ++it) {
    note(ip({"netns", "del", *it}));
  }
  madeNetns_.clear();
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    if (ec) note(Error{"remove " + dir_ + ": " + ec.message()});
  }
  if (!errors.empty()) return Error{"fleet " + tag_ + ": " + errors};
  return Status{};
}

int TestFleet::indexOf(const std::string& host) const {
  for (size_t i = 0; i < hosts_.size(); ++i) {
    if (hosts_[i] == host) return static_cast<int>(i + 1);
  }
  return 0;
}

std::string TestFleet::netnsOf(const std::string& host) const {
  return "ej" + tag_ + "-" + host;
}

std::vector<std::string> TestFleet::netnsNames() const {
  std::vector<std::string> out{switchNetns()};
  for (const auto& h : hosts_) out.push_back(netnsOf(h));
  return out;
}

std::string TestFleet::addressOf(const std::string& host) const {
  return "10." + std::to_string(octetA_) + "." + std::to_string(octetB_) + "." +
         std::to_string(indexOf(host));
}

Result<UniqueFd> TestFleet::openNetns(const std::string& netns) const {
  std::string path = "/run/netns/" + netns;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errnoError("open " + path, errno);
  return fd;
}

Result<HostProcess*> TestFleet::spawn(const std::string& host, const std::vector<std::string>& argv,
                                      const std::vector<std::string>& env,
                                      const std::string& logName) {
  auto what = [&] { return "spawn '" + logName + "' on " + host; };
  if (indexOf(host) == 0) return Error{what() + ": no such host in fleet " + tag_};
  if (argv.empty()) return Error{what() + ": empty argv"};
  auto ns = openNetns(netnsOf(host));
  if (!ns) return ns.error().wrap(what());
  std::string logPath = dir_ + "/logs/" + logName + ".log";
  UniqueFd log(::open(logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!log) return errnoError(what() + ": open " + logPath, errno);
  ExecArgs args(argv, env);
  auto pid = forkExec(args, ns->get(), log.get(), log.get(), true);
  if (!pid) return pid.error().wrap(what());
  procs_.push_back(std::make_unique<HostProcess>(host, logName, *pid, logPath));
  return procs_.back().get();
}

Result<CommandResult> TestFleet::exec(const std::string& host, const std::vector<std::string>& argv,
                                      int timeoutMs) {
  if (indexOf(host) == 0) return Error{"exec on " + host + ": no such host in fleet " + tag_};
  auto ns = openNetns(netnsOf(host));
  if (!ns) return ns.error().wrap("exec on " + host);
  auto r = runCommand(argv, timeoutMs, ns->get(), {"ETCDCTL_API=3"});
  if (!r) return r.error().wrap("exec `" + joinArgv(argv) + "` on " + host);
  return r;
}

Status TestFleet::runIn(const std::string& host, const std::function<void()>& fn) {
  if (indexOf(host) == 0) return Error{"runIn " + host + ": no such host in fleet " + tag_};
  auto ns = openNetns(netnsOf(host));
  if (!ns) return ns.error().wrap("runIn " + host);
  int err = 0;
  // setns(CLONE_NEWNET) changes only the calling thread, which ends with fn.
  std::thread t([&] {
    if (::setns(ns->get(), CLONE_NEWNET) != 0) {
      err = errno;
      return;
    }
    fn();
  });
  t.join();
  if (err != 0) return errnoError("runIn " + host + ": setns", err);
  return Status{};
}

// ---- etcd --------------------------------------------------------------------------------------

std::string TestFleet::clientUrl(const std::string& host) const {
  return scheme() + addressOf(host) + ":" + std::to_string(kClientPort);
}

std::string TestFleet::localClientUrl() const {
  return scheme() + "127.0.0.1:" + std::to_string(kClientPort);
}

FleetTlsFiles TestFleet::tlsFiles(const std::string& host) const {
  if (!options_.tls) return {};
  const std::string d = dir_ + "/tls/";
  return {d + "ca.crt", d + "etcd-" + host + ".crt", d + "etcd-" + host + ".key",
          d + "client-" + host + ".crt", d + "client-" + host + ".key"};
}

// The CA, then per host a member certificate (server and client use: members present it to
// each other as peers) and a client certificate. EC P-256 keys: quick to make.
Status TestFleet::makeCertificates() {
  const std::string d = dir_ + "/tls";
  std::error_code ec;
  fs::create_directories(d, ec);
  if (ec) return Error{"mkdir " + d + ": " + ec.message()};
  const std::vector<std::string> newKey{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                        "-nodes"};
  auto openssl = [&](std::vector<std::string> args) -> Status {
    args.insert(args.begin(), "openssl");
    auto r = runCommand(args, 20000);
    if (!r) return r.error().wrap("openssl");
    if (!r->ok()) return Error{"openssl " + args[1] + " in " + d + ": " + r->describe()};
    return {};
  };
  auto req = [&](const std::vector<std::string>& head, const std::string& cn,
                 const std::string& name) {
    std::vector<std::string> a = head;
    a.insert(a.end(), newKey.begin(), newKey.end());
    if (head.size() > 1) a.insert(a.end(), {"-days", "1"});  // "-x509": the CA's own certificate
    a.insert(a.end(), {"-subj", "/CN=" + cn, "-keyout", d + "/" + name + ".key"});
    return a;
  };
  auto sign = [&](const std::string& name, const std::string& ext) {
    std::ofstream(d + "/" + name + ".ext") << ext;
    return openssl({"x509", "-req", "-in", d + "/" + name + ".csr", "-CA", d + "/ca.crt", "-CAkey",
                    d + "/ca.key", "-CAcreateserial", "-days", "1", "-extfile",
                    d + "/" + name + ".ext", "-out", d + "/" + name + ".crt"});
  };
  auto ca = req({"req", "-x509"}, "enjin-test-ca-" + tag_, "ca");
  ca.insert(ca.end(), {"-out", d + "/ca.crt"});
  if (Status st = openssl(ca); !st) return st;
  for (const auto& h : hosts_) {
    for (const std::string kind : {"etcd-", "client-"}) {
      const std::string name = kind + h;
      auto r = req({"req"}, h, name);
      r.insert(r.end(), {"-out", d + "/" + name + ".csr"});
      if (Status st = openssl(r); !st) return st;
      const std::string ext = kind == "etcd-"
                                  ? "subjectAltName=IP:" + addressOf(h) +
                                        ",IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
                                  : std::string("extendedKeyUsage=clientAuth\n");
      if (Status st = sign(name, ext); !st) return st;
    }
  }
  return {};
}

std::vector<std::string> TestFleet::allClientUrls() const {
  std::vector<std::string> out;
  for (const auto& h : hosts_) out.push_back(clientUrl(h));
  return out;
}

std::string TestFleet::allClientUrlsJoined() const {
  std::string out;
  for (const auto& u : allClientUrls()) out += (out.empty() ? "" : ",") + u;
  return out;
}

std::string TestFleet::etcdLeader(const std::string& fromHost) {
  auto r = etcdctl(fromHost, {"endpoint", "status", "-w", "json"}, allClientUrlsJoined());
  if (!r.ok() || !r->ok()) return "";
  const nlohmann::json all = nlohmann::json::parse(r->out, nullptr, false);
  if (!all.is_array()) return "";
  for (const auto& e : all) {
    const nlohmann::json st = e.value("Status", nlohmann::json::object());
    if (st.value("header", nlohmann::json::object()).value("member_id", uint64_t{0}) !=
        st.value("leader", uint64_t{1})) {
      continue;
    }
    for (const auto& h : hosts_) {
      if (e.value("Endpoint", "") == clientUrl(h)) return h;
    }
  }
  return "";
}

HostProcess* TestFleet::etcdOf(const std::string& host) {
  auto it = etcd_.find(host);
  if (it == etcd_.end() || !it->second->running()) return nullptr;
  return it->second;
}

Result<HostProcess*> TestFleet::spawnEtcd(const std::string& host, bool fresh) {
  if (etcdOf(host) != nullptr) return Error{"etcd on " + host + ": already running"};
  std::string cluster;
  for (const auto& h : hosts_) {
    cluster += (cluster.empty() ? "" : ",") + h + "=" + scheme() + addressOf(h) + ":" +
               std::to_string(kPeerPort);
  }
  const std::string addr = addressOf(host);
  const std::string http = scheme();
  // With a data dir from an earlier run of this member the --initial-* flags are ignored.
  std::vector<std::string> argv{
      kEtcd,
      "--name=" + host,
      "--data-dir=" + dir_ + "/etcd-" + host,
      "--listen-client-urls=" + http + addr + ":" + std::to_string(kClientPort) + "," +
          localClientUrl(),
      "--advertise-client-urls=" + clientUrl(host),
      "--listen-peer-urls=" + http + addr + ":" + std::to_string(kPeerPort),
      "--initial-advertise-peer-urls=" + http + addr + ":" + std::to_string(kPeerPort),
      "--initial-cluster=" + cluster,
      "--initial-cluster-token=ej" + tag_,
      std::string("--initial-cluster-state=") + (fresh ? "new" : "existing"),
      "--heartbeat-interval=" + std::to_string(options_.etcdHeartbeatMs),
      "--election-timeout=" + std::to_string(options_.etcdElectionMs),
      "--logger=zap",
      "--log-outputs=stderr",
  };
  if (options_.tls) {
    const FleetTlsFiles t = tlsFiles(host);
    argv.insert(argv.end(), {"--cert-file=" + t.serverCert, "--key-file=" + t.serverKey,
                             "--client-cert-auth", "--trusted-ca-file=" + t.ca,
                             "--peer-cert-file=" + t.serverCert, "--peer-key-file=" + t.serverKey,
                             "--peer-client-cert-auth", "--peer-trusted-ca-file=" + t.ca});
  }
  auto p = spawn(host, argv, {}, "etcd-" + host);
  if (!p) return p.error();
  etcd_[host] = *p;
  return *p;
}

Result<int64_t> TestFleet::startEtcd() {
  const auto start = Clock::now();
  for (const auto& h : hosts_) {
    auto p = spawnEtcd(h, true);
    if (!p) return p.error();
  }
  if (Status s =
          waitEtcdHealthy(hosts_.front(), allClientUrlsJoined(), options_.etcdReadyTimeoutMs);
      !s) {
    return s.error().wrap("etcd cluster of fleet " + tag_);
  }
  return msSince(start);
}

Status TestFleet::startEtcd(const std::string& host) {
  auto p = spawnEtcd(host, false);
  if (!p) return p.error();
  return waitEtcdHealthy(host, clientUrl(host), options_.etcdReadyTimeoutMs);
}

void TestFleet::stopEtcd(const std::string& host) {
  if (HostProcess* p = etcdOf(host)) p->stop(3000);
  etcd_.erase(host);
}

Result<CommandResult> TestFleet::etcdctl(const std::string& host,
                                         const std::vector<std::string>& args,
                                         const std::string& endpoints, int commandTimeoutMs) {
  std::vector<std::string> argv{kEtcdctl,
                                "--endpoints=" + (endpoints.empty() ? clientUrl(host) : endpoints),
                                "--dial-timeout=" + std::to_string(commandTimeoutMs) + "ms",
                                "--command-timeout=" + std::to_string(commandTimeoutMs) + "ms"};
  if (options_.tls) {
    const FleetTlsFiles t = tlsFiles(host);
    argv.insert(argv.end(), {"--cacert=" + t.ca, "--cert=" + t.clientCert, "--key=" + t.clientKey});
  }
  argv.insert(argv.end(), args.begin(), args.end());
  return exec(host, argv, 2 * commandTimeoutMs + 5000);
}

Status TestFleet::waitEtcdHealthy(const std::string& fromHost, const std::string& endpoints,
                                  int timeoutMs) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  std::string last = "not tried";
  for (;;) {
    auto r = etcdctl(fromHost, {"endpoint", "health"}, endpoints, 400);
    if (r && r->ok()) return Status{};
    last = r ? r->describe() : r.error().message;
    if (Clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Error{"etcd " + endpoints + " not healthy after " + std::to_string(timeoutMs) +
               " ms: " + last};
}

// ---- faults ------------------------------------------------------------------------------------

Status TestFleet::cut(const std::string& host) {
  int i = indexOf(host);
  if (i == 0) return Error{"cut " + host + ": no such host in fleet " + tag_};
  return ip({"-n", switchNetns(), "link", "set", "v" + std::to_string(i), "down"});
}

Status TestFleet::heal(const std::string& host) {
  int i = indexOf(host);
  if (i == 0) return Error{"heal " + host + ": no such host in fleet " + tag_};
  return ip({"-n", switchNetns(), "link", "set", "v" + std::to_string(i), "up"});
}

Status TestFleet::killHost(const std::string& host) {
  if (indexOf(host) == 0) return Error{"killHost " + host + ": no such host in fleet " + tag_};
  Status s = killAllIn(netnsOf(host), [this](pid_t pid) -> HostProcess* {
    for (auto& p : procs_) {
      if (p->pid() == pid) return p.get();
    }
    return nullptr;
  });
  for (auto& p : procs_) {
    if (p->host() == host) p->running();  // reaps those that had exited before
  }
  etcd_.erase(host);
  if (!s) return s.error().wrap("killHost " + host);
  return Status{};
}

std::vector<pid_t> TestFleet::pidsIn(const std::string& netns) {
  auto id = netnsIdentity("/run/netns/" + netns);
  if (!id) return {};
  return pidsInIdentity(*id);
}

// ---- sweep -------------------------------------------------------------------------------------

std::string procCmdline(const std::string& procDir) {
  auto text = readFile(procDir + "/cmdline");
  return text.ok() ? std::move(*text) : std::string();
}

int sweepStaleFleets() {
  static const std::regex kName(R"(^(?:ej|enjin-fleet-)(\d+)x\d+-.*)");
  int removed = 0;
  std::error_code ec;
  std::vector<std::string> stale;
  for (const auto& e : fs::directory_iterator("/run/netns", ec)) {
    std::string name = e.path().filename().string();
    std::smatch m;
    if (std::regex_match(name, m, kName) && namedPidIsDead(m[1].str())) {
      stale.push_back(name);
    }
  }
  for (const auto& name : stale) {
    Status k = killAllIn(name, nullptr);
    Status d = ip({"netns", "del", name});
    if (d) ++removed;
    if (!k || !d) {
      std::fprintf(stderr, "sweep of stale fleet namespace %s: %s\n", name.c_str(),
                   (!k ? k.error() : d.error()).message.c_str());
    }
  }
  std::vector<fs::path> staleDirs;
  // Where fleets go now, and where they went before they went to /dev/shm.
  for (const fs::path& root : std::set<fs::path>{fleetDirRoot(), fs::temp_directory_path()}) {
    for (const auto& e : fs::directory_iterator(root, ec)) {
      std::string name = e.path().filename().string();
      std::smatch m;
      if (name.rfind("enjin-fleet-", 0) == 0 && std::regex_match(name, m, kName) &&
          namedPidIsDead(m[1].str())) {
        staleDirs.push_back(e.path());
      }
    }
  }
  for (const auto& d : staleDirs) fs::remove_all(d, ec);
  return removed;
}

}  // namespace enjin::testing
