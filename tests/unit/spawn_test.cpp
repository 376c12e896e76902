// Spawn strategies against real processes: the helpers in tests/helpers report what they see.
// Every test reaps what it spawns (ChildGuard) and bounds every wait.
#include "enjin/supervise/spawn.hpp"

#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <ctime>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

// The fork/exec core under the strategies, to run every clone mode, fallbacks included.
#include "enjin/supervise/fork_exec.hpp"
#include "fakes/temp_dir.hpp"
#include "fakes/throwaway_user.hpp"

namespace enjin::supervise {
namespace {

using nlohmann::json;

// Sets `key` of the spec's strategy block (ProcessSpec::strategyConfig).
void setConfig(ProcessSpec& spec, const std::string& key, json value) {
  json config = spec.strategyConfig.empty() ? json::object() : json::parse(spec.strategyConfig);
  config[key] = std::move(value);
  spec.strategyConfig = config.dump();
}

constexpr int kTimeoutMs = 10'000;

std::string helper(const std::string& name) { return std::string(ENJIN_HELPERS_DIR) + "/" + name; }

int64_t nowMs() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

// How many fds this process has open.
size_t openFdCount() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

Pipe makePipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) std::abort();
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// glibc 2.36's <sys/pidfd.h> lacks C linkage for C++, hence the raw syscall.
int pidfdSignal(int pidfd, int sig, siginfo_t* info, unsigned flags) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, info, flags));
}

