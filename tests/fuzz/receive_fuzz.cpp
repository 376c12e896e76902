// libFuzzer target for the bus receive path (enjin::bus::Verifier).
//
// Input: one mode byte, then frames separated by the marker "|#|".
//   mode bit 0 clear: the frames go to the verifier as they are. Almost every input then stops
//     at the key or signature check, which is the point: nothing before it may crash.
//   mode bit 0 set: the harness replaces the last frame with a valid auth by the trusted key
//     over the first two, so the fuzzer reaches the strict JSON parser and every later check.
// Invariant checked: an accepted message really was signed by a trusted key, on a valid topic
// that key may publish on, with the fields it claims.
#include <spdlog/spdlog.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "enjin/bus/topic.hpp"
#include "enjin/bus/verifier.hpp"
#include "fakes/fake_clock.hpp"
#include "unit/test_util.hpp"

namespace {

using namespace enjin;

struct Harness {
  testing::FakeClock clock{1'700'000'000'000'000};
  bus::TrustStore trust;
  crypto::SecretKey signer = testing::keyFromByte(1);

  Harness() {
    spdlog::set_level(spdlog::level::off);  // rejections are the expected outcome here
    if (!trust.add(signer.publicKey(), "fuzz-a", {"obs", "spec.r2"}).ok()) std::abort();
    if (!trust.add(testing::keyFromByte(2).publicKey(), "fuzz-b", {""}).ok()) std::abort();
  }
};

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness h;
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  std::vector<std::string> frames;
  for (;;) {
    auto at = rest.find("|#|");
    frames.emplace_back(rest.substr(0, at));
    if (at == std::string_view::npos) break;
    rest.remove_prefix(at + 3);
  }
  if ((mode & 1) != 0 && frames.size() >= 2) {
    std::string scratch;
    auto auth = bus::signEnvelope(h.signer, frames[0], frames[1], scratch);
    frames.resize(3);
    frames[2].assign(reinterpret_cast<const char*>(auth.data()), auth.size());
  }
  std::vector<std::string_view> views(frames.begin(), frames.end());

  bus::Verifier verifier(h.trust, h.clock);
  bus::Verdict v = verifier.verify(views);
  if (auto* m = std::get_if<bus::Message>(&v)) {
    check(views.size() == 3 && views[2].size() == bus::kAuthBytes);
    check(bus::isValidTopic(m->topic) && m->topic == views[0]);
    const bus::TrustedKey* k = h.trust.find(m->from);
    check(k != nullptr && k->mayPublish(m->topic));
    std::string scratch;
    auto signedView = bus::signedBytes(views[0], views[1], scratch);
    auto sig = std::span<const uint8_t, crypto::kSignatureBytes>(
        reinterpret_cast<const uint8_t*>(views[2].data()) + crypto::kPublicKeyBytes,
        crypto::kSignatureBytes);
    check(crypto::verify(m->from, {reinterpret_cast<const uint8_t*>(signedView.data()),
                                   signedView.size()},
                         sig));
    check(m->body.is_object() && !m->type.empty());
    check(verifier.counters().accepted == 1 && verifier.counters().rejectedTotal() == 0);
  } else if (std::holds_alternative<bus::Rejection>(v)) {
    check(verifier.counters().accepted == 0 && verifier.counters().rejectedTotal() == 1);
  }
  return 0;
}
