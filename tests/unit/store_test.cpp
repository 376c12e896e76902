#include "enjin/store/store.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <limits>

#include "enjin/base/file.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::store {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

// SQLite's file format, for the tests that must change a database without SQLite (the store
// hides it): the 100-byte header at offset 0 of page 1.
constexpr size_t kHeaderWriteVersion = 18;  // 1 = rollback journal, 2 = WAL (also byte 19)
constexpr size_t kHeaderPageSize = 16;      // big-endian u16
constexpr size_t kHeaderUserVersion = 60;   // big-endian u32

NodeRecord makeNode(std::string uuid, std::string label, int64_t created = 1000) {
  NodeRecord n;
  n.uuid = std::move(uuid);
  n.ring = 2;
  n.label = std::move(label);
  n.supervisionStrategy = "exec";
  n.compartment = "";
  n.publicKeyHex = std::string(64, 'a');
  n.specJson = R"({"processes":[]})";
  n.createdWallMs = created;
  return n;
}

ObservationRecord makeObservation(std::string node, int64_t wallMs, std::string body = "{}") {
  return ObservationRecord{std::move(node), "process", "ready", wallMs, std::move(body)};
}

std::unique_ptr<Store> openOrDie(const std::string& path) {
  auto s = Store::open(path);
  EXPECT_TRUE(s.ok()) << s.error().message;
  return s.ok() ? std::move(*s) : nullptr;
}

std::string readOrDie(const std::string& path) {
  auto text = readFile(path);
  EXPECT_TRUE(text.ok()) << text.error().message;
  return text.ok() ? *text : std::string();
}

// Opens `path`, which must be refused and left byte for byte as it was; the refusal's message.
std::string refusalLeavingUnchanged(const std::string& path) {
  const std::string before = readOrDie(path);
  auto s = Store::open(path);
  EXPECT_FALSE(s.ok()) << path << " was opened";
  EXPECT_EQ(readOrDie(path), before) << path << " was changed";
  return s.ok() ? std::string() : s.error().message;
}

// A store at `path` with one node and `count` observations of ~1 KB: many b-tree pages.
void fillWithObservations(const std::string& path, int count) {
  auto store = openOrDie(path);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->putNode(makeNode("u-a", "a")).ok());
  for (int i = 0; i < count; ++i) {
    ASSERT_TRUE(store->addObservation(makeObservation("u-a", i, std::string(1000, 'x')), 1000).ok());
  }
}

void overwrite(const std::string& path, size_t offset, const std::string& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.is_open());
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good());
}

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

TEST(Store, CreatesANewDatabaseAtTheCurrentSchema) {
  TempDir dir;
  auto store = openOrDie(dir / "ring1.db");
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->schemaVersion(), Store::kSchemaVersion);
  EXPECT_EQ(store->path(), dir / "ring1.db");
  auto all = store->nodes();
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->empty());
}

