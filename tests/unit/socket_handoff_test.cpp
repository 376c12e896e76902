// Listening sockets handed down with systemd's convention, against real processes and real
// sockets: the fork/exec core places them at fd 3 and up in every clone mode, a holder keeps them
// across SIGKILLs so that no connection is refused while its process restarts, a new supervisor
// takes them back at hello, and enjin-demo-http serves on one.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "enjin/base/clock.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/supervise/fork_exec.hpp"
#include "enjin/supervise/holder.hpp"
#include "enjin/supervise/holder_protocol.hpp"
#include "enjin/supervise/observation.hpp"
#include "enjin/supervise/socket_table.hpp"
#include "enjin/supervise/spec_file.hpp"
#include "enjin/supervise/spec_json.hpp"
#include "enjin/supervise/supervisor.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::supervise {
namespace {

namespace proto = holder_proto;
using spawn_detail::CloneMode;

std::string helper(const std::string& name) { return std::string(ENJIN_HELPERS_DIR) + "/" + name; }

// A listening TCP socket on 127.0.0.1, port chosen by the kernel.
struct Listening {
  UniqueFd fd;
  int port = 0;
};
Listening listenLoopback() {
  Listening l;
  l.fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (!l.fd || ::bind(l.fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(l.fd.get(), 128) != 0) {
    ADD_FAILURE() << "listen on 127.0.0.1: " << std::strerror(errno);
    return l;
  }
  socklen_t len = sizeof addr;
  ::getsockname(l.fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  l.port = ntohs(addr.sin_port);
  return l;
}

std::string socketLink(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return "";
  return "socket:[" + std::to_string(st.st_ino) + "]";
}

std::map<std::string, std::string> environOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ");
  std::map<std::string, std::string> env;
  std::string entry;
  while (std::getline(in, entry, '\0')) {
    const size_t eq = entry.find('=');
    env[entry.substr(0, eq)] = eq == std::string::npos ? "" : entry.substr(eq + 1);
  }
  return env;
}

// spawn() returns once the exec closed the error pipe, which the kernel does before it has closed
// every close-on-exec fd and set up the new program: wait until /proc shows the new program's
// environment, which holds ENJIN_EXECED=1 (bounded: 5 s).
void waitForExec(pid_t pid) {
  for (int i = 0; i < 500 && !environOf(pid).contains("ENJIN_EXECED"); ++i) ::usleep(10'000);
}

std::map<int, std::string> fdsOnce(pid_t pid) {
  std::map<int, std::string> fds;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::error_code ec;
    fds[std::stoi(e.path().filename().string())] = std::filesystem::read_symlink(e.path(), ec).string();
  }
  return fds;
}

// The fds of `pid` once its program has settled: the dynamic loader opens and closes a library
// or two just after the exec, so the same list must be read twice, 20 ms apart, with every link
// readable (bounded: 2 s).
std::map<int, std::string> fdsOf(pid_t pid) {
  auto last = fdsOnce(pid);
  for (int i = 0; i < 100; ++i) {
    ::usleep(20'000);
    auto now = fdsOnce(pid);
    const bool readable = std::all_of(now.begin(), now.end(),
                                      [](const auto& entry) { return !entry.second.empty(); });
    if (now == last && readable) return now;
    last = std::move(now);
  }
  return last;
}

void killAndReap(pid_t pid) {
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

// GET / on 127.0.0.1:port: the whole response, or "" with `err` set (ECONNREFUSED among others).
std::string httpGet(int port, int& err, int timeoutMs = 10'000) {
  err = 0;
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  timeval tv{timeoutMs / 1000, (timeoutMs % 1000) * 1000};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    err = errno;
    return "";
  }
  const std::string request = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) < 0) {
    err = errno;
    return "";
  }
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0) {
      err = errno;
      return "";
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  if (out.empty()) err = ECONNRESET;
  return out;
}

// ---- the fork/exec core ------------------------------------------------------------------------

class ListenFdsCloneModeTest : public ::testing::TestWithParam<CloneMode> {};

TEST_P(ListenFdsCloneModeTest, SocketsAtThreeAndUpWithTheChildsOwnPidAndNothingElseOpen) {
  Listening http = listenLoopback();
  Listening admin = listenLoopback();
  ProcessSpec spec;
  spec.name = "web";
  spec.command = {"/bin/sleep", "30"};
  spec.sockets = {{"http", "x/http"}, {"admin", "admin"}};
  SpawnRequest request;
  request.spec = &spec;
  request.listenFds = {http.fd.get(), admin.fd.get()};
  auto plan = spawn_detail::makePlan(request, {"PATH=/bin:/usr/bin", "ENJIN_EXECED=1"});
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  EXPECT_EQ(plan->listenNames, "http:admin");
  // Several spawns in a row: the vfork mode's slots are made once and then reused.
  for (int round = 0; round < 3; ++round) {
    auto child = spawn_detail::forkExec(*plan, GetParam());
    ASSERT_TRUE(child.ok()) << child.error().message;
    const pid_t pid = child->pid;
    waitForExec(pid);
    auto env = environOf(pid);
    auto fds = fdsOf(pid);
    killAndReap(pid);
    EXPECT_EQ(env["LISTEN_PID"], std::to_string(pid));
    EXPECT_EQ(env["LISTEN_FDS"], "2");
    EXPECT_EQ(env["LISTEN_FDNAMES"], "http:admin");
    std::set<int> numbers;
    for (const auto& [n, link] : fds) numbers.insert(n);
    std::string listed;
    for (const auto& [n, link] : fds) listed += std::to_string(n) + "=" + link + " ";
    EXPECT_EQ(numbers, (std::set<int>{0, 1, 2, 3, 4})) << listed;
    EXPECT_EQ(fds[3], socketLink(http.fd.get()));
    EXPECT_EQ(fds[4], socketLink(admin.fd.get()));
  }
  // The parent's own fds are untouched.
  EXPECT_GE(::fcntl(http.fd.get(), F_GETFD), 0);
}

TEST_P(ListenFdsCloneModeTest, WithoutSocketsNoListenVariables) {
  ProcessSpec spec;
  spec.name = "plain";
  spec.command = {"/bin/sleep", "30"};
  spec.env["LISTEN_FDS"] = "7";  // a spec's own value passes unchanged when it has no sockets
  SpawnRequest request;
  request.spec = &spec;
  auto plan = spawn_detail::makePlan(request, {"PATH=/bin:/usr/bin", "ENJIN_EXECED=1"});
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  auto child = spawn_detail::forkExec(*plan, GetParam());
  ASSERT_TRUE(child.ok()) << child.error().message;
  waitForExec(child->pid);
  auto env = environOf(child->pid);
  auto fds = fdsOf(child->pid);
  killAndReap(child->pid);
  EXPECT_EQ(env.count("LISTEN_PID"), 0u);
  EXPECT_EQ(env.count("LISTEN_FDNAMES"), 0u);
  EXPECT_EQ(env["LISTEN_FDS"], "7");
  EXPECT_EQ(fds.size(), 3u);
}

INSTANTIATE_TEST_SUITE_P(AllModes, ListenFdsCloneModeTest,
                         ::testing::Values(CloneMode::kVfork, CloneMode::kClone3, CloneMode::kFork));

TEST(ListenFds, ASourceAlreadyAtItsTargetAndSourcesOnEachOthersTargets) {
  // In a forked child of our own the numbers can be chosen: fd 4 must go to 3 and fd 3 to 4
  // (each on the other's target), and a third already sits at its target 5.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    Listening a = listenLoopback(), b = listenLoopback(), c = listenLoopback();
    const std::string la = socketLink(a.fd.get()), lb = socketLink(b.fd.get()),
                      lc = socketLink(c.fd.get());
    // Out of the way first: the three may have been made at 3, 4 and 5 themselves.
    const int ha = ::fcntl(a.fd.get(), F_DUPFD_CLOEXEC, 100);
    const int hb = ::fcntl(b.fd.get(), F_DUPFD_CLOEXEC, 100);
    const int hc = ::fcntl(c.fd.get(), F_DUPFD_CLOEXEC, 100);
    a.fd.reset();
    b.fd.reset();
    c.fd.reset();
    ::dup3(ha, 4, O_CLOEXEC);
    ::dup3(hb, 3, O_CLOEXEC);
    ::dup3(hc, 5, O_CLOEXEC);
    for (int fd : {ha, hb, hc}) ::close(fd);
    spawn_detail::ChildPlan plan;
    plan.path = "/bin/sleep";
    plan.argv = {"/bin/sleep", "30"};
    plan.cwd = "/";
    plan.listenFds = {4, 3, 5};
    plan.listenNames = "a:b:c";
    plan.env = {"ENJIN_EXECED=1"};
    auto child = spawn_detail::forkExec(plan, CloneMode::kFork);
    if (!child.ok()) ::_exit(10);
    waitForExec(child->pid);
    auto fds = fdsOf(child->pid);
    killAndReap(child->pid);
    if (fds[3] != la) ::_exit(11);
    if (fds[4] != lb) ::_exit(12);
    if (fds[5] != lc) ::_exit(13);
    if (fds.size() != 6) ::_exit(14);
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: spawn failed; 11-13: a wrong socket at 3-5; 14: other fds open in the child";
}

TEST(ListenFds, AnFdCountThatDoesNotMatchTheSpecIsRefused) {
  ProcessSpec spec;
  spec.name = "web";
  spec.command = {"/bin/true"};
  spec.sockets = {{"http", "http"}};
  SpawnRequest request;
  request.spec = &spec;
  auto plan = spawn_detail::makePlan(request, {"PATH=/bin"});
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.error().message, "process 'web': 1 sockets in its spec, 0 listening fds given");
}

