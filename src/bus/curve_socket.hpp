// Private to the bus: CURVE on a publisher's or a subscriber's socket, before it attaches.
#pragma once

#include <string>
#include <zmq.hpp>

#include "enjin/base/result.hpp"
#include "enjin/bus/curve.hpp"
#include "enjin/crypto/keys.hpp"

namespace enjin::bus {

// For a tcp:// `endpoint`: makes `sock` a CURVE server (bind) or client (connect) with keys
// derived from `own` and, for a client, curve.serverKey; a server is watched by curve.zap. A
// side that lacks what it needs is an error naming the endpoint. Other endpoints: nothing.
Status secureSocket(zmq::socket_t& sock, const std::string& endpoint, bool bind,
                    const crypto::SecretKey* own, const CurveOptions& curve);

}  // namespace enjin::bus