// Everything readable from `fd` until EOF, or what came before the deadline.
std::string readAll(int fd, int timeoutMs = kTimeoutMs) {
  std::string out;
  int64_t deadline = nowMs() + timeoutMs;
  for (;;) {
    int64_t left = deadline - nowMs();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// Owns a spawned process: kills and reaps it at scope exit unless wait() reaped it already.
class ChildGuard {
 public:
  explicit ChildGuard(SpawnedProcess process) : process_(std::move(process)) {}
  ~ChildGuard() {
    if (process_.pid > 0) {
      pidfdSignal(process_.pidfd.get(), SIGKILL, nullptr, 0);
      ::waitpid(process_.pid, nullptr, 0);
    }
  }
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;

  const SpawnedProcess& process() const { return process_; }
  pid_t pid() const { return process_.pid; }

  // The wait status once the process exits (killed after `timeoutMs`), reaped.
  int wait(int timeoutMs = kTimeoutMs) {
    pollfd p{process_.pidfd.get(), POLLIN, 0};
    if (::poll(&p, 1, timeoutMs) != 1) {
      ADD_FAILURE() << "pid " << process_.pid << " still running after " << timeoutMs << " ms";
      pidfdSignal(process_.pidfd.get(), SIGKILL, nullptr, 0);
    }
    int status = 0;
    while (::waitpid(process_.pid, &status, 0) < 0 && errno == EINTR) {
    }
    process_.pid = -1;  // reaped: the pid may be reused from now on
    return status;
  }

 private:
  SpawnedProcess process_;
};

ProcessSpec specFor(std::vector<std::string> command) {
  ProcessSpec spec;
  spec.name = "test";
  spec.command = std::move(command);
  return spec;
}

// Runs probe_child (asking for `envNames`) under `strategy` and returns what it printed.
json runProbe(const SpawnStrategy& strategy, ProcessSpec spec,
              const std::vector<std::string>& envNames = {},
              std::vector<std::string> extraEnv = {}) {
  spec.command = {helper("probe_child")};
  spec.command.insert(spec.command.end(), envNames.begin(), envNames.end());
  Pipe out = makePipe();
  SpawnRequest request;
  request.spec = &spec;
  request.stdoutFd = out.write.get();
  request.extraEnv = std::move(extraEnv);
  auto spawned = strategy.spawn(request);
  if (!spawned) {
    ADD_FAILURE() << "spawn: " << spawned.error().message;
    return json();
  }
  ChildGuard child(std::move(*spawned));
  out.write.reset();
  std::string text = readAll(out.read.get());
  int status = child.wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  json result = json::parse(text, nullptr, false);
  EXPECT_FALSE(result.is_discarded()) << "probe printed: " << text;
  return result;
}

// Runs `body` in a forked copy of this (single-threaded) test process, which may change its own
// session, terminal and fds freely, and returns what `body` returned; "" on any failure.
std::string inForkedProcess(const std::function<std::string()>& body) {
  Pipe result = makePipe();
  pid_t pid = ::fork();
  if (pid < 0) return "";
  if (pid == 0) {
    std::string text = body();
    ssize_t ignored = ::write(result.write.get(), text.data(), text.size());
    (void)ignored;
    ::_exit(0);
  }
  result.write.reset();
  std::string text = readAll(result.read.get());
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  return text;
}

// ---- /proc/PID/stat -----------------------------------------------------------------------

std::string statLine(const std::string& comm, const std::string& startTime) {
  std::ostringstream line;
  line << "4242 (" << comm << ") S";
  for (int field = 4; field <= 52; ++field) {
    line << ' ' << (field == 22 ? startTime : std::to_string(field * 10));
  }
  line << '\n';
  return line.str();
}

TEST(ProcStatTest, ParsesStartTimeAfterTheLastParenthesis) {
  auto plain = parseProcStatStartTime(statLine("sleep", "987654321"));
  ASSERT_TRUE(plain) << plain.error().message;
  EXPECT_EQ(*plain, 987654321U);
  // A comm that mimics the fields after it: only the last ')' counts.
  auto evil = parseProcStatStartTime(
      statLine("a) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 (b", "42"));
  ASSERT_TRUE(evil) << evil.error().message;
  EXPECT_EQ(*evil, 42U);
  auto spaces = parseProcStatStartTime(statLine(" x ) ) ", "18446744073709551615"));
  ASSERT_TRUE(spaces) << spaces.error().message;
  EXPECT_EQ(*spaces, UINT64_MAX);
}

TEST(ProcStatTest, RejectsMalformedLines) {
  EXPECT_EQ(parseProcStatStartTime("4242 sleep S 1 2 3").error().message,
            "malformed /proc stat line: no ')'");
  EXPECT_EQ(parseProcStatStartTime("4242 (sleep) S 1 2 3").error().message,
            "malformed /proc stat line: too few fields");
  EXPECT_FALSE(parseProcStatStartTime(statLine("sleep", "12x")));
  EXPECT_FALSE(parseProcStatStartTime(statLine("sleep", "-1")));
  EXPECT_FALSE(parseProcStatStartTime(""));
}

TEST(ProcStatTest, ReadsLiveProcessesAndNamesAMissingOne) {
  auto self = processStartTime(::getpid());
  ASSERT_TRUE(self) << self.error().message;
  EXPECT_GT(*self, 0U);
  EXPECT_EQ(processStartTime(INT_MAX).error().message,
            "open /proc/2147483647/stat: No such file or directory");
}

// ---- the registry ---------------------------------------------------------------------------

TEST(SpawnRegistryTest, FindsByNameAndListsTheKnownOnes) {
  SpawnRegistry registry;
  registry.add(makeUnixUserStrategy());
  registry.add(makeExecStrategy());
  auto exec = registry.find("exec");
  ASSERT_TRUE(exec) << exec.error().message;
  EXPECT_EQ((*exec)->name(), "exec");
  auto user = registry.find("unix-user");
  ASSERT_TRUE(user) << user.error().message;
  EXPECT_EQ((*user)->name(), "unix-user");
  EXPECT_EQ(registry.find("vm").error().message,
            "unknown spawn strategy 'vm' (known: exec, unix-user)");
}

// ---- the exec strategy ----------------------------------------------------------------------

class SpawnExecTest : public ::testing::Test {
 protected:
  std::unique_ptr<SpawnStrategy> strategy_ = makeExecStrategy();
};

TEST_F(SpawnExecTest, CapturesStdoutThroughTheGivenFd) {
  ProcessSpec spec = specFor({helper("crasher"), "lines:3:0"});
  Pipe out = makePipe();
  SpawnRequest request;
  request.spec = &spec;
  request.stdoutFd = out.write.get();
  auto spawned = strategy_->spawn(request);
  ASSERT_TRUE(spawned) << spawned.error().message;
  ChildGuard child(std::move(*spawned));
  out.write.reset();
  EXPECT_EQ(readAll(out.read.get()), "line 1\nline 2\nline 3\n");
  int status = child.wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(SpawnExecTest, StdoutAndStderrAreDevNullWhenNotGiven) {
  ProcessSpec spec = specFor({helper("crasher"), "sleep:10000"});
  SpawnRequest request;
  request.spec = &spec;
  auto spawned = strategy_->spawn(request);
  ASSERT_TRUE(spawned) << spawned.error().message;
  ChildGuard child(std::move(*spawned));
  for (int fd = 0; fd <= 2; ++fd) {
    std::string link = "/proc/" + std::to_string(child.pid()) + "/fd/" + std::to_string(fd);
    char target[256] = {};
    ASSERT_GT(::readlink(link.c_str(), target, sizeof target - 1), 0) << link;
    EXPECT_STREQ(target, "/dev/null") << "fd " << fd;
  }
}

TEST_F(SpawnExecTest, ChildLeadsItsOwnSessionAndProcessGroup) {
  json probe = runProbe(*strategy_, specFor({}));
  EXPECT_EQ(probe["sid_is_pid"], true);
  EXPECT_EQ(probe["pgid_is_pid"], true);
  EXPECT_EQ(probe["has_ctty"], false);
  EXPECT_EQ(probe["ppid"], ::getpid());
}

TEST_F(SpawnExecTest, OnlyStdioIsOpenEvenWhenTheParentLeaksFds) {
  std::vector<UniqueFd> leaked;
  leaked.emplace_back(::open("/dev/null", O_RDONLY));  // no O_CLOEXEC, on purpose
  leaked.emplace_back(::dup2(leaked[0].get(), 100));
  leaked.emplace_back(::dup2(leaked[0].get(), 1000));
  for (const auto& fd : leaked) ASSERT_TRUE(fd.valid());
  json probe = runProbe(*strategy_, specFor({}));
  EXPECT_EQ(probe["fds"], json::parse("[0,1,2]"));
}

TEST_F(SpawnExecTest, NoControllingTerminalEvenWhenTheParentHasOne) {
  // A forked copy of this process becomes a session leader with a pty as its terminal, then
  // spawns the probe.
  std::string text = inForkedProcess([&]() -> std::string {
    if (::setsid() < 0) return "setsid failed";
    int master = ::posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) return "no pty";
    int slave = ::open(::ptsname(master), O_RDWR);  // without O_NOCTTY: our terminal now
    if (slave < 0) return "open pty slave failed";
    int tty = ::open("/dev/tty", O_RDWR | O_NOCTTY);
    if (tty < 0) return "the pty did not become the controlling terminal";
    ::close(tty);
    return runProbe(*strategy_, specFor({})).dump();
  });
  json probe = json::parse(text, nullptr, false);
  ASSERT_FALSE(probe.is_discarded()) << text;
  EXPECT_EQ(probe["has_ctty"], false);
  EXPECT_EQ(probe["tty_errno"], ENXIO);
  EXPECT_EQ(probe["sid_is_pid"], true);
  EXPECT_EQ(probe["fds"], json::parse("[0,1,2]"));
}

TEST_F(SpawnExecTest, SignalMaskEmptyAndDispositionsDefault) {
  sigset_t block, saved;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGUSR1);
  sigaddset(&block, SIGCHLD);
  ASSERT_EQ(::sigprocmask(SIG_BLOCK, &block, &saved), 0);
  struct sigaction ignore {}, savedUsr2{}, savedPipe{};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGUSR2, &ignore, &savedUsr2);
  ::sigaction(SIGPIPE, &ignore, &savedPipe);

  json probe = runProbe(*strategy_, specFor({}));

  ::sigaction(SIGUSR2, &savedUsr2, nullptr);
  ::sigaction(SIGPIPE, &savedPipe, nullptr);
  ::sigprocmask(SIG_SETMASK, &saved, nullptr);
  EXPECT_EQ(probe["sig_blk"], "0000000000000000");
  EXPECT_EQ(probe["sig_ign"], "0000000000000000");
}

