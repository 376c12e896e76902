#include "enjin/supervise/limits.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <sstream>

#include "enjin/base/file.hpp"
#include "enjin/base/unique_fd.hpp"

namespace enjin::supervise {
namespace {

constexpr uint64_t kMinMemory = 1ULL << 20;
constexpr double kMinCpu = 0.01;
// The CFS period node cgroups use: 100 ms, the kernel's default.
constexpr uint64_t kCpuPeriodUs = 100000;
constexpr const char* kBaseName = "enjin";
// The v1 controllers a node cgroup uses, in the order of CgroupHost::bases.
constexpr const char* kV1Controllers[] = {"memory", "pids", "cpu"};

Error bad(std::string_view key, std::string_view what) {
  return Error{std::string(key) + ": " + std::string(what), 400};
}

Result<uint64_t> parseMemory(const nlohmann::json& v) {
  uint64_t bytes = 0;
  if (v.is_number_integer()) {
    // A literal like 1024 is held signed, whatever its sign.
    if (!v.is_number_unsigned() && v.get<int64_t>() <= 0) {
      return bad("memory", "must be positive, got " + v.dump());
    }
    bytes = v.get<uint64_t>();
  } else if (v.is_string()) {
    const std::string s = v.get<std::string>();
    const char* first = s.data();
    const char* last = s.data() + s.size();
    auto [end, ec] = std::from_chars(first, last, bytes);
    if (ec == std::errc::result_out_of_range) return bad("memory", "'" + s + "' is too large");
    if (ec != std::errc() || end == first) {
      return bad("memory", "'" + s + "': expected a number of bytes with K, M, G or T");
    }
    std::string_view unit(end, static_cast<size_t>(last - end));
    int shift = 0;
    if (unit.empty()) {
      shift = 0;
    } else if (unit == "K" || unit == "k") {
      shift = 10;
    } else if (unit == "M" || unit == "m") {
      shift = 20;
    } else if (unit == "G" || unit == "g") {
      shift = 30;
    } else if (unit == "T" || unit == "t") {
      shift = 40;
    } else {
      return bad("memory", "'" + s + "': unknown unit '" + std::string(unit) + "' (K, M, G or T)");
    }
    if (shift > 0 && bytes > (UINT64_MAX >> shift)) {
      return bad("memory", "'" + s + "' is too large");
    }
    bytes <<= shift;
  } else {
    return bad("memory", "expected a size such as \"256M\" or a number of bytes, got " +
                             std::string(v.type_name()));
  }
  if (bytes < kMinMemory) {
    return bad("memory", "at least 1M (1048576 bytes), got " + std::to_string(bytes));
  }
  return bytes;
}

Result<uint64_t> parseCount(const nlohmann::json& v, std::string_view key) {
  if (v.is_number_integer()) {
    if (!v.is_number_unsigned() && v.get<int64_t>() <= 0) {
      return bad(key, "must be at least 1, got " + v.dump());
    }
    uint64_t n = v.get<uint64_t>();
    if (n == 0) return bad(key, "must be at least 1, got 0");
    return n;
  }
  return bad(key, "expected a positive integer, got " +
                      (v.is_number_float() ? v.dump() : std::string(v.type_name())));
}

Result<double> parseCpu(const nlohmann::json& v, unsigned cpus) {
  if (!v.is_number() || v.is_boolean()) {
    return bad("cpu", "expected a number of CPUs such as 0.5, got " + std::string(v.type_name()));
  }
  const double c = v.get<double>();
  if (!std::isfinite(c) || c <= 0) return bad("cpu", "must be more than 0, got " + v.dump());
  if (c < kMinCpu) return bad("cpu", "at least 0.01 (1 ms per 100 ms), got " + v.dump());
  if (c > static_cast<double>(cpus)) {
    return bad("cpu", "at most the " + std::to_string(cpus) + " CPUs of this host, got " +
                          v.dump());
  }
  return c;
}

bool validName(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.size() > 200) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
  });
}

bool isDir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool writable(const std::string& path) { return ::access(path.c_str(), W_OK) == 0; }

