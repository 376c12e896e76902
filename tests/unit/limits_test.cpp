#include "enjin/supervise/limits.hpp"

#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "enjin/base/file.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::supervise {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- parsing ----

TEST(LimitsParse, TheIssuesExample) {
  auto l = parseLimits(
      json{{"memory", "256M"}, {"processes", 128}, {"cpu", 0.5}, {"open_files", 1024}}, 4);
  ASSERT_TRUE(l.ok()) << l.error().message;
  EXPECT_EQ(l->memoryBytes, 256ULL << 20);
  EXPECT_EQ(l->processes, 128U);
  EXPECT_EQ(l->cpu, 0.5);
  EXPECT_EQ(l->openFiles, 1024U);
}

TEST(LimitsParse, MemoryForms) {
  struct Case {
    json value;
    uint64_t bytes;
  };
  for (const auto& c : std::vector<Case>{{"1G", 1ULL << 30},
                                          {"2048K", 2048ULL << 10},
                                          {"3m", 3ULL << 20},
                                          {"1T", 1ULL << 40},
                                          {"1048576", 1048576},
                                          {5000000, 5000000}}) {
    auto l = parseLimits(json{{"memory", c.value}}, 1);
    ASSERT_TRUE(l.ok()) << c.value.dump() << ": " << l.error().message;
    EXPECT_EQ(l->memoryBytes, c.bytes) << c.value.dump();
  }
}

TEST(LimitsParse, EmptyTableIsNoLimits) {
  auto l = parseLimits(json::object(), 1);
  ASSERT_TRUE(l.ok());
  EXPECT_TRUE(l->empty());
}

TEST(LimitsParse, Refusals) {
  struct Case {
    json table;
    std::string says;
  };
  const std::vector<Case> cases = {
      {json{{"memory", "256X"}}, "memory: '256X': unknown unit 'X' (K, M, G or T)"},
      {json{{"memory", "M"}}, "memory: 'M': expected a number of bytes"},
      {json{{"memory", "512K"}}, "memory: at least 1M"},
      {json{{"memory", -5}}, "memory: must be positive"},
      {json{{"memory", true}}, "memory: expected a size"},
      {json{{"memory", "99999999999T"}}, "memory: '99999999999T' is too large"},
      {json{{"memory", "99999999999999999999999"}}, "is too large"},
      {json{{"processes", 0}}, "processes: must be at least 1, got 0"},
      {json{{"processes", -3}}, "processes: must be at least 1, got -3"},
      {json{{"processes", 1.5}}, "processes: expected a positive integer, got 1.5"},
      {json{{"processes", "128"}}, "processes: expected a positive integer, got string"},
      {json{{"open_files", 0}}, "open_files: must be at least 1"},
      {json{{"cpu", 0}}, "cpu: must be more than 0"},
      {json{{"cpu", -1}}, "cpu: must be more than 0"},
      {json{{"cpu", 0.001}}, "cpu: at least 0.01"},
      {json{{"cpu", 3}}, "cpu: at most the 2 CPUs of this host, got 3"},
      {json{{"cpu", "0.5"}}, "cpu: expected a number"},
      {json{{"cpu", true}}, "cpu: expected a number"},
      {json{{"memroy", "1G"}}, "memroy: unknown key (known: memory, processes, cpu, open_files)"},
      {json::array(), "limits: expected a table, got array"},
  };
  for (const auto& c : cases) {
    auto l = parseLimits(c.table, 2);
    ASSERT_FALSE(l.ok()) << c.table.dump();
    EXPECT_EQ(l.error().code, 400) << c.table.dump();
    EXPECT_NE(l.error().message.find(c.says), std::string::npos)
        << c.table.dump() << " said: " << l.error().message;
  }
}

TEST(LimitsParse, CpuUpToTheHostsCpus) {
  EXPECT_TRUE(parseLimits(json{{"cpu", 2}}, 2).ok());
  EXPECT_TRUE(parseLimits(json{{"cpu", 0.01}}, 1).ok());
  EXPECT_FALSE(parseLimits(json{{"cpu", 2.5}}, 2).ok());
}

