// Private to the bus: how a publisher's or a subscriber's socket reaches its endpoint.
#pragma once

#include <string>
#include <zmq.hpp>

#include "enjin/base/result.hpp"
#include "enjin/bus/envelope.hpp"

namespace enjin::bus {

// Binds `endpoint`, or connects to it with the bus's reconnect intervals (a connecting side
// retries on its own, quickly at first). A failure says which it was: "bind tcp://...: Address
// already in use".
inline Status attach(zmq::socket_t& sock, const std::string& endpoint, bool bind) {
  try {
    if (bind) {
      sock.bind(endpoint);
    } else {
      sock.set(zmq::sockopt::reconnect_ivl, kReconnectMillis);
      sock.set(zmq::sockopt::reconnect_ivl_max, kReconnectMaxMillis);
      sock.connect(endpoint);
    }
  } catch (const zmq::error_t& e) {
    return Error{std::string(bind ? "bind " : "connect ") + endpoint + ": " + e.what()};
  }
  return {};
}

}  // namespace enjin::bus