// A cgroup file takes one value per write(2), in place: no truncation, no temporary file.
Status writeCgroupFile(const std::string& path, std::string_view value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return errnoError("open " + path, errno);
  ssize_t n;
  do {
    n = ::write(fd.get(), value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) return errnoError("write '" + std::string(value) + "' to " + path, errno);
  return {};
}

Result<uint64_t> readNumber(const std::string& path) {
  auto text = readFile(path);
  if (!text) return text.error();
  uint64_t n = 0;
  const std::string& s = *text;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc()) return Error{path + ": not a number: '" + s + "'"};
  (void)end;
  return n;
}

// "KEY N" lines (memory.events, memory.oom_control): N for KEY, nullopt when there is no such
// line.
Result<std::optional<uint64_t>> readKeyed(const std::string& path, std::string_view key) {
  auto text = readFile(path);
  if (!text) return text.error();
  std::istringstream in(*text);
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v) {
    if (k == key) return std::optional<uint64_t>(v);
  }
  return std::optional<uint64_t>();
}

// Our own cgroup per hierarchy from /proc/PID/cgroup lines "ID:CONTROLLERS:PATH"; key "" is the
// v2 hierarchy ("0::PATH"), else each controller of a v1 line.
std::vector<std::pair<std::string, std::string>> readSelfCgroups(const std::string& file) {
  std::vector<std::pair<std::string, std::string>> out;
  auto text = readFile(file);
  if (!text) return out;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    auto c1 = line.find(':');
    if (c1 == std::string::npos) continue;
    auto c2 = line.find(':', c1 + 1);
    if (c2 == std::string::npos) continue;
    std::string ctrls = line.substr(c1 + 1, c2 - c1 - 1);
    std::string path = line.substr(c2 + 1);
    if (ctrls.empty()) {
      out.emplace_back("", path);
      continue;
    }
    std::istringstream cs(ctrls);
    std::string c;
    while (std::getline(cs, c, ',')) out.emplace_back(c, path);
  }
  return out;
}

std::string selfPath(const std::vector<std::pair<std::string, std::string>>& self,
                     std::string_view key) {
  for (const auto& [k, p] : self) {
    if (k == key) return p == "/" ? "" : p;
  }
  return "";
}

bool listsAll(const std::string& controllersText, std::string* missing) {
  std::istringstream in(controllersText);
  std::vector<std::string> have;
  std::string w;
  while (in >> w) have.push_back(w);
  for (const char* want : {"memory", "pids", "cpu"}) {
    if (std::find(have.begin(), have.end(), want) == have.end()) {
      *missing = want;
      return false;
    }
  }
  return true;
}

void sleepMs(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

std::string cpuValueV1(const Limits& l) {
  if (!l.cpu) return "-1";
  return std::to_string(static_cast<uint64_t>(std::llround(*l.cpu * kCpuPeriodUs)));
}

}  // namespace

Result<Limits> parseLimits(const nlohmann::json& table, unsigned cpus) {
  if (!table.is_object()) {
    return Error{"limits: expected a table, got " + std::string(table.type_name()), 400};
  }
  Limits out;
  for (const auto& [key, v] : table.items()) {
    if (key == "memory") {
      auto m = parseMemory(v);
      if (!m) return m.error();
      out.memoryBytes = *m;
    } else if (key == "processes") {
      auto n = parseCount(v, key);
      if (!n) return n.error();
      out.processes = *n;
    } else if (key == "open_files") {
      auto n = parseCount(v, key);
      if (!n) return n.error();
      out.openFiles = *n;
    } else if (key == "cpu") {
      auto c = parseCpu(v, cpus);
      if (!c) return c.error();
      out.cpu = *c;
    } else {
      return bad(key, "unknown key (known: memory, processes, cpu, open_files)");
    }
  }
  return out;
}

Result<Limits> parseLimits(const nlohmann::json& table) {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return parseLimits(table, n > 0 ? static_cast<unsigned>(n) : 1U);
}

