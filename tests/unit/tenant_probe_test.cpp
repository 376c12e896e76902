// The tenant_probe helper (tests/helpers/tenant_probe.c) against real files, sockets and processes:
// the isolation tests trust its report, so here each kind of attempt is made where it must work and
// where it must fail, and the report has to say which. Meant to run as root; the tests that need
// it (ptrace of a process not the probe's child, dropping to uid 65534) skip otherwise.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fakes/temp_dir.hpp"

namespace {

using enjin::testing::TempDir;
using nlohmann::json;

constexpr int kTimeoutMs = 10'000;
constexpr uid_t kNobody = 65534;
// An argument the child replaces with its own pid, which is the probe's pid once it execs.
const std::string kOwnPid = "{pid}";

std::string probePath() { return std::string(ENJIN_HELPERS_DIR) + "/tenant_probe"; }

int64_t nowMs() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

void writeFile(const std::string& path, const std::string& content, mode_t mode) {
  std::ofstream(path) << content;
  ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct RunOptions {
  std::optional<uid_t> uid;  // setgroups({}), setgid and setuid to it before exec
  int extraFd = -1;          // handed to the probe as fd 3
  mode_t umask = 022;
  bool untilDone = false;  // return once the "done" line is read, leaving the probe running
};

struct ProbeReport {
  pid_t pid = -1;
  int status = -1;  // the wait status; -1 while the probe still runs (untilDone)
  std::string raw;
  std::vector<json> lines;

  // The lines whose "op" is `op`.
  std::vector<json> ops(const std::string& op) const {
    std::vector<json> found;
    for (const auto& line : lines) {
      if (line.value("op", "") == op) found.push_back(line);
    }
    return found;
  }
  // The one line with `op` and `target`, or null.
  json find(const std::string& op, const std::string& target) const {
    for (const auto& line : lines) {
      if (line.value("op", "") == op && line.value("target", "") == target) return line;
    }
    return nullptr;
  }
  bool exitedWith(int code) const { return WIFEXITED(status) && WEXITSTATUS(status) == code; }
};

// Runs tenant_probe with `args`: stdin and stderr /dev/null, stdout a pipe, no other fd (but
// options.extraFd as 3), then parses every line of its report as JSON.
ProbeReport runProbe(const std::vector<std::string>& args, const RunOptions& options = {}) {
  ProbeReport run;
  // Everything the child needs is made before fork: it only calls async-signal-safe functions.
  std::string path = probePath();
  std::vector<std::vector<char>> storage;
  std::vector<size_t> pidSlots;
  storage.emplace_back(path.begin(), path.end());
  for (const auto& arg : args) {
    if (arg == kOwnPid) {
      pidSlots.push_back(storage.size());
      storage.emplace_back(24, '\0');
    } else {
      storage.emplace_back(arg.begin(), arg.end());
    }
  }
  std::vector<char*> argv;
  for (auto& s : storage) {
    s.push_back('\0');
    argv.push_back(s.data());
  }
  argv.push_back(nullptr);
  char home[] = "HOME=/nonexistent";
  char pathEnv[] = "PATH=/usr/bin:/bin";
  char* envp[] = {home, pathEnv, nullptr};

  int pipeFds[2];
  if (::pipe2(pipeFds, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2: " << std::strerror(errno);
    return run;
  }
  int devNull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  pid_t pid = ::fork();
  if (pid == 0) {
    for (size_t slot : pidSlots) {
      char digits[24];
      int n = 0;
      for (unsigned v = static_cast<unsigned>(::getpid()); v > 0; v /= 10) digits[n++] = static_cast<char>('0' + v % 10);
      for (int i = 0; i < n; ++i) argv[slot][i] = digits[n - 1 - i];
    }
    if (::dup2(devNull, 0) < 0 || ::dup2(pipeFds[1], 1) < 0 || ::dup2(devNull, 2) < 0) _exit(120);
    int keepFrom = 3;
    if (options.extraFd >= 0) {
      // dup2 onto itself keeps FD_CLOEXEC, hence the fcntl.
      if (::dup2(options.extraFd, 3) < 0 || ::fcntl(3, F_SETFD, 0) != 0) _exit(121);
      keepFrom = 4;
    }
    if (::close_range(keepFrom, ~0U, 0) != 0) _exit(122);
    ::umask(options.umask);
    if (::chdir("/") != 0) _exit(123);
    if (options.uid) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(*options.uid) != 0 ||
          ::setuid(*options.uid) != 0) {
        _exit(124);
      }
    }
    ::execve(argv[0], argv.data(), envp);
    _exit(127);
  }
  ::close(pipeFds[1]);
  ::close(devNull);
  if (pid < 0) {
    ::close(pipeFds[0]);
    ADD_FAILURE() << "fork: " << std::strerror(errno);
    return run;
  }
  run.pid = pid;

  const int64_t deadline = nowMs() + kTimeoutMs;
  bool done = false;
  while (!(options.untilDone && done)) {
    int64_t left = deadline - nowMs();
    pollfd p{pipeFds[0], POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) {
      ADD_FAILURE() << "no end of the report within " << kTimeoutMs << " ms: " << run.raw;
      break;
    }
    char buf[4096];
    ssize_t n = ::read(pipeFds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    run.raw.append(buf, static_cast<size_t>(n));
    done = run.raw.find("{\"op\":\"done\"") != std::string::npos &&
           run.raw.back() == '\n';
  }
  ::close(pipeFds[0]);

  if (!options.untilDone || !done) {
    // Bounded wait: kill what outlives the deadline.
    while (::waitpid(pid, &run.status, WNOHANG) == 0) {
      if (nowMs() > deadline) ::kill(pid, SIGKILL);
      ::usleep(2000);
    }
  }

  std::istringstream in(run.raw);
  std::string line;
  while (std::getline(in, line)) {
    try {
      run.lines.push_back(json::parse(line));
    } catch (const json::exception& e) {
      ADD_FAILURE() << "not JSON: " << line << ": " << e.what();
    }
  }
  return run;
}

// Checks the last line is "done" and its counts match the attempt lines before it.
void expectConsistentDone(const ProbeReport& run) {
  ASSERT_FALSE(run.lines.empty());
  const json& done = run.lines.back();
  ASSERT_EQ(done["op"], "done") << run.raw;
  int attempts = 0;
  int allowed = 0;
  for (size_t i = 0; i + 1 < run.lines.size(); ++i) {
    if (!run.lines[i].contains("ok")) continue;
    ++attempts;
    allowed += run.lines[i]["ok"] == true;
  }
  EXPECT_EQ(done["attempts"], attempts);
  EXPECT_EQ(done["allowed"], allowed);
}

class TenantProbeTest : public ::testing::Test {
 protected:
  TempDir dir_;
};

TEST_F(TenantProbeTest, ReadsWhatIsReadableAndNamesWhatIsMissing) {
  writeFile(dir_ / "present", "content", 0644);
  ProbeReport run = runProbe({"--read", dir_ / "present", "--read", dir_ / "missing", "--read", dir_.path()});
  EXPECT_TRUE(run.exitedWith(0));
  ASSERT_EQ(run.lines.size(), 4u) << run.raw;
  EXPECT_EQ(run.lines[0], (json{{"op", "read"}, {"target", dir_ / "present"}, {"ok", true}}));
  EXPECT_EQ(run.lines[1]["target"], dir_ / "missing");
  EXPECT_EQ(run.lines[1]["ok"], false);
  EXPECT_EQ(run.lines[1]["errno"], "ENOENT");
  // A directory opens but does not read.
  EXPECT_EQ(run.lines[2]["ok"], false);
  EXPECT_EQ(run.lines[2]["errno"], "EISDIR");
  expectConsistentDone(run);
  EXPECT_EQ(run.lines.back()["attempts"], 3);
  EXPECT_EQ(run.lines.back()["allowed"], 1);
}

TEST_F(TenantProbeTest, KillsItselfWithSignalZeroAndReportsItsOwnFacts) {
  RunOptions options;
  options.umask = 077;
  ProbeReport run = runProbe({"--kill", kOwnPid, "--self"}, options);
  EXPECT_TRUE(run.exitedWith(0));
  json kill = run.find("kill", std::to_string(run.pid));
  ASSERT_FALSE(kill.is_null()) << run.raw;
  EXPECT_EQ(kill["ok"], true);
  EXPECT_FALSE(kill.contains("errno"));

  auto selves = run.ops("self");
  ASSERT_EQ(selves.size(), 1u) << run.raw;
  const json& self = selves[0];
  EXPECT_EQ(self["pid"], run.pid);
  EXPECT_EQ(self["uid"], ::getuid());
  EXPECT_EQ(self["euid"], ::geteuid());
  EXPECT_EQ(self["fds"], json::parse("[0,1,2]"));
  EXPECT_EQ(self["umask"], "0077");
  EXPECT_EQ(self["ctty"], false);
  EXPECT_EQ(self["tiocsti"], "ENOTTY");  // stdin is /dev/null
  EXPECT_EQ(self["home"], "/nonexistent");
  EXPECT_EQ(self["cwd"], "/");
  EXPECT_TRUE(self["root_writable"].is_boolean());  // a read-only / is no error of the probe's
  EXPECT_TRUE(self["no_new_privs"].is_number());
  EXPECT_TRUE(self["cap_eff"].is_string());
  if (::geteuid() == 0) {
    EXPECT_NE(self["cap_eff"], "0000000000000000");
  }
  EXPECT_GE(self["pids_visible"], 2);
  EXPECT_TRUE(self["groups"].is_array());
  EXPECT_FALSE(self.contains("ok"));  // not an attempt
  expectConsistentDone(run);
  EXPECT_FALSE(std::filesystem::exists("/tenant_probe." + std::to_string(run.pid)));
}

TEST_F(TenantProbeTest, ListsAnFdItWasGiven) {
  int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  RunOptions options;
  options.extraFd = fd;
  ProbeReport run = runProbe({"--self"}, options);
  ::close(fd);
  auto selves = run.ops("self");
  ASSERT_EQ(selves.size(), 1u) << run.raw;
  EXPECT_EQ(selves[0]["fds"], json::parse("[0,1,2,3]"));
}

TEST_F(TenantProbeTest, EscapesTargetsAsJson) {
  const std::string weird = dir_ / "q\"b\\n\nt\tc\x01-end";
  const std::string notUtf8 = dir_ / "bad\xff\xc0.key";
  writeFile(weird, "x", 0644);
  writeFile(notUtf8, "x", 0644);
  ProbeReport run = runProbe({"--read", weird, "--read", notUtf8});
  ASSERT_EQ(run.lines.size(), 3u) << run.raw;
  EXPECT_EQ(run.lines[0]["target"], weird);
  EXPECT_EQ(run.lines[0]["ok"], true);
  // Bytes that are not UTF-8 come out as U+FFFD, one each.
  EXPECT_EQ(run.lines[1]["target"], dir_ / "bad\xef\xbf\xbd\xef\xbf\xbd.key");
  EXPECT_EQ(run.lines[1]["ok"], true);
}

TEST_F(TenantProbeTest, WritesWithoutTruncatingAndLeavesNothingBehind) {
  writeFile(dir_ / "existing", "keep me", 0644);
  ASSERT_EQ(::mkdir((dir_ / "sub").c_str(), 0755), 0);
  ProbeReport run = runProbe({"--write", dir_ / "existing", "--write", dir_ / "fresh", "--create", dir_ / "sub",
                      "--create", dir_ / "nodir", "--list", dir_ / "sub", "--list", dir_ / "nodir"});
  EXPECT_TRUE(run.exitedWith(0));
  EXPECT_EQ(run.find("write", dir_ / "existing")["ok"], true) << run.raw;
  EXPECT_FALSE(run.find("write", dir_ / "existing").contains("created"));
  EXPECT_EQ(readFile(dir_ / "existing"), "keep me");
  json fresh = run.find("write", dir_ / "fresh");
  EXPECT_EQ(fresh["ok"], true);
  EXPECT_EQ(fresh["created"], true);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "fresh"));
  EXPECT_EQ(run.find("create", dir_ / "sub")["ok"], true);
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "sub"));
  EXPECT_EQ(run.find("create", dir_ / "nodir")["errno"], "ENOENT");
  json listed = run.find("list", dir_ / "sub");
  EXPECT_EQ(listed["ok"], true);
  EXPECT_EQ(listed["entries"], 0);
  EXPECT_EQ(run.find("list", dir_ / "nodir")["errno"], "ENOENT");
  expectConsistentDone(run);
}

