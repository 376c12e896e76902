// The control plane's object model on top of the store: users, roles, memberships, access rule
// sets, compartments, networks and network interfaces, with the shape of each kind's body, the
// references between them and what a delete may take along; and the login sessions.
//
// Used from one thread. Every call that writes runs in one store transaction (Store::atomically),
// so a reference checked is still there when the write commits, and a failure writes nothing.
// Errors carry the HTTP status the API answers with: 400 a body of the wrong shape, 404 no such
// object, 405 a change the kind does not allow, 409 a conflict with what is stored (a name taken,
// a reference to nothing, a cycle, an object still referenced). Messages name the object and the
// cause: "role 'ops': rule_sets: access rule set 'net' does not exist".
//
// Objects are stored as JSON under the kind's singular name ("user", "access-rule-set", ...)
// and returned as the API shows them: the body without secrets, plus "created_at" and
// "updated_at" (RFC 3339, UTC, milliseconds).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "enjin/base/clock.hpp"
#include "enjin/base/result.hpp"
#include "enjin/store/store.hpp"

namespace enjin::directory {

enum class Kind { kUser, kRole, kMembership, kRuleSet, kCompartment, kNetwork, kNetworkInterface };

// The URL collection names: "users", "roles", "memberships", "access-rule-sets", "compartments",
// "networks", "network-interfaces". nullopt for any other.
std::optional<Kind> kindFromCollection(std::string_view collection);
std::string_view collectionName(Kind kind);
// For messages: "user", "role", "membership", "access rule set", "compartment", "network",
// "network interface".
std::string_view singularName(Kind kind);

// Object names: 1 to 64 of A-Z a-z 0-9 _ . -
bool validObjectName(std::string_view name);

// The isolation strengths a compartment may demand (its optional "min_isolation"), weakest first:
// "exec", "unix-user", "sandbox", "vm", as supervise::isolationName() spells them.
std::span<const std::string_view> isolationLevels();
// The index of `name` in isolationLevels(); -1 for any other.
int isolationRank(std::string_view name);

// RFC 3339 in UTC with milliseconds: "2023-11-14T22:13:20.000Z".
std::string rfc3339(int64_t wallMs);
// A time as the API takes it: RFC 3339 in UTC ("2023-11-14T22:13:20Z", fractions of a second
// allowed) or milliseconds since the epoch ("1700000000000"); nullopt for anything else.
std::optional<int64_t> parseTime(std::string_view text);

class Directory {
 public:
  // Both must outlive the directory. The clock gives the objects' times and decides expiry.
  Directory(store::Store& store, const Clock& clock);

  // Checks the body's shape for the kind and its references; stores it; returns the stored
  // object as the API shows it. An existing name is 409.
  Result<nlohmann::json> create(Kind kind, const nlohmann::json& body);
  // 404 if none.
  Result<nlohmann::json> get(Kind kind, std::string_view name) const;
  // A JSON array, ordered by name.
  Result<nlohmann::json> list(Kind kind) const;
  // Replaces the body of an existing object (404 if none), checked as for create; the body may
  // leave out "name", and naming another one is 400. A user's body may leave out password_hash,
  // which keeps the stored one; giving one ends every session of that user. Memberships cannot
  // be changed (405).
  Result<nlohmann::json> update(Kind kind, std::string_view name, const nlohmann::json& body);
  // 404 if none; 409 if still referenced, naming who. A user goes with its memberships and
  // sessions.
  Status remove(Kind kind, std::string_view name);

  // A compartment's effective minimum isolation: the strongest min_isolation of itself and its
  // ancestors (every compartment reached through parent_compartment), and the compartment that
  // demands it. level "" (and from "") when none does. 404 if the compartment does not exist.
  struct IsolationDemand {
    std::string level;  // an isolationLevels() name, or ""
    std::string from;   // the compartment whose min_isolation it is
  };
  Result<IsolationDemand> minIsolation(std::string_view compartment) const;

  // The stored argon2id hash of `user`; nullopt if no such user. (The API hashes and verifies
  // on a thread of its own and passes the result in as "password_hash".)
  Result<std::optional<std::string>> passwordHash(std::string_view user) const;
  // The rule objects ({"effect","action","resource"}) of every rule set of every role `user` is a
  // member of: memberships by name, then each role's rule sets in their order, each rule set once.
  // Empty for an unknown user.
  Result<std::vector<nlohmann::json>> rulesOf(std::string_view user) const;

  // Stores a session of an existing user (404 otherwise) until expiresWallMs; also drops the
  // sessions expired by now, so they do not pile up.
  Status addSession(std::string_view tokenHash, std::string_view user, int64_t expiresWallMs);
  // The user of a live session; nullopt if none, or if it expired (then it is deleted).
  Result<std::optional<std::string>> sessionUser(std::string_view tokenHash);
  // Ending an unknown session succeeds: a retried logout is harmless.
  Status endSession(std::string_view tokenHash);

  // For --init: if no user "admin" exists, creates in one transaction the access rule set
  // "admin" [{"effect":"allow","action":"*","resource":"*"}], the role "admin" with it, the user
  // "admin" with `passwordHash` and the membership "admin:admin"; true if it created them, false
  // (and nothing changed) if the user existed. A rule set, role or membership named so that is
  // in the way without the user is a 409, and then nothing is written.
  Result<bool> ensureAdmin(std::string_view passwordHash);
  // A ring-1 node's admins, given by its parent's spec: if no user `user` exists, creates it with
  // `passwordHash` and makes it a member of the role "admin", creating that role (and its rule
  // set "admin", allow * on *) when missing; true if it created the user. An existing user is
  // left as it is: its password may have been changed since through the API.
  Result<bool> seedAdmin(std::string_view user, std::string_view passwordHash);

 private:
  store::Store& store_;
  const Clock& clock_;
};

}  // namespace enjin::directory