// The unix-user strategy's tenant form: clone3 into a user namespace of its own, the child held at
// a gate while the parent writes its maps.
TEST(ListenFds, InTheUserNamespaceOfATenantNode) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (it writes a user namespace's maps)";
  Listening http = listenLoopback();
  auto strategy = makeUnixUserStrategy();
  ProcessSpec spec;
  spec.name = "node";
  spec.command = {"/bin/sleep", "30"};
  spec.strategy = "unix-user";
  spec.strategyConfig = R"({"app_gid":62002,"app_uid":62002,"gid":62001,"groups":[62000],)"
                        R"("home":"/","uid":62001})";
  spec.sockets = {{"http", "http"}};
  spec.env["ENJIN_EXECED"] = "1";
  SpawnRequest request;
  request.spec = &spec;
  request.listenFds = {http.fd.get()};
  auto spawned = strategy->spawn(request);
  ASSERT_TRUE(spawned.ok()) << spawned.error().message;
  waitForExec(spawned->pid);
  auto env = environOf(spawned->pid);
  auto fds = fdsOf(spawned->pid);
  killAndReap(spawned->pid);
  EXPECT_EQ(env["LISTEN_PID"], std::to_string(spawned->pid));
  EXPECT_EQ(env["LISTEN_FDS"], "1");
  EXPECT_EQ(env["LISTEN_FDNAMES"], "http");
  std::string listed;
  for (const auto& [n, link] : fds) listed += std::to_string(n) + "=" + link + " ";
  EXPECT_EQ(fds.size(), 4u) << listed;
  EXPECT_EQ(fds[3], socketLink(http.fd.get()));
}