TEST_F(TenantProbeTest, WalksKeysWithoutFollowingSymlinks) {
  TempDir outside;
  writeFile(outside / "elsewhere.key", "secret", 0600);
  namespace fs = std::filesystem;
  fs::create_directories(dir_ / "sub/deeper");
  writeFile(dir_ / "a.key", "k", 0600);
  writeFile(dir_ / "sub/deeper/b.key", "k", 0600);
  writeFile(dir_ / "sub/notes.txt", "n", 0644);
  fs::create_symlink(outside / "elsewhere.key", dir_ / "link.key");
  fs::create_directory_symlink(outside.path(), dir_ / "sub/linkdir");
  fs::create_directory_symlink(dir_.path(), dir_ / "sub/loop");

  ProbeReport run = runProbe({"--keys", dir_.path()});
  EXPECT_TRUE(run.exitedWith(0));
  std::set<std::string> keys;
  for (const auto& key : run.ops("key")) {
    keys.insert(key["target"]);
    EXPECT_EQ(key["ok"], true) << key;
  }
  EXPECT_EQ(keys, (std::set<std::string>{dir_ / "a.key", dir_ / "sub/deeper/b.key"})) << run.raw;
  auto walks = run.ops("walk");
  ASSERT_EQ(walks.size(), 1u);
  EXPECT_EQ(walks[0]["target"], dir_.path());
  EXPECT_EQ(walks[0]["keys"], 2);
  EXPECT_EQ(walks[0]["entries"], 8);  // a.key link.key sub notes.txt deeper b.key linkdir loop
  EXPECT_EQ(walks[0]["capped"], false);
  EXPECT_TRUE(run.ops("enter").empty());
  expectConsistentDone(run);

  ProbeReport missing = runProbe({"--keys", dir_ / "none"});
  EXPECT_EQ(missing.find("enter", dir_ / "none")["errno"], "ENOENT") << missing.raw;
  EXPECT_EQ(missing.ops("walk").at(0)["entries"], 0);
}