TEST_F(SpawnExecTest, EnvironmentIsBaseThenSpecThenExtra) {
  ::setenv("ENJIN_TEST_LEAK", "from the parent", 1);
  ProcessSpec spec = specFor({});
  spec.env = {{"FOO", "spec"}, {"BAR", "spec"}, {"EMPTY", ""}};
  json probe = runProbe(*strategy_, spec,
                        {"PATH", "HOME", "USER", "FOO", "BAR", "EMPTY", "NOTIFY_SOCKET",
                         "ENJIN_TEST_LEAK"},
                        {"BAR=extra", "NOTIFY_SOCKET=/run/enjin/notify"});
  ::unsetenv("ENJIN_TEST_LEAK");
  const json& env = probe["env"];
  EXPECT_EQ(env["PATH"], "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  EXPECT_EQ(env["HOME"], "/");
  EXPECT_EQ(env["USER"], nullptr);
  EXPECT_EQ(env["FOO"], "spec");
  EXPECT_EQ(env["BAR"], "extra");
  EXPECT_EQ(env["EMPTY"], "");
  EXPECT_EQ(env["NOTIFY_SOCKET"], "/run/enjin/notify");
  EXPECT_EQ(env["ENJIN_TEST_LEAK"], nullptr);
}

TEST_F(SpawnExecTest, CwdIsTheSpecsElseTheDefault) {
  testing::TempDir dir;
  ProcessSpec spec = specFor({});
  spec.cwd = dir.path();
  EXPECT_EQ(runProbe(*strategy_, spec)["cwd"], dir.path());
  EXPECT_EQ(runProbe(*strategy_, specFor({}))["cwd"], "/");  // SpawnRequest::defaultCwd
}

TEST_F(SpawnExecTest, LooksCommandsUpOnTheChildsPath) {
  ProcessSpec spec = specFor({"probe_child"});
  spec.env["PATH"] = "/nonexistent:" + std::string(ENJIN_HELPERS_DIR);
  Pipe out = makePipe();
  SpawnRequest request;
  request.spec = &spec;
  request.stdoutFd = out.write.get();
  auto spawned = strategy_->spawn(request);
  ASSERT_TRUE(spawned) << spawned.error().message;
  ChildGuard child(std::move(*spawned));
  out.write.reset();
  EXPECT_FALSE(json::parse(readAll(out.read.get()), nullptr, false).is_discarded());
  child.wait();

  spec.command = {"enjin-no-such-program"};
  spec.env["PATH"] = "/nonexistent:/bin";
  EXPECT_EQ(strategy_->spawn(request).error().message,
            "exec enjin-no-such-program: not found on PATH /nonexistent:/bin");
}

TEST_F(SpawnExecTest, ExecFailureIsAnErrorNamingTheCallAndTheCause) {
  ProcessSpec spec = specFor({"/nonexistent"});
  SpawnRequest request;
  request.spec = &spec;
  EXPECT_EQ(strategy_->spawn(request).error().message,
            "exec /nonexistent: No such file or directory");

  testing::TempDir dir;
  std::string script = dir / "not-executable";
  std::ofstream(script) << "#!/bin/sh\n";
  spec.command = {script};
  EXPECT_EQ(strategy_->spawn(request).error().message, "exec " + script + ": Permission denied");
}

TEST_F(SpawnExecTest, BadCwdIsAnError) {
  ProcessSpec spec = specFor({helper("crasher"), "exit:0"});
  spec.cwd = "/nope";
  SpawnRequest request;
  request.spec = &spec;
  EXPECT_EQ(strategy_->spawn(request).error().message, "chdir /nope: No such file or directory");
}

TEST_F(SpawnExecTest, FailedSpawnsLeaveNoZombie) {
  ProcessSpec spec = specFor({"/nonexistent"});
  SpawnRequest request;
  request.spec = &spec;
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(strategy_->spawn(request));
  // Every child the test process ever had is reaped: nothing left to wait for.
  EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

TEST_F(SpawnExecTest, BadSpecsAreRefusedBeforeAnythingRuns) {
  ProcessSpec empty = specFor({});
  EXPECT_EQ(strategy_->validate(empty).error().message, "empty command");
  ProcessSpec limits = specFor({"/bin/true"});
  setConfig(limits, "rlimits", {{"bogus", 1}});
  EXPECT_EQ(strategy_->validate(limits).error().message,
            "exec: unknown rlimit 'bogus' (known: as, core, cpu, data, fsize, memlock, nofile, nproc, "
            "stack)");
  SpawnRequest request;
  request.spec = &limits;
  EXPECT_FALSE(strategy_->spawn(request));
  EXPECT_TRUE(strategy_->validate(specFor({"/bin/true"})));
  // A user on the exec strategy would silently run as the supervisor's user: refused.
  ProcessSpec user = specFor({"/bin/true"});
  setConfig(user, "user", "nobody");
  EXPECT_EQ(strategy_->validate(user).error().message,
            "exec strategy cannot run as user 'nobody' (use strategy unix-user)");
  request.spec = &user;
  EXPECT_FALSE(strategy_->spawn(request));
}

// What each fork/exec strategy makes of its block (ProcessSpec::strategyConfig).
TEST_F(SpawnExecTest, StrategyBlockErrorsNameTheStrategyAndKey) {
  auto check = [&](const SpawnStrategy& strategy, const std::string& config) {
    ProcessSpec spec = specFor({"/bin/true"});
    spec.strategy = std::string(strategy.name());
    spec.strategyConfig = config;
    auto st = strategy.validate(spec);
    return st.ok() ? std::string("ok") : st.error().message;
  };
  auto unixUser = makeUnixUserStrategy();
  EXPECT_EQ(check(*strategy_, ""), "ok");
  EXPECT_EQ(check(*strategy_, R"({"rlimits":{"nofile":64}})"), "ok");
  EXPECT_EQ(check(*strategy_, R"({"nice":5})"), "exec: unknown key 'nice' (known: rlimits)");
  EXPECT_EQ(check(*strategy_, R"({"rlimits":{"nofile":-1}})"),
            "exec: rlimits.nofile: expected an integer of at least 0");
  EXPECT_EQ(check(*strategy_, R"({"rlimits":{"nofile":"many"}})"),
            "exec: rlimits.nofile: expected an integer of at least 0");
  EXPECT_EQ(check(*strategy_, R"({"rlimits":5})"), "exec: rlimits: expected a table");
  EXPECT_EQ(check(*unixUser, ""), "unix-user: 'user' is required");
  EXPECT_EQ(check(*unixUser, R"({"rlimits":{"core":0}})"), "unix-user: 'user' is required");
  EXPECT_EQ(check(*unixUser, R"({"user":7})"), "unix-user: user: expected a non-empty string");
  EXPECT_EQ(check(*unixUser, R"({"user":"nobody","group":"x"})"),
            "unix-user: unknown key 'group' (known: user, rlimits)");
  EXPECT_EQ(check(*unixUser, R"({"user":"nobody","rlimits":{"files":1}})"),
            "unix-user: unknown rlimit 'files' (known: as, core, cpu, data, fsize, memlock, "
            "nofile, nproc, stack)");
  EXPECT_EQ(check(*unixUser, R"({"user":"nobody"})"), "ok");
  // A registry's validate is what ring2d runs on a spec; it prefixes the process itself.
  SpawnRegistry registry;
  registry.add(makeExecStrategy());
  registry.add(makeUnixUserStrategy());
  ProcessSpec spec = specFor({"/bin/true"});
  spec.strategy = "unix-user";
  EXPECT_EQ(registry.validate(spec).error().message, "unix-user: 'user' is required");
}

TEST_F(SpawnExecTest, AppliesRlimits) {
  ProcessSpec spec = specFor({});
  setConfig(spec, "rlimits", json{{"nofile", 100}, {"core", 0}});
  json probe = runProbe(*strategy_, spec);
  EXPECT_EQ(probe["nofile"], 100);
  EXPECT_EQ(probe["core"], 0);
}

// The "Max open files" soft and hard limits of a running process, from /proc/PID/limits.
std::pair<std::string, std::string> nofileOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/limits");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Max open files", 0) != 0) continue;
    std::istringstream fields(line.substr(std::string("Max open files").size()));
    std::string soft, hard;
    fields >> soft >> hard;
    return {soft, hard};
  }
  return {};
}