TEST(Store, RoundTripsNodes) {
  TempDir dir;
  auto store = openOrDie(dir / "ring1.db");
  ASSERT_NE(store, nullptr);
  NodeRecord web = makeNode("u-web", "web", 2000);
  web.compartment = "customer-a";
  web.supervisionStrategy = "unix-user";
  web.publicKeyHex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  web.specJson = std::string(R"({"quote":"it's; DROP TABLE nodes; --"})");
  NodeRecord db = makeNode("u-db", "db", 2000);  // same time: ordered by label
  NodeRecord old = makeNode("u-old", "zz-old", 1000);
  ASSERT_TRUE(store->putNode(web).ok());
  ASSERT_TRUE(store->putNode(db).ok());
  ASSERT_TRUE(store->putNode(old).ok());

  auto byUuid = store->nodeByUuid("u-web");
  ASSERT_TRUE(byUuid.ok());
  ASSERT_TRUE(byUuid->has_value());
  EXPECT_EQ(**byUuid, web);
  auto byLabel = store->nodeByLabel("db");
  ASSERT_TRUE(byLabel.ok());
  ASSERT_TRUE(byLabel->has_value());
  EXPECT_EQ(**byLabel, db);
  auto missing = store->nodeByLabel("nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  missing = store->nodeByUuid("nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());

  auto all = store->nodes();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0], old);
  EXPECT_EQ((*all)[1], db);
  EXPECT_EQ((*all)[2], web);

  // Replace by uuid, label included: the old label is free again.
  NodeRecord renamed = web;
  renamed.label = "www";
  renamed.ring = 1;
  ASSERT_TRUE(store->putNode(renamed).ok());
  EXPECT_EQ(**store->nodeByUuid("u-web"), renamed);
  EXPECT_FALSE(store->nodeByLabel("web")->has_value());
  EXPECT_EQ(store->nodes()->size(), 3u);

  ASSERT_TRUE(store->revokeNode("u-db", 5000).ok());
  EXPECT_EQ((*store->nodeByUuid("u-db"))->revokedWallMs, 5000);
  // A retried revoke succeeds and keeps the first time.
  ASSERT_TRUE(store->revokeNode("u-db", 6000).ok());
  EXPECT_EQ((*store->nodeByUuid("u-db"))->revokedWallMs, 5000);

  ASSERT_TRUE(store->deleteNode("u-db").ok());
  EXPECT_FALSE(store->nodeByUuid("u-db")->has_value());
  EXPECT_EQ(store->nodes()->size(), 2u);
  EXPECT_TRUE(store->deleteNode("u-db").ok());  // idempotent
}

TEST(Store, RefusesASecondNodeWithTheSameLabel) {
  TempDir dir;
  auto store = openOrDie(dir / "ring1.db");
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->putNode(makeNode("u-1", "web")).ok());
  auto st = store->putNode(makeNode("u-2", "web"));
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("put node 'u-2'"));
  EXPECT_THAT(st.error().message, HasSubstr("label 'web' is already used by node 'u-1'"));
  EXPECT_FALSE(store->nodeByUuid("u-2")->has_value());
  EXPECT_EQ((*store->nodeByLabel("web"))->uuid, "u-1");
}

TEST(Store, RefusesInvalidNodeFields) {
  TempDir dir;
  auto store = openOrDie(dir / "ring1.db");
  ASSERT_NE(store, nullptr);
  NodeRecord n = makeNode("u-1", "web");
  n.ring = 0;
  EXPECT_THAT(store->putNode(n).error().message, HasSubstr("ring 0 is not 1 or 2"));
  n = makeNode("u-1", "web");
  n.publicKeyHex = std::string(64, 'A');
  EXPECT_THAT(store->putNode(n).error().message, HasSubstr("64 lowercase hex"));
  EXPECT_FALSE(store->putNode(makeNode("", "web")).ok());
  EXPECT_FALSE(store->putNode(makeNode("u-1", "")).ok());
  EXPECT_TRUE(store->nodes()->empty());
}

TEST(Store, RevokingAnUnknownNodeIsAnErrorNamingIt) {
  TempDir dir;
  auto store = openOrDie(dir / "ring1.db");
  ASSERT_NE(store, nullptr);
  auto st = store->revokeNode("u-ghost", 5000);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("u-ghost"));
  EXPECT_THAT(st.error().message, HasSubstr("no such node"));
  EXPECT_THAT(st.error().message, HasSubstr(dir / "ring1.db"));

  ASSERT_TRUE(store->putNode(makeNode("u-1", "web")).ok());
  EXPECT_FALSE(store->revokeNode("u-1", 0).ok());  // 0 would mean "not revoked"
  EXPECT_EQ((*store->nodeByUuid("u-1"))->revokedWallMs, 0);
}