TEST_F(TenantProbeTest, ConnectsToAListenerOnly) {
  const std::string live = dir_ / "live.sock";
  const std::string dead = dir_ / "dead.sock";
  auto bindUnix = [](const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << path;
    return fd;
  };
  int listener = bindUnix(live);
  ASSERT_EQ(::listen(listener, 8), 0);
  ::close(bindUnix(dead));  // the file stays, nobody listens

  ProbeReport run = runProbe({"--connect", live, "--connect", dead, "--connect", dir_ / "none"});
  ::close(listener);
  EXPECT_EQ(run.find("connect", live)["ok"], true) << run.raw;
  EXPECT_EQ(run.find("connect", dead)["errno"], "ECONNREFUSED");
  EXPECT_EQ(run.find("connect", dir_ / "none")["errno"], "ENOENT");
  expectConsistentDone(run);
}

TEST_F(TenantProbeTest, PtraceAttachIsUndoneAtOnce) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: the target is not the probe's child";
  pid_t target = ::fork();
  if (target == 0) {
    for (;;) ::pause();
  }
  ASSERT_GT(target, 0);
  ProbeReport run = runProbe({"--ptrace", std::to_string(target)});
  EXPECT_EQ(run.find("ptrace", std::to_string(target))["ok"], true) << run.raw;
  // Detached and running again: not stopped, not traced (a moment to go back to sleep).
  std::string state;
  for (int64_t until = nowMs() + 2000; nowMs() < until; ::usleep(5000)) {
    std::string stat = readFile("/proc/" + std::to_string(target) + "/stat");
    size_t paren = stat.rfind(')');
    ASSERT_NE(paren, std::string::npos);
    state = stat.substr(paren + 2, 1);
    if (state == "S") break;
  }
  EXPECT_EQ(state, "S");
  EXPECT_NE(readFile("/proc/" + std::to_string(target) + "/status").find("TracerPid:\t0\n"),
            std::string::npos);
  ::kill(target, SIGKILL);
  ::waitpid(target, nullptr, 0);
}