nlohmann::json limitsToJson(const Limits& l) {
  nlohmann::json j = nlohmann::json::object();
  if (l.memoryBytes) j["memory"] = *l.memoryBytes;
  if (l.processes) j["processes"] = *l.processes;
  if (l.cpu) j["cpu"] = *l.cpu;
  if (l.openFiles) j["open_files"] = *l.openFiles;
  return j;
}

std::string_view levelName(CgroupLevel level) {
  switch (level) {
    case CgroupLevel::kV2: return "v2";
    case CgroupLevel::kV1: return "v1";
    case CgroupLevel::kNone: break;
  }
  return "none";
}

std::string CgroupHost::level() const { return std::string(levelName(kind_)); }

CgroupHost CgroupHost::detect(std::string root, std::string selfCgroup) {
  CgroupHost host;
  const auto self = readSelfCgroups(selfCgroup);

  // v2: a cgroup2 hierarchy at ROOT (a host with only v2) or at ROOT/unified (hybrid).
  std::string why;
  for (const std::string& mount : {root, root + "/unified"}) {
    if (!exists(mount + "/cgroup.controllers")) continue;
    const std::string dir = mount + selfPath(self, "");
    auto controllers = readFile(dir + "/cgroup.controllers");
    std::string missing;
    if (!controllers) {
      why = "v2: " + controllers.error().message;
    } else if (!listsAll(*controllers, &missing)) {
      why = "v2: " + dir + ": cgroup.controllers lacks " + missing;
    } else if (!writable(dir + "/cgroup.subtree_control") || !writable(dir)) {
      why = "v2: " + dir + ": not writable by us (no delegated subtree)";
    } else {
      host.kind_ = CgroupLevel::kV2;
      host.delegated_ = dir;
      host.bases_ = {dir + "/" + kBaseName};
      return host;
    }
    break;
  }
  host.reasons_.push_back(why.empty() ? "v2: no cgroup2 hierarchy under " + root : why);

  // v1: each of memory, pids and cpu mounted (a directory with a tasks file) and our own cgroup
  // in it writable.
  std::vector<std::string> bases;
  for (const char* c : kV1Controllers) {
    const std::string mount = root + "/" + c;
    if (!exists(mount + "/tasks")) {
      host.reasons_.push_back("v1: " + mount + ": not a mounted controller");
      return host;
    }
    const std::string dir = mount + selfPath(self, c);
    if (!isDir(dir) || !writable(dir) || !writable(dir + "/cgroup.procs")) {
      host.reasons_.push_back("v1: " + dir + ": not writable by us");
      return host;
    }
    bases.push_back(dir + "/" + kBaseName);
  }
  host.kind_ = CgroupLevel::kV1;
  host.bases_ = std::move(bases);
  host.reasons_.resize(1);
  return host;
}

Result<NodeCgroup> NodeCgroup::forNode(const CgroupHost& host, const std::string& name) {
  if (!validName(name)) {
    return Error{"cgroup for node '" + name + "': the name must be letters, digits, '.', '_' or '-'",
                 400};
  }
  if (host.kind() == CgroupLevel::kNone) {
    return Error{"cgroup for node '" + name + "': no usable cgroup on this host", 409};
  }
  NodeCgroup cg;
  cg.name_ = name;
  cg.kind_ = host.kind();
  return cg;
}

