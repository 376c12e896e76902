#include "enjin/store/store.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <iterator>
#include <limits>
#include <unordered_map>

#include "enjin/base/unique_fd.hpp"

namespace enjin::store {
namespace {

// kMigrations[i] takes the schema from version i to version i + 1 and runs in one transaction
// with the user_version bump. A released entry is never edited: schema 2 is one more entry and
// kSchemaVersion = 2. Only values of our own go in here; data is always bound.
//
// The observations' INTEGER PRIMARY KEY is the insertion order, which is what "newest" means:
// wall_ms can go back with the clock. The index serves both the per-node listing and the pruning.
constexpr const char* kMigrations[] = {
    R"sql(
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
)sql",
    // Schema 2: the control plane's objects, sessions and audit log. The audit's INTEGER
    // PRIMARY KEY is the insertion order, as for the observations; addAudit always keeps the
    // newest row, so ids never go back and a reader can page with "after id".
    R"sql(
CREATE TABLE objects (
  kind TEXT NOT NULL,
  name TEXT NOT NULL,
  body_json TEXT NOT NULL,
  created_wall_ms INTEGER NOT NULL,
  updated_wall_ms INTEGER NOT NULL,
  PRIMARY KEY (kind, name)
) WITHOUT ROWID;
CREATE TABLE sessions (
  token_hash TEXT PRIMARY KEY NOT NULL,
  user TEXT NOT NULL,
  created_wall_ms INTEGER NOT NULL,
  expires_wall_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_by_user ON sessions (user);
CREATE INDEX sessions_by_expiry ON sessions (expires_wall_ms);
CREATE TABLE audit (
  id INTEGER PRIMARY KEY,
  wall_ms INTEGER NOT NULL,
  user TEXT NOT NULL,
  action TEXT NOT NULL,
  resource TEXT NOT NULL,
  result TEXT NOT NULL,
  status INTEGER NOT NULL,
  source TEXT NOT NULL
);
)sql",
};
static_assert(std::size(kMigrations) == Store::kSchemaVersion,
              "one migration per schema version");

// The cached statements, keyed by the address of these constants.
constexpr char kBegin[] = "BEGIN IMMEDIATE";
constexpr char kCommit[] = "COMMIT";
constexpr char kRollback[] = "ROLLBACK";
constexpr char kPutNode[] =
    "INSERT INTO nodes (uuid, ring, label, supervision_strategy, compartment, public_key_hex,"
    " spec_json, created_wall_ms, revoked_wall_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    " ON CONFLICT (uuid) DO UPDATE SET ring = excluded.ring, label = excluded.label,"
    " supervision_strategy = excluded.supervision_strategy, compartment = excluded.compartment,"
    " public_key_hex = excluded.public_key_hex, spec_json = excluded.spec_json,"
    " created_wall_ms = excluded.created_wall_ms, revoked_wall_ms = excluded.revoked_wall_ms";
constexpr char kNodeByLabel[] =
    "SELECT uuid, ring, label, supervision_strategy, compartment, public_key_hex, spec_json,"
    " created_wall_ms, revoked_wall_ms FROM nodes WHERE label = ?1";
constexpr char kNodeByUuid[] =
    "SELECT uuid, ring, label, supervision_strategy, compartment, public_key_hex, spec_json,"
    " created_wall_ms, revoked_wall_ms FROM nodes WHERE uuid = ?1";
constexpr char kNodes[] =
    "SELECT uuid, ring, label, supervision_strategy, compartment, public_key_hex, spec_json,"
    " created_wall_ms, revoked_wall_ms FROM nodes ORDER BY created_wall_ms, label";
// Keeps the first revocation time: a retried revoke must not move it.
constexpr char kRevokeNode[] =
    "UPDATE nodes SET revoked_wall_ms = ?2 WHERE uuid = ?1 AND revoked_wall_ms = 0";
constexpr char kNodeExists[] = "SELECT 1 FROM nodes WHERE uuid = ?1";
// The observations go with it through ON DELETE CASCADE.
constexpr char kDeleteNode[] = "DELETE FROM nodes WHERE uuid = ?1";
constexpr char kSetMeta[] =
    "INSERT INTO meta (key, value) VALUES (?1, ?2)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value";
constexpr char kMeta[] = "SELECT value FROM meta WHERE key = ?1";
constexpr char kPutSeqMark[] =
    "INSERT INTO seq_marks (sender_key_hex, seq) VALUES (?1, ?2)"
    " ON CONFLICT (sender_key_hex) DO UPDATE SET seq = max(seq, excluded.seq)";
constexpr char kSeqMarks[] = "SELECT sender_key_hex, seq FROM seq_marks ORDER BY sender_key_hex";
constexpr char kAddObservation[] =
    "INSERT INTO observations (node_uuid, strategy, state, wall_ms, body_json)"
    " VALUES (?1, ?2, ?3, ?4, ?5)";
// Deletes every row of the node at or below the (keep + 1)-th newest; with fewer rows the
// subquery is NULL and nothing is deleted.
constexpr char kPruneObservations[] =
    "DELETE FROM observations WHERE node_uuid = ?1 AND id <= (SELECT id FROM observations"
    " WHERE node_uuid = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)";
constexpr char kObservations[] =
    "SELECT strategy, state, wall_ms, body_json FROM observations WHERE node_uuid = ?1"
    " ORDER BY id DESC LIMIT ?2";
// Keeps created_wall_ms of an existing row.
constexpr char kPutObject[] =
    "INSERT INTO objects (kind, name, body_json, created_wall_ms, updated_wall_ms)"
    " VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (kind, name) DO UPDATE SET"
    " body_json = excluded.body_json, updated_wall_ms = excluded.updated_wall_ms";
constexpr char kObject[] =
    "SELECT kind, name, body_json, created_wall_ms, updated_wall_ms FROM objects"
    " WHERE kind = ?1 AND name = ?2";
constexpr char kObjects[] =
    "SELECT kind, name, body_json, created_wall_ms, updated_wall_ms FROM objects"
    " WHERE kind = ?1 ORDER BY name";
constexpr char kDeleteObject[] = "DELETE FROM objects WHERE kind = ?1 AND name = ?2";
constexpr char kPutSession[] =
    "INSERT INTO sessions (token_hash, user, created_wall_ms, expires_wall_ms)"
    " VALUES (?1, ?2, ?3, ?4)";
constexpr char kSession[] =
    "SELECT token_hash, user, created_wall_ms, expires_wall_ms FROM sessions"
    " WHERE token_hash = ?1";
constexpr char kDeleteSession[] = "DELETE FROM sessions WHERE token_hash = ?1";
constexpr char kDeleteSessionsOf[] = "DELETE FROM sessions WHERE user = ?1";
constexpr char kDeleteExpiredSessions[] = "DELETE FROM sessions WHERE expires_wall_ms <= ?1";
constexpr char kAddAudit[] =
    "INSERT INTO audit (wall_ms, user, action, resource, result, status, source)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
// As kPruneObservations, over the whole log.
constexpr char kPruneAudit[] =
    "DELETE FROM audit WHERE id <= (SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET ?1)";
constexpr char kAudit[] =
    "SELECT id, wall_ms, user, action, resource, result, status, source FROM audit"
    " WHERE id > ?1 ORDER BY id LIMIT ?2";

// SQLITE_STATIC without its C-style cast: the bound bytes outlive the step, which happens before
// the binding call returns to its caller.
constexpr sqlite3_destructor_type kStatic = nullptr;

Error sqliteError(const std::string& path, sqlite3* db, std::string_view op) {
  std::string out = "store " + path + ": ";
  out += op;
  out += ": ";
  out += sqlite3_errmsg(db);
  return Error{std::move(out)};
}

int64_t clampToInt64(size_t n) {
  constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  return static_cast<int64_t>(std::min<uint64_t>(n, kMax));
}

bool isLowerHex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// A prepared statement in use. Destruction resets it, so no statement keeps a read transaction
// (and its WAL snapshot) open between calls, and clears the bindings, which point at memory the
// caller is about to free.
class Stmt {
 public:
  Stmt(sqlite3_stmt* stmt, sqlite3* db, const std::string& path)
      : stmt_(stmt), db_(db), path_(&path) {}
  Stmt(Stmt&& other) noexcept
      : stmt_(std::exchange(other.stmt_, nullptr)), db_(other.db_), path_(other.path_) {}
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt& operator=(Stmt&&) = delete;
  ~Stmt() {
    if (stmt_ == nullptr) return;
    sqlite3_reset(stmt_);  // returns the last step's error, already reported
    sqlite3_clear_bindings(stmt_);
  }

