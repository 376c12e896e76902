// A message that passed every check of the receive path. Nothing else is ever delivered.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "enjin/crypto/keys.hpp"

namespace enjin::bus {

struct Message {
  std::string topic;
  crypto::PublicKey from;
  uint64_t seq = 0;
  int64_t ts = 0;  // milliseconds since the Unix epoch, as the sender stamped it
  std::string type;
  nlohmann::json body;  // always an object
};

// {"topic":..,"from":..,"seq":..,"ts":..,"type":..,"body":..}: the line `enjinctl bus sub` prints.
nlohmann::ordered_json toJson(const Message& m);

}  // namespace enjin::bus