TEST(Store, RoundTripsMeta) {
  TempDir dir;
  auto store = openOrDie(dir / "ring1.db");
  ASSERT_NE(store, nullptr);
  auto none = store->meta("identity");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(store->setMeta("identity", "first").ok());
  ASSERT_TRUE(store->setMeta("identity", "second").ok());
  const std::string binary("a\0b\xff", 4);  // kept byte for byte, NUL included
  ASSERT_TRUE(store->setMeta("blob", binary).ok());
  ASSERT_TRUE(store->setMeta("empty", "").ok());
  EXPECT_EQ(**store->meta("identity"), "second");
  EXPECT_EQ(**store->meta("blob"), binary);
  auto empty = store->meta("empty");
  ASSERT_TRUE(empty.ok());
  ASSERT_TRUE(empty->has_value());
  EXPECT_EQ(**empty, "");
}

TEST(Store, SeqMarksKeepTheMax) {
  TempDir dir;
  auto store = openOrDie(dir / "ring1.db");
  ASSERT_NE(store, nullptr);
  const uint64_t kTop = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  ASSERT_TRUE(store->putSeqMarks({{"bb", 10}, {"aa", 500}, {"cc", kTop}}).ok());
  ASSERT_TRUE(store->putSeqMarks({{"aa", 400}, {"bb", 11}}).ok());  // aa goes down: kept
  ASSERT_TRUE(store->putSeqMarks({}).ok());
  auto marks = store->seqMarks();
  ASSERT_TRUE(marks.ok());
  using Marks = std::vector<std::pair<std::string, uint64_t>>;
  EXPECT_EQ(*marks, (Marks{{"aa", 500}, {"bb", 11}, {"cc", kTop}}));

  // Above 2^63-1 the whole batch is refused and nothing of it written.
  auto st = store->putSeqMarks({{"aa", 900}, {"dd", kTop + 1}});
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("dd"));
  EXPECT_THAT(st.error().message, HasSubstr(std::to_string(kTop + 1)));
  EXPECT_EQ(*store->seqMarks(), (Marks{{"aa", 500}, {"bb", 11}, {"cc", kTop}}));
}

TEST(Store, ObservationHistoryIsBoundedPerNodeAndNewestFirst) {
  TempDir dir;
  auto store = openOrDie(dir / "ring1.db");
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->putNode(makeNode("u-a", "a")).ok());
  ASSERT_TRUE(store->putNode(makeNode("u-b", "b")).ok());
  for (int i = 1; i <= 10; ++i) {
    // The wall clock goes back half-way: insertion order still decides what is newest.
    const int64_t wall = i <= 5 ? 1000 + i : 10 + i;
    ASSERT_TRUE(store->addObservation(makeObservation("u-a", wall, std::to_string(i)), 4).ok());
  }
  ASSERT_TRUE(store->addObservation(makeObservation("u-b", 1, "b1"), 4).ok());
  ASSERT_TRUE(store->addObservation(makeObservation("u-b", 2, "b2"), 4).ok());

  auto a = store->observations("u-a", 100);
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->size(), 4u);
  EXPECT_EQ((*a)[0].bodyJson, "10");
  EXPECT_EQ((*a)[0].wallMs, 20);
  EXPECT_EQ((*a)[0].nodeUuid, "u-a");
  EXPECT_EQ((*a)[0].strategy, "process");
  EXPECT_EQ((*a)[0].state, "ready");
  EXPECT_EQ((*a)[3].bodyJson, "7");

  auto limited = store->observations("u-a", 2);
  ASSERT_TRUE(limited.ok());
  ASSERT_EQ(limited->size(), 2u);
  EXPECT_EQ((*limited)[1].bodyJson, "9");
  EXPECT_TRUE(store->observations("u-a", 0)->empty());

  // The other node's history is its own.
  auto b = store->observations("u-b", 100);
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->size(), 2u);
  EXPECT_EQ((*b)[0].bodyJson, "b2");
  EXPECT_EQ((*b)[1].bodyJson, "b1");

  // The default bound.
  for (int i = 0; i < 210; ++i) {
    ASSERT_TRUE(store->addObservation(makeObservation("u-b", i)).ok());
  }
  EXPECT_EQ(store->observations("u-b", 1000)->size(), 200u);
}

