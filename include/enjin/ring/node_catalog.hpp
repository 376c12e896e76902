// Where the nodes a parent daemon runs come from. Two places, kept apart:
//
//   declared  ring0d's [[ring1]] tables in its file; for a ring1d, its parent's spec. Replaced
//             as a whole by a reload (or a new spec); never changed through the API.
//   made      created, changed and deleted through the daemon's API; kept in its store (meta
//             key "api_nodes", a JSON array of the bodies the API was given, each a node table
//             as the file has it), so they outlive every restart and every reload.
//
// The parent runs the union (desired()). A label is in one place only: the API cannot make a
// node the file declares, nor change or delete one (409, naming the file), and a reload that
// would declare a node the API made is refused.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/ring/config.hpp"

namespace enjin::store {
class Store;
}

namespace enjin::ring {

class NodeCatalog {
 public:
  // `store` must outlive the catalog. `declaredBy` names where the declared nodes come from, for
  // messages ("/etc/enjin/ring0d.toml", "the parent's spec"). `ring` is the ring of the nodes.
  NodeCatalog(store::Store& store, int ring, std::string declaredBy);

  // Reads the made nodes from the store (a stored set that does not parse is an error naming
  // the store: nothing is guessed).
  Status load();

  // Replaces the declared set; refused (409) if it names a node the API made.
  Status setDeclared(std::vector<NodeSpec> nodes);

  // Declared first, then made, each in its own order.
  std::vector<NodeSpec> desired() const;
  const std::vector<NodeSpec>& declared() const { return declared_; }
  bool declares(const std::string& label) const;

  // A node made through the API: its spec, and the body it was made from (JSON text).
  struct Made {
    NodeSpec spec;
    std::string body;
  };
  const std::vector<Made>& made() const { return made_; }
  // The made node `label`; nullptr if there is none.
  const Made* findMade(const std::string& label) const;

  // The API's changes, stored before they return. Errors carry the HTTP status: 409 a label in
  // use or declared by the file, 404 no such made node.
  Status create(Made node);
  // The node as it was, to put back if the parent refuses the change.
  Result<Made> update(Made node);
  Result<Made> remove(const std::string& label);

 private:
  Status save();

  store::Store& store_;
  int ring_;
  std::string declaredBy_;
  std::vector<NodeSpec> declared_;
  std::vector<Made> made_;
};

}  // namespace enjin::ring
