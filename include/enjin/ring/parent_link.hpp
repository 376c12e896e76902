// The child half of a ring daemon (ring1d, ring2d): its link to the parent that created it.
// It listens on the parent's down bus, trusting only the parent's key and only its own topics
// (spec.<uuid>, cmd.<uuid>, revoke.<uuid>), and publishes on the parent's up bus its full
// observed state (obs.<uuid>, which is also its heartbeat) every heartbeat, on every change,
// and at once when the parent's subscription reaches it; answers to commands go out as
// reply.<uuid> with the command's request id.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <zmq.hpp>

#include "enjin/base/clock.hpp"
#include "enjin/base/result.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/ring/config.hpp"

namespace enjin::ring {

class ParentLink {
 public:
  using Reply = std::function<void(nlohmann::json reply)>;
  struct Handlers {
    // A desired state that differs from the one applied. Returns an error to keep the old one.
    std::function<Status(const nlohmann::json& spec, const std::string& digest)> onSpec;
    // The parent revoked this node's key.
    std::function<void()> onRevoked;
    // A command: op (start, stop, restart) on `path` below this node; `reply` once.
    std::function<void(const std::string& op, const std::string& path, Reply reply)> onCommand;
    // This node's whole observed state (the body of obs.<uuid>, without spec_digest).
    std::function<nlohmann::json()> observe;
  };

  // `reactor`, `clock` and `zmq` must outlive the link. Loads the node's key and the parent's
  // public key from the config's files.
  static Result<std::unique_ptr<ParentLink>> open(Reactor& reactor, const Clock& clock,
                                                  zmq::context_t& zmq, const DaemonConfig& config,
                                                  Handlers handlers, double dropFraction,
                                                  std::function<uint64_t()> random);
  ~ParentLink();

  // The digest of the spec in force (restored from the store at start-up).
  void setApplied(std::string digest);
  // Publish the observed state soon (coalesced).
  void changed();

 private:
  class Impl;
  explicit ParentLink(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace enjin::ring
