#include "bench_proc.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "enjin/base/file.hpp"

extern char** environ;

namespace enjin::bench {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Time, stopping, failures

volatile sig_atomic_t gSignal = 0;
int64_t gDeadlineNs = 0;

int64_t monoNs() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

void checkAbort() {
  if (gSignal != 0) throw Abort("stopped by signal " + std::to_string(gSignal));
  if (gDeadlineNs != 0 && monoNs() > gDeadlineNs) throw Abort("--max-seconds reached");
}

void sleepMs(int64_t ms) {
  const int64_t until = monoNs() + ms * 1'000'000;
  while (monoNs() < until) {
    checkAbort();
    const int64_t left = std::min<int64_t>(until - monoNs(), 100'000'000);
    if (left > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(left));
  }
}

// ---------------------------------------------------------------------------------------------
// /proc

// Empty when the file is gone, or its process exits while it is read (ESRCH).
std::string readText(const std::string& path) {
  auto text = readFile(path);
  return text.ok() ? std::move(*text) : std::string();
}

std::vector<ProcEntry> scanProcs() {
  std::vector<ProcEntry> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return out;
  char buf[1024];
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const std::string path = std::string("/proc/") + e->d_name + "/stat";
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) continue;
    buf[n] = '\0';
    const char* close = std::strrchr(buf, ')');
    if (close == nullptr || close[1] == '\0') continue;
    ProcEntry p{};
    p.pid = std::atoi(e->d_name);
    p.state = close[2];
    p.ppid = std::atoi(close + 4);
    out.push_back(p);
  }
  ::closedir(d);
  return out;
}

std::vector<pid_t> descendants(pid_t root, const std::vector<ProcEntry>& procs) {
  std::multimap<pid_t, pid_t> children;
  for (const auto& p : procs) children.emplace(p.ppid, p.pid);
  std::vector<pid_t> out, todo{root};
  while (!todo.empty()) {
    pid_t p = todo.back();
    todo.pop_back();
    auto [b, e] = children.equal_range(p);
    for (auto it = b; it != e; ++it) {
      out.push_back(it->second);
      todo.push_back(it->second);
    }
  }
  return out;
}