Result<NodeCgroup> NodeCgroup::create(const CgroupHost& host, const std::string& name,
                                      const Limits& limits) {
  auto made = forNode(host, name);
  if (!made.ok()) return made.error();
  NodeCgroup cg = std::move(*made);
  const std::string ctx = "cgroup for node '" + name + "'";

  auto makeDir = [&](const std::string& dir) -> Status {
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return errnoError("mkdir " + dir, errno).wrap(ctx);
    }
    return {};
  };
  auto write = [&](const std::string& file, const std::string& value) -> Status {
    auto st = writeCgroupFile(file, value);
    if (!st) return st.error().wrap(ctx);
    return {};
  };

  if (host.kind() == CgroupLevel::kV2) {
    const std::string base = host.bases()[0];
    if (auto st = makeDir(base); !st) return st.error();
    // The controllers must be enabled on the way down: in the delegated dir for `enjin`, and in
    // `enjin` for the nodes.
    if (auto st = write(host.delegated() + "/cgroup.subtree_control", "+memory +pids +cpu"); !st) {
      return st.error();
    }
    if (auto st = write(base + "/cgroup.subtree_control", "+memory +pids +cpu"); !st) {
      return st.error();
    }
    const std::string dir = base + "/" + name;
    if (auto st = makeDir(dir); !st) return st.error();
    cg.dirs_ = {dir};
    const std::string mem = limits.memoryBytes ? std::to_string(*limits.memoryBytes) : "max";
    const std::string pids = limits.processes ? std::to_string(*limits.processes) : "max";
    const std::string quota =
        limits.cpu ? std::to_string(std::llround(*limits.cpu * kCpuPeriodUs)) : "max";
    if (auto st = write(dir + "/memory.max", mem); !st) return st.error();
    if (auto st = write(dir + "/pids.max", pids); !st) return st.error();
    if (auto st = write(dir + "/cpu.max", quota + " " + std::to_string(kCpuPeriodUs)); !st) {
      return st.error();
    }
    return cg;
  }

  for (const std::string& base : host.bases()) {
    if (auto st = makeDir(base); !st) return st.error();
    const std::string dir = base + "/" + name;
    if (auto st = makeDir(dir); !st) return st.error();
    cg.dirs_.push_back(dir);
  }
  const std::string& mem = cg.dirs_[0];
  const std::string& pids = cg.dirs_[1];
  const std::string& cpu = cg.dirs_[2];
  // Swap is not limited (memory.memsw is left alone): where the host has swap, a node past its
  // limit is pushed to swap before it is killed.
  if (auto st = write(mem + "/memory.limit_in_bytes",
                      limits.memoryBytes ? std::to_string(*limits.memoryBytes) : "-1");
      !st) {
    return st.error();
  }
  if (auto st = write(mem + "/memory.oom_control", "0"); !st) return st.error();
  if (auto st = write(pids + "/pids.max",
                      limits.processes ? std::to_string(*limits.processes) : "max");
      !st) {
    return st.error();
  }
  if (auto st = write(cpu + "/cpu.cfs_period_us", std::to_string(kCpuPeriodUs)); !st) {
    return st.error();
  }
  if (auto st = write(cpu + "/cpu.cfs_quota_us", cpuValueV1(limits)); !st) return st.error();
  return cg;
}

Result<NodeCgroup> NodeCgroup::open(const CgroupHost& host, const std::string& name) {
  auto made = forNode(host, name);
  if (!made.ok()) return made.error();
  NodeCgroup cg = std::move(*made);
  for (const std::string& base : host.bases()) {
    const std::string dir = base + "/" + name;
    if (!isDir(dir)) return Error{"cgroup for node '" + name + "': no directory " + dir, 404};
    cg.dirs_.push_back(dir);
  }
  return cg;
}

Status NodeCgroup::addProcess(pid_t pid) const {
  const std::string value = std::to_string(pid);
  for (const std::string& file : procsFiles()) {
    if (auto st = writeCgroupFile(file, value); !st) {
      return st.error().wrap("cgroup for node '" + name_ + "': add process " + value);
    }
  }
  return {};
}

std::vector<std::string> NodeCgroup::procsFiles() const {
  std::vector<std::string> out;
  for (const std::string& dir : dirs_) out.push_back(dir + "/cgroup.procs");
  return out;
}

Result<std::vector<pid_t>> NodeCgroup::processes() const {
  if (dirs_.empty()) return std::vector<pid_t>{};
  auto text = readFile(dirs_[0] + "/cgroup.procs");
  if (!text) return text.error().wrap("cgroup for node '" + name_ + "'");
  std::vector<pid_t> out;
  std::istringstream in(*text);
  pid_t p;
  while (in >> p) out.push_back(p);
  return out;
}