  // Binds the arguments to ?1, ?2, ... in order.
  template <class... Args>
  Status bind(std::string_view op, const Args&... args) {
    int i = 0;
    int rc = SQLITE_OK;
    ((rc = rc == SQLITE_OK ? bindOne(++i, args) : rc), ...);
    if (rc != SQLITE_OK) return error(op);
    return {};
  }

  // Steps once: true on a row, false when done.
  Result<bool> next(std::string_view op) {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return error(op);
  }

  // Runs a statement that returns no rows. The code of a failure is kept for callers that turn a
  // constraint into a message of their own.
  Status run(std::string_view op) {
    lastCode_ = sqlite3_step(stmt_);
    if (lastCode_ == SQLITE_DONE) return {};
    if (lastCode_ != SQLITE_ROW) return error(op);
    return Error{"store " + *path_ + ": " + std::string(op) + ": unexpected rows"};
  }
  int lastCode() const { return lastCode_; }

  std::string text(int col) const {
    const auto* p = sqlite3_column_text(stmt_, col);
    const int n = sqlite3_column_bytes(stmt_, col);  // after column_text, as SQLite requires
    if (p == nullptr) return {};
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  }
  int64_t int64(int col) const { return sqlite3_column_int64(stmt_, col); }

  Error error(std::string_view op) const { return sqliteError(*path_, db_, op); }