TEST(SpawnDefaultsTest, NofileSoftLimitUnlessTheSpecSetsOneAndTheHardLimitStays) {
  rlimit own;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &own), 0);
  if (own.rlim_max != RLIM_INFINITY && own.rlim_max < 64) GTEST_SKIP() << "hard limit below 64";
  auto strategy = makeExecStrategy(SpawnDefaults{64, std::nullopt, std::nullopt});
  EXPECT_EQ(runProbe(*strategy, specFor({}))["nofile"], 64);
  ProcessSpec own100 = specFor({});
  setConfig(own100, "rlimits", json{{"nofile", 100}});
  EXPECT_EQ(runProbe(*strategy, own100)["nofile"], 100);

  ProcessSpec sleeper = specFor({helper("crasher"), "sleep:10000"});
  SpawnRequest request;
  request.spec = &sleeper;
  auto spawned = strategy->spawn(request);
  ASSERT_TRUE(spawned) << spawned.error().message;
  ChildGuard child(std::move(*spawned));
  const auto [soft, hard] = nofileOf(child.pid());
  EXPECT_EQ(soft, "64");
  EXPECT_EQ(hard, own.rlim_max == RLIM_INFINITY ? "unlimited" : std::to_string(own.rlim_max));

  // Without a default the limit is inherited as it is.
  EXPECT_EQ(runProbe(*makeExecStrategy(), specFor({}))["nofile"],
            own.rlim_cur == RLIM_INFINITY ? -1 : static_cast<int64_t>(own.rlim_cur));
}

