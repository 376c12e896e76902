// Tenant ids and files (include/enjin/ring/tenant.hpp): ranges, assignments in a real store,
// ownership of a real state dir, a real socket shared with a group.
#include "enjin/ring/tenant.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fstream>

#include "enjin/base/unique_fd.hpp"
#include "enjin/store/store.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::ring {
namespace {

TEST(UidRange, ParsesAndRefusesWithTheReason) {
  auto r = parseUidRange("60000-60999");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, (UidRange{60000, 60999}));
  EXPECT_EQ(parseUidRange("60000").error().message,
            "tenant_uids '60000': expected FIRST-LAST, e.g. 60000-60999");
  EXPECT_EQ(parseUidRange("500-900").error().message,
            "tenant_uids '500-900': ids below 1000 belong to the system");
  EXPECT_EQ(parseUidRange("60000-60001").error().message,
            "tenant_uids '60000-60001': too small: the bus group and one pair need 3 ids");
  EXPECT_EQ(parseUidRange("6000x-7000").error().message,
            "tenant_uids '6000x-7000': expected two numbers, FIRST-LAST");
  EXPECT_EQ(parseUidRange("60000-60999").ok(), true);
  EXPECT_EQ(parseUidRange("a-b").error().code, 400);
}

class TenantIdsTest : public ::testing::Test {
 protected:
  void SetUp() override { reopen(); }
  void reopen() {
    store_.reset();
    auto s = store::Store::open(dir_ / "ring1.db");
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(*s);
  }
  testing::TempDir dir_;
  std::unique_ptr<store::Store> store_;
};

TEST_F(TenantIdsTest, EachNodeItsOwnPairKeptAcrossRestarts) {
  const UidRange range{60000, 60099};
  auto a = assignTenantIds(*store_, range, "uuid-a");
  auto b = assignTenantIds(*store_, range, "uuid-b");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->busGid, 60000U);
  EXPECT_EQ(a->uid, 60001U);
  EXPECT_EQ(a->appUid, 60002U);
  EXPECT_EQ(b->uid, 60003U);
  EXPECT_EQ(b->appUid, 60004U);
  reopen();
  auto again = assignTenantIds(*store_, range, "uuid-a");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->uid, 60001U);
}

TEST_F(TenantIdsTest, ARetiredPairWaitsUntilEveryFreshOneIsTaken) {
  const UidRange range{60000, 60004};  // the bus group and two pairs
  ASSERT_TRUE(assignTenantIds(*store_, range, "a").ok());
  ASSERT_TRUE(retireTenantIds(*store_, "a").ok());
  auto b = assignTenantIds(*store_, range, "b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->uid, 60003U) << "the retired pair was dealt while a fresh one was free";
  // Every pair now taken or retired: the retired one, no process running as it, is dealt.
  auto c = assignTenantIds(*store_, range, "c");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->uid, 60001U);
  auto d = assignTenantIds(*store_, range, "d");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().code, 409);
  EXPECT_EQ(d.error().message,
            "tenant_uids 60000-60004: no free pair of ids left (2 nodes hold one)");
}

class TenantFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (it gives files to other uids)";
  }
  static struct stat statOf(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
    return st;
  }
  testing::TempDir dir_;
};

TEST_F(TenantFilesTest, TheStateDirIsTheSupervisorsAndTheHomeTheApps) {
  const std::string node = dir_ / "a";
  ASSERT_EQ(::mkdir(node.c_str(), 0700), 0);
  std::ofstream(node + "/node.key") << "secret";
  ::chmod((node + "/node.key").c_str(), 0640);
  ASSERT_EQ(::mkdir((node + "/logs").c_str(), 0755), 0);
  std::ofstream(node + "/logs/web.log") << "line";
  ASSERT_EQ(::symlink("/etc/passwd", (node + "/link").c_str()), 0);
  const TenantIds ids{62001, 62002, 62000};
  ASSERT_TRUE(prepareTenantDir(node, ids).ok());

  auto dir = statOf(node);
  EXPECT_EQ(dir.st_uid, 62001U);
  EXPECT_EQ(dir.st_gid, 62002U);
  EXPECT_EQ(dir.st_mode & 07777, 0710U);
  auto home = statOf(tenantHome(node));
  EXPECT_EQ(home.st_uid, 62002U);
  EXPECT_EQ(home.st_mode & 07777, 0700U);
  auto key = statOf(node + "/node.key");
  EXPECT_EQ(key.st_uid, 62001U);
  EXPECT_EQ(key.st_mode & 07777, 0600U);
  auto logs = statOf(node + "/logs");
  EXPECT_EQ(logs.st_mode & 07777, 0700U);
  EXPECT_EQ(statOf(node + "/logs/web.log").st_uid, 62001U);
  // The link itself changed hands; what it points at did not.
  EXPECT_EQ(statOf(node + "/link").st_uid, 62001U);
  EXPECT_EQ(statOf("/etc/passwd").st_uid, 0U);

  disownTenantDir(node);
  EXPECT_EQ(statOf(node).st_uid, 0U);
  EXPECT_EQ(statOf(node + "/node.key").st_uid, 0U);
  EXPECT_EQ(statOf(tenantHome(node)).st_uid, 0U);
}

TEST_F(TenantFilesTest, AncestorsBecomeTraversableNotListable) {
  const std::string deep = dir_ / "x/y";
  ASSERT_EQ(::mkdir((dir_ / "x").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir(deep.c_str(), 0700), 0);
  ASSERT_TRUE(makeTraversable(deep).ok());
  EXPECT_EQ(statOf(deep).st_mode & 07777, 0701U);
  EXPECT_EQ(statOf(dir_ / "x").st_mode & 07777, 0701U);
  EXPECT_NE(statOf(dir_.path()).st_mode & S_IXOTH, 0U);
}

TEST_F(TenantFilesTest, ABusSocketIsSharedWithTheGroupOnly) {
  const std::string path = dir_ / "down.sock";
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_TRUE(shareSocketWithGroup("ipc://" + path, 62000).ok());
  auto st = statOf(path);
  EXPECT_EQ(st.st_gid, 62000U);
  EXPECT_EQ(st.st_mode & 07777, 0660U);
  EXPECT_TRUE(shareSocketWithGroup("tcp://127.0.0.1:5555", 62000).ok());
}

}  // namespace
}  // namespace enjin::ring
