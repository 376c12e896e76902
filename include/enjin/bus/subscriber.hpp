// The verifying side of a bus, built for a single-threaded zmq_poll reactor: poll socket(), then
// drain(), which never blocks and hands over only messages that passed every check.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "enjin/base/result.hpp"
#include "enjin/bus/curve.hpp"
#include "enjin/bus/verifier.hpp"

namespace enjin::bus {

struct SubscriberOptions {
  std::string endpoint;
  bool bind = false;                  // connect by default; bind for a many-publishers bus
  VerifierOptions verify;             // limits, window and the subscribed prefixes
  int receiveHighWater = 1000;        // ZMQ_RCVHWM
  // CURVE on a tcp:// endpoint (enjin/bus/curve.hpp): the subscriber's own key (read during
  // open() only) and what its side needs; required there, ignored elsewhere.
  const crypto::SecretKey* key = nullptr;
  CurveOptions curve;
};

class Subscriber {
 public:
  // Messages one drain() takes by default: a burst must not hold the reactor thread (its
  // timers, reaping, probes) for long. zmq_poll is level-triggered, so the rest comes next turn.
  static constexpr size_t kDrainBatch = 256;

  using OnMessage = std::function<void(Message&&)>;
  using OnReject = std::function<void(const Rejection&)>;

  // `trust` and `clock` must outlive the subscriber.
  static Result<std::unique_ptr<Subscriber>> open(zmq::context_t& ctx, const TrustStore& trust,
                                                  const Clock& clock, SubscriberOptions options);

  zmq::socket_t& socket() { return socket_; }
  // Receives, without blocking, up to `max` waiting messages; each accepted one goes to
  // `onMessage`, each rejected one to the OnReject handler if set. Returns how many were read.
  size_t drain(const OnMessage& onMessage, size_t max = kDrainBatch);
  void setOnReject(OnReject handler) { onReject_ = std::move(handler); }

  const BusCounters& counters() const { return verifier_.counters(); }
  Verifier& verifier() { return verifier_; }
  std::string boundEndpoint() const;

 private:
  Subscriber(zmq::socket_t socket, const TrustStore& trust, const Clock& clock,
             VerifierOptions options);
  zmq::socket_t socket_;
  Verifier verifier_;
  OnReject onReject_;
};

}  // namespace enjin::bus