TEST_F(SpawnExecTest, StartTimeMatchesProc) {
  ProcessSpec spec = specFor({helper("crasher"), "sleep:10000"});
  SpawnRequest request;
  request.spec = &spec;
  auto spawned = strategy_->spawn(request);
  ASSERT_TRUE(spawned) << spawned.error().message;
  ChildGuard child(std::move(*spawned));
  EXPECT_NE(child.process().startTime, 0U);
  std::ifstream stat("/proc/" + std::to_string(child.pid()) + "/stat");
  std::string line((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  auto fromProc = parseProcStatStartTime(line);
  ASSERT_TRUE(fromProc) << fromProc.error().message;
  EXPECT_EQ(child.process().startTime, *fromProc);
  // The child was exec'd: /proc shows the helper, not a copy of this test.
  std::ifstream comm("/proc/" + std::to_string(child.pid()) + "/comm");
  std::string name;
  std::getline(comm, name);
  EXPECT_EQ(name, "crasher");
}

TEST_F(SpawnExecTest, PidfdBecomesReadableWhenTheChildExits) {
  ProcessSpec spec = specFor({helper("crasher"), "sleep:10000"});
  SpawnRequest request;
  request.spec = &spec;
  auto spawned = strategy_->spawn(request);
  ASSERT_TRUE(spawned) << spawned.error().message;
  ChildGuard sleeper(std::move(*spawned));
  EXPECT_TRUE(::fcntl(sleeper.process().pidfd.get(), F_GETFD) & FD_CLOEXEC);
  pollfd p{sleeper.process().pidfd.get(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0);
  ASSERT_EQ(pidfdSignal(sleeper.process().pidfd.get(), SIGTERM, nullptr, 0), 0);
  int status = sleeper.wait();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) << status;

  spec.command = {helper("crasher"), "exit:7"};
  spawned = strategy_->spawn(request);
  ASSERT_TRUE(spawned) << spawned.error().message;
  ChildGuard exiter(std::move(*spawned));
  p = {exiter.process().pidfd.get(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, kTimeoutMs), 1);
  status = exiter.wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 7) << status;
}

TEST_F(SpawnExecTest, StdioSourcesMayBeTheParentsOwnStdioFds) {
  // The caller hands over its fds 2 and 1 as stdout and stderr, crossed: each dup2 in the child
  // must not read a source that an earlier one overwrote.
  std::string text = inForkedProcess([&]() -> std::string {
    Pipe out = makePipe();
    Pipe err = makePipe();
    if (::dup3(out.write.get(), 2, O_CLOEXEC) < 0 || ::dup3(err.write.get(), 1, O_CLOEXEC) < 0) {
      return "dup3 failed";
    }
    out.write.reset();
    err.write.reset();
    ProcessSpec spec = specFor({"/bin/sh", "-c", "echo to-stdout; echo to-stderr >&2"});
    SpawnRequest request;
    request.spec = &spec;
    request.stdoutFd = 2;
    request.stderrFd = 1;
    auto spawned = strategy_->spawn(request);
    if (!spawned) return spawned.error().message;
    ChildGuard child(std::move(*spawned));
    ::close(1);
    ::close(2);
    std::string result = readAll(out.read.get()) + "|" + readAll(err.read.get());
    child.wait();
    return result;
  });
  EXPECT_EQ(text, "to-stdout\n|to-stderr\n");
}

// ---- every clone mode of the core ---------------------------------------------------------

using spawn_detail::CloneMode;

class SpawnCloneModeTest : public ::testing::TestWithParam<CloneMode> {
 protected:
  // Runs probe_child through forkExec in this test's mode.
  json probe(ProcessSpec spec, std::optional<spawn_detail::Credentials> credentials = {}) {
    spec.command = {helper("probe_child"), "FOO"};
    Pipe out = makePipe();
    SpawnRequest request;
    request.spec = &spec;
    request.stdoutFd = out.write.get();
    auto config = spawn_detail::parseForkExecConfig(spec, "exec", false);
    EXPECT_TRUE(config.ok());
    auto plan = spawn_detail::makePlan(request, {"PATH=/bin", "HOME=/"}, {},
                                       config ? *config : spawn_detail::ForkExecConfig{});
    if (!plan) {
      ADD_FAILURE() << plan.error().message;
      return json();
    }
    plan->credentials = credentials;
    auto spawned = spawn_detail::forkExec(*plan, GetParam());
    if (!spawned) {
      ADD_FAILURE() << spawned.error().message;
      return json();
    }
    ChildGuard child(std::move(*spawned));
    EXPECT_EQ(child.process().startTime, *processStartTime(child.pid()));
    out.write.reset();
    std::string text = readAll(out.read.get());
    child.wait();
    return json::parse(text, nullptr, false);
  }

  std::string error(ProcessSpec spec) {
    SpawnRequest request;
    request.spec = &spec;
    auto config = spawn_detail::parseForkExecConfig(spec, "exec", false);
    EXPECT_TRUE(config.ok());
    auto plan = spawn_detail::makePlan(request, {"PATH=/bin"}, {},
                                       config ? *config : spawn_detail::ForkExecConfig{});
    if (!plan) return plan.error().message;
    auto spawned = spawn_detail::forkExec(*plan, GetParam());
    return spawned ? "no error" : spawned.error().message;
  }
};

TEST_P(SpawnCloneModeTest, GivesEveryGuarantee) {
  UniqueFd leaked(::open("/dev/null", O_RDONLY));  // no O_CLOEXEC, on purpose
  sigset_t block, saved;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  ::sigprocmask(SIG_BLOCK, &block, &saved);
  struct sigaction ignore {}, savedUsr2{};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGUSR2, &ignore, &savedUsr2);

  testing::TempDir dir;
  ProcessSpec spec = specFor({});
  spec.cwd = dir.path();
  spec.env["FOO"] = "bar";
  setConfig(spec, "rlimits", {{"nofile", 77}});
  json result = probe(spec);

  ::sigaction(SIGUSR2, &savedUsr2, nullptr);
  ::sigprocmask(SIG_SETMASK, &saved, nullptr);
  EXPECT_EQ(result["sid_is_pid"], true);
  EXPECT_EQ(result["pgid_is_pid"], true);
  EXPECT_EQ(result["has_ctty"], false);
  EXPECT_EQ(result["fds"], json::parse("[0,1,2]"));
  EXPECT_EQ(result["sig_blk"], "0000000000000000");
  EXPECT_EQ(result["sig_ign"], "0000000000000000");
  EXPECT_EQ(result["cwd"], dir.path());
  EXPECT_EQ(result["env"]["FOO"], "bar");
  EXPECT_EQ(result["nofile"], 77);
  EXPECT_EQ(result["ppid"], ::getpid());
}