// A sandbox node's process: enjin-sandbox (PID 1 of its namespaces) keeps fd 3 and hands it to
// the application with LISTEN_PID its own pid there; enjin-demo-http then serves on it.
TEST(ListenFds, ThroughEnjinSandboxToTheApplication) {
  if (::geteuid() != 0) GTEST_SKIP() << "enjin-sandbox needs root to make its namespaces";
  char dir[] = "/var/tmp/enjin-socket-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string home = dir;
  ::chown(home.c_str(), 65534, 65534);
  Listening http = listenLoopback();
  SpawnDefaults defaults;
  defaults.runAs = SpawnDefaults::RunAs{65534, 65534, 077, home};
  defaults.sandbox = SpawnDefaults::Sandbox{helper("enjin-sandbox"), {}};
  auto strategy = makeExecStrategy(defaults);
  ProcessSpec spec;
  spec.name = "web";
  spec.command = {helper("enjin-demo-http"), "--name", "sandboxed"};
  spec.sockets = {{"http", "http"}};
  testing::TempDir logs;
  UniqueFd err(::open((logs.path() + "/err").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  SpawnRequest request;
  request.spec = &spec;
  request.stderrFd = err.get();
  request.listenFds = {http.fd.get()};
  auto spawned = strategy->spawn(request);
  ASSERT_TRUE(spawned.ok()) << spawned.error().message;
  int e = 0;
  std::string reply;
  for (int attempt = 0; attempt < 50 && reply.empty(); ++attempt) {
    reply = httpGet(http.port, e, 2'000);
  }
  killAndReap(spawned->pid);
  std::ifstream errText(logs.path() + "/err");
  std::stringstream stderrText;
  stderrText << errText.rdbuf();
  EXPECT_NE(reply.find("200 OK"), std::string::npos) << std::strerror(e) << stderrText.str();
  EXPECT_NE(reply.find("sandboxed"), std::string::npos) << reply;
  std::filesystem::remove_all(home);
}

// ---- SocketTable and socketsFromEnv ------------------------------------------------------------

TEST(SocketTable, OwnsItsFdsByKey) {
  SocketTable table;
  Listening a = listenLoopback(), b = listenLoopback();
  const int fa = a.fd.get(), fb = b.fd.get();
  table.put("x/http", std::move(a.fd));
  EXPECT_EQ(table.find("x/http"), fa);
  EXPECT_EQ(table.find("nope"), -1);
  table.put("x/http", std::move(b.fd));  // replaces, closing the old one
  EXPECT_EQ(table.find("x/http"), fb);
  EXPECT_LT(::fcntl(fa, F_GETFD), 0);
  table.put("a", UniqueFd(::dup(fb)));
  EXPECT_EQ(table.keys(), (std::vector<std::string>{"a", "x/http"}));
  EXPECT_EQ(table.size(), 2u);
  table.erase("x/http");
  EXPECT_LT(::fcntl(fb, F_GETFD), 0);
  EXPECT_EQ(table.size(), 1u);
}

TEST(SocketTable, SocketsFromEnvFollowsSdListenFds) {
  // In a child of our own, where fds 3 and up can be set as a parent would.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    Listening a = listenLoopback(), b = listenLoopback();
    const std::string la = socketLink(a.fd.get()), lb = socketLink(b.fd.get());
    ::dup2(a.fd.get(), 3);
    ::dup2(b.fd.get(), 4);
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDS", "2", 1);
    ::setenv("LISTEN_FDNAMES", "http:", 1);
    auto table = socketsFromEnv();
    if (!table.ok()) ::_exit(10);
    if (table->keys() != std::vector<std::string>{"http", "unknown"}) ::_exit(11);
    if (table->find("http") != 3 || table->find("unknown") != 4) ::_exit(12);
    if (socketLink(3) != la || socketLink(4) != lb) ::_exit(13);
    if ((::fcntl(3, F_GETFD) & FD_CLOEXEC) == 0) ::_exit(14);
    if (::getenv("LISTEN_PID") || ::getenv("LISTEN_FDS") || ::getenv("LISTEN_FDNAMES")) ::_exit(15);
    // Another process's variables: nothing taken, and unset all the same.
    ::setenv("LISTEN_PID", "1", 1);
    ::setenv("LISTEN_FDS", "1", 1);
    auto other = socketsFromEnv();
    if (!other.ok() || other->size() != 0 || ::getenv("LISTEN_FDS")) ::_exit(16);
    // A count that is not a number is an error.
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDS", "two", 1);
    if (socketsFromEnv().ok()) ::_exit(17);
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the exit code names the check that failed";
}

// ---- spec files and spec JSON ------------------------------------------------------------------

TEST(SocketSpec, TomlAndJsonCarrySockets) {
  auto specs = parseSpec(R"(
[[process]]
name = "web"
command = ["/bin/true"]
sockets = ["http", {name = "admin", source = "x/admin"}, {name = "m.1"}]
[[process]]
name = "plain"
command = ["/bin/true"]
)",
                         "spec.toml");
  ASSERT_TRUE(specs.ok()) << specs.error().message;
  const std::vector<SocketRef> expected{{"http", "http"}, {"admin", "x/admin"}, {"m.1", "m.1"}};
  EXPECT_EQ((*specs)[0].sockets, expected);
  auto back = specFromJson(specToJson((*specs)[0]));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, (*specs)[0]);
  // No sockets, no key: the JSON (and so every digest) of such a spec is what it was.
  EXPECT_FALSE(specToJson((*specs)[1]).contains("sockets"));
  EXPECT_TRUE(specToJson((*specs)[0]).contains("sockets"));
}

TEST(SocketSpec, ErrorsNameTheProcessAndTheSocket) {
  const auto error = [](const std::string& sockets) {
    auto specs = parseSpec("[[process]]\nname = \"web\"\ncommand = [\"/bin/true\"]\nsockets = " +
                               sockets + "\n",
                           "spec.toml");
    return specs.ok() ? std::string("accepted") : specs.error().message;
  };
  EXPECT_NE(error(R"(["a:b"])").find("process 'web': socket 'a:b'"), std::string::npos)
      << error(R"(["a:b"])");
  EXPECT_NE(error(R"(["http", "http"])").find("socket 'http': listed twice"), std::string::npos)
      << error(R"(["http", "http"])");
  EXPECT_NE(error(R"([{source = "x"}])").find("sockets[0].name: missing"), std::string::npos)
      << error(R"([{source = "x"}])");
  EXPECT_NE(error(R"([{name = "a", port = 1}])").find("port"), std::string::npos);
  EXPECT_NE(error("[1]").find("process 'web'"), std::string::npos) << error("[1]");
  EXPECT_NE(error("\"http\"").find("sockets"), std::string::npos);
  EXPECT_EQ(error(R"([{name = "a", source = "x/y"}])"), "accepted");
  std::string many = "[";
  for (int i = 0; i < 17; ++i) many += (i ? ", \"s" : "\"s") + std::to_string(i) + "\"";
  many += "]";
  EXPECT_NE(error(many).find("17 sockets, more than 16"), std::string::npos) << error(many);
}

// ---- a real holder -----------------------------------------------------------------------------

class SocketHolderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::pthread_sigmask(SIG_SETMASK, nullptr, &savedMask_);
    auto r = Reactor::create(clock_);
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(*r);
    registry_.add(makeExecStrategy());
    holder_ = std::make_unique<Holder>(*reactor_, registry_, dir_.path() + "/holder.sock");
    auto st = holder_->start();
    ASSERT_TRUE(st.ok()) << st.error().message;
    auto c = HolderClient::connectOrLaunch(dir_.path() + "/holder.sock", "/nonexistent/enjin-holder",
                                           dir_.path() + "/log");
    ASSERT_TRUE(c.ok()) << c.error().message;
    client_ = std::move(*c);
  }
  void TearDown() override {
    client_.reset();
    holder_.reset();
    ::prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
    ::pthread_sigmask(SIG_SETMASK, &savedMask_, nullptr);
  }
  // The holder's next reply (its fds in `fds`), turning its reactor meanwhile; bounded.
  std::optional<proto::Reply> next(std::vector<UniqueFd>* fdsOut = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      reactor_->runOnce(10);
      std::string text;
      std::vector<UniqueFd> fds;
      auto got = client_->receive(text, fds);
      if (!got.ok() || !*got) continue;
      auto reply = proto::decodeReply(text);
      if (!reply.ok()) continue;
      if (fdsOut != nullptr) *fdsOut = std::move(fds);
      return std::move(*reply);
    }
    ADD_FAILURE() << "no reply from the holder within 10 s";
    return std::nullopt;
  }
  template <typename T>
  T expect(std::vector<UniqueFd>* fds = nullptr) {
    for (;;) {
      auto reply = next(fds);
      if (!reply) return T{};
      if (auto* failed = std::get_if<proto::SpawnFailed>(&*reply)) {
        ADD_FAILURE() << "spawn failed: " << failed->error;
        return T{};
      }
      if (auto* m = std::get_if<T>(&*reply)) return *m;
    }
  }
  ProcessSpec demoSpec() {
    ProcessSpec spec;
    spec.name = "web";
    spec.command = {helper("enjin-demo-http"), "--name", "handed"};
    spec.sockets = {{"http", "x/http"}};
    return spec;
  }

  SystemClock clock_;
  testing::TempDir dir_;
  std::unique_ptr<Reactor> reactor_;
  SpawnRegistry registry_;
  std::unique_ptr<Holder> holder_;
  std::unique_ptr<HolderClient> client_;
  sigset_t savedMask_;
};