std::string exeOf(pid_t pid) {
  char buf[4096];
  ssize_t n = ::readlink(("/proc/" + std::to_string(pid) + "/exe").c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

int64_t procField(const std::string& text, const std::string& key) {
  size_t at = text.find("\n" + key + ":");
  if (at == std::string::npos) {
    if (text.compare(0, key.size() + 1, key + ":") != 0) return -1;
    at = 0;
  } else {
    at += 1;
  }
  return std::atoll(text.c_str() + at + key.size() + 1);
}

std::string commOf(pid_t pid) {
  std::string c = readText("/proc/" + std::to_string(pid) + "/comm");
  while (!c.empty() && c.back() == '\n') c.pop_back();
  return c;
}

json pssByName(const std::vector<pid_t>& pids) {
  std::map<std::string, std::pair<int64_t, int>> by;
  for (pid_t pid : pids) {
    auto& [kib, count] = by[commOf(pid)];
    kib += std::max<int64_t>(0, procField(readText("/proc/" + std::to_string(pid) + "/smaps_rollup"), "Pss"));
    ++count;
  }
  json out = json::object();
  for (auto& [name, v] : by) out[name] = {{"pss_kib", v.first}, {"processes", v.second}};
  return out;
}

Usage usageOf(const std::vector<pid_t>& pids, bool memory) {
  Usage u;
  for (pid_t pid : pids) {
    const std::string dir = "/proc/" + std::to_string(pid);
    std::string stat = readText(dir + "/stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;  // gone
    ++u.processes;
    // Fields after the comm: state(3) ... utime(14) stime(15).
    std::istringstream fields(stat.substr(close + 2));
    std::string f;
    for (int i = 3; i <= 15 && fields >> f; ++i) {
      if (i == 14 || i == 15) u.cpuTicks += std::atoll(f.c_str());
    }
    if (memory) {
      u.pssKib += std::max<int64_t>(0, procField(readText(dir + "/smaps_rollup"), "Pss"));
      u.pteKib += std::max<int64_t>(0, procField(readText(dir + "/status"), "VmPTE"));
    }
    if (DIR* d = ::opendir((dir + "/task").c_str())) {
      while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        const std::string task = dir + "/task/" + e->d_name;
        ++u.threads;
        u.onCpuNs += std::atoll(readText(task + "/schedstat").c_str());
        const std::string status = readText(task + "/status");
        u.switches += std::max<int64_t>(0, procField(status, "voluntary_ctxt_switches")) +
                      std::max<int64_t>(0, procField(status, "nonvoluntary_ctxt_switches"));
      }
      ::closedir(d);
    }
  }
  return u;
}

// ---------------------------------------------------------------------------------------------
// Processes the bench starts

std::string gBinDir;
std::string gStampPath;

std::string findOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  p += ":/usr/sbin:/sbin";
  std::stringstream ss(p);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

pid_t launch(const std::vector<std::string>& argv, const std::vector<std::string>& extraEnv,
             const std::string& logPath) {
  std::vector<std::string> envStore;
  for (char** e = environ; *e != nullptr; ++e) envStore.emplace_back(*e);
  for (const auto& e : extraEnv) envStore.push_back(e);
  std::vector<char*> envp, args;
  for (auto& e : envStore) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> argStore = argv;
  for (auto& a : argStore) args.push_back(a.data());
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (::getppid() != parent) ::_exit(127);
    ::setsid();
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) ::signal(s, SIG_DFL);
    int in = ::open("/dev/null", O_RDONLY);
    int out = ::open(logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (in >= 0) ::dup2(in, 0);
    if (out >= 0) {
      ::dup2(out, 1);
      ::dup2(out, 2);
    }
    ::syscall(SYS_close_range, 3U, ~0U, 0U);
    ::execve(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  return pid;
}

void reapAny() {
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

void killEverything() {
  const int64_t until = monoNs() + 20'000'000'000;
  for (;;) {
    auto below = descendants(::getpid(), scanProcs());
    if (below.empty()) return;
    for (pid_t p : below) ::kill(p, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    reapAny();
    if (monoNs() > until) {
      std::fprintf(stderr, "supervise_bench: %zu processes would not go away\n", below.size());
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Stamps

StampFifo::StampFifo(const std::string& path) : path_(path) {
  ::unlink(path.c_str());
  if (::mkfifo(path.c_str(), 0600) != 0) {
    throw std::runtime_error("mkfifo " + path + ": " + std::strerror(errno));
  }
  readFd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  writeFd_ = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (readFd_ < 0 || writeFd_ < 0) throw std::runtime_error("open " + path + ": " + std::strerror(errno));
  // Room for every record of a mass restart (16 bytes each): writers never wait.
  ::fcntl(readFd_, F_SETPIPE_SZ, 1 << 20);
}

StampFifo::~StampFifo() {
  ::close(readFd_);
  ::close(writeFd_);
  ::unlink(path_.c_str());
}

std::optional<Stamp> StampFifo::next(int64_t timeoutMs) {
  const int64_t until = monoNs() + timeoutMs * 1'000'000;
  for (;;) {
    if (buffered_.size() >= sizeof(Stamp)) {
      Stamp s;
      std::memcpy(&s, buffered_.data(), sizeof s);
      buffered_.erase(0, sizeof s);
      return s;
    }
    char buf[16 * 256];
    const ssize_t n = ::read(readFd_, buf, sizeof buf);
    if (n > 0) {
      buffered_.append(buf, static_cast<size_t>(n));
      continue;
    }
    checkAbort();
    const int64_t left = (until - monoNs()) / 1'000'000;
    if (left <= 0) return std::nullopt;
    pollfd pfd{readFd_, POLLIN, 0};
    ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left, 100)));
  }
}

double msSinceNs(int64_t t0) {
  return static_cast<double>(monoNs() - t0) / 1e6;
}

int waitExit(pid_t pid, int64_t ms) {
  const int64_t until = monoNs() + ms * 1'000'000;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0) return -2;
    if (monoNs() > until) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

namespace {
void onStopSignal(int s) { gSignal = s; }
}  // namespace

void startBench(int maxSeconds) {
  ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  struct sigaction sa {};
  sa.sa_handler = onStopSignal;
  for (int s : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(s, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  gDeadlineNs = monoNs() + static_cast<int64_t>(maxSeconds) * 1'000'000'000;
}

int freeTcpPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    throw Failure(std::string("no free loopback port: ") + std::strerror(errno));
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

namespace {
double toMs(double v, const std::string& unit) {
  if (unit == "us") return v / 1e3;
  if (unit == "ms") return v;
  if (unit == "s") return v * 1e3;
  if (unit == "m") return v * 60e3;
  return v;
}

}  // namespace

WrkResult parseWrk(const std::string& text) {
  WrkResult w;
  std::smatch m;
  static const std::regex rps(R"(Requests/sec:\s+([0-9.]+))");
  static const std::regex pct(R"(\n\s+(50|75|90|99)%\s+([0-9.]+)(us|ms|s|m)\b)");
  static const std::regex total(R"((\d+) requests in)");
  static const std::regex non2xx(R"(Non-2xx or 3xx responses:\s+(\d+))");
  static const std::regex sockErr(
      R"(Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+))");
  if (std::regex_search(text, m, rps)) w.requestsPerS = std::stod(m[1]);
  if (std::regex_search(text, m, total)) w.requests = std::stol(m[1]);
  if (std::regex_search(text, m, non2xx)) w.non2xx = std::stol(m[1]);
  if (std::regex_search(text, m, sockErr)) {
    for (int i = 1; i <= 4; ++i) w.socketErrors += std::stol(m[i]);
  }
  for (auto it = std::sregex_iterator(text.begin(), text.end(), pct); it != std::sregex_iterator();
       ++it) {
    const double ms = toMs(std::stod((*it)[2]), (*it)[3]);
    const std::string p = (*it)[1];
    (p == "50" ? w.p50Ms : p == "75" ? w.p75Ms : p == "90" ? w.p90Ms : w.p99Ms) = ms;
  }
  return w;
}


}  // namespace enjin::bench
