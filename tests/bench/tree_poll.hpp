// What the hierarchy benches share: a stopwatch and ring0d's tree over its control socket (as
// `enjinctl status` reads it).
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "enjin/supervise/control_server.hpp"

namespace enjin::bench {

using Clock = std::chrono::steady_clock;

inline double msSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// The tree of the daemon whose state dir is `state`, or null while it does not answer.
inline nlohmann::json tree(const std::string& state) {
  auto r = enjin::supervise::controlCall(state + "/control.sock", {{"cmd", "tree"}});
  return r.ok() ? (*r)["tree"] : nlohmann::json();
}

}  // namespace enjin::bench
