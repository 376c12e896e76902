// enjin-sandbox (daemons/sandbox) run as the holder runs it: cloned by this test as PID 1 of new
// mount, pid, ipc, uts and network namespaces, then exec'd. The application is /bin/sh, whose
// output says what it sees, or tests/helpers/sandbox_probe, which tries the calls the seccomp
// filter refuses. Needs root; every child is killed and reaped at the end of its test.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "enjin/base/unique_fd.hpp"
#include "enjin/supervise/sandbox.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::supervise {
namespace {

constexpr int kTimeoutMs = 10'000;
constexpr uid_t kNobody = 65534;

std::string binary(const std::string& name) { return std::string(ENJIN_HELPERS_DIR) + "/" + name; }

int64_t nowMs() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

// A running enjin-sandbox: its pid in this (the parent) pid namespace, its stdout and stderr.
class Sandbox {
 public:
  // Clones the namespaces and execs enjin-sandbox with `args` (its options, "--", the command).
  // With `userNamespace` the namespaces belong to a new user namespace mapping ids 0-65535 to
  // the same host ids, as for a holder that is not real root: the kernel locks the flags of the
  // mounts the sandbox inherits.
  explicit Sandbox(const std::vector<std::string>& args, bool userNamespace = false) {
    std::vector<std::string> all{binary("enjin-sandbox")};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& arg : all) argv.push_back(arg.data());
    argv.push_back(nullptr);
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) std::abort();
    int devNull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devNull < 0) std::abort();
    int mapped[2];  // closed by the parent once the id maps are written
    if (::pipe2(mapped, O_CLOEXEC) != 0) std::abort();
    unsigned long flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET;
    if (userNamespace) flags |= CLONE_NEWUSER;
    // A raw clone, as the holder makes it: between it and execv the child only waits for its
    // id maps and dup2s.
    long pid = ::syscall(SYS_clone, flags | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
    if (pid == 0) {
      ::close(mapped[1]);
      char byte;
      if (::read(mapped[0], &byte, 1) != 0) ::_exit(122);
      if (::dup2(devNull, 0) < 0 || ::dup2(out[1], 1) < 0 || ::dup2(err[1], 2) < 0) ::_exit(120);
      ::execv(argv[0], argv.data());
      ::_exit(121);
    }
    ::close(devNull);
    ::close(out[1]);
    ::close(err[1]);
    ::close(mapped[0]);
    if (pid > 0 && userNamespace) {
      for (const char* map : {"uid_map", "gid_map"}) {
        std::ofstream file("/proc/" + std::to_string(pid) + "/" + map);
        file << "0 0 65536\n";
        file.flush();
        if (!file) ADD_FAILURE() << "write " << map;
      }
    }
    ::close(mapped[1]);
    out_ = UniqueFd(out[0]);
    err_ = UniqueFd(err[0]);
    if (pid < 0) {
      ADD_FAILURE() << "clone: " << std::strerror(errno);
      return;
    }
    pid_ = static_cast<pid_t>(pid);
  }
  ~Sandbox() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  pid_t pid() const { return pid_; }

  // Reads stdout until it holds `text` (true) or the deadline passes (false).
  bool waitForOutput(const std::string& text) {
    int64_t deadline = nowMs() + kTimeoutMs;
    while (stdout_.find(text) == std::string::npos) {
      int64_t left = deadline - nowMs();
      if (left <= 0 || !readSome(out_.get(), stdout_, static_cast<int>(left))) return false;
    }
    return true;
  }

  // Collects both outputs to EOF and reaps the sandbox: its exit code, or 128 + the signal that
  // killed it. Kills it after the deadline.
  int finish() {
    int64_t deadline = nowMs() + kTimeoutMs;
    bool outOpen = true, errOpen = true;
    while (outOpen || errOpen) {
      int64_t left = deadline - nowMs();
      if (left <= 0) {
        ADD_FAILURE() << "enjin-sandbox still writing after " << kTimeoutMs << " ms";
        ::kill(pid_, SIGKILL);
        break;
      }
      pollfd fds[2] = {{outOpen ? out_.get() : -1, POLLIN, 0}, {errOpen ? err_.get() : -1, POLLIN, 0}};
      if (::poll(fds, 2, static_cast<int>(left)) < 0 && errno != EINTR) break;
      if (outOpen && fds[0].revents != 0) outOpen = readSome(out_.get(), stdout_, 0);
      if (errOpen && fds[1].revents != 0) errOpen = readSome(err_.get(), stderr_, 0);
    }
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;  // reaped
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  const std::string& out() const { return stdout_; }
  const std::string& err() const { return stderr_; }

 private:
  // One read into `into`; false at EOF, on an error or when nothing came within `timeoutMs`.
  static bool readSome(int fd, std::string& into, int timeoutMs) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeoutMs) <= 0) return false;
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return false;
    into.append(buf, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  UniqueFd out_;
  UniqueFd err_;
  std::string stdout_;
  std::string stderr_;
};