// With thousands of fds open in the parent (the holder keeps four per process), the child still
// gets only 0-2, and spawning leaves the parent's own fd table as it was. In kVfork mode the
// child is not even given a copy of that table (CLONE_FILES, then a private table of the low
// slots only): the table it execs with stays small.
TEST_P(SpawnCloneModeTest, ThousandsOfParentFdsStayOutOfTheChild) {
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_max < 4096) GTEST_SKIP() << "needs a hard RLIMIT_NOFILE of 4096";
  struct RestoreLimit {
    rlimit saved;
    ~RestoreLimit() { ::setrlimit(RLIMIT_NOFILE, &saved); }
  } restore{limit};
  limit.rlim_cur = limit.rlim_max;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &limit), 0);
  json first = probe(specFor({}));  // the first spawn of this process makes its low slots
  EXPECT_EQ(first["fds"], json::parse("[0,1,2]"));
  std::vector<UniqueFd> many;
  for (int i = 0; i < 3000; ++i) many.emplace_back(::open("/dev/null", O_RDONLY));  // no O_CLOEXEC
  ASSERT_TRUE(many.back());
  const size_t before = openFdCount();
  for (int i = 0; i < 5; ++i) {
    json result = probe(specFor({}));
    EXPECT_EQ(result["fds"], json::parse("[0,1,2]"));
    if (GetParam() == CloneMode::kVfork) {
      EXPECT_LE(result["fd_table_size"].get<int>(), 256) << "the child copied the parent's table";
    } else {
      EXPECT_GE(result["fd_table_size"].get<int>(), 3000);  // a fork copies it: the test can tell
    }
  }
  EXPECT_EQ(openFdCount(), before);
}

TEST_P(SpawnCloneModeTest, ReportsTheFailingStep) {
  EXPECT_EQ(error(specFor({"/nonexistent"})), "exec /nonexistent: No such file or directory");
  ProcessSpec spec = specFor({helper("crasher"), "exit:0"});
  spec.cwd = "/nope";
  EXPECT_EQ(error(spec), "chdir /nope: No such file or directory");
  EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1);  // failed children are reaped
}

TEST_P(SpawnCloneModeTest, DropsCredentials) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  json result = probe(specFor({}), spawn_detail::Credentials{65534, 65534});
  EXPECT_EQ(result["uid"], 65534);
  EXPECT_EQ(result["gid"], 65534);
  EXPECT_EQ(result["groups"], 0);
  EXPECT_EQ(result["setuid0_fails"], true);
  EXPECT_EQ(result["no_new_privs"], 1);
}

std::string cloneModeName(const ::testing::TestParamInfo<CloneMode>& param) {
  switch (param.param) {
    case CloneMode::kVfork: return "Vfork";
    case CloneMode::kClone3: return "Clone3";
    case CloneMode::kFork: return "Fork";
  }
  return "Unknown";
}

INSTANTIATE_TEST_SUITE_P(, SpawnCloneModeTest,
                         ::testing::Values(CloneMode::kVfork, CloneMode::kClone3, CloneMode::kFork),
                         cloneModeName);

// ---- the unix-user strategy -----------------------------------------------------------------

class UnixUserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    user_.emplace();
    ASSERT_TRUE(user_->ok()) << "could not add a throwaway user: " << user_->error();
    uid_ = user_->uid();
    gid_ = user_->gid();
    home_ = user_->home();
  }

  ProcessSpec userSpec(std::vector<std::string> command = {}) {
    ProcessSpec spec = specFor(std::move(command));
    spec.strategy = "unix-user";
    setConfig(spec, "user", user_->name());
    return spec;
  }

  std::optional<testing::ThrowawayUser> user_;
  std::unique_ptr<SpawnStrategy> strategy_ = makeUnixUserStrategy();
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  std::string home_;
};

