#include "enjin/store/store.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
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

// Schema 1 as released (kMigrations[0]), kept here so that a v1 file can be made without the
// store, which now always migrates to the current schema.
constexpr const char* kSchema1 = R"sql(
CREATE TABLE nodes (
  uuid TEXT PRIMARY KEY NOT NULL,
  ring INTEGER NOT NULL,
  label TEXT NOT NULL UNIQUE,
  supervision_strategy TEXT NOT NULL,
  compartment TEXT NOT NULL,
  public_key_hex TEXT NOT NULL,
  spec_json TEXT NOT NULL,
  created_wall_ms INTEGER NOT NULL,
  revoked_wall_ms INTEGER NOT NULL
);
CREATE TABLE meta (
  key TEXT PRIMARY KEY NOT NULL,
  value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE seq_marks (
  sender_key_hex TEXT PRIMARY KEY NOT NULL,
  seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE observations (
  id INTEGER PRIMARY KEY,
  node_uuid TEXT NOT NULL REFERENCES nodes (uuid) ON DELETE CASCADE,
  strategy TEXT NOT NULL,
  state TEXT NOT NULL,
  wall_ms INTEGER NOT NULL,
  body_json TEXT NOT NULL
);
CREATE INDEX observations_by_node ON observations (node_uuid, id);
)sql";

// Runs `sql` on the file at `path` with SQLite directly.
void execSql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  EXPECT_EQ(rc, SQLITE_OK) << (err != nullptr ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

// The first column of the first row of `sql`, "" if none.
std::string queryOne(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  std::string out;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_text(stmt, 0) != nullptr) {
    out = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return out;
}

AuditRecord makeAudit(std::string action, int64_t wallMs) {
  AuditRecord a;
  a.wallMs = wallMs;
  a.user = "alice";
  a.action = std::move(action);
  a.resource = "ring1/web-1";
  a.result = "allowed";
  a.status = 201;
  a.source = "127.0.0.1:5000";
  return a;
}

TEST(StoreV2, RoundTripsObjectsAndKeepsTheCreationTime) {
  TempDir dir;
  auto store = openOrDie(dir / "ring0.db");
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->putObject("user", "bob", R"({"name":"bob"})", 1000).ok());
  ASSERT_TRUE(store->putObject("user", "alice", R"({"name":"it's; --"})", 2000).ok());
  ASSERT_TRUE(store->putObject("role", "bob", R"({"role":1})", 3000).ok());

  auto bob = store->object("user", "bob");
  ASSERT_TRUE(bob.ok()) << bob.error().message;
  ASSERT_TRUE(bob->has_value());
  EXPECT_EQ(**bob, (ObjectRecord{"user", "bob", R"({"name":"bob"})", 1000, 1000}));
  EXPECT_FALSE(store->object("user", "carol")->has_value());
  EXPECT_FALSE(store->object("group", "bob")->has_value());

  // An update replaces the body and the update time only.
  ASSERT_TRUE(store->putObject("user", "bob", R"({"name":"bob","v":2})", 5000).ok());
  EXPECT_EQ(**store->object("user", "bob"),
            (ObjectRecord{"user", "bob", R"({"name":"bob","v":2})", 1000, 5000}));

  auto users = store->objects("user");
  ASSERT_TRUE(users.ok());
  ASSERT_EQ(users->size(), 2u);
  EXPECT_EQ((*users)[0].name, "alice");
  EXPECT_EQ((*users)[0].bodyJson, R"({"name":"it's; --"})");
  EXPECT_EQ((*users)[1].name, "bob");
  EXPECT_EQ(store->objects("role")->size(), 1u);
  EXPECT_TRUE(store->objects("network")->empty());

  auto gone = store->deleteObject("user", "bob");
  ASSERT_TRUE(gone.ok());
  EXPECT_TRUE(*gone);
  EXPECT_FALSE(*store->deleteObject("user", "bob"));
  EXPECT_FALSE(store->object("user", "bob")->has_value());
  EXPECT_TRUE(store->object("role", "bob")->has_value());  // another kind, same name

  auto st = store->putObject("user", "", "{}", 1);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr(dir / "ring0.db"));
  EXPECT_THAT(st.error().message, HasSubstr("put user ''"));
}

TEST(StoreV2, RoundTripsSessionsAndDeletesThemByUserAndExpiry) {
  TempDir dir;
  auto store = openOrDie(dir / "ring0.db");
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->putSession({"h1", "alice", 100, 1000}).ok());
  ASSERT_TRUE(store->putSession({"h2", "alice", 100, 5000}).ok());
  ASSERT_TRUE(store->putSession({"h3", "bob", 100, 2000}).ok());
  ASSERT_TRUE(store->putSession({"h4", "bob", 100, 9000}).ok());

  auto h1 = store->session("h1");
  ASSERT_TRUE(h1.ok());
  ASSERT_TRUE(h1->has_value());
  EXPECT_EQ(**h1, (SessionRecord{"h1", "alice", 100, 1000}));
  EXPECT_FALSE(store->session("nope")->has_value());

  // A stored hash is not replaced, not even for the same user.
  auto dup = store->putSession({"h1", "bob", 200, 99999});
  ASSERT_FALSE(dup.ok());
  EXPECT_THAT(dup.error().message, HasSubstr("already stored"));
  EXPECT_EQ((*store->session("h1"))->user, "alice");

  auto expired = store->deleteExpiredSessions(2000);  // h1 and h3: expiry <= now
  ASSERT_TRUE(expired.ok());
  EXPECT_EQ(*expired, 2u);
  EXPECT_FALSE(store->session("h1")->has_value());
  EXPECT_FALSE(store->session("h3")->has_value());
  EXPECT_TRUE(store->session("h2")->has_value());

  auto ofAlice = store->deleteSessionsOf("alice");
  ASSERT_TRUE(ofAlice.ok());
  EXPECT_EQ(*ofAlice, 1u);
  EXPECT_FALSE(store->session("h2")->has_value());
  EXPECT_TRUE(store->session("h4")->has_value());
  EXPECT_EQ(*store->deleteSessionsOf("alice"), 0u);

  EXPECT_TRUE(*store->deleteSession("h4"));
  EXPECT_FALSE(*store->deleteSession("h4"));
  EXPECT_FALSE(store->session("h4")->has_value());
}

TEST(StoreV2, AuditLogIsOrderedPagedAndBounded) {
  TempDir dir;
  auto store = openOrDie(dir / "ring0.db");
  ASSERT_NE(store, nullptr);
  std::vector<int64_t> ids;
  for (int i = 0; i < 10; ++i) {
    auto id = store->addAudit(makeAudit("a" + std::to_string(i), 100 + i), 4);
    ASSERT_TRUE(id.ok()) << id.error().message;
    if (!ids.empty()) {
      EXPECT_GT(*id, ids.back());
    }
    ids.push_back(*id);
  }
  // Only the newest 4 remain, oldest first.
  auto all = store->audit(0, 100);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    AuditRecord want = makeAudit("a" + std::to_string(6 + i), static_cast<int64_t>(106 + i));
    want.id = ids[6 + i];
    EXPECT_EQ((*all)[i], want);
  }
  EXPECT_EQ(queryOne(dir / "ring0.db", "SELECT count(*) FROM audit"), "4");

  // Paging: after an id, at most `limit`.
  auto page = store->audit(ids[6], 2);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].id, ids[7]);
  EXPECT_EQ((*page)[1].id, ids[8]);
  EXPECT_TRUE(store->audit(ids[9], 10)->empty());

  // A keep of 0 still keeps the new entry, so the ids never go back.
  auto last = store->addAudit(makeAudit("z", 200), 0);
  ASSERT_TRUE(last.ok());
  EXPECT_GT(*last, ids[9]);
  all = store->audit(0, 100);
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].action, "z");
}