// "KEY value" lines ("NoNewPrivs:\t1" gives {"NoNewPrivs:", "1"}; "x=1" lines of the scripts
// below are split at '=').
std::map<std::string, std::string> keyValues(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    size_t cut = line.find_first_of("\t =");
    if (cut == std::string::npos) continue;
    size_t value = line.find_first_not_of("\t =", cut);
    out[line.substr(0, cut)] = value == std::string::npos ? "" : line.substr(value);
  }
  return out;
}

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "enjin-sandbox needs root to make its namespaces";
    // Not under /tmp: the sandbox covers /tmp with a tmpfs of its own.
    char dir[] = "/var/tmp/enjin-sandbox-test-XXXXXX";
    if (::mkdtemp(dir) == nullptr) FAIL() << "mkdtemp: " << std::strerror(errno);
    dir_ = dir;
    ::chmod(dir_.c_str(), 0755);
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // A folder of the test folder, made with `mode` and owned by `owner`.
  std::string makeDir(const std::string& name, mode_t mode, uid_t owner = 0) {
    std::string path = dir_ + "/" + name;
    EXPECT_EQ(::mkdir(path.c_str(), mode), 0) << path;
    EXPECT_EQ(::chmod(path.c_str(), mode), 0) << path;
    EXPECT_EQ(::chown(path.c_str(), owner, owner), 0) << path;
    return path;
  }

  std::string dir_;
};