TEST(Store, DeletingANodeDeletesItsObservations) {
  TempDir dir;
  auto store = openOrDie(dir / "ring1.db");
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->putNode(makeNode("u-a", "a")).ok());
  ASSERT_TRUE(store->addObservation(makeObservation("u-a", 1)).ok());
  ASSERT_TRUE(store->deleteNode("u-a").ok());
  // Were they kept, a new node reusing the uuid would inherit them.
  ASSERT_TRUE(store->putNode(makeNode("u-a", "a")).ok());
  EXPECT_TRUE(store->observations("u-a", 100)->empty());
}

TEST(Store, RefusesAnObservationOfAnUnknownNode) {
  TempDir dir;
  auto store = openOrDie(dir / "ring1.db");
  ASSERT_NE(store, nullptr);
  auto st = store->addObservation(makeObservation("u-ghost", 1));
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("u-ghost"));
  EXPECT_THAT(st.error().message, HasSubstr("no such node"));
}

TEST(Store, KeepsEverythingAcrossReopen) {
  TempDir dir;
  const NodeRecord web = makeNode("u-web", "web");
  {
    auto store = openOrDie(dir / "ring1.db");
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->putNode(web).ok());
    ASSERT_TRUE(store->setMeta("identity", "me").ok());
    ASSERT_TRUE(store->putSeqMarks({{"aa", 42}}).ok());
    ASSERT_TRUE(store->addObservation(makeObservation("u-web", 7, R"({"pid":1})")).ok());
  }
  auto store = openOrDie(dir / "ring1.db");
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->schemaVersion(), Store::kSchemaVersion);
  EXPECT_EQ(**store->nodeByUuid("u-web"), web);
  EXPECT_EQ(**store->meta("identity"), "me");
  EXPECT_EQ(store->seqMarks()->at(0).second, 42u);
  auto obs = store->observations("u-web", 10);
  ASSERT_TRUE(obs.ok());
  ASSERT_EQ(obs->size(), 1u);
  EXPECT_EQ((*obs)[0].bodyJson, R"({"pid":1})");
}

TEST(Store, IsInWalModeAndOnlyTheOwnerMayReadIt) {
  TempDir dir;
  const std::string path = dir / "ring1.db";
  {
    auto store = openOrDie(path);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->setMeta("k", "v").ok());
    EXPECT_TRUE(exists(path + "-wal"));
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    ASSERT_EQ(::stat((path + "-wal").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);  // SQLite gives its side files the database's mode
  }
  // The WAL mode is recorded in the header (bytes 18 and 19 are 2), so it is persistent.
  const std::string bytes = readOrDie(path);
  ASSERT_GE(bytes.size(), 100u);
  EXPECT_EQ(bytes.substr(0, 16), std::string("SQLite format 3\0", 16));
  EXPECT_EQ(bytes[kHeaderWriteVersion], 2);
  EXPECT_EQ(bytes[kHeaderWriteVersion + 1], 2);
  // The last close checkpointed the WAL into the database.
  EXPECT_FALSE(exists(path + "-wal"));
}

TEST(Store, NarrowsAnExistingFileTo0600) {
  TempDir dir;
  const std::string path = dir / "ring1.db";
  { std::ofstream touch(path); }
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  auto store = openOrDie(path);
  ASSERT_NE(store, nullptr);
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST(Store, RefusesGarbageAndLeavesItUnchanged) {
  TempDir dir;
  const std::string path = dir / "ring1.db";
  std::string garbage;
  for (int i = 0; i < 8192; ++i) garbage.push_back(static_cast<char>((i * 7919 + 13) % 251));
  { std::ofstream(path, std::ios::binary) << garbage; }
  auto s = Store::open(path);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error().message, HasSubstr(path));
  EXPECT_THAT(s.error().message, HasSubstr("not a SQLite database"));
  EXPECT_THAT(s.error().message, HasSubstr("refusing to open it"));
  EXPECT_EQ(readOrDie(path), garbage);
}