 private:
  int bindOne(int i, std::string_view v) {
    // A null pointer would bind SQL NULL instead of an empty string.
    const char* p = v.data() != nullptr ? v.data() : "";
    return sqlite3_bind_text64(stmt_, i, p, v.size(), kStatic, SQLITE_UTF8);
  }
  int bindOne(int i, int64_t v) { return sqlite3_bind_int64(stmt_, i, v); }

  sqlite3_stmt* stmt_;
  sqlite3* db_;
  const std::string* path_;
  int lastCode_ = SQLITE_OK;
};

}  // namespace

class Store::Impl {
 public:
  Impl(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}
  ~Impl() {
    for (auto& [sql, stmt] : stmts_) sqlite3_finalize(stmt);
    // Every statement is finalized, so the close completes now; as the last connection it also
    // checkpoints the WAL into the database and removes the -wal file.
    sqlite3_close_v2(db_);
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  const std::string& path() const { return path_; }
  sqlite3* db() const { return db_; }

  Error error(std::string_view op) const { return sqliteError(path_, db_, op); }
  Error refuse(std::string_view why) const {
    return Error{"store " + path_ + ": " + std::string(why) + "; refusing to open it"};
  }
  // Migrating down is not possible and writing with an older schema could lose what the newer
  // one keeps. Names the running program ("ring0d"), which is what the operator must upgrade.
  Error refuseNewer(int64_t version) const {
    return refuse("schema version " + std::to_string(version) + " is newer than this " +
                  program_invocation_short_name + " understands (" +
                  std::to_string(Store::kSchemaVersion) + ")");
  }

  // The cached statement for `sql` (one of the constants above), prepared on first use.
  Result<Stmt> prepare(const char* sql) {
    auto it = stmts_.find(sql);
    if (it == stmts_.end()) {
      sqlite3_stmt* stmt = nullptr;
      if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) !=
          SQLITE_OK) {
        return error(std::string("prepare '") + sql + "'");
      }
      it = stmts_.emplace(sql, stmt).first;
    }
    return Stmt(it->second, db_, path_);
  }

  // For the statements of open(): pragmas and migrations, run once, so not cached.
  Status exec(const char* sql, std::string_view op) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return error(op);
    return {};
  }
  // The first column of every row of a statement run once.
  Result<std::vector<std::string>> queryOnce(const char* sql, std::string_view op, int* code) {
    sqlite3_stmt* raw = nullptr;
    *code = sqlite3_prepare_v2(db_, sql, -1, &raw, nullptr);
    if (*code != SQLITE_OK) return error(op);
    std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> stmt(raw, sqlite3_finalize);
    std::vector<std::string> rows;
    while ((*code = sqlite3_step(raw)) == SQLITE_ROW) {
      const auto* p = sqlite3_column_text(raw, 0);
      rows.emplace_back(p == nullptr ? "" : reinterpret_cast<const char*>(p));
    }
    if (*code != SQLITE_DONE) return error(op);
    *code = SQLITE_OK;
    return rows;
  }
  Result<int64_t> readUserVersion(std::string_view op, int* code) {
    auto rows = queryOnce("PRAGMA user_version", op, code);
    if (!rows.ok()) return rows.error();
    int64_t v = 0;
    const std::string& text = rows->empty() ? std::string() : rows->front();
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (rows->size() != 1 || ec != std::errc() || end != text.data() + text.size()) {
      return Error{"store " + path_ + ": " + std::string(op) + ": unexpected answer"};
    }
    return v;
  }

  // The node selected by `sql` (one of the kNodeBy* constants) with `key` bound to ?1.
  Result<std::optional<NodeRecord>> nodeBy(const char* sql, std::string_view key,
                                           std::string_view op);

  class Txn;

  int schemaVersion = 0;
  // True while a Txn that ran BEGIN is alive: a Txn begun then joins it.
  bool inTxn = false;

 private:
  std::string path_;
  sqlite3* db_;
  std::unordered_map<const char*, sqlite3_stmt*> stmts_;
};

