// NodeSpec on the wire: the body of a `node_spec` message on the down bus (proto/rings.md).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "enjin/base/result.hpp"
#include "enjin/ring/config.hpp"

namespace enjin::ring {

nlohmann::json nodeSpecToJson(const NodeSpec& spec);
// Checks what a config file would: names, strategies known to `ring`'s daemon are checked by
// the caller. `ring` is the ring the node runs at (1: it has nodes, 2: it has processes).
Result<NodeSpec> nodeSpecFromJson(const nlohmann::json& j, int ring);

// A node as an API client gives it: a [[ring1]] table of ring0d.toml (ring 1), or a
// [[ring1.ring2]] table (ring 2), as JSON, with the same keys, defaults and checks as the file
// ("processes" is "process", as in the file). Errors are 400s naming the node and the key.
// (Defined in config.cpp, with the file's reader.)
Result<NodeSpec> nodeSpecFromTableJson(const nlohmann::json& body, int ring);

// A short fingerprint of a spec (hex of a 16-byte BLAKE2b of its canonical JSON): a child
// reports the one it applied, and the parent republishes when it differs from what it wants.
std::string specDigest(const nlohmann::json& specJson);

}  // namespace enjin::ring