TEST_F(SandboxTest, ConfinesTheApplication) {
  std::string hidden = makeDir("hidden", 0755);
  std::ofstream(hidden + "/secret") << "host data";
  std::string home = makeDir("home", 0700, kNobody);
  std::string readOnly = makeDir("ro", 0777);
  Sandbox sandbox({"--uid", "65534", "--gid", "65534", "--hide", hidden, "--bind-rw", home,
                   "--net", "--", "/bin/sh", "-c",
                   "cat /proc/self/status; "
                   "echo pids=$(ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '); "
                   "echo pid1=$(cat /proc/1/comm); "
                   "echo root=$(touch /probe 2>&1 && echo writable); "
                   "echo usr=$(touch /usr/probe 2>&1 && echo writable); "
                   "echo ro=$(touch " + readOnly + "/probe 2>&1 && echo writable); "
                   "echo tmp_at_start=$(ls -A /tmp | wc -l); "
                   "echo tmp=$(touch /tmp/probe && echo writable || echo refused); "
                   "echo hidden=$(ls -A " + hidden + " | wc -l); "
                   "echo home=$(echo from-app > " + home + "/file && echo writable || echo refused); "
                   "echo hostname=$(hostname); "
                   "echo sysnet=$(ls /sys/class/net | tr '\\n' ,); "
                   "echo procnet=$(grep : /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,); "
                   "echo run=$(ls -A /run | wc -l); "
                   "echo umask=$(umask); "
                   "echo cwd=$(pwd); "
                   "echo userns=$(unshare -U true 2>/dev/null && echo made || echo refused)"});
  ASSERT_EQ(sandbox.finish(), 0) << sandbox.err();
  EXPECT_EQ(sandbox.err(), "");
  auto facts = keyValues(sandbox.out());
  EXPECT_EQ(facts["NoNewPrivs:"], "1");
  EXPECT_EQ(facts["Seccomp:"], "2");
  EXPECT_EQ(facts["CapEff:"], "0000000000000000");
  EXPECT_EQ(facts["CapPrm:"], "0000000000000000");
  EXPECT_EQ(facts["CapBnd:"], "0000000000000000");
  EXPECT_EQ(facts["Uid:"], "65534\t65534\t65534\t65534");
  EXPECT_EQ(facts["Gid:"], "65534\t65534\t65534\t65534");
  EXPECT_EQ(facts["Groups:"], "");
  // enjin-sandbox, sh and the few processes of the pipeline: small pids of the new namespace,
  // the host's (this test's among them) out of sight.
  std::istringstream pids(facts["pids"]);
  int pid = 0, count = 0;
  bool sawPid1 = false;
  while (pids >> pid) {
    ++count;
    sawPid1 = sawPid1 || pid == 1;
    EXPECT_LE(pid, 10) << facts["pids"];
    EXPECT_NE(pid, ::getpid()) << facts["pids"];
  }
  EXPECT_TRUE(sawPid1) << facts["pids"];
  EXPECT_LE(count, 8) << facts["pids"];
  EXPECT_EQ(facts["pid1"], "enjin-sandbox");
  // The folder of "ro" is mode 0777 on the host: the read-only mount refuses, not the mode.
  for (const char* key : {"root", "usr", "ro"}) {
    EXPECT_NE(facts[key].find("Read-only file system"), std::string::npos) << key << ": " << facts[key];
  }
  EXPECT_EQ(facts["tmp_at_start"], "0");
  EXPECT_EQ(facts["tmp"], "writable");
  EXPECT_EQ(facts["hidden"], "0");
  EXPECT_EQ(facts["home"], "writable");
  EXPECT_EQ(facts["hostname"], "sandbox");
  EXPECT_EQ(facts["sysnet"], "lo,");
  EXPECT_EQ(facts["procnet"], "lo,");
  EXPECT_EQ(facts["run"], "0");
  EXPECT_EQ(facts["umask"], "0077");
  EXPECT_EQ(facts["cwd"], "/");
  EXPECT_EQ(facts["userns"], "refused");

  // What the application wrote to its home is on the host; nothing else it touched is.
  std::ifstream written(home + "/file");
  std::string line;
  EXPECT_TRUE(std::getline(written, line));
  EXPECT_EQ(line, "from-app");
  EXPECT_FALSE(std::filesystem::exists(readOnly + "/probe"));
  EXPECT_TRUE(std::filesystem::exists(hidden + "/secret"));
}

// As under a holder that is root of a user namespace only: the inherited mounts' flags are
// locked, the remounts keep them, and the same confinement results.
TEST_F(SandboxTest, ConfinesInAUserNamespace) {
  std::string hidden = makeDir("hidden", 0755);
  std::ofstream(hidden + "/secret") << "host data";
  std::string home = makeDir("home", 0700, kNobody);
  Sandbox sandbox({"--uid", "65534", "--gid", "65534", "--hide", hidden, "--bind-rw", home,
                   "--net", "--", "/bin/sh", "-c",
                   "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; "
                   "echo usr=$(touch /usr/probe 2>&1 && echo writable); "
                   "echo hidden=$(ls -A " + hidden + " | wc -l); "
                   "echo home=$(echo from-app > " + home + "/file && echo writable); "
                   "echo hostname=$(hostname); "
                   "echo sysnet=$(ls /sys/class/net | tr '\\n' ,); "
                   "echo uidmap=$(cat /proc/self/uid_map)"},
                  /*userNamespace=*/true);
  ASSERT_EQ(sandbox.finish(), 0) << sandbox.err();
  EXPECT_EQ(sandbox.err(), "");
  auto facts = keyValues(sandbox.out());
  EXPECT_EQ(facts["CapEff:"], "0000000000000000");
  EXPECT_EQ(facts["NoNewPrivs:"], "1");
  EXPECT_EQ(facts["Seccomp:"], "2");
  EXPECT_NE(facts["usr"].find("Read-only file system"), std::string::npos) << facts["usr"];
  EXPECT_EQ(facts["hidden"], "0");
  EXPECT_EQ(facts["home"], "writable");
  EXPECT_EQ(facts["hostname"], "sandbox");
  EXPECT_EQ(facts["sysnet"], "lo,");
  EXPECT_EQ(facts["uidmap"], "0 0 65536");  // the user namespace is there
}