TEST(LimitsParse, ToJsonReadsBackTheSame) {
  Limits l;
  l.memoryBytes = 256ULL << 20;
  l.cpu = 1.25;
  l.openFiles = 64;
  json j = limitsToJson(l);
  EXPECT_EQ(j, (json{{"memory", 256ULL << 20}, {"cpu", 1.25}, {"open_files", 64}}));
  auto back = parseLimits(j, 2);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, l);
  EXPECT_EQ(limitsToJson(Limits{}), json::object());
}

TEST(LimitsReport, SaysTheLevelAndWhatIsInForce) {
  Limits l;
  l.memoryBytes = 32ULL << 20;
  l.cpu = 0.5;
  l.processes = 16;
  json v1 = isolationReport("v1", l);
  EXPECT_EQ(v1, (json{{"cgroup", "v1"},
                      {"limits", {{"memory", 32ULL << 20}, {"processes", 16}, {"cpu", 0.5}}}}));
  json none = isolationReport("none", l);
  EXPECT_EQ(none["cgroup"], "none");
  EXPECT_EQ(none["limits"], (json{{"memory", 32ULL << 20}, {"processes", 16}}));
  EXPECT_EQ(none["unenforced"], json::array({"cpu"}));
  EXPECT_EQ(isolationReport("none", Limits{}), (json{{"cgroup", "none"}, {"limits", json::object()}}));
}

TEST(LimitsReport, RlimitPartPerLevel) {
  Limits l;
  l.memoryBytes = 32ULL << 20;
  l.cpu = 0.5;
  l.processes = 16;
  l.openFiles = 100;
  Limits atV1 = rlimitPart(CgroupLevel::kV1, l);
  EXPECT_EQ(atV1.openFiles, 100U);
  EXPECT_FALSE(atV1.memoryBytes || atV1.processes || atV1.cpu);
  Limits atNone = rlimitPart(CgroupLevel::kNone, l);
  EXPECT_EQ(atNone.memoryBytes, l.memoryBytes);
  EXPECT_EQ(atNone.processes, 16U);
  EXPECT_EQ(atNone.openFiles, 100U);
  EXPECT_FALSE(atNone.cpu);
}

// ---- detection against fake trees ----

void touch(const std::string& path, const std::string& content = "") {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << content;
}

std::string slurp(const std::string& path) {
  auto t = readFile(path);
  return t.ok() ? *t : "<" + t.error().message + ">";
}

// A v1 controller mount at ROOT/NAME with our own cgroup at ROOT/NAME/OWN.
void fakeV1Controller(const std::string& root, const std::string& name, const std::string& own) {
  touch(root + "/" + name + "/tasks");
  touch(root + "/" + name + "/cgroup.procs");
  touch(root + "/" + name + own + "/cgroup.procs");
}

TEST(CgroupDetect, V1Layout) {
  testing::TempDir t;
  const std::string root = t / "cg";
  fakeV1Controller(root, "memory", "/box/7");
  fakeV1Controller(root, "pids", "");
  fakeV1Controller(root, "cpu", "");
  // Hybrid: a cgroup2 mount at unified with no useful controller.
  touch(root + "/unified/cgroup.controllers", "hugetlb\n");
  touch(root + "/unified/cgroup.subtree_control");
  touch(t / "self", "9:name=systemd:/\n8:pids:/\n4:memory:/box/7\n1:cpu,cpuacct:/\n0::/\n");
  CgroupHost host = CgroupHost::detect(root, t / "self");
  EXPECT_EQ(host.level(), "v1");
  EXPECT_EQ(host.bases(), (std::vector<std::string>{root + "/memory/box/7/enjin",
                                                    root + "/pids/enjin", root + "/cpu/enjin"}));
  ASSERT_EQ(host.reasons().size(), 1U);
  EXPECT_NE(host.reasons()[0].find("cgroup.controllers lacks memory"), std::string::npos)
      << host.reasons()[0];
}

