// Every observation strategy enjin has, registered as ring2d's main() does: for tests that build
// a Supervisor or check kinds themselves.
#pragma once

#include "enjin/supervise/observation.hpp"

namespace enjin::testing {

inline supervise::ObservationRegistry allObservations() {
  supervise::ObservationRegistry r;
  r.add(supervise::makeProcessObservation());
  r.add(supervise::makeNotifyObservation());
  r.add(supervise::makeHeartbeatObservation());
  r.add(supervise::makeTcpObservation());
  r.add(supervise::makeHttpObservation());
  r.add(supervise::makeExecObservation());
  return r;
}

}  // namespace enjin::testing
