// The signing side of a bus. The socket is an XPUB so the publisher learns of subscriptions:
// callers that must not lose the start or the end of a stream can wait for a subscriber before
// sending and for every subscriber to leave after (ZMQ_LINGER alone does not guarantee that the
// last messages arrive).
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "enjin/base/clock.hpp"
#include "enjin/base/result.hpp"
#include "enjin/bus/curve.hpp"
#include "enjin/bus/seq_counter.hpp"
#include "enjin/crypto/keys.hpp"

namespace enjin::bus {

struct PublisherOptions {
  std::string endpoint;
  bool bind = true;         // bind the endpoint, or connect to it
  std::string seqFile;      // where the seq reservation is kept; empty: clock only
  int sendHighWater = 1000; // messages queued per subscriber before drops (ZMQ_SNDHWM)
  // CURVE on a tcp:// endpoint (enjin/bus/curve.hpp), with the publisher's own key; required
  // there, ignored elsewhere.
  CurveOptions curve;
};

class Publisher {
 public:
  // `clock` must outlive the publisher.
  static Result<std::unique_ptr<Publisher>> open(zmq::context_t& ctx, crypto::SecretKey key,
                                                 const Clock& clock, PublisherOptions options);

  // Signs and sends one message. Never blocks: with no subscriber, or one past its high-water
  // mark, ZeroMQ drops the message, as pub/sub does.
  Status publish(std::string_view topic, std::string_view type, const nlohmann::json& body);
  // As publish, with the body already serialized as a JSON object (not re-validated).
  Status publishSerialized(std::string_view topic, std::string_view type,
                           std::string_view bodyJson);

  // For zmq_poll: readable when subscription changes are waiting.
  zmq::socket_t& socket() { return socket_; }
  // Reads pending subscription changes without blocking and returns how many distinct topic
  // prefixes have at least one subscriber. `onChange`, if given, hears each prefix that gained
  // its first subscriber (true) or lost its last (false): a parent answers a child's new
  // subscription with its desired state at once instead of a period later.
  using OnSubscription = std::function<void(std::string_view prefix, bool subscribed)>;
  size_t pollSubscriptions(const OnSubscription& onChange = {});

  const crypto::PublicKey& publicKey() const { return key_.publicKey(); }
  uint64_t lastSeq() const { return seq_.last(); }
  // The endpoint actually bound (resolves tcp port 0 and ipc wildcards).
  std::string boundEndpoint() const;

 private:
  Publisher(zmq::socket_t socket, crypto::SecretKey key, const Clock& clock, SeqCounter seq);

  zmq::socket_t socket_;
  crypto::SecretKey key_;
  const Clock& clock_;
  SeqCounter seq_;
  size_t subscribedPrefixes_ = 0;
  std::string scratch_;
};

}  // namespace enjin::bus