TEST_F(SandboxTest, SeccompRefusesTheListedCalls) {
  Sandbox sandbox({"--uid", "65534", "--gid", "65534", "--bind-ro", ENJIN_HELPERS_DIR, "--",
                   binary("sandbox_probe")});
  ASSERT_EQ(sandbox.finish(), 0) << sandbox.err();
  auto calls = keyValues(sandbox.out());
  const std::string eperm = "err=" + std::to_string(EPERM);
  for (const char* name : {"keyctl", "bpf", "unshare", "clone_newns", "clone_newuser", "mount",
                           "ptrace", "personality_bsd", "ioctl_tiocsti"}) {
    EXPECT_EQ(calls[name], eperm) << name;
  }
  EXPECT_EQ(calls["clone3"], "err=" + std::to_string(ENOSYS));
  for (const char* name : {"clone_plain", "personality_linux", "personality_query", "getpid"}) {
    EXPECT_EQ(calls[name], "ok") << name;
  }
#if defined(__x86_64__)
  EXPECT_EQ(calls["x32"], "signal=" + std::to_string(SIGSYS));
#endif
}

// A folder the sandbox would cover (here under /tmp) is there read-only with --bind-ro.
TEST_F(SandboxTest, BindReadOnlyKeepsACoveredFolderVisibleAndReadOnly) {
  testing::TempDir underTmp;  // in /tmp, which the sandbox replaces with a tmpfs of its own
  ::chmod(underTmp.path().c_str(), 0777);
  std::ofstream(underTmp / "tool") << "kept";
  Sandbox sandbox({"--uid", "65534", "--gid", "65534", "--bind-ro", underTmp.path(), "--",
                   "/bin/sh", "-c",
                   "cat " + underTmp / "tool" + "; echo; touch " + underTmp / "new" +
                       " 2>/dev/null && echo wrote || echo refused"});
  ASSERT_EQ(sandbox.finish(), 0) << sandbox.err();
  EXPECT_EQ(sandbox.out(), "kept\nrefused\n");
  EXPECT_FALSE(std::filesystem::exists(underTmp / "new"));
}

// The probe tells the filter's refusals from the kernel's: without the filter, keyctl and a
// user namespace succeed for the same user.
TEST_F(SandboxTest, NoSeccompLetsTheCallsThrough) {
  Sandbox sandbox({"--uid", "65534", "--gid", "65534", "--no-seccomp", "--bind-ro",
                   ENJIN_HELPERS_DIR, "--", binary("sandbox_probe")});
  ASSERT_EQ(sandbox.finish(), 0) << sandbox.err();
  auto calls = keyValues(sandbox.out());
  EXPECT_EQ(calls["keyctl"], "ok");
  EXPECT_EQ(calls["unshare"], "ok");
  EXPECT_EQ(calls["clone3"], "ok");
  EXPECT_EQ(calls["personality_bsd"], "ok");
}

