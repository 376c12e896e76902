// The unix-user strategy: exec, as an unprivileged account (fork_exec.hpp does the dropping).
// Two forms:
//  - named: {"user": NAME, "rlimits": {...}}, an account of the passwd database;
//  - a tenant node's: {"uid", "gid", "app_uid", "app_gid", "groups", "cgroup", "limits",
//    "home"}, numeric ids of a range the parent allocated, no passwd entry needed. The process
//    (a node's daemon) starts as root of a user namespace of its own whose only ids are its
//    supervisor uid (0 inside), its app uid (1 inside) and the host groups it keeps (2...), so it
//    can start its own processes as the app uid and nothing else. The sandbox strategy is the
//    same start, with the node's daemon told to put each of its processes in namespaces of
//    their own.
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "enjin/supervise/fork_exec.hpp"
#include "enjin/supervise/limits.hpp"

namespace enjin::supervise {
namespace {

struct UserEntry {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string name;
  std::string home;
};

// getpwnam_r, in the parent: NSS may read files, take locks or talk to a daemon, none of which a
// child may do between clone and exec.
Result<UserEntry> lookupUser(const std::string& name) {
  long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buf(hint > 0 ? static_cast<size_t>(hint) : 4096);
  passwd entry;
  passwd* found = nullptr;
  for (;;) {
    int err = ::getpwnam_r(name.c_str(), &entry, buf.data(), buf.size(), &found);
    if (err == ERANGE && buf.size() < (1U << 20)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (err == EINTR) continue;
    if (err != 0) return errnoError("look up user '" + name + "'", err);
    break;
  }
  if (found == nullptr) return Error{"unknown user '" + name + "'"};
  return UserEntry{entry.pw_uid, entry.pw_gid, entry.pw_name,
                   entry.pw_dir && entry.pw_dir[0] ? entry.pw_dir : "/"};
}

struct Resolved {
  UserEntry user;
  spawn_detail::ForkExecConfig config;
};

// The account `spec` runs as and its limits (its [process.unix-user] block), or why it may not
// run. The block is parsed at each call rather than cached: it is a few bytes of JSON, and the
// getpwnam_r next to it costs far more (and must be redone each time, see spawn()).
Result<Resolved> resolve(const ProcessSpec& spec) {
  if (auto st = spawn_detail::validateCommon(spec); !st) return st.error();
  auto config = spawn_detail::parseForkExecConfig(spec, "unix-user", true);
  if (!config) return config.error();
  auto user = lookupUser(config->user);
  if (!user) return user.error().wrap("unix-user");
  if (user->uid == 0) {
    return Error{"unix-user strategy refuses to run '" + config->user + "' (uid 0)"};
  }
  return Resolved{std::move(*user), std::move(*config)};
}

// A tenant node's ids and resources, from the numeric form of the block.
struct Tenant {
  uid_t uid = 0;
  gid_t gid = 0;
  uid_t appUid = 0;
  gid_t appGid = 0;
  std::vector<gid_t> groups;
  std::string cgroup;  // the node's cgroup name; empty: none
  Limits limits;
  std::string home;
  std::vector<std::string> hide;  // sandbox: what its processes must not see
};

Result<uint32_t> positiveId(const nlohmann::json& j, const char* key, std::string_view strategy) {
  auto it = j.find(key);
  if (it == j.end()) return Error{std::string(strategy) + ": '" + key + "' is required"};
  if (!it->is_number_unsigned() || it->get<uint64_t>() == 0 ||
      it->get<uint64_t>() >= 0xFFFFFFFFULL) {
    return Error{std::string(strategy) + ": " + key + ": expected an id above 0, got " +
                 it->dump()};
  }
  return static_cast<uint32_t>(it->get<uint64_t>());
}

Result<Tenant> parseTenant(const ProcessSpec& spec, const nlohmann::json& j,
                           std::string_view strategy) {
  if (auto st = spawn_detail::validateCommon(spec); !st) return st.error();
  static const char* const kKeys[] = {"uid",    "gid",    "app_uid", "app_gid", "groups",
                                      "cgroup", "limits", "home",    "hide"};
  for (const auto& [key, value] : j.items()) {
    if (std::find(std::begin(kKeys), std::end(kKeys), key) == std::end(kKeys)) {
      return Error{std::string(strategy) + ": unknown key '" + key +
                   "' (known: uid, gid, app_uid, app_gid, groups, cgroup, limits, home, hide)"};
    }
  }
  Tenant t;
  auto uid = positiveId(j, "uid", strategy);
  auto gid = positiveId(j, "gid", strategy);
  auto appUid = positiveId(j, "app_uid", strategy);
  auto appGid = positiveId(j, "app_gid", strategy);
  for (auto* r : {&uid, &gid, &appUid, &appGid}) {
    if (!*r) return r->error();
  }
  t.uid = *uid;
  t.gid = *gid;
  t.appUid = *appUid;
  t.appGid = *appGid;
  if (t.uid == t.appUid || t.gid == t.appGid) {
    return Error{std::string(strategy) + ": the app ids must differ from the supervisor's"};
  }
  if (auto it = j.find("groups"); it != j.end()) {
    if (!it->is_array()) return Error{std::string(strategy) + ": groups: expected an array"};
    for (const auto& g : *it) {
      if (!g.is_number_unsigned() || g.get<uint64_t>() == 0 || g.get<uint64_t>() >= 0xFFFFFFFFULL) {
        return Error{std::string(strategy) + ": groups: expected gids above 0, got " + g.dump()};
      }
      t.groups.push_back(static_cast<gid_t>(g.get<uint64_t>()));
    }
  }
  if (auto it = j.find("cgroup"); it != j.end()) {
    if (!it->is_string()) return Error{std::string(strategy) + ": cgroup: expected a string"};
    t.cgroup = it->get<std::string>();
  }
  if (auto it = j.find("limits"); it != j.end()) {
    auto limits = parseLimits(*it);
    if (!limits) return limits.error().wrap(std::string(strategy) + ": limits");
    t.limits = *limits;
  }
  if (auto it = j.find("home"); it != j.end()) {
    if (!it->is_string() || it->get<std::string>().empty() || it->get<std::string>()[0] != '/') {
      return Error{std::string(strategy) + ": home: expected an absolute path"};
    }
    t.home = it->get<std::string>();
  }
  if (auto it = j.find("hide"); it != j.end()) {
    if (!it->is_array()) return Error{std::string(strategy) + ": hide: expected an array"};
    for (const auto& d : *it) {
      if (!d.is_string() || d.get<std::string>().empty() || d.get<std::string>()[0] != '/') {
        return Error{std::string(strategy) + ": hide: expected absolute paths"};
      }
      t.hide.push_back(d.get<std::string>());
    }
  }
  return t;
}

// The tenant form of `spec`'s block, read: nullopt when the block is the named form (no "uid"),
// else the tenant's ids or why they are wrong. The block is parsed once here.
std::optional<Result<Tenant>> tenantForm(const ProcessSpec& spec, std::string_view strategy) {
  if (spec.strategyConfig.empty()) return std::nullopt;
  const nlohmann::json j = nlohmann::json::parse(spec.strategyConfig, nullptr, false);
  if (!j.is_object() || !j.contains("uid")) return std::nullopt;
  return parseTenant(spec, j, strategy);
}

// The host's cgroup level, probed once per process.
const CgroupHost& cgroupHost() {
  static const CgroupHost host = CgroupHost::detect();
  return host;
}

// rlimits a plan applies in the child, from the part of `limits` no cgroup enforces.
void addRlimits(spawn_detail::ChildPlan& plan, const Limits& limits) {
  auto add = [&plan](int resource, const char* name, uint64_t value) {
    spawn_detail::RlimitSetting r;
    r.resource = resource;
    r.name = name;
    r.value.rlim_cur = r.value.rlim_max = static_cast<rlim_t>(value);
    std::erase_if(plan.rlimits, [&](const auto& e) { return e.resource == resource; });
    plan.rlimits.push_back(r);
  };
  if (limits.memoryBytes) add(RLIMIT_AS, "as", *limits.memoryBytes);
  if (limits.processes) add(RLIMIT_NPROC, "nproc", *limits.processes);
  if (limits.openFiles) add(RLIMIT_NOFILE, "nofile", *limits.openFiles);
}

// Starts a tenant node's daemon: see the top of this file.
Result<SpawnedProcess> spawnTenant(const SpawnRequest& request, const Tenant& t,
                                   const SpawnDefaults& defaults, std::string_view strategy,
                                   bool sandbox) {
  // What the node's daemon learns of its own isolation: what was done here, not what was asked.
  nlohmann::json isolation;
  isolation["strategy"] = std::string(strategy);
  isolation["namespaces"] = nlohmann::json::array({"user"});
  isolation["uid"] = t.uid;
  isolation["app_uid"] = t.appUid;
  auto plan = spawn_detail::makePlan(request,
                                     {std::string("PATH=") + spawn_detail::kBasePath,
                                      "HOME=" + (t.home.empty() ? std::string("/") : t.home)},
                                     defaults);
  if (!plan) return plan.error();
  std::string level = "none";
  Limits viaRlimits = t.limits;
  if (!t.cgroup.empty() && cgroupHost().kind() != CgroupLevel::kNone) {
    auto cg = NodeCgroup::create(cgroupHost(), t.cgroup, t.limits);
    if (!cg) return cg.error().wrap(std::string(strategy) + ": cgroup");
    plan->cgroupProcs = cg->procsFiles();
    level = cgroupHost().level();
    viaRlimits = rlimitPart(cg->kind(), t.limits);
  } else {
    viaRlimits = rlimitPart(CgroupLevel::kNone, t.limits);
  }
  addRlimits(*plan, viaRlimits);
  const nlohmann::json report = isolationReport(level, t.limits);
  for (const auto& [key, value] : report.items()) isolation[key] = value;
  if (!isolation["limits"].is_object()) isolation["limits"] = nlohmann::json::object();
  // A sandbox node's processes cannot start but through enjin-sandbox (the holder fails them
  // closed), so what it puts in force is theirs.
  isolation["seccomp"] = sandbox;
  isolation["sandbox_processes"] = sandbox;
  if (sandbox) {
    isolation["namespaces"] = nlohmann::json::array({"user", "mount", "pid", "ipc", "uts", "net"});
    isolation["hide"] = t.hide;
  }

  spawn_detail::UserNamespace ns;
  ns.uidMap = "0 " + std::to_string(t.uid) + " 1\n1 " + std::to_string(t.appUid) + " 1\n";
  ns.gidMap = "0 " + std::to_string(t.gid) + " 1\n1 " + std::to_string(t.appGid) + " 1\n";
  for (size_t i = 0; i < t.groups.size(); ++i) {
    ns.gidMap += std::to_string(2 + i) + " " + std::to_string(t.groups[i]) + " 1\n";
    plan->groups.push_back(static_cast<gid_t>(2 + i));
  }
  plan->userns = std::move(ns);
  plan->credentials = spawn_detail::Credentials{0, 0};
  plan->umask = 077;
  plan->env.push_back(std::string(kTenantEnv) + "=" + isolation.dump());
  return spawn_detail::forkExec(*plan);
}

class UnixUserStrategy final : public SpawnStrategy {
 public:
  UnixUserStrategy(SpawnDefaults defaults, bool sandbox)
      : defaults_(std::move(defaults)), sandbox_(sandbox) {}
  std::string_view name() const override { return sandbox_ ? "sandbox" : "unix-user"; }
  SpawnCapabilities capabilities() const override {
    return {.switchesUser = true, .resourceLimits = true, .namespaces = sandbox_};
  }
  IsolationStrength isolation() const override {
    return sandbox_ ? IsolationStrength::kSandbox : IsolationStrength::kUser;
  }

  Status validate(const ProcessSpec& spec) const override {
    if (auto t = tenantForm(spec, name())) {
      if (!*t) return t->error();
      return {};
    }
    if (sandbox_) return Error{"sandbox: only a tenant node's daemon runs sandboxed (needs 'uid')"};
    if (auto user = resolve(spec); !user) return user.error();
    return {};
  }

  // An exec check runs as the account, with the process's env.
  Result<ExecIdentity> execIn(const ProcessSpec& spec) const override {
    if (auto t = tenantForm(spec, name())) {
      // A check of a node's daemon runs as its supervisor uid, outside its namespace.
      if (!*t) return t->error();
      auto identity = SpawnStrategy::execIn(spec);
      if (!identity) return identity;
      identity->uid = static_cast<int>((*t)->uid);
      identity->gid = static_cast<int>((*t)->gid);
      return identity;
    }
    auto user = resolve(spec);
    if (!user) return user.error();
    auto identity = SpawnStrategy::execIn(spec);
    if (!identity) return identity;
    identity->uid = static_cast<int>(user->user.uid);
    identity->gid = static_cast<int>(user->user.gid);
    return identity;
  }

  // The account is looked up again at every spawn: it may have changed since validate().
  Result<SpawnedProcess> spawn(const SpawnRequest& request) const override {
    if (auto t = tenantForm(spawn_detail::requireSpec(request), name())) {
      if (!*t) return t->error();
      return spawnTenant(request, **t, defaults_, name(), sandbox_);
    }
    if (sandbox_) return Error{"sandbox: only a tenant node's daemon runs sandboxed (needs 'uid')"};
    auto resolved = resolve(spawn_detail::requireSpec(request));
    if (!resolved) return resolved.error();
    const UserEntry& user = resolved->user;
    auto plan = spawn_detail::makePlan(
        request, {std::string("PATH=") + spawn_detail::kBasePath, "HOME=" + user.home,
                  "USER=" + user.name, "LOGNAME=" + user.name},
        defaults_, resolved->config);
    if (!plan) return plan.error();
    plan->credentials = spawn_detail::Credentials{user.uid, user.gid};
    return spawn_detail::forkExec(*plan);
  }

  // A tenant node's cgroup goes once nothing is left in it. While the node's holder lives (its
  // daemon died and is being restarted) it stays, and so does everything in it.
  void cleanup(const ProcessSpec& spec, const SpawnedRef&) const override {
    auto t = tenantForm(spec, name());
    if (!t || !*t || (*t)->cgroup.empty() || cgroupHost().kind() == CgroupLevel::kNone) return;
    auto cg = NodeCgroup::open(cgroupHost(), (*t)->cgroup);
    if (!cg) return;
    if (auto procs = cg->processes(); procs && procs->empty()) (void)cg->remove(0);
  }

 private:
  SpawnDefaults defaults_;
  bool sandbox_;
};

}  // namespace

std::unique_ptr<SpawnStrategy> makeUnixUserStrategy(SpawnDefaults defaults) {
  return std::make_unique<UnixUserStrategy>(std::move(defaults), false);
}

std::unique_ptr<SpawnStrategy> makeSandboxStrategy(SpawnDefaults defaults) {
  return std::make_unique<UnixUserStrategy>(std::move(defaults), true);
}

}  // namespace enjin::supervise

namespace enjin::supervise {

Result<std::optional<TenantEnv>> tenantFromEnv() {
  const char* text = ::getenv(kTenantEnv);
  if (text == nullptr) return std::optional<TenantEnv>{};
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object() || !j.contains("strategy")) {
    return Error{std::string(kTenantEnv) + ": not the JSON object a node strategy writes"};
  }
  TenantEnv t;
  t.runAs.uid = 1;
  t.runAs.gid = 1;
  t.runAs.umask = 077;
  const char* home = ::getenv("HOME");
  t.runAs.home = home && home[0] == '/' ? home : "/";
  t.sandbox = j.value("sandbox_processes", false);
  if (auto hide = j.find("hide"); hide != j.end() && hide->is_array()) {
    for (const auto& d : *hide) {
      if (d.is_string()) t.hide.push_back(d.get<std::string>());
    }
  }
  t.isolationJson = j.dump();
  return std::optional<TenantEnv>{std::move(t)};
}

}  // namespace enjin::supervise