TEST(StoreV2, AtomicallyCommitsTogetherOrLeavesNothing) {
  TempDir dir;
  const std::string path = dir / "ring0.db";
  auto store = openOrDie(path);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->putObject("user", "kept", "{}", 1).ok());

  // A failing body: every write of it is undone, those of methods with a transaction of their
  // own (addAudit, putSeqMarks) included, and its error comes back with its code.
  auto st = store->atomically([&]() -> Status {
    if (auto s = store->putObject("user", "bob", "{}", 2); !s.ok()) return s;
    if (auto s = store->deleteObject("user", "kept"); !s.ok()) return s.error();
    if (auto s = store->putSession({"h", "bob", 1, 2}); !s.ok()) return s;
    if (auto s = store->addAudit(makeAudit("x", 1)); !s.ok()) return s.error();
    if (auto s = store->putSeqMarks({{"aa", 1}}); !s.ok()) return s;
    // Visible inside the transaction.
    if (!store->object("user", "bob")->has_value()) return Error{"bob not visible", 500};
    return Error{"refused by the body", 409};
  });
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "refused by the body");
  EXPECT_EQ(st.error().code, 409);
  EXPECT_FALSE(store->object("user", "bob")->has_value());
  EXPECT_TRUE(store->object("user", "kept")->has_value());
  EXPECT_FALSE(store->session("h")->has_value());
  EXPECT_TRUE(store->audit(0, 10)->empty());
  EXPECT_TRUE(store->seqMarks()->empty());
  // And on the file, through another connection.
  EXPECT_EQ(queryOne(path, "SELECT count(*) FROM objects"), "1");

  // A succeeding body, with a nested atomically(): everything is there, also after a reopen.
  st = store->atomically([&]() -> Status {
    if (auto s = store->putObject("user", "carol", "{}", 3); !s.ok()) return s;
    return store->atomically([&]() -> Status {
      if (auto s = store->addAudit(makeAudit("y", 3)); !s.ok()) return s.error();
      return store->putSession({"h2", "carol", 3, 4});
    });
  });
  ASSERT_TRUE(st.ok()) << st.error().message;
  store.reset();
  store = openOrDie(path);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->object("user", "carol")->has_value());
  EXPECT_TRUE(store->session("h2")->has_value());
  EXPECT_EQ(store->audit(0, 10)->size(), 1u);

  // Transactions work as before once atomically() is done.
  EXPECT_FALSE(store->addObservation(makeObservation("u-none", 1)).ok());  // no such node
  ASSERT_TRUE(store->putSeqMarks({{"bb", 2}}).ok());
  EXPECT_EQ(store->seqMarks()->size(), 1u);
}

