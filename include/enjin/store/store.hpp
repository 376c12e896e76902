// A daemon's durable state in one SQLite file: the nodes it supervises, small named values, the
// last accepted seq per sender, a bounded history of observations and, for the control plane,
// named JSON objects by kind, login sessions and a bounded audit log.
//
// Used from one thread (the reactor's). Every method runs to completion before it returns: a
// write is committed (WAL, synchronous=NORMAL: durable against a crash of the process; a power
// cut may lose the last commits but never corrupts the file), a read leaves no transaction open.
// Errors name the file and the operation: "store /x/ring0.db: put node 'web-1': ...".
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "enjin/base/result.hpp"

namespace enjin::store {

struct NodeRecord {
  std::string uuid;                 // primary key
  int ring = 0;                     // the ring the node runs at (1 or 2)
  std::string label;                // unique among the nodes of one store
  std::string supervisionStrategy;  // "exec", "unix-user", ...
  std::string compartment;          // "" when none
  std::string publicKeyHex;         // 64 lowercase hex
  std::string specJson;             // the desired state the parent publishes for it
  int64_t createdWallMs = 0;
  int64_t revokedWallMs = 0;        // 0 = not revoked
  bool operator==(const NodeRecord&) const = default;
};

struct ObservationRecord {
  std::string nodeUuid;
  std::string strategy;  // "process", "heartbeat", ...
  std::string state;     // "ready", "lost", ...
  int64_t wallMs = 0;
  std::string bodyJson;
};

// A named JSON object of one kind ("user", "role", ...); the store does not read the body.
struct ObjectRecord {
  std::string kind;
  std::string name;
  std::string bodyJson;
  int64_t createdWallMs = 0;  // set by the first put, kept by the later ones
  int64_t updatedWallMs = 0;  // the time of the last put
  bool operator==(const ObjectRecord&) const = default;
};

// A login session, keyed by the hash of its token (the token itself is never stored).
struct SessionRecord {
  std::string tokenHash;
  std::string user;
  int64_t createdWallMs = 0;
  int64_t expiresWallMs = 0;
  bool operator==(const SessionRecord&) const = default;
};

// One request the control plane answered.
struct AuditRecord {
  int64_t id = 0;        // set by addAudit: the insertion order
  int64_t wallMs = 0;
  std::string user;      // "" when not authenticated
  std::string action;    // "nodes:create", ...
  std::string resource;  // "ring1/web-1", ...
  std::string result;    // "allowed", "denied", "failed", ...
  int status = 0;        // the HTTP status answered
  std::string source;    // the peer address
  bool operator==(const AuditRecord&) const = default;
};

class Store {
 public:
  static constexpr int kSchemaVersion = 2;

  // Opens or creates the database at `path` (mode 0600, parent dir must exist): WAL mode,
  // synchronous=NORMAL, foreign keys on, busy timeout 5 s, then applies the versioned
  // migrations up to kSchemaVersion inside one transaction each (PRAGMA user_version holds the
  // version). Refuses, with a clear error and without writing anything: a file that is not a
  // SQLite database or fails `PRAGMA quick_check`, and a schema version newer than kSchemaVersion.
  // Also refuses a symbolic link and anything but a regular file. An existing file readable by
  // others is narrowed to 0600 before it is read (its content is not touched).
  static Result<std::unique_ptr<Store>> open(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  int schemaVersion() const;
  const std::string& path() const;

  // Insert or replace by uuid. A label already held by another uuid is refused and names it.
  // The uuid and label must not be empty, the ring is 1 or 2, the key 64 lowercase hex.
  Status putNode(const NodeRecord& node);
  Result<std::optional<NodeRecord>> nodeByLabel(std::string_view label) const;
  Result<std::optional<NodeRecord>> nodeByUuid(std::string_view uuid) const;
  // Ordered by createdWallMs, then label.
  Result<std::vector<NodeRecord>> nodes() const;
  // Error if no such node. `wallMs` must be positive (0 means "not revoked"); revoking a revoked
  // node again succeeds and keeps the first revocation time, so a retried revoke is harmless.
  Status revokeNode(std::string_view uuid, int64_t wallMs);
  // Also deletes its observations. Deleting an unknown uuid succeeds (idempotent).
  Status deleteNode(std::string_view uuid);

  // Small named values (the node's own identity, the last desired spec received, ...).
  Status setMeta(std::string_view key, std::string_view value);
  Result<std::optional<std::string>> meta(std::string_view key) const;

  // Last accepted seq per sender key (hex), so a restarted receiver refuses replays. All marks
  // are written in one transaction and a stored mark never goes down (the max is kept). Seqs
  // above 2^63-1 (SQLite integers are signed 64-bit) are refused, and then nothing is written.
  Status putSeqMarks(const std::vector<std::pair<std::string, uint64_t>>& marks);
  // Ordered by key.
  Result<std::vector<std::pair<std::string, uint64_t>>> seqMarks() const;

  // A bounded history: after the insert only the newest `keepPerNode` rows of that node remain.
  // The node must exist. "Newest" is the order of insertion, not wallMs: the wall clock can go
  // back.
  Status addObservation(const ObservationRecord& obs, size_t keepPerNode = 200);
  // Newest first, at most `limit`.
  Result<std::vector<ObservationRecord>> observations(std::string_view nodeUuid,
                                                      size_t limit) const;

  // Named objects. putObject inserts, or replaces the body of an existing (kind, name) and sets
  // its updatedWallMs; createdWallMs stays that of the first put. Kind and name must not be
  // empty.
  Status putObject(std::string_view kind, std::string_view name, std::string_view bodyJson,
                   int64_t wallMs);
  Result<std::optional<ObjectRecord>> object(std::string_view kind, std::string_view name) const;
  // Every object of `kind`, ordered by name (bytewise).
  Result<std::vector<ObjectRecord>> objects(std::string_view kind) const;
  // True if it existed.
  Result<bool> deleteObject(std::string_view kind, std::string_view name);

  // Sessions. A token hash already stored is refused (and the stored session left as it was).
  Status putSession(const SessionRecord& session);
  // Returns the session even when expired: the caller decides with its own clock.
  Result<std::optional<SessionRecord>> session(std::string_view tokenHash) const;
  // True if it existed.
  Result<bool> deleteSession(std::string_view tokenHash);
  // The number deleted.
  Result<size_t> deleteSessionsOf(std::string_view user);
  // Deletes the sessions with expiresWallMs <= nowWallMs; the number deleted.
  Result<size_t> deleteExpiredSessions(int64_t nowWallMs);

  // Appends to the audit log (record.id is ignored) and returns the new id; afterwards only the
  // newest `keep` entries remain (at least the new one: a keep of 0 counts as 1, so ids keep
  // growing and a reader paging with afterId never sees one twice).
  Result<int64_t> addAudit(const AuditRecord& record, size_t keep = 100'000);
  // The entries with id > afterId, oldest first, at most `limit`.
  Result<std::vector<AuditRecord>> audit(int64_t afterId, size_t limit) const;

  // Runs `body` inside one transaction: everything it writes through this store is committed
  // together when it succeeds, and nothing is when it fails (its error is returned as it is).
  // The Store methods called from `body` join this transaction instead of opening their own; a
  // nested atomically() joins it too. A Store method failing inside `body` undoes nothing by
  // itself: returning its error from `body` is what rolls the whole transaction back.
  Status atomically(const std::function<Status()>& body);

 private:
  class Impl;
  explicit Store(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace enjin::store