// BEGIN IMMEDIATE takes the write lock at once, so a write never fails half-way with
// SQLITE_BUSY on lock upgrade. Rolls back on destruction unless committed.
//
// Nests: a Txn begun while another is alive (inside Store::atomically) is a member of the outer
// one: its commit and its destruction do nothing, and the outer one decides. A failed inner step
// is therefore undone only if the failure reaches the outer one, which is what atomically()
// does with the error its body returns.
class Store::Impl::Txn {
 public:
  static Result<Txn> begin(Impl& impl, std::string_view op) {
    if (impl.inTxn) return Txn(impl, /*outer=*/false);
    auto stmt = impl.prepare(kBegin);
    if (!stmt.ok()) return stmt.error();
    if (auto st = stmt->run(op); !st.ok()) return st.error();
    impl.inTxn = true;
    return Txn(impl, /*outer=*/true);
  }
  Txn(Txn&& other) noexcept
      : impl_(std::exchange(other.impl_, nullptr)), outer_(other.outer_) {}
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  Txn& operator=(Txn&&) = delete;
  ~Txn() {
    if (impl_ == nullptr || !outer_) return;
    impl_->inTxn = false;
    // SQLite may have rolled back by itself after some errors; only an open transaction needs
    // it. A failed rollback leaves nothing to do: the next BEGIN reports the state.
    if (sqlite3_get_autocommit(impl_->db())) return;
    if (auto stmt = impl_->prepare(kRollback); stmt.ok()) (void)stmt->run("rollback");
  }

  Status commit(std::string_view op) {
    if (!outer_) {
      impl_ = nullptr;
      return {};
    }
    auto stmt = impl_->prepare(kCommit);
    if (!stmt.ok()) return stmt.error();
    if (auto st = stmt->run(op); !st.ok()) return st.error();
    impl_->inTxn = false;
    impl_ = nullptr;
    return {};
  }

 private:
  Txn(Impl& impl, bool outer) : impl_(&impl), outer_(outer) {}

  Impl* impl_;
  bool outer_;
};

namespace {

NodeRecord readNode(const Stmt& s) {
  NodeRecord n;
  n.uuid = s.text(0);
  n.ring = static_cast<int>(s.int64(1));
  n.label = s.text(2);
  n.supervisionStrategy = s.text(3);
  n.compartment = s.text(4);
  n.publicKeyHex = s.text(5);
  n.specJson = s.text(6);
  n.createdWallMs = s.int64(7);
  n.revokedWallMs = s.int64(8);
  return n;
}

}  // namespace

Result<std::optional<NodeRecord>> Store::Impl::nodeBy(const char* sql, std::string_view key,
                                                     std::string_view op) {
  auto s = prepare(sql);
  if (!s.ok()) return s.error();
  if (auto st = s->bind(op, key); !st.ok()) return st.error();
  auto row = s->next(op);
  if (!row.ok()) return row.error();
  if (!*row) return std::optional<NodeRecord>();
  return std::optional<NodeRecord>(readNode(*s));
}

