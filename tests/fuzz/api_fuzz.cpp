// libFuzzer target for what the control API parses itself, before anything is stored.
//
// Input: one mode byte, then the text.
//   mode % 4 == 0, 1: a node body for POST /v1/nodes (ring 1 or 2): strict JSON, then the JSON
//     read as a [[ring1]] / [[ring1.ring2]] table by the config file's reader. Invariant: a body
//     that is accepted survives the trip to the wire form (node_spec) and back unchanged.
//   mode % 4 == 2: a time as ?since= and ?until= take it. Invariant: an accepted time in the
//     years 0000-9999 prints and reads back as the same millisecond.
//   mode % 4 == 3: a listen address. Invariant: an accepted port is 0..65535.
#include <spdlog/spdlog.h>

#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "enjin/api/http_server.hpp"
#include "enjin/base/strict_json.hpp"
#include "enjin/directory/directory.hpp"
#include "enjin/ring/node_spec_json.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace enjin;
  if (size == 0) return 0;
  const int mode = data[0] % 4;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (mode <= 1) {
    const int ring = mode == 0 ? 1 : 2;
    nlohmann::json body;
    if (!parseStrictJson(text, body).ok()) return 0;
    auto spec = ring::nodeSpecFromTableJson(body, ring);
    if (!spec.ok()) {
      check(spec.error().code == 400 && !spec.error().message.empty());
      return 0;
    }
    auto back = ring::nodeSpecFromJson(ring::nodeSpecToJson(*spec), ring);
    check(back.ok() && *back == *spec);
  } else if (mode == 2) {
    auto t = directory::parseTime(text);
    if (t && *t >= -62'167'219'200'000 && *t <= 253'402'300'799'999) {
      check(directory::parseTime(directory::rfc3339(*t)) == *t);
    }
  } else {
    auto hp = api::parseListen(text);
    if (hp.ok()) check(hp->second >= 0 && hp->second <= 65535);
  }
  return 0;
}