Result<uint64_t> NodeCgroup::oomKills() const {
  if (dirs_.empty()) return uint64_t{0};
  const std::string ctx = "cgroup for node '" + name_ + "'";
  if (kind_ == CgroupLevel::kV2) {
    auto n = readKeyed(dirs_[0] + "/memory.events", "oom_kill");
    if (!n) return n.error().wrap(ctx);
    return n->value_or(0);
  }
  auto n = readKeyed(dirs_[0] + "/memory.oom_control", "oom_kill");
  if (!n) return n.error().wrap(ctx);
  if (*n) return **n;
  auto failcnt = readNumber(dirs_[0] + "/memory.failcnt");
  if (!failcnt) return failcnt.error().wrap(ctx);
  return uint64_t{*failcnt > 0 ? 1U : 0U};
}

Result<Limits> NodeCgroup::readLimits() const {
  Limits out;
  if (dirs_.empty()) return out;
  const std::string ctx = "cgroup for node '" + name_ + "'";
  if (kind_ == CgroupLevel::kV2) {
    const std::string& d = dirs_[0];
    for (const char* file : {"memory.max", "pids.max"}) {
      auto text = readFile(d + "/" + file);
      if (!text) return text.error().wrap(ctx);
      if (text->rfind("max", 0) == 0) continue;
      uint64_t n = std::strtoull(text->c_str(), nullptr, 10);
      (std::string_view(file) == "memory.max" ? out.memoryBytes : out.processes) = n;
    }
    auto cpu = readFile(d + "/cpu.max");
    if (!cpu) return cpu.error().wrap(ctx);
    if (cpu->rfind("max", 0) != 0) {
      unsigned long long quota = 0, period = 0;
      if (std::sscanf(cpu->c_str(), "%llu %llu", &quota, &period) == 2 && period > 0) {
        out.cpu = static_cast<double>(quota) / static_cast<double>(period);
      }
    }
    return out;
  }
  // v1: an unset memory limit reads as a huge page-aligned number, an unset quota as -1.
  auto mem = readNumber(dirs_[0] + "/memory.limit_in_bytes");
  if (!mem) return mem.error().wrap(ctx);
  if (*mem < (1ULL << 62)) out.memoryBytes = *mem;
  auto pids = readFile(dirs_[1] + "/pids.max");
  if (!pids) return pids.error().wrap(ctx);
  if (pids->rfind("max", 0) != 0) out.processes = std::strtoull(pids->c_str(), nullptr, 10);
  auto quota = readFile(dirs_[2] + "/cpu.cfs_quota_us");
  if (!quota) return quota.error().wrap(ctx);
  auto period = readNumber(dirs_[2] + "/cpu.cfs_period_us");
  if (!period) return period.error().wrap(ctx);
  long long q = std::strtoll(quota->c_str(), nullptr, 10);
  if (q > 0 && *period > 0) out.cpu = static_cast<double>(q) / static_cast<double>(*period);
  return out;
}

Status NodeCgroup::remove(int waitMs) const {
  const std::string ctx = "cgroup for node '" + name_ + "'";
  for (const std::string& dir : dirs_) {
    if (!isDir(dir)) continue;
    const bool haveKill = kind_ == CgroupLevel::kV2 && exists(dir + "/cgroup.kill");
    int waited = 0;
    for (;;) {
      auto text = readFile(dir + "/cgroup.procs");
      if (!text) return text.error().wrap(ctx);
      std::istringstream in(*text);
      std::vector<pid_t> pids;
      pid_t p;
      while (in >> p) pids.push_back(p);
      if (pids.empty()) break;
      if (waited >= waitMs) {
        return Error{ctx + ": " + dir + ": " + std::to_string(pids.size()) +
                         " process(es) still there after SIGKILL and " +
                         std::to_string(waitMs) + " ms", 409};
      }
      if (haveKill) {
        (void)writeCgroupFile(dir + "/cgroup.kill", "1");
      } else {
        for (pid_t victim : pids) ::kill(victim, SIGKILL);
      }
      sleepMs(10);
      waited += 10;
    }
    // A process killed a moment ago may still hold the directory busy until it is fully gone.
    for (;;) {
      if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) break;
      if (errno != EBUSY || waited >= waitMs) return errnoError("rmdir " + dir, errno).wrap(ctx);
      sleepMs(10);
      waited += 10;
    }
  }
  return {};
}