TEST_F(SocketHolderTest, DemoHttpServesOnTheHandedSocketAndNoConnectionIsRefusedAcrossKills) {
  Listening http = listenLoopback();
  const ProcessSpec spec = demoSpec();
  ASSERT_TRUE(client_
                  ->sendFds(proto::encode(proto::Spawn{spec.name, spec, {}, std::nullopt,
                                                       {proto::FdRole::kListen}}),
                            {http.fd.get()})
                  .ok());
  auto spawned = expect<proto::Spawned>();
  ASSERT_GT(spawned.pid, 0);
  // Only the holder holds it now: what the test had is closed.
  http.fd.reset();

  int err = 0;
  const std::string first = httpGet(http.port, err);
  ASSERT_EQ(err, 0) << std::strerror(err);
  EXPECT_NE(first.find("200 OK"), std::string::npos) << first;
  EXPECT_NE(first.find("handed"), std::string::npos) << first;

  // A client that never stops while the process is SIGKILLed and respawned, 10 times.
  std::atomic<bool> stop{false};
  std::atomic<int> refused{0}, served{0}, other{0};
  std::thread client([&] {
    while (!stop) {
      int e = 0;
      std::string reply = httpGet(http.port, e);
      if (e == ECONNREFUSED) {
        ++refused;
      } else if (e == 0 && reply.find("200 OK") != std::string::npos) {
        ++served;
      } else {
        ++other;  // one in flight when its process was killed: reset, not refused
      }
    }
  });
  int servedDuringRestart = 0;
  for (int kill = 0; kill < 10; ++kill) {
    ::kill(spawned.pid, SIGKILL);
    auto exited = expect<proto::Exited>();
    EXPECT_EQ(exited.pid, spawned.pid);
    // Nothing runs now: this connection waits in the accept queue.
    UniqueFd waiting(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(http.port));
    ASSERT_EQ(::connect(waiting.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0)
        << std::strerror(errno);
    const std::string request = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    ASSERT_GT(::send(waiting.get(), request.data(), request.size(), MSG_NOSIGNAL), 0);
    ASSERT_TRUE(client_->send(proto::encodeRespawn(spec.name)).ok());
    spawned = expect<proto::Spawned>();
    ASSERT_GT(spawned.pid, 0);
    pollfd pfd{waiting.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&pfd, 1, 10'000), 1) << "the waiting connection was not served";
    char buf[256] = {};
    if (::recv(waiting.get(), buf, sizeof buf - 1, 0) > 0 &&
        std::string(buf).find("200 OK") != std::string::npos) {
      ++servedDuringRestart;
    }
  }
  stop = true;
  client.join();
  EXPECT_EQ(refused, 0);
  EXPECT_EQ(servedDuringRestart, 10);
  EXPECT_GT(served, 0);
  // Kills land between requests mostly; a reset in flight is possible, a refusal never.
  EXPECT_LE(other, 10);

  // A new ring2d's hello gets the socket back with its source.
  ASSERT_TRUE(client_->send(proto::encode(proto::Hello{})).ok());
  std::vector<UniqueFd> fds;
  auto slot = expect<proto::Slot>(&fds);
  ASSERT_EQ(slot.fds.size(), fds.size());
  ASSERT_EQ(slot.sockets, (std::vector<std::string>{"x/http"}));
  int listening = 0;
  for (size_t i = 0; i < slot.fds.size(); ++i) {
    if (slot.fds[i] != proto::FdRole::kListen) continue;
    int accepting = 0;
    socklen_t len = sizeof accepting;
    ::getsockopt(fds[i].get(), SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len);
    sockaddr_in addr{};
    socklen_t alen = sizeof addr;
    ::getsockname(fds[i].get(), reinterpret_cast<sockaddr*>(&addr), &alen);
    EXPECT_EQ(accepting, 1);
    EXPECT_EQ(ntohs(addr.sin_port), http.port);
    ++listening;
  }
  EXPECT_EQ(listening, 1);
  expect<proto::HelloDone>();
  ::kill(spawned.pid, SIGKILL);
  expect<proto::Exited>();
}

TEST_F(SocketHolderTest, ASpawnWhoseFdsDidNotArriveFails) {
  const ProcessSpec spec = demoSpec();
  ASSERT_TRUE(client_->send(proto::encode(proto::Spawn{spec.name, spec, {}, std::nullopt,
                                                       {proto::FdRole::kListen}}))
                  .ok());
  for (;;) {
    auto reply = next();
    ASSERT_TRUE(reply);
    if (auto* failed = std::get_if<proto::SpawnFailed>(&*reply)) {
      EXPECT_NE(failed->error.find("1 listening sockets named, 0 attached"), std::string::npos)
          << failed->error;
      break;
    }
    ASSERT_FALSE(std::holds_alternative<proto::Spawned>(*reply));
  }
}

TEST(DemoHttp, RefusesAnFd3ThatIsNotListening) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int fds[2];
    ::socketpair(AF_UNIX, SOCK_STREAM, 0, fds);
    ::dup2(fds[0], 3);
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDS", "1", 1);
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 2);
    const std::string exe = helper("enjin-demo-http");
    ::execl(exe.c_str(), exe.c_str(), static_cast<char*>(nullptr));
    ::_exit(99);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
}