Result<std::unique_ptr<Store>> Store::open(const std::string& path) {
  const std::string what = "store " + path;
  // Create the file ourselves so it is 0600 from its first byte (SQLite would create it with
  // 0644 less the umask). O_NOFOLLOW: a symbolic link planted at `path` would send our writes to
  // wherever it points. O_NONBLOCK: opening a FIFO must not hang; it is refused below.
  {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
                       0600));
    if (!fd) {
      if (errno == ELOOP) return Error{what + ": is a symbolic link; refusing to open it"};
      return errnoError(what + ": open", errno);
    }
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return errnoError(what + ": fstat", errno);
    if (!S_ISREG(st.st_mode)) return Error{what + ": is not a regular file; refusing to open it"};
    // Also narrows a new file the umask left at 0400, and an old one others could read.
    if ((st.st_mode & 07777) != 0600 && ::fchmod(fd.get(), 0600) != 0) {
      return errnoError(what + ": chmod 0600", errno);
    }
    // Closed before SQLite opens the file: closing any descriptor of a file drops every POSIX
    // lock this process holds on it, SQLite's included.
  }

  sqlite3* raw = nullptr;
  // Without SQLITE_OPEN_CREATE: the file exists now, and must still be the one checked above
  // (SQLITE_OPEN_NOFOLLOW refuses a symbolic link swapped in since).
  const int rc = sqlite3_open_v2(path.c_str(), &raw,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (raw == nullptr) return Error{what + ": open: out of memory"};
  auto impl = std::make_unique<Impl>(path, raw);
  if (rc != SQLITE_OK) return impl->error("open");
  sqlite3_extended_result_codes(raw, 1);
  if (sqlite3_busy_timeout(raw, 5000) != SQLITE_OK) return impl->error("set busy timeout");

  // Everything up to the journal mode only reads: a file we refuse is left as it was. (Reading
  // may still roll back a hot journal or recover a WAL left by a crash: that is SQLite finishing
  // its own work, not a change of ours.)
  int code = SQLITE_OK;
  auto version = impl->readUserVersion("read schema version", &code);
  if (!version.ok()) {
    if (code == SQLITE_NOTADB) return impl->refuse("not a SQLite database");
    if ((code & 0xff) == SQLITE_CORRUPT) {
      return impl->refuse(std::string("the database is corrupt: ") + sqlite3_errmsg(raw));
    }
    return version.error();
  }
  if (*version > kSchemaVersion) {
    return impl->refuseNewer(*version);
  }
  if (*version < 0) {
    return impl->refuse("schema version " + std::to_string(*version) + " is not valid");
  }
  // quick_check reads every page (O(size), fine at this size) but skips the index-content
  // cross-checks of integrity_check. Corruption found now is refused; found later, a write could
  // spread it.
  auto check = impl->queryOnce("PRAGMA quick_check", "quick_check", &code);
  if (!check.ok()) {
    if ((code & 0xff) == SQLITE_CORRUPT || code == SQLITE_NOTADB) {
      return impl->refuse(std::string("the database is corrupt: ") + sqlite3_errmsg(raw));
    }
    return check.error();
  }
  if (check->size() != 1 || check->front() != "ok") {
    // One line for the error: the first problems, without the "*** in database main ***"
    // heading SQLite puts before them.
    std::string found;
    size_t shown = 0;
    for (const auto& row : *check) {
      size_t start = 0;
      while (start <= row.size() && shown < 3) {
        size_t end = row.find('\n', start);
        if (end == std::string::npos) end = row.size();
        std::string_view line(row.data() + start, end - start);
        if (!line.empty() && !line.starts_with("*** ")) {
          if (shown++ > 0) found += "; ";
          found += line;
        }
        start = end + 1;
      }
    }
    return impl->refuse("the database fails quick_check: " + found);
  }
  if (*version == 0) {
    // Version 0 with objects in it is somebody else's database: our migration would add tables
    // to it, or fail on a table name it shares.
    auto objects = impl->queryOnce("SELECT count(*) FROM sqlite_schema", "list schema", &code);
    if (!objects.ok()) return objects.error();
    if (objects->size() != 1 || objects->front() != "0") {
      return impl->refuse("it holds tables but no schema version, so it is not an enjin store");
    }
  }

  auto mode = impl->queryOnce("PRAGMA journal_mode = WAL", "set journal_mode", &code);
  if (!mode.ok()) return mode.error();
  if (mode->size() != 1 || (*mode)[0] != "wal") {
    return Error{what + ": journal_mode: WAL refused (mode is " +
                 (mode->empty() ? std::string("unknown") : (*mode)[0]) + ")"};
  }
  if (auto st = impl->exec("PRAGMA synchronous = NORMAL", "set synchronous"); !st.ok()) {
    return st.error();
  }
  // Outside any transaction, where the pragma takes effect. deleteNode relies on the cascade, so
  // a build of SQLite without foreign keys (where the pragma is silently ignored) is refused.
  if (auto st = impl->exec("PRAGMA foreign_keys = ON", "set foreign_keys"); !st.ok()) {
    return st.error();
  }
  auto fk = impl->queryOnce("PRAGMA foreign_keys", "read foreign_keys", &code);
  if (!fk.ok()) return fk.error();
  if (fk->size() != 1 || (*fk)[0] != "1") {
    return Error{what + ": this SQLite does not enforce foreign keys"};
  }

  // One transaction per migration, with the version read again inside it: another process that
  // opened the same file at the same moment may have migrated it already.
  for (;;) {
    auto txn = Impl::Txn::begin(*impl, "migrate");
    if (!txn.ok()) return txn.error();
    auto current = impl->readUserVersion("read schema version", &code);
    if (!current.ok()) return current.error();
    if (*current > kSchemaVersion) {
      return impl->refuseNewer(*current);
    }
    if (*current == kSchemaVersion) {
      impl->schemaVersion = kSchemaVersion;
      if (auto st = txn->commit("commit"); !st.ok()) return st.error();
      break;
    }
    const int next = static_cast<int>(*current) + 1;
    const std::string op = "migrate to schema " + std::to_string(next);
    if (auto st = impl->exec(kMigrations[*current], op); !st.ok()) return st.error();
    // A pragma takes no bound parameters; the number is ours.
    const std::string bump = "PRAGMA user_version = " + std::to_string(next);
    if (auto st = impl->exec(bump.c_str(), op); !st.ok()) return st.error();
    if (auto st = txn->commit(op); !st.ok()) return st.error();
  }
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

int Store::schemaVersion() const { return impl_->schemaVersion; }
const std::string& Store::path() const { return impl_->path(); }

Status Store::putNode(const NodeRecord& node) {
  const std::string op = "put node '" + node.uuid + "'";
  auto invalid = [&](std::string_view why) {
    return Error{"store " + impl_->path() + ": " + op + ": " + std::string(why)};
  };
  if (node.uuid.empty()) return invalid("the uuid is empty");
  if (node.label.empty()) return invalid("the label is empty");
  if (node.ring != 1 && node.ring != 2) {
    return invalid("ring " + std::to_string(node.ring) + " is not 1 or 2");
  }
  if (!isLowerHex64(node.publicKeyHex)) {
    return invalid("the public key is not 64 lowercase hex digits");
  }
  {
    auto s = impl_->prepare(kPutNode);
    if (!s.ok()) return s.error();
    if (auto st = s->bind(op, node.uuid, int64_t{node.ring}, node.label,
                          node.supervisionStrategy, node.compartment, node.publicKeyHex,
                          node.specJson, node.createdWallMs, node.revokedWallMs);
        !st.ok()) {
      return st;
    }
    auto st = s->run(op);
    if (st.ok() || s->lastCode() != SQLITE_CONSTRAINT_UNIQUE) return st;
  }
  // The upsert resolves a clash on the uuid, so a unique failure is the label. Named here, once
  // the statement above is reset.
  auto holder = nodeByLabel(node.label);
  std::string who = holder.ok() && *holder ? "node '" + (*holder)->uuid + "'" : "another node";
  return invalid("label '" + node.label + "' is already used by " + who);
}

Result<std::optional<NodeRecord>> Store::nodeByLabel(std::string_view label) const {
  return impl_->nodeBy(kNodeByLabel, label, "read node labelled '" + std::string(label) + "'");
}

Result<std::optional<NodeRecord>> Store::nodeByUuid(std::string_view uuid) const {
  return impl_->nodeBy(kNodeByUuid, uuid, "read node '" + std::string(uuid) + "'");
}

Result<std::vector<NodeRecord>> Store::nodes() const {
  auto s = impl_->prepare(kNodes);
  if (!s.ok()) return s.error();
  std::vector<NodeRecord> out;
  for (;;) {
    auto row = s->next("list nodes");
    if (!row.ok()) return row.error();
    if (!*row) break;
    out.push_back(readNode(*s));
  }
  return out;
}

Status Store::revokeNode(std::string_view uuid, int64_t wallMs) {
  const std::string op = "revoke node '" + std::string(uuid) + "'";
  if (wallMs <= 0) {
    return Error{"store " + impl_->path() + ": " + op + ": time " + std::to_string(wallMs) +
                 " is not positive"};
  }
  {
    auto s = impl_->prepare(kRevokeNode);
    if (!s.ok()) return s.error();
    if (auto st = s->bind(op, uuid, wallMs); !st.ok()) return st;
    if (auto st = s->run(op); !st.ok()) return st;
    if (sqlite3_changes(impl_->db()) > 0) return {};
  }
  // Nothing updated: either no such node, or already revoked (which is fine).
  auto s = impl_->prepare(kNodeExists);
  if (!s.ok()) return s.error();
  if (auto st = s->bind(op, uuid); !st.ok()) return st;
  auto row = s->next(op);
  if (!row.ok()) return row.error();
  if (!*row) return Error{"store " + impl_->path() + ": " + op + ": no such node"};
  return {};
}

Status Store::deleteNode(std::string_view uuid) {
  const std::string op = "delete node '" + std::string(uuid) + "'";
  auto s = impl_->prepare(kDeleteNode);
  if (!s.ok()) return s.error();
  if (auto st = s->bind(op, uuid); !st.ok()) return st;
  return s->run(op);
}

Status Store::setMeta(std::string_view key, std::string_view value) {
  const std::string op = "set meta '" + std::string(key) + "'";
  auto s = impl_->prepare(kSetMeta);
  if (!s.ok()) return s.error();
  if (auto st = s->bind(op, key, value); !st.ok()) return st;
  return s->run(op);
}

Result<std::optional<std::string>> Store::meta(std::string_view key) const {
  const std::string op = "read meta '" + std::string(key) + "'";
  auto s = impl_->prepare(kMeta);
  if (!s.ok()) return s.error();
  if (auto st = s->bind(op, key); !st.ok()) return st.error();
  auto row = s->next(op);
  if (!row.ok()) return row.error();
  if (!*row) return std::optional<std::string>();
  return std::optional<std::string>(s->text(0));
}

Status Store::putSeqMarks(const std::vector<std::pair<std::string, uint64_t>>& marks) {
  constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  // Checked before the transaction, so a refused batch writes nothing.
  for (const auto& [key, seq] : marks) {
    if (seq > kMax) {
      return Error{"store " + impl_->path() + ": put seq mark of " + key + ": seq " +
                   std::to_string(seq) + " is above 2^63-1, the largest SQLite stores"};
    }
  }
  if (marks.empty()) return {};
  auto txn = Impl::Txn::begin(*impl_, "put seq marks");
  if (!txn.ok()) return txn.error();
  for (const auto& [key, seq] : marks) {
    const std::string op = "put seq mark of " + key;
    auto s = impl_->prepare(kPutSeqMark);
    if (!s.ok()) return s.error();
    if (auto st = s->bind(op, key, static_cast<int64_t>(seq)); !st.ok()) return st;
    if (auto st = s->run(op); !st.ok()) return st;
  }
  return txn->commit("put seq marks");
}

Result<std::vector<std::pair<std::string, uint64_t>>> Store::seqMarks() const {
  auto s = impl_->prepare(kSeqMarks);
  if (!s.ok()) return s.error();
  std::vector<std::pair<std::string, uint64_t>> out;
  for (;;) {
    auto row = s->next("read seq marks");
    if (!row.ok()) return row.error();
    if (!*row) break;
    const int64_t seq = s->int64(1);
    // putSeqMarks never writes one; returning it as a huge uint64 would block the sender forever.
    if (seq < 0) {
      return Error{"store " + impl_->path() + ": read seq marks: negative seq " +
                   std::to_string(seq) + " for " + s->text(0)};
    }
    out.emplace_back(s->text(0), static_cast<uint64_t>(seq));
  }
  return out;
}

Status Store::addObservation(const ObservationRecord& obs, size_t keepPerNode) {
  const std::string op = "add observation of node '" + obs.nodeUuid + "'";
  // Insert and prune together: a crash between them must not leave the history over its bound.
  auto txn = Impl::Txn::begin(*impl_, op);
  if (!txn.ok()) return txn.error();
  {
    auto s = impl_->prepare(kAddObservation);
    if (!s.ok()) return s.error();
    if (auto st = s->bind(op, obs.nodeUuid, obs.strategy, obs.state, obs.wallMs, obs.bodyJson);
        !st.ok()) {
      return st;
    }
    if (auto st = s->run(op); !st.ok()) {
      if (s->lastCode() == SQLITE_CONSTRAINT_FOREIGNKEY) {
        return Error{"store " + impl_->path() + ": " + op + ": no such node"};
      }
      return st;
    }
  }
  {
    auto s = impl_->prepare(kPruneObservations);
    if (!s.ok()) return s.error();
    if (auto st = s->bind(op, obs.nodeUuid, clampToInt64(keepPerNode)); !st.ok()) return st;
    if (auto st = s->run(op); !st.ok()) return st;
  }
  return txn->commit(op);
}

Result<std::vector<ObservationRecord>> Store::observations(std::string_view nodeUuid,
                                                           size_t limit) const {
  const std::string op = "read observations of node '" + std::string(nodeUuid) + "'";
  auto s = impl_->prepare(kObservations);
  if (!s.ok()) return s.error();
  if (auto st = s->bind(op, nodeUuid, clampToInt64(limit)); !st.ok()) return st.error();
  std::vector<ObservationRecord> out;
  for (;;) {
    auto row = s->next(op);
    if (!row.ok()) return row.error();
    if (!*row) break;
    out.push_back(ObservationRecord{std::string(nodeUuid), s->text(0), s->text(1), s->int64(2),
                                    s->text(3)});
  }
  return out;
}

namespace {

ObjectRecord readObject(const Stmt& s) {
  return ObjectRecord{s.text(0), s.text(1), s.text(2), s.int64(3), s.int64(4)};
}

AuditRecord readAudit(const Stmt& s) {
  return AuditRecord{s.int64(0), s.int64(1), s.text(2), s.text(3), s.text(4),
                     s.text(5),  static_cast<int>(s.int64(6)), s.text(7)};
}

std::string objectOp(std::string_view verb, std::string_view kind, std::string_view name) {
  std::string op(verb);
  op += ' ';
  op += kind;
  op += " '";
  op += name;
  op += '\'';
  return op;
}

}  // namespace

Status Store::putObject(std::string_view kind, std::string_view name, std::string_view bodyJson,
                        int64_t wallMs) {
  const std::string op = objectOp("put", kind, name);
  if (kind.empty() || name.empty()) {
    return Error{"store " + impl_->path() + ": " + op + ": the kind and the name must not be empty"};
  }
  auto s = impl_->prepare(kPutObject);
  if (!s.ok()) return s.error();
  if (auto st = s->bind(op, kind, name, bodyJson, wallMs); !st.ok()) return st;
  return s->run(op);
}

Result<std::optional<ObjectRecord>> Store::object(std::string_view kind,
                                                  std::string_view name) const {
  const std::string op = objectOp("read", kind, name);
  auto s = impl_->prepare(kObject);
  if (!s.ok()) return s.error();
  if (auto st = s->bind(op, kind, name); !st.ok()) return st.error();
  auto row = s->next(op);
  if (!row.ok()) return row.error();
  if (!*row) return std::optional<ObjectRecord>();
  return std::optional<ObjectRecord>(readObject(*s));
}

Result<std::vector<ObjectRecord>> Store::objects(std::string_view kind) const {
  const std::string op = "list " + std::string(kind) + " objects";
  auto s = impl_->prepare(kObjects);
  if (!s.ok()) return s.error();
  if (auto st = s->bind(op, kind); !st.ok()) return st.error();
  std::vector<ObjectRecord> out;
  for (;;) {
    auto row = s->next(op);
    if (!row.ok()) return row.error();
    if (!*row) break;
    out.push_back(readObject(*s));
  }
  return out;
}

Result<bool> Store::deleteObject(std::string_view kind, std::string_view name) {
  const std::string op = objectOp("delete", kind, name);
  auto s = impl_->prepare(kDeleteObject);
  if (!s.ok()) return s.error();
  if (auto st = s->bind(op, kind, name); !st.ok()) return st.error();
  if (auto st = s->run(op); !st.ok()) return st.error();
  return sqlite3_changes(impl_->db()) > 0;
}

Status Store::putSession(const SessionRecord& session) {
  const std::string op = "put session of user '" + session.user + "'";
  if (session.tokenHash.empty()) {
    return Error{"store " + impl_->path() + ": " + op + ": the token hash is empty"};
  }
  auto s = impl_->prepare(kPutSession);
  if (!s.ok()) return s.error();
  if (auto st = s->bind(op, session.tokenHash, session.user, session.createdWallMs,
                        session.expiresWallMs);
      !st.ok()) {
    return st;
  }
  auto st = s->run(op);
  // The hash names a secret: not in the message.
  if (!st.ok() && s->lastCode() == SQLITE_CONSTRAINT_PRIMARYKEY) {
    return Error{"store " + impl_->path() + ": " + op + ": the token hash is already stored"};
  }
  return st;
}

Result<std::optional<SessionRecord>> Store::session(std::string_view tokenHash) const {
  const std::string op = "read session";
  auto s = impl_->prepare(kSession);
  if (!s.ok()) return s.error();
  if (auto st = s->bind(op, tokenHash); !st.ok()) return st.error();
  auto row = s->next(op);
  if (!row.ok()) return row.error();
  if (!*row) return std::optional<SessionRecord>();
  return std::optional<SessionRecord>(
      SessionRecord{s->text(0), s->text(1), s->int64(2), s->int64(3)});
}

Result<bool> Store::deleteSession(std::string_view tokenHash) {
  const std::string op = "delete session";
  auto s = impl_->prepare(kDeleteSession);
  if (!s.ok()) return s.error();
  if (auto st = s->bind(op, tokenHash); !st.ok()) return st.error();
  if (auto st = s->run(op); !st.ok()) return st.error();
  return sqlite3_changes(impl_->db()) > 0;
}

Result<size_t> Store::deleteSessionsOf(std::string_view user) {
  const std::string op = "delete sessions of user '" + std::string(user) + "'";
  auto s = impl_->prepare(kDeleteSessionsOf);
  if (!s.ok()) return s.error();
  if (auto st = s->bind(op, user); !st.ok()) return st.error();
  if (auto st = s->run(op); !st.ok()) return st.error();
  return static_cast<size_t>(sqlite3_changes64(impl_->db()));
}

Result<size_t> Store::deleteExpiredSessions(int64_t nowWallMs) {
  const std::string op = "delete expired sessions";
  auto s = impl_->prepare(kDeleteExpiredSessions);
  if (!s.ok()) return s.error();
  if (auto st = s->bind(op, nowWallMs); !st.ok()) return st.error();
  if (auto st = s->run(op); !st.ok()) return st.error();
  return static_cast<size_t>(sqlite3_changes64(impl_->db()));
}

Result<int64_t> Store::addAudit(const AuditRecord& record, size_t keep) {
  const std::string op = "add audit entry";
  // Insert and prune together, as addObservation does.
  auto txn = Impl::Txn::begin(*impl_, op);
  if (!txn.ok()) return txn.error();
  int64_t id = 0;
  {
    auto s = impl_->prepare(kAddAudit);
    if (!s.ok()) return s.error();
    if (auto st = s->bind(op, record.wallMs, record.user, record.action, record.resource,
                          record.result, int64_t{record.status}, record.source);
        !st.ok()) {
      return st.error();
    }
    if (auto st = s->run(op); !st.ok()) return st.error();
    id = sqlite3_last_insert_rowid(impl_->db());
  }
  {
    auto s = impl_->prepare(kPruneAudit);
    if (!s.ok()) return s.error();
    // Everything at or below the (keep + 1)-th newest goes; a keep of 0 would delete the new row.
    if (auto st = s->bind(op, clampToInt64(std::max<size_t>(keep, 1))); !st.ok()) {
      return st.error();
    }
    if (auto st = s->run(op); !st.ok()) return st.error();
  }
  if (auto st = txn->commit(op); !st.ok()) return st.error();
  return id;
}

Result<std::vector<AuditRecord>> Store::audit(int64_t afterId, size_t limit) const {
  const std::string op = "read audit log";
  auto s = impl_->prepare(kAudit);
  if (!s.ok()) return s.error();
  if (auto st = s->bind(op, afterId, clampToInt64(limit)); !st.ok()) return st.error();
  std::vector<AuditRecord> out;
  for (;;) {
    auto row = s->next(op);
    if (!row.ok()) return row.error();
    if (!*row) break;
    out.push_back(readAudit(*s));
  }
  return out;
}

Status Store::atomically(const std::function<Status()>& body) {
  auto txn = Impl::Txn::begin(*impl_, "begin transaction");
  if (!txn.ok()) return txn.error();
  if (auto st = body(); !st.ok()) return st;  // the Txn rolls back (when it is the outer one)
  return txn->commit("commit transaction");
}

}  // namespace enjin::store