TEST(StoreV2, MigratesASchema1FileInPlaceKeepingItsData) {
  TempDir dir;
  const std::string path = dir / "ring1.db";
  execSql(path, std::string(kSchema1) +
                    "INSERT INTO nodes VALUES ('u-web', 2, 'web', 'exec', '', '" +
                    std::string(64, 'a') + "', '{}', 1000, 0);"
                    "INSERT INTO meta VALUES ('identity', 'me');"
                    "INSERT INTO seq_marks VALUES ('aa', 42);"
                    "INSERT INTO observations (node_uuid, strategy, state, wall_ms, body_json)"
                    " VALUES ('u-web', 'process', 'ready', 7, '{\"pid\":1}');"
                    "PRAGMA user_version = 1;");
  ASSERT_EQ(queryOne(path, "PRAGMA user_version"), "1");
  ASSERT_EQ(queryOne(path, "SELECT count(*) FROM sqlite_schema WHERE name = 'objects'"), "0");

  {
    auto store = openOrDie(path);
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(store->schemaVersion(), 2);
    auto web = store->nodeByUuid("u-web");
    ASSERT_TRUE(web.ok());
    ASSERT_TRUE(web->has_value());
    EXPECT_EQ((*web)->label, "web");
    EXPECT_EQ((*web)->createdWallMs, 1000);
    EXPECT_EQ(**store->meta("identity"), "me");
    EXPECT_EQ(store->seqMarks()->at(0).second, 42u);
    EXPECT_EQ(store->observations("u-web", 10)->at(0).bodyJson, R"({"pid":1})");
    ASSERT_TRUE(store->putObject("user", "bob", "{}", 5).ok());
    ASSERT_TRUE(store->addAudit(makeAudit("x", 5)).ok());
  }
  EXPECT_EQ(queryOne(path, "PRAGMA user_version"), "2");
  // Reopening a v2 file migrates nothing more and keeps both generations of data.
  auto store = openOrDie(path);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->schemaVersion(), 2);
  EXPECT_TRUE(store->object("user", "bob")->has_value());
  EXPECT_TRUE(store->nodeByLabel("web")->has_value());
}

}  // namespace
}  // namespace enjin::store
