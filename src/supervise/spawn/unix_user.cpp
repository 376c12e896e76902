// The unix-user strategy: exec, as an unprivileged account (fork_exec.hpp does the dropping).
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>
#include <vector>

#include "enjin/supervise/fork_exec.hpp"

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

class UnixUserStrategy final : public SpawnStrategy {
 public:
  explicit UnixUserStrategy(SpawnDefaults defaults) : defaults_(std::move(defaults)) {}
  std::string_view name() const override { return "unix-user"; }
  SpawnCapabilities capabilities() const override {
    return {.switchesUser = true, .resourceLimits = true};
  }
  IsolationStrength isolation() const override { return IsolationStrength::kUser; }

  Status validate(const ProcessSpec& spec) const override {
    if (auto user = resolve(spec); !user) return user.error();
    return {};
  }

  // An exec check runs as the account, with the process's env.
  Result<ExecIdentity> execIn(const ProcessSpec& spec) const override {
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

 private:
  SpawnDefaults defaults_;
};

}  // namespace

std::unique_ptr<SpawnStrategy> makeUnixUserStrategy(SpawnDefaults defaults) {
  return std::make_unique<UnixUserStrategy>(std::move(defaults));
}

}  // namespace enjin::supervise