TEST(CgroupDetect, V2Layout) {
  testing::TempDir t;
  const std::string root = t / "cg";
  touch(root + "/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
  touch(root + "/svc/ring0d/cgroup.controllers", "cpu io memory pids\n");
  touch(root + "/svc/ring0d/cgroup.subtree_control");
  touch(t / "self", "0::/svc/ring0d\n");
  CgroupHost host = CgroupHost::detect(root, t / "self");
  EXPECT_EQ(host.level(), "v2");
  EXPECT_EQ(host.delegated(), root + "/svc/ring0d");
  EXPECT_EQ(host.bases(), std::vector<std::string>{root + "/svc/ring0d/enjin"});
}

TEST(CgroupDetect, V2UnderUnifiedWinsOverV1) {
  testing::TempDir t;
  const std::string root = t / "cg";
  fakeV1Controller(root, "memory", "");
  fakeV1Controller(root, "pids", "");
  fakeV1Controller(root, "cpu", "");
  touch(root + "/unified/cgroup.controllers", "memory pids cpu\n");
  touch(root + "/unified/cgroup.subtree_control");
  touch(t / "self", "0::/\n");
  CgroupHost host = CgroupHost::detect(root, t / "self");
  EXPECT_EQ(host.level(), "v2");
  EXPECT_EQ(host.delegated(), root + "/unified");
}

TEST(CgroupDetect, NoneWhenAControllerIsMissing) {
  testing::TempDir t;
  const std::string root = t / "cg";
  fakeV1Controller(root, "memory", "");
  fakeV1Controller(root, "cpu", "");  // no pids
  touch(root + "/cgroup.controllers", "memory cpu\n");  // v2 without pids
  touch(root + "/cgroup.subtree_control");
  touch(t / "self", "0::/\n");
  CgroupHost host = CgroupHost::detect(root, t / "self");
  EXPECT_EQ(host.level(), "none");
  EXPECT_TRUE(host.bases().empty());
  ASSERT_EQ(host.reasons().size(), 2U);
  EXPECT_NE(host.reasons()[0].find("lacks pids"), std::string::npos) << host.reasons()[0];
  EXPECT_NE(host.reasons()[1].find(root + "/pids: not a mounted controller"), std::string::npos)
      << host.reasons()[1];
}

TEST(CgroupDetect, NoneWhenOurOwnCgroupIsNotThere) {
  testing::TempDir t;
  const std::string root = t / "cg";
  fakeV1Controller(root, "memory", "");
  fakeV1Controller(root, "pids", "");
  fakeV1Controller(root, "cpu", "");
  touch(t / "self", "4:memory:/elsewhere\n");
  CgroupHost host = CgroupHost::detect(root, t / "self");
  EXPECT_EQ(host.level(), "none");
  EXPECT_NE(host.reasons().back().find(root + "/memory/elsewhere: not writable"),
            std::string::npos)
      << host.reasons().back();
}

TEST(CgroupDetect, EmptyRootIsNone) {
  testing::TempDir t;
  CgroupHost host = CgroupHost::detect(t.path(), t / "missing");
  EXPECT_EQ(host.level(), "none");
  EXPECT_EQ(CgroupHost::none().level(), "none");
}

// ---- NodeCgroup on a fake tree: what is written where ----

TEST(NodeCgroupFake, V1WritesEachControllersFiles) {
  testing::TempDir t;
  const std::string root = t / "cg";
  for (const char* c : {"memory", "pids", "cpu"}) fakeV1Controller(root, c, "");
  touch(t / "self", "0::/\n");
  // A real cgroupfs makes these files with the directory; here they are made beforehand.
  for (const char* f : {"memory.limit_in_bytes", "memory.oom_control", "cgroup.procs"}) {
    touch(root + "/memory/enjin/web/" + f);
  }
  for (const char* f : {"pids.max", "cgroup.procs"}) touch(root + "/pids/enjin/web/" + f);
  for (const char* f : {"cpu.cfs_quota_us", "cpu.cfs_period_us", "cgroup.procs"}) {
    touch(root + "/cpu/enjin/web/" + f);
  }
  CgroupHost host = CgroupHost::detect(root, t / "self");
  ASSERT_EQ(host.level(), "v1");
  Limits l;
  l.memoryBytes = 256ULL << 20;
  l.cpu = 0.5;  // processes unset: "max"
  auto cg = NodeCgroup::create(host, "web", l);
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  EXPECT_EQ(slurp(root + "/memory/enjin/web/memory.limit_in_bytes"), "268435456");
  EXPECT_EQ(slurp(root + "/memory/enjin/web/memory.oom_control"), "0");
  EXPECT_EQ(slurp(root + "/pids/enjin/web/pids.max"), "max");
  EXPECT_EQ(slurp(root + "/cpu/enjin/web/cpu.cfs_period_us"), "100000");
  EXPECT_EQ(slurp(root + "/cpu/enjin/web/cpu.cfs_quota_us"), "50000");
  auto back = cg->readLimits();
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, l);
  // The oom_kill line is what counts.
  touch(root + "/memory/enjin/web/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n");
  EXPECT_EQ(cg->oomKills().value(), 3U);
  // Without it (old kernels), a hit limit counts as one.
  touch(root + "/memory/enjin/web/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n");
  touch(root + "/memory/enjin/web/memory.failcnt", "12\n");
  EXPECT_EQ(cg->oomKills().value(), 1U);

  auto again = NodeCgroup::open(host, "web");
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->dirs(), cg->dirs());
  auto missing = NodeCgroup::open(host, "db");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, 404);
  EXPECT_NE(missing.error().message.find(root + "/memory/enjin/db"), std::string::npos)
      << missing.error().message;
}