std::optional<uint64_t> ownOomKills(const std::string& root, const std::string& selfCgroup) {
  const auto self = readSelfCgroups(selfCgroup);
  bool v1 = false, v2 = false;
  for (const auto& [key, path] : self) {
    v1 = v1 || key == "memory";
    v2 = v2 || key.empty();
  }
  if (v1) {
    auto n = readKeyed(root + "/memory" + selfPath(self, "memory") + "/memory.oom_control",
                       "oom_kill");
    if (n && *n) return **n;
  }
  if (v2) {
    for (const char* mount : {"", "/unified"}) {
      auto n = readKeyed(root + mount + selfPath(self, "") + "/memory.events", "oom_kill");
      if (n && *n) return **n;
    }
  }
  return std::nullopt;
}

bool wasOomKilled(int waitStatus, uint64_t oomKillsBefore, uint64_t oomKillsAfter) {
  return WIFSIGNALED(waitStatus) && WTERMSIG(waitStatus) == SIGKILL &&
         oomKillsAfter > oomKillsBefore;
}

int joinCgroupsInChild(const std::vector<std::string>& procsFiles) noexcept {
  for (const std::string& file : procsFiles) {
    int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    ssize_t n;
    do {
      n = ::write(fd, "0", 1);
    } while (n < 0 && errno == EINTR);
    int err = n < 0 ? errno : 0;
    ::close(fd);
    if (err != 0) return err;
  }
  return 0;
}

Limits rlimitPart(CgroupLevel level, const Limits& limits) {
  Limits out;
  out.openFiles = limits.openFiles;
  if (level == CgroupLevel::kNone) {
    out.memoryBytes = limits.memoryBytes;
    out.processes = limits.processes;
  }
  return out;
}

int applyRlimits(const Limits& limits) noexcept {
  auto set = [](int resource, uint64_t value) -> int {
    struct rlimit rl;
    rl.rlim_cur = static_cast<rlim_t>(value);
    rl.rlim_max = static_cast<rlim_t>(value);
    return ::setrlimit(resource, &rl) == 0 ? 0 : errno;
  };
  // RLIMIT_AS caps address space, not memory used: mappings never touched, thread stacks and
  // shared libraries count in full, and pages shared with others count in every process. A
  // program that reserves big virtual ranges (JITs, some allocators) fails early; one that forks
  // gets the limit per process, not for the node. It is the nearest an rlimit comes, and an
  // allocation past it fails with ENOMEM rather than a kill.
  if (limits.memoryBytes) {
    if (int err = set(RLIMIT_AS, *limits.memoryBytes); err != 0) return err;
  }
  // RLIMIT_NPROC counts every process of the real uid, not the node's own: nodes that share a
  // uid share the budget, and a uid already over it cannot fork at all.
  if (limits.processes) {
    if (int err = set(RLIMIT_NPROC, *limits.processes); err != 0) return err;
  }
  if (limits.openFiles) {
    if (int err = set(RLIMIT_NOFILE, *limits.openFiles); err != 0) return err;
  }
  return 0;
}

nlohmann::json isolationReport(std::string_view level, const Limits& limits) {
  nlohmann::json out = {{"cgroup", std::string(level)}};
  Limits inForce = limits;
  nlohmann::json unenforced = nlohmann::json::array();
  if (level != "v1" && level != "v2") {
    out["cgroup"] = "none";
    if (limits.cpu) {
      unenforced.push_back("cpu");
      inForce.cpu.reset();
    }
  }
  out["limits"] = limitsToJson(inForce);
  if (!unenforced.empty()) out["unenforced"] = std::move(unenforced);
  return out;
}

}  // namespace enjin::supervise