TEST_F(UnixUserTest, DropsEveryPrivilege) {
  ASSERT_TRUE(strategy_->validate(userSpec({"/bin/true"})));
  json probe = runProbe(*strategy_, userSpec(), {"HOME", "USER", "LOGNAME", "PATH"});
  EXPECT_EQ(probe["uid"], uid_);
  EXPECT_EQ(probe["euid"], uid_);
  EXPECT_EQ(probe["gid"], gid_);
  EXPECT_EQ(probe["egid"], gid_);
  EXPECT_EQ(probe["groups"], 0);
  EXPECT_EQ(probe["setuid0_fails"], true);
  EXPECT_EQ(probe["no_new_privs"], 1);
  EXPECT_EQ(probe["fds"], json::parse("[0,1,2]"));
  EXPECT_EQ(probe["has_ctty"], false);
  EXPECT_EQ(probe["sid_is_pid"], true);
  EXPECT_EQ(probe["pgid_is_pid"], true);
  EXPECT_EQ(probe["sig_blk"], "0000000000000000");
  EXPECT_EQ(probe["env"]["HOME"], home_);
  EXPECT_EQ(probe["env"]["USER"], user_->name());
  EXPECT_EQ(probe["env"]["LOGNAME"], user_->name());
  EXPECT_EQ(probe["env"]["PATH"], "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
}

TEST_F(UnixUserTest, OnlyStdioIsOpenEvenWhenTheParentLeaksFds) {
  UniqueFd leaked(::open("/etc/hostname", O_RDONLY));  // no O_CLOEXEC, on purpose
  ASSERT_TRUE(leaked.valid());
  EXPECT_EQ(runProbe(*strategy_, userSpec())["fds"], json::parse("[0,1,2]"));
}

// Whether this process has CAP_SYS_RESOURCE (containers often drop it, even for root).
bool hasCapSysResource() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("CapEff:", 0) == 0) {
      return (std::stoull(line.substr(7), nullptr, 16) >> CAP_SYS_RESOURCE) & 1;
    }
  }
  return false;
}

TEST_F(UnixUserTest, AppliesRlimits) {
  ProcessSpec spec = userSpec();
  setConfig(spec, "rlimits", json{{"nofile", 64}, {"core", 0}});
  json probe = runProbe(*strategy_, spec);
  EXPECT_EQ(probe["nofile"], 64);
  EXPECT_EQ(probe["core"], 0);
}

TEST_F(UnixUserTest, DefaultNofileSoftLimitUnlessTheSpecSetsOne) {
  auto strategy = makeUnixUserStrategy(SpawnDefaults{64, std::nullopt, std::nullopt});
  EXPECT_EQ(runProbe(*strategy, userSpec())["nofile"], 64);
  ProcessSpec spec = userSpec();
  setConfig(spec, "rlimits", json{{"nofile", 100}});
  EXPECT_EQ(runProbe(*strategy, spec)["nofile"], 100);
}

TEST_F(UnixUserTest, RaisesAHardLimitBeforeDroppingPrivileges) {
  // Raising a hard limit needs CAP_SYS_RESOURCE, which the child has only before setuid.
  rlimit current{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &current), 0);
  uint64_t nrOpen = 1 << 20;
  std::ifstream("/proc/sys/fs/nr_open") >> nrOpen;
  uint64_t raised = std::min<uint64_t>(nrOpen, current.rlim_max + 1024);
  if (raised <= current.rlim_max) GTEST_SKIP() << "the hard limit is already fs.nr_open";
  ProcessSpec spec = userSpec({helper("crasher"), "exit:0"});
  setConfig(spec, "rlimits", json{{"nofile", raised}});
  if (!hasCapSysResource()) {
    // Without the capability the spawn fails, and says which limit and why.
    SpawnRequest request;
    request.spec = &spec;
    EXPECT_EQ(strategy_->spawn(request).error().message,
              "setrlimit nofile=" + std::to_string(raised) + ": Operation not permitted");
    GTEST_SKIP() << "no CAP_SYS_RESOURCE here: checked only the error";
  }
  EXPECT_EQ(runProbe(*strategy_, spec)["nofile"], raised);
}

TEST_F(UnixUserTest, ChdirHappensAsTheUser) {
  testing::TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 0700), 0);  // root's
  ProcessSpec spec = userSpec({helper("crasher"), "exit:0"});
  spec.cwd = dir.path();
  SpawnRequest request;
  request.spec = &spec;
  EXPECT_EQ(strategy_->spawn(request).error().message,
            "chdir " + dir.path() + ": Permission denied");
}

TEST_F(UnixUserTest, RefusesRoot) {
  ProcessSpec spec = userSpec({"/bin/true"});
  setConfig(spec, "user", "root");
  EXPECT_EQ(strategy_->validate(spec).error().message,
            "unix-user strategy refuses to run 'root' (uid 0)");
  SpawnRequest request;
  request.spec = &spec;
  EXPECT_EQ(strategy_->spawn(request).error().message,
            "unix-user strategy refuses to run 'root' (uid 0)");
}

TEST_F(UnixUserTest, NeedsAKnownUser) {
  ProcessSpec spec = userSpec({"/bin/true"});
  setConfig(spec, "user", "enjin-no-such-user");
  EXPECT_EQ(strategy_->validate(spec).error().message,
            "unix-user: unknown user 'enjin-no-such-user'");
  SpawnRequest request;
  request.spec = &spec;
  EXPECT_EQ(strategy_->spawn(request).error().message,
            "unix-user: unknown user 'enjin-no-such-user'");
  spec.strategyConfig.clear();
  EXPECT_EQ(strategy_->validate(spec).error().message, "unix-user: 'user' is required");
}

TEST_F(UnixUserTest, ExecFailureIsReportedAsForExec) {
  ProcessSpec spec = userSpec({"/nonexistent"});
  SpawnRequest request;
  request.spec = &spec;
  EXPECT_EQ(strategy_->spawn(request).error().message,
            "exec /nonexistent: No such file or directory");
}

// ---- a tenant node's daemon: the numeric form of unix-user, and sandbox -----------------------

class TenantSpawnTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (it writes a user namespace's maps)";
  }
  static ProcessSpec tenantSpec(const std::string& strategy = "unix-user") {
    ProcessSpec spec = specFor({"/bin/true"});
    spec.strategy = strategy;
    spec.strategyConfig = json{{"uid", 62001}, {"gid", 62001},   {"app_uid", 62002},
                               {"app_gid", 62002}, {"groups", {62000}}, {"home", "/"}}
                              .dump();
    return spec;
  }
};

