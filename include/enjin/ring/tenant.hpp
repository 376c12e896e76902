// Tenant nodes: the ids a ring1d gives its unix-user and sandbox ring-2 nodes, and the files and
// sockets it makes theirs.
//
// A ring-1 node's spec names a range of ids (`tenant_uids = "60000-60999"`). Its first id is the
// range's *bus group*: every tenant node's daemon keeps it as a supplementary group, and the
// ring1d's bus sockets are shared with it, so node daemons reach the bus and nothing else of the
// tenants does. The rest is dealt out in pairs: the node's *supervisor* uid (its ring2d and
// holder) and its *app* uid (its processes), the gid of each equal to the uid. No passwd entry
// is needed. Assignments live in the ring1d's store, keyed by the node's uuid, so a restarted
// ring1d gives every node the ids it had. A forgotten node's pair is retired: its moved-aside
// state is handed to root, and the pair is dealt again only when every fresh one is taken and
// no process runs as either uid.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "enjin/base/result.hpp"

namespace enjin::store {
class Store;
}

namespace enjin::ring {

struct UidRange {
  uint32_t first = 0;
  uint32_t last = 0;  // inclusive
  bool operator==(const UidRange&) const = default;
};

// "60000-60999": both ends at least 1000 (system accounts stay out), first < last, room for the
// bus group and one pair at least. Errors (400) say what is wrong with the text.
Result<UidRange> parseUidRange(std::string_view text);
// "FIRST-LAST", two whole numbers: the form of tenant_uids and of a ring-1 node's ports.
std::optional<std::pair<uint32_t, uint32_t>> splitNumberRange(std::string_view text);

struct TenantIds {
  uint32_t uid = 0;     // the supervisor's uid and gid
  uint32_t appUid = 0;  // the app's uid and gid
  uint32_t busGid = 0;  // the range's bus group: its first id
};

// The assignment of `uuid` in `store` (meta "tenant_ids"), made now if it has none. 409 when the
// range has no pair left. An assignment made from an earlier range is kept (the node's files are
// its); the bus group is always the current range's first id.
Result<TenantIds> assignTenantIds(store::Store& store, const UidRange& range,
                                  const std::string& uuid);
// Retires the pair of a forgotten node.
Status retireTenantIds(store::Store& store, const std::string& uuid);

// A tenant node's state dir, made theirs: the dir uid:appUid 0710 (the app may pass through to
// its home, not list), its home/ appUid 0700, everything else in it (keys, config, logs, store)
// owned by uid, group and other bits cleared. Done at every start: the whole tree when the dir is
// not yet the node's (a node switched from exec keeps nothing root-owned), else its top level,
// where the parent writes.
Status prepareTenantDir(const std::string& dir, const TenantIds& ids);
// The home of a tenant node whose state dir is `dir`.
std::string tenantHome(const std::string& dir);
// Gives every file under `dir` to root (0:0), so a retired pair's next owner cannot read it.
void disownTenantDir(const std::string& dir);

// Adds o+x (traverse, not list) to `dir` and each of its ancestors, so a node daemon running as
// its own uid reaches its state dir below a root-owned tree whose files stay 0600.
Status makeTraversable(const std::string& dir);
// A bus socket (an ipc:// endpoint this daemon bound) made connectable for `gid` only:
// root:gid 0660. A tcp:// endpoint is left alone.
Status shareSocketWithGroup(const std::string& endpoint, gid_t gid);

}  // namespace enjin::ring