TEST(NodeCgroupFake, V2WritesOneDirectorysFiles) {
  testing::TempDir t;
  const std::string root = t / "cg";
  touch(root + "/cgroup.controllers", "memory pids cpu\n");
  touch(root + "/cgroup.subtree_control");
  touch(root + "/enjin/cgroup.subtree_control");
  for (const char* f : {"memory.max", "pids.max", "cpu.max", "cgroup.procs"}) {
    touch(root + "/enjin/api/" + f);
  }
  touch(root + "/enjin/api/memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n");
  touch(t / "self", "0::/\n");
  CgroupHost host = CgroupHost::detect(root, t / "self");
  ASSERT_EQ(host.level(), "v2");
  Limits l;
  l.processes = 128;
  l.cpu = 1.5;
  auto cg = NodeCgroup::create(host, "api", l);
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  EXPECT_EQ(slurp(root + "/cgroup.subtree_control"), "+memory +pids +cpu");
  EXPECT_EQ(slurp(root + "/enjin/cgroup.subtree_control"), "+memory +pids +cpu");
  EXPECT_EQ(slurp(root + "/enjin/api/memory.max"), "max");
  EXPECT_EQ(slurp(root + "/enjin/api/pids.max"), "128");
  EXPECT_EQ(slurp(root + "/enjin/api/cpu.max"), "150000 100000");
  EXPECT_EQ(cg->oomKills().value(), 1U);
  auto back = cg->readLimits();
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, l);
}

TEST(NodeCgroupFake, ErrorsNameTheFileAndErrno) {
  testing::TempDir t;
  const std::string root = t / "cg";
  for (const char* c : {"memory", "pids", "cpu"}) fakeV1Controller(root, c, "");
  touch(t / "self", "0::/\n");
  CgroupHost host = CgroupHost::detect(root, t / "self");
  ASSERT_EQ(host.level(), "v1");
  // A plain directory has none of a cgroup's files.
  auto cg = NodeCgroup::create(host, "web", Limits{});
  ASSERT_FALSE(cg.ok());
  EXPECT_EQ(cg.error().message, "cgroup for node 'web': open " + root +
                                    "/memory/enjin/web/memory.limit_in_bytes: No such file or "
                                    "directory");
  auto badName = NodeCgroup::create(host, "../x", Limits{});
  ASSERT_FALSE(badName.ok());
  EXPECT_EQ(badName.error().code, 400);
  auto none = NodeCgroup::create(CgroupHost::none(), "web", Limits{});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, 409);
}

// ---- rlimits (level none), in a real child ----

// Runs `body` in a forked child and returns its wait status; the child is killed after 20 s.
template <class F>
int inChild(F body) {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(body());
  int status = 0;
  for (int i = 0; i < 2000; ++i) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    struct timespec ts = {0, 10 * 1000000L};
    ::nanosleep(&ts, nullptr);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  ADD_FAILURE() << "child did not finish in 20 s";
  return status;
}

TEST(Rlimits, OpenFilesStopAtTheLimit) {
  Limits l;
  l.openFiles = 16;
  int status = inChild([&] {
    if (applyRlimits(l) != 0) return 100;
    int opened = 0;
    for (int i = 0; i < 64; ++i) {
      int fd = ::open("/dev/null", O_RDONLY);
      if (fd < 0) return errno == EMFILE ? opened : 101;
      ++opened;
    }
    return 102;
  });
  ASSERT_TRUE(WIFEXITED(status));
  // 16 descriptors in all, minus those the child inherited (at least stdin, stdout, stderr).
  EXPECT_GT(WEXITSTATUS(status), 0);
  EXPECT_LE(WEXITSTATUS(status), 13);
}

