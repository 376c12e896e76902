// The tree a ring daemon reports (its nodes, theirs, and the processes at the leaves), flattened
// to paths so two snapshots can be compared: the events on the observation bus are the
// differences between the tree before and after a change. Computing events from full states,
// rather than forwarding each child's events, keeps the stream right when a message from below
// was lost: the next full state fills the gap.
#pragma once

#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "enjin/base/result.hpp"

namespace enjin::ring {

// path ("r1", "r1/web", "r1/web/app") -> {"kind":"node"|"process","state",..}
using FlatTree = std::map<std::string, nlohmann::json>;

FlatTree flattenTree(const nlohmann::json& tree);

// A child's observation as it arrived (signed, but written by a program that may be buggy or
// taken over), checked field by field and rebuilt from the known fields only: strings are
// strings, numbers are numbers, names are names. Anything else is refused, naming the field, so
// nothing a child says can throw in the parent's reactor or smuggle in fields of its own.
// `ring` is the ring of the node that sent it (1: it reports nodes, 2: processes).
Result<nlohmann::json> cleanObservation(const nlohmann::json& body, int ring);

// Whether two observations differ at most in what their processes cost (cpu_seconds,
// resident_memory_bytes) and in the nodes' job offers: those change with every report, and passed on as changes they would
// make every heartbeat from below a change for every parent up to the root. The parent keeps the
// newer figures without calling it a change; its own heartbeat carries them up.
bool sameApartFromUsage(const nlohmann::json& a, const nlohmann::json& b);

// Null when the root and everything below it is ready (revoked nodes aside); otherwise what is
// not, as "infra-1/shop/web is backoff". What `enjinctl wait-ready` waits for.
std::optional<std::string> firstNotReady(const nlohmann::json& tree);

struct TreeEvent {
  std::string topicPath;  // the path with '.' for '/': the topic is "event." + topicPath
  nlohmann::json body;    // {"path","kind","state","previous","pid","restarts","detail",...}
};

// What changed from `before` to `after` (state, pid, restarts or detail), in path order;
// removed entries come as state "removed". `after` is moved into `*keep` if given.
std::vector<TreeEvent> diffTrees(const FlatTree& before, FlatTree after, FlatTree* keep);

}  // namespace enjin::ring