TEST_F(TenantSpawnTest, StartsAsRootOfAUserNamespaceHoldingOnlyItsIds) {
  auto strategy = makeUnixUserStrategy();
  ProcessSpec spec = tenantSpec();
  ASSERT_TRUE(strategy->validate(spec)) << strategy->validate(spec).error().message;
  json probe = runProbe(*strategy, spec, {"ENJIN_TENANT", "HOME"});
  // Root inside (so it may become its app uid), with the bus group as its one extra group.
  EXPECT_EQ(probe["uid"], 0);
  EXPECT_EQ(probe["gid"], 0);
  EXPECT_EQ(probe["groups"], 1);
  EXPECT_EQ(probe["no_new_privs"], 1);
  EXPECT_EQ(probe["fds"], json::parse("[0,1,2]"));
  json tenant = json::parse(probe["env"].value("ENJIN_TENANT", ""), nullptr, false);
  ASSERT_TRUE(tenant.is_object()) << probe.dump();
  EXPECT_EQ(tenant["strategy"], "unix-user");
  EXPECT_EQ(tenant["namespaces"], json::array({"user"}));
  EXPECT_EQ(tenant["uid"], 62001);
  EXPECT_EQ(tenant["app_uid"], 62002);
  EXPECT_EQ(tenant["sandbox_processes"], false);
}

TEST_F(TenantSpawnTest, WhatItMakesIsOwnedByItsSupervisorUidOutside) {
  testing::TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 0777), 0);
  auto strategy = makeUnixUserStrategy();
  ProcessSpec spec = tenantSpec();
  spec.command = {"/bin/sh", "-c", "touch " + dir / "made"};
  SpawnRequest request;
  request.spec = &spec;
  auto spawned = strategy->spawn(request);
  ASSERT_TRUE(spawned) << spawned.error().message;
  ChildGuard child(std::move(*spawned));
  int status = child.wait();
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  struct stat st {};
  ASSERT_EQ(::stat((dir / "made").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 62001U);
  EXPECT_EQ(st.st_gid, 62001U);
  // umask 077: nothing of the node's is readable by its app uid or anyone else.
  EXPECT_EQ(st.st_mode & 077, 0U);
}

TEST_F(TenantSpawnTest, ExecWithRunAsDropsEveryProcessToTheAppIds) {
  testing::ThrowawayUser user;
  ASSERT_TRUE(user.ok()) << user.error();
  testing::TempDir home;
  ASSERT_EQ(::chown(home.path().c_str(), user.uid(), user.gid()), 0);
  SpawnDefaults defaults;
  defaults.runAs = SpawnDefaults::RunAs{user.uid(), user.gid(), 027, home.path()};
  auto strategy = makeExecStrategy(defaults);
  json probe = runProbe(*strategy, specFor({}), {"HOME"});
  EXPECT_EQ(probe["uid"], user.uid());
  EXPECT_EQ(probe["gid"], user.gid());
  EXPECT_EQ(probe["groups"], 0);
  EXPECT_EQ(probe["setuid0_fails"], true);
  EXPECT_EQ(probe["no_new_privs"], 1);
  EXPECT_EQ(probe["cwd"], home.path());
  EXPECT_EQ(probe["env"]["HOME"], home.path());
  auto identity = strategy->execIn(specFor({"/bin/true"}));
  ASSERT_TRUE(identity);
  EXPECT_EQ(identity->uid, static_cast<int>(user.uid()));
}

TEST_F(TenantSpawnTest, RefusesBadIdsNamingTheKey) {
  auto strategy = makeUnixUserStrategy();
  ProcessSpec spec = tenantSpec();
  json config = json::parse(spec.strategyConfig);
  config.erase("app_uid");
  spec.strategyConfig = config.dump();
  EXPECT_EQ(strategy->validate(spec).error().message, "unix-user: 'app_uid' is required");
  config["app_uid"] = 62001;
  spec.strategyConfig = config.dump();
  EXPECT_EQ(strategy->validate(spec).error().message,
            "unix-user: the app ids must differ from the supervisor's");
  config["app_uid"] = 0;
  spec.strategyConfig = config.dump();
  EXPECT_EQ(strategy->validate(spec).error().message,
            "unix-user: app_uid: expected an id above 0, got 0");
  config["app_uid"] = 62002;
  config["shell"] = "/bin/sh";
  spec.strategyConfig = config.dump();
  EXPECT_EQ(strategy->validate(spec).error().message,
            "unix-user: unknown key 'shell' (known: uid, gid, app_uid, app_gid, groups, cgroup, "
            "limits, home)");
}

TEST_F(TenantSpawnTest, SandboxTakesOnlyATenantNodesIds) {
  auto sandbox = makeSandboxStrategy();
  EXPECT_EQ(sandbox->isolation(), IsolationStrength::kSandbox);
  ProcessSpec named = specFor({"/bin/true"});
  named.strategy = "sandbox";
  setConfig(named, "user", "nobody");
  EXPECT_EQ(sandbox->validate(named).error().message,
            "sandbox: only a tenant node's daemon runs sandboxed (needs 'uid')");
  ProcessSpec spec = tenantSpec("sandbox");
  json probe = runProbe(*sandbox, spec, {"ENJIN_TENANT"});
  json tenant = json::parse(probe["env"].value("ENJIN_TENANT", ""), nullptr, false);
  EXPECT_EQ(tenant.value("strategy", ""), "sandbox");
  EXPECT_EQ(tenant.value("sandbox_processes", false), true);
}

}  // namespace
}  // namespace enjin::supervise