TEST(Rlimits, MemoryIsAnAddressSpaceCap) {
  Limits l;
  l.memoryBytes = 256ULL << 20;
  int status = inChild([&] {
    if (applyRlimits(l) != 0) return 100;
    struct rlimit rl;
    ::getrlimit(RLIMIT_AS, &rl);
    if (rl.rlim_cur != 256ULL << 20) return 101;
    void* p = ::mmap(nullptr, 512ULL << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (p != MAP_FAILED) return 102;
    return errno == ENOMEM ? 0 : 103;
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Rlimits, ProcessesSetsNproc) {
  Limits l;
  l.processes = 77;
  int status = inChild([&] {
    if (applyRlimits(l) != 0) return 100;
    struct rlimit rl;
    ::getrlimit(RLIMIT_NPROC, &rl);
    return rl.rlim_cur == 77 && rl.rlim_max == 77 ? 0 : 101;
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// ---- real cgroups (root, and a writable hierarchy) ----

class RealCgroup : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "real cgroup tests need root";
    host_ = CgroupHost::detect();
    if (host_.kind() == CgroupLevel::kNone) {
      std::string why;
      for (const auto& r : host_.reasons()) why += "\n  " + r;
      GTEST_SKIP() << "no writable cgroup hierarchy on this host:" << why;
    }
  }

  void TearDown() override {
    for (const auto& name : made_) {
      auto cg = NodeCgroup::open(host_, name);
      if (cg.ok()) {
        auto st = cg->remove();
        if (!st.ok()) ADD_FAILURE() << "cleanup: " << st.error().message;
      }
      for (const auto& base : host_.bases()) {
        if (fs::exists(base + "/" + name)) ADD_FAILURE() << "left behind: " << base << "/" << name;
      }
    }
    // The `enjin` directories too, unless someone else's nodes are in them.
    for (const auto& base : host_.bases()) ::rmdir(base.c_str());
  }

  Result<NodeCgroup> make(const std::string& tag, const Limits& l) {
    std::string name = "limits-test-" + std::to_string(::getpid()) + "-" + tag;
    made_.push_back(name);
    return NodeCgroup::create(host_, name, l);
  }

  // Forks a child that blocks until released, puts it in `cg` with addProcess, releases it to
  // run `body`, and returns its wait status (killed after 30 s).
  template <class F>
  int runInside(const NodeCgroup& cg, F body) {
    int go[2];
    if (::pipe(go) != 0) {
      ADD_FAILURE() << "pipe";
      return -1;
    }
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(go[1]);
      char c;
      if (::read(go[0], &c, 1) != 1) ::_exit(120);
      ::_exit(body());
    }
    ::close(go[0]);
    auto st = cg.addProcess(pid);
    EXPECT_TRUE(st.ok()) << st.error().message;
    if (!st.ok()) ::kill(pid, SIGKILL);
    auto inside = cg.processes();
    EXPECT_TRUE(inside.ok() && inside->size() == 1 && (*inside)[0] == pid);
    (void)::write(go[1], "x", 1);
    ::close(go[1]);
    int status = 0;
    for (int i = 0; i < 3000; ++i) {
      if (::waitpid(pid, &status, WNOHANG) == pid) return status;
      struct timespec ts = {0, 10 * 1000000L};
      ::nanosleep(&ts, nullptr);
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    ADD_FAILURE() << "child did not finish in 30 s";
    return status;
  }

  CgroupHost host_;
  std::vector<std::string> made_;
};

TEST_F(RealCgroup, MemoryLimitOomKillsTheNodeAndNothingElse) {
  Limits l;
  l.memoryBytes = 32ULL << 20;
  l.processes = 16;
  auto cg = make("oom", l);
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  auto before = cg->oomKills();
  ASSERT_TRUE(before.ok()) << before.error().message;
  EXPECT_EQ(*before, 0U);
  const std::string selfCgroupBefore = slurp("/proc/self/cgroup");

  // A bystander in our own cgroup, outside the node's.
  pid_t bystander = ::fork();
  if (bystander == 0) {
    for (;;) ::pause();
  }

  int status = runInside(*cg, [] {
    // 200 MB touched page by page; mmap rather than malloc, in a forked child.
    const size_t size = 200ULL << 20;
    auto* p = static_cast<char*>(::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (p == MAP_FAILED) return 110;
    for (size_t i = 0; i < size; i += 4096) p[i] = 1;
    return 0;  // survived: the limit did not hold
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  auto after = cg->oomKills();
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_EQ(*after, 1U);
  EXPECT_TRUE(wasOomKilled(status, *before, *after));

  // Untouched: the bystander lives, and we are where we were.
  int bs = 0;
  EXPECT_EQ(::waitpid(bystander, &bs, WNOHANG), 0) << "the bystander died";
  ::kill(bystander, SIGKILL);
  ::waitpid(bystander, &bs, 0);
  EXPECT_TRUE(WIFSIGNALED(bs) && WTERMSIG(bs) == SIGKILL);
  EXPECT_EQ(slurp("/proc/self/cgroup"), selfCgroupBefore);
}

TEST_F(RealCgroup, PidsLimitStopsForks) {
  Limits l;
  l.processes = 8;
  auto cg = make("pids", l);
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  int status = runInside(*cg, [] {
    pid_t kids[20];
    int n = 0;
    int err = 0;
    for (; n < 20; ++n) {
      pid_t k = ::fork();
      if (k == 0) {
        for (;;) ::pause();
      }
      if (k < 0) {
        err = errno;
        break;
      }
      kids[n] = k;
    }
    for (int i = 0; i < n; ++i) {
      ::kill(kids[i], SIGKILL);
      ::waitpid(kids[i], nullptr, 0);
    }
    if (n == 20) return 200;
    return err == EAGAIN ? n : 100 + n;
  });
  ASSERT_TRUE(WIFEXITED(status));
  // Itself plus 7 children make 8.
  EXPECT_EQ(WEXITSTATUS(status), 7);
}

TEST_F(RealCgroup, CpuQuotaIsWrittenAndReadBack) {
  Limits l;
  l.cpu = 0.5;
  l.memoryBytes = 64ULL << 20;
  l.processes = 32;
  auto cg = make("cpu", l);
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  auto back = cg->readLimits();
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, l);
  if (host_.kind() == CgroupLevel::kV1) {
    EXPECT_EQ(slurp(cg->dirs()[2] + "/cpu.cfs_quota_us"), "50000\n");
    EXPECT_EQ(slurp(cg->dirs()[2] + "/cpu.cfs_period_us"), "100000\n");
  } else {
    EXPECT_EQ(slurp(cg->dirs()[0] + "/cpu.max"), "50000 100000\n");
  }
  // Created again with fewer limits: the ones dropped read as unset.
  Limits less;
  less.processes = 4;
  auto again = make("cpu", less);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->readLimits().value(), less);
}

TEST_F(RealCgroup, RemoveKillsWhatIsLeftAndLeavesNoDirectory) {
  auto cg = make("rm", Limits{});
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  pid_t sleeper = ::fork();
  if (sleeper == 0) {
    for (;;) ::pause();
  }
  ASSERT_TRUE(cg->addProcess(sleeper).ok());
  auto reopened = NodeCgroup::open(host_, cg->name());
  ASSERT_TRUE(reopened.ok()) << reopened.error().message;
  EXPECT_EQ(reopened->processes().value(), std::vector<pid_t>{sleeper});
  // The killed sleeper stays a zombie until reaped; that must not keep the directory busy.
  auto st = reopened->remove();
  EXPECT_TRUE(st.ok()) << st.error().message;
  int status = 0;
  ASSERT_EQ(::waitpid(sleeper, &status, 0), sleeper);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  for (const auto& d : cg->dirs()) EXPECT_FALSE(fs::exists(d)) << d;
  EXPECT_TRUE(cg->remove().ok()) << "removing again is not an error";
}

TEST_F(RealCgroup, ChildJoinsBeforeExec) {
  auto cg = make("join", Limits{});
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  const std::vector<std::string> files = cg->procsFiles();
  int status = inChild([&] {
    if (joinCgroupsInChild(files) != 0) return 100;
    // /proc/self/cgroup names the node's cgroup now.
    int fd = ::open("/proc/self/cgroup", O_RDONLY);
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return 101;
    buf[n] = '\0';
    return ::strstr(buf, "/enjin/limits-test-") != nullptr ? 0 : 102;
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace enjin::supervise