TEST_F(SandboxTest, DeniedListNamesTheCalls) {
  auto names = sandboxDeniedSyscalls();
  for (const char* name : {"keyctl", "bpf", "mount", "unshare", "setns", "ptrace", "clone3",
                           "personality", "ioctl"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  }
}

TEST_F(SandboxTest, OptionsReachTheApplication) {
  std::string work = makeDir("work", 0755);
  Sandbox sandbox({"--hostname", "web-1", "--cwd", work, "--", "/bin/sh", "-c",
                   "echo hostname=$(hostname); echo cwd=$(pwd); echo uid=$(id -u); "
                   "grep CapEff /proc/self/status"});
  ASSERT_EQ(sandbox.finish(), 0) << sandbox.err();
  auto facts = keyValues(sandbox.out());
  EXPECT_EQ(facts["hostname"], "web-1");
  EXPECT_EQ(facts["cwd"], work);
  EXPECT_EQ(facts["uid"], "0");  // no --uid: root of the namespace, without a capability
  EXPECT_EQ(facts["CapEff:"], "0000000000000000");
}

TEST_F(SandboxTest, ExitCodeOfTheApplication) {
  Sandbox exits({"--", "/bin/sh", "-c", "exit 7"});
  EXPECT_EQ(exits.finish(), 7) << exits.err();
  Sandbox killed({"--", "/bin/sh", "-c", "kill -KILL $$"});
  EXPECT_EQ(killed.finish(), 128 + SIGKILL) << killed.err();
  Sandbox missing({"--", "/nonexistent/app"});
  EXPECT_EQ(missing.finish(), 127);
  EXPECT_NE(missing.err().find("enjin-sandbox: exec /nonexistent/app: No such file or directory"),
            std::string::npos)
      << missing.err();
}

TEST_F(SandboxTest, SigtermIsForwarded) {
  // sh handles it: its code comes back.
  Sandbox trapped({"--", "/bin/sh", "-c",
                   "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done"});
  ASSERT_TRUE(trapped.waitForOutput("ready")) << trapped.err();
  ASSERT_EQ(::kill(trapped.pid(), SIGTERM), 0);
  EXPECT_EQ(trapped.finish(), 42) << trapped.err();

  // Not handled: the application dies of it, the sandbox exits with 128 + 15.
  Sandbox plain({"--", "/bin/sh", "-c", "echo ready; exec sleep 30"});
  ASSERT_TRUE(plain.waitForOutput("ready")) << plain.err();
  ASSERT_EQ(::kill(plain.pid(), SIGTERM), 0);
  EXPECT_EQ(plain.finish(), 128 + SIGTERM) << plain.err();
}

TEST_F(SandboxTest, OrphansAreReaped) {
  // The subshell's child is reparented to PID 1 and exits; a zombie would show state Z.
  Sandbox sandbox({"--", "/bin/sh", "-c",
                   "(sleep 0.1 &); sleep 0.5; echo zombies=$(cat /proc/[0-9]*/stat | "
                   "awk '$3 == \"Z\"' | wc -l)"});
  ASSERT_EQ(sandbox.finish(), 0) << sandbox.err();
  EXPECT_EQ(keyValues(sandbox.out())["zombies"], "0") << sandbox.out();
}

TEST_F(SandboxTest, FailsClosed) {
  Sandbox missingBind({"--bind-rw", dir_ + "/absent", "--", "/bin/true"});
  EXPECT_EQ(missingBind.finish(), 127);
  EXPECT_EQ(missingBind.err(),
            "enjin-sandbox: bind-rw " + dir_ + "/absent: No such file or directory\n");
  EXPECT_EQ(missingBind.out(), "");

  Sandbox relative({"--hide", "home", "--", "/bin/true"});
  EXPECT_EQ(relative.finish(), 127);
  EXPECT_NE(relative.err().find("--hide 'home': not an absolute path"), std::string::npos)
      << relative.err();

  // A missing --hide folder is nothing to hide.
  Sandbox missingHide({"--hide", dir_ + "/absent", "--", "/bin/true"});
  EXPECT_EQ(missingHide.finish(), 0) << missingHide.err();
}

TEST_F(SandboxTest, RefusesToRunOutsideANewPidNamespace) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int devNull = ::open("/dev/null", O_WRONLY);
    ::dup2(devNull, 2);
    std::string path = binary("enjin-sandbox");
    ::execl(path.c_str(), path.c_str(), "--", "/bin/true", static_cast<char*>(nullptr));
    ::_exit(121);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 127);
}

}  // namespace
}  // namespace enjin::supervise