// ---- a supervisor over the real enjin-holder ---------------------------------------------------

class SocketSupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Reactor::create(clock_);
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(*r);
    observations_.add(makeProcessObservation());
    observations_.add(makeNotifyObservation());
    observations_.add(makeHeartbeatObservation());
  }
  std::unique_ptr<Supervisor> makeSupervisor(SocketTable& table) {
    SupervisorOptions so{dir_.path() + "/state", helper("enjin-holder")};
    so.observations = &observations_;
    so.sockets = &table;
    return std::make_unique<Supervisor>(*reactor_, std::move(so), [] { return uint64_t{7}; });
  }
  // Turns the reactor until `done` or 10 s.
  bool runUntil(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      if (done()) return true;
      reactor_->runOnce(10);
    }
    return done();
  }
  static const ProcessStatus* statusOf(const std::vector<ProcessStatus>& all, const std::string& n) {
    for (const auto& s : all) {
      if (s.name == n) return &s;
    }
    return nullptr;
  }

  SystemClock clock_;
  testing::TempDir dir_;
  std::unique_ptr<Reactor> reactor_;
  ObservationRegistry observations_;
};

TEST_F(SocketSupervisorTest, AMissingSocketFailsItsSpawnAndANewSupervisorTakesHeldOnesBack) {
  std::filesystem::create_directories(dir_.path() + "/state");
  Listening http = listenLoopback();
  const int port = http.port;
  ProcessSpec web;
  web.name = "web";
  web.command = {helper("enjin-demo-http"), "--name", "supervised"};
  web.sockets = {{"http", "x/http"}};
  ProcessSpec lost;
  lost.name = "lost";
  lost.command = {"/bin/sleep", "30"};
  lost.sockets = {{"http", "nowhere/http"}};
  lost.restart.mode = RestartMode::kNever;

  SocketTable table;
  table.put("x/http", std::move(http.fd));
  auto first = makeSupervisor(table);
  ASSERT_TRUE(first->start({web, lost}).ok());
  ASSERT_TRUE(runUntil([&] {
    auto all = first->status();
    const auto* w = statusOf(all, "web");
    const auto* l = statusOf(all, "lost");
    return w && w->pid > 0 && l && l->lastExit.has_value();
  }));
  {
    auto all = first->status();
    const auto* l = statusOf(all, "lost");
    ASSERT_TRUE(l);
    EXPECT_EQ(l->pid, 0);
    EXPECT_NE(l->detail.find("process 'lost': socket 'http' (source 'nowhere/http') is not held here"),
              std::string::npos)
        << l->detail;
    ASSERT_TRUE(l->lastExit);
    EXPECT_EQ(l->lastExit->code, 127);
  }
  int err = 0;
  EXPECT_NE(httpGet(port, err).find("supervised"), std::string::npos) << std::strerror(err);

  // ring2d goes (and with it its socket table); the holder and the process stay.
  first.reset();
  SocketTable fresh;
  auto second = makeSupervisor(fresh);
  ASSERT_TRUE(second->start({web, lost}).ok());
  EXPECT_EQ(fresh.keys(), (std::vector<std::string>{"x/http"}));
  const int fd = fresh.find("x/http");
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  socklen_t alen = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen);
  EXPECT_EQ(ntohs(addr.sin_port), port);
  EXPECT_NE(httpGet(port, err).find("supervised"), std::string::npos) << std::strerror(err);

  bool done = false;
  second->stopAll([&] { done = true; });
  EXPECT_TRUE(runUntil([&] { return done; }));
  second.reset();
  // The holder the first supervisor launched is this process's child, and that supervisor, which
  // would have reaped it, is gone: collect it here, so no later test meets it.
  for (int i = 0; i < 1000 && ::waitpid(-1, nullptr, WNOHANG) != -1; ++i) ::usleep(10'000);
}

}  // namespace
}  // namespace enjin::supervise