TEST(Store, RefusesANewerSchemaAndLeavesTheFileUnchanged) {
  TempDir dir;
  const std::string path = dir / "ring1.db";
  {
    auto store = openOrDie(path);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->setMeta("k", "v").ok());
  }
  overwrite(path, kHeaderUserVersion, std::string("\0\0\0\x63", 4));  // 99
  const std::string message = refusalLeavingUnchanged(path);
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr("schema version 99 is newer"));
  EXPECT_THAT(message, HasSubstr("(" + std::to_string(Store::kSchemaVersion) + ")"));
}

TEST(Store, RefusesADatabaseWithTablesButNoSchemaVersion) {
  TempDir dir;
  const std::string path = dir / "other.db";
  {
    auto store = openOrDie(path);
    ASSERT_NE(store, nullptr);
  }
  overwrite(path, kHeaderUserVersion, std::string(4, '\0'));
  EXPECT_THAT(refusalLeavingUnchanged(path), HasSubstr("not an enjin store"));
}

TEST(Store, RefusesACorruptedDatabaseAndLeavesItUnchanged) {
  TempDir dir;
  const std::string path = dir / "ring1.db";
  ASSERT_NO_FATAL_FAILURE(fillWithObservations(path, 200));  // nothing pruned: no free pages
  std::string bytes = readOrDie(path);
  const size_t pageSize = (static_cast<unsigned char>(bytes[kHeaderPageSize]) << 8) |
                          static_cast<unsigned char>(bytes[kHeaderPageSize + 1]);
  ASSERT_GE(pageSize, 512u);
  const size_t pages = bytes.size() / pageSize;
  ASSERT_GE(pages, 40u);
  // Scribble over one whole page in the middle: a table page, its type byte included.
  overwrite(path, (pages / 2) * pageSize, std::string(pageSize, '\xa5'));
  ASSERT_NE(readOrDie(path), bytes);
  const std::string message = refusalLeavingUnchanged(path);
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr("refusing to open it"));
}

TEST(Store, RefusesATruncatedDatabaseAndLeavesItUnchanged) {
  TempDir dir;
  const std::string path = dir / "ring1.db";
  ASSERT_NO_FATAL_FAILURE(fillWithObservations(path, 100));
  const std::string bytes = readOrDie(path);
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(bytes.size() / 2)), 0);
  EXPECT_THAT(refusalLeavingUnchanged(path), HasSubstr("corrupt"));
}

TEST(Store, RefusesASymbolicLink) {
  TempDir dir;
  {
    auto store = openOrDie(dir / "real.db");
    ASSERT_NE(store, nullptr);
  }
  ASSERT_EQ(::symlink((dir / "real.db").c_str(), (dir / "link.db").c_str()), 0);
  auto s = Store::open(dir / "link.db");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error().message, HasSubstr("symbolic link"));
  // A dangling one is not followed to create its target either.
  ASSERT_EQ(::symlink((dir / "absent.db").c_str(), (dir / "dangling.db").c_str()), 0);
  EXPECT_FALSE(Store::open(dir / "dangling.db").ok());
  EXPECT_FALSE(exists(dir / "absent.db"));
}

TEST(Store, NeedsTheParentDirectory) {
  TempDir dir;
  auto s = Store::open(dir / "missing/ring1.db");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error().message, HasSubstr(dir / "missing/ring1.db"));
  EXPECT_THAT(s.error().message, HasSubstr("No such file or directory"));
}

}  // namespace
}  // namespace enjin::store