TEST_F(TenantProbeTest, WritesTheReportToOutFile) {
  const std::string report = dir_ / "report";
  writeFile(report, std::string(10000, 'x'), 0644);
  ::unlink(report.c_str());  // created fresh: mode 0600
  ProbeReport run = runProbe({"--out", report, "--read", dir_ / "missing", "--self"});
  EXPECT_TRUE(run.exitedWith(0));
  EXPECT_EQ(run.raw, "");
  struct stat st;
  ASSERT_EQ(::stat(report.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  std::istringstream in(readFile(report));
  std::vector<json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["errno"], "ENOENT");
  EXPECT_EQ(lines[1]["fds"], json::parse("[0,1,2]"));  // the report's own fd is left out
  EXPECT_EQ(lines[2]["op"], "done");
}

TEST_F(TenantProbeTest, RejectsABadCommandLineBeforeTryingAnything) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--read", dir_ / "x", "--out", dir_ / "late"},
           {"--bogus"},
           {"--read"},
           {"--kill", "12abc"},
           {"--hold", "3601"},
       }) {
    ProbeReport run = runProbe(args);
    EXPECT_TRUE(run.exitedWith(2)) << args[0];
    EXPECT_EQ(run.raw, "") << args[0];
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / "late"));
}

TEST_F(TenantProbeTest, HoldsAfterTheReport) {
  RunOptions options;
  options.untilDone = true;
  ProbeReport run = runProbe({"--read", "/", "--hold", "30"}, options);
  ASSERT_GT(run.pid, 0);
  EXPECT_EQ(run.status, -1);
  EXPECT_EQ(run.lines.back()["op"], "done") << run.raw;
  int status = 0;
  EXPECT_EQ(::waitpid(run.pid, &status, WNOHANG), 0);  // still running, the report complete
  ::kill(run.pid, SIGKILL);
  EXPECT_EQ(::waitpid(run.pid, &status, 0), run.pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

// As uid 65534 the same attempts meet the file modes and the kernel's checks.
TEST_F(TenantProbeTest, AsNobodyIsDenied) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become uid 65534";
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
  writeFile(dir_ / "secret", "root only", 0600);
  writeFile(dir_ / "public", "anyone", 0644);
  writeFile(dir_ / "node.key", "k", 0600);
  ASSERT_EQ(::mkdir((dir_ / "closed").c_str(), 0700), 0);
  writeFile(dir_ / "closed/inner.key", "k", 0644);

  RunOptions options;
  options.uid = kNobody;
  ProbeReport run = runProbe({"--read", dir_ / "secret", "--read", dir_ / "public", "--write", dir_ / "secret",
                      "--write", dir_ / "new", "--create", dir_.path(), "--list", dir_ / "closed",
                      "--keys", dir_.path(), "--kill", "1", "--ptrace", "1", "--self"},
                             options);
  EXPECT_TRUE(run.exitedWith(0)) << run.status;
  auto denied = [&](const std::string& op, const std::string& target, const std::string& err) {
    json line = run.find(op, target);
    ASSERT_FALSE(line.is_null()) << op << " " << target << ": " << run.raw;
    EXPECT_EQ(line["ok"], false) << line;
    EXPECT_EQ(line["errno"], err) << line;
  };
  denied("read", dir_ / "secret", "EACCES");
  EXPECT_EQ(run.find("read", dir_ / "public")["ok"], true);  // the denial is the mode's
  denied("write", dir_ / "secret", "EACCES");
  denied("write", dir_ / "new", "EACCES");
  denied("create", dir_.path(), "EACCES");
  denied("list", dir_ / "closed", "EACCES");
  denied("key", dir_ / "node.key", "EACCES");
  denied("enter", dir_ / "closed", "EACCES");
  denied("kill", "1", "EPERM");
  denied("ptrace", "1", "EPERM");
  EXPECT_EQ(readFile(dir_ / "secret"), "root only");
  EXPECT_FALSE(std::filesystem::exists(dir_ / "new"));

  const json self = run.ops("self").at(0);
  EXPECT_EQ(self["uid"], kNobody);
  EXPECT_EQ(self["gid"], kNobody);
  EXPECT_EQ(self["euid"], kNobody);
  EXPECT_EQ(self["groups"], json::array());
  EXPECT_EQ(self["cap_eff"], "0000000000000000");
  EXPECT_EQ(self["cap_prm"], "0000000000000000");
  EXPECT_EQ(self["root_writable"], false);
  expectConsistentDone(run);
  EXPECT_EQ(run.lines.back()["allowed"], 1);
}

}  // namespace
