// The worked example of proto/envelope.md, rebuilt with the project's own code. The expected
// hex below was computed independently with python3-nacl; if this test fails, either the code or
// the document is wrong, and the document is the normative one.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "enjin/base/hex.hpp"
#include "enjin/bus/envelope.hpp"
#include "enjin/bus/trust_store.hpp"
#include "enjin/bus/verifier.hpp"
#include "enjin/crypto/keys.hpp"
#include "fakes/fake_clock.hpp"

namespace enjin::bus {
namespace {

// Copied verbatim from proto/envelope.md, section 11 "Worked example".
constexpr std::string_view kPublicKeyHex =
    "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
constexpr std::string_view kTopic = "obs.r2.demo";
constexpr std::string_view kTopicHex = "6f62732e72322e64656d6f";
constexpr std::string_view kPayload =
    R"({"v":1,"from":"03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",)"
    R"("seq":1700000000000000,"ts":1700000000000,"type":"heartbeat","body":{"n":1}})";
constexpr std::string_view kPayloadHex =
    "7b2276223a312c2266726f6d223a223033613130376266663363653130626531"
    "6437306464313865373462633039393637653464363330396261353064356631"
    "646463383636343132353533316238222c22736571223a313730303030303030"
    "303030303030302c227473223a313730303030303030303030302c2274797065"
    "223a22686561727462656174222c22626f6479223a7b226e223a317d7d";
constexpr std::string_view kSignedHex =
    "656e6a696e2d7631006f62732e72322e64656d6f007b2276223a312c2266726f"
    "6d223a2230336131303762666633636531306265316437306464313865373462"
    "6330393936376534643633303962613530643566316464633836363431323535"
    "33316238222c22736571223a313730303030303030303030303030302c227473"
    "223a313730303030303030303030302c2274797065223a226865617274626561"
    "74222c22626f6479223a7b226e223a317d7d";
constexpr std::string_view kAuthHex =
    "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    "87233f35056dd9ceabaf8ac4970245d7874af9fde95278d364ea5575e2ad96f2"
    "6af8b24e960ae52d7e52ab3d4101b432d0d7f20d6f1e4960a78b3bac36701604";
constexpr uint64_t kSeq = 1'700'000'000'000'000;
constexpr int64_t kTsMillis = 1'700'000'000'000;

std::string hexOf(std::string_view s) {
  return toHex({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

crypto::SecretKey exampleKey() {
  std::array<uint8_t, crypto::kSeedBytes> seed;
  for (size_t i = 0; i < seed.size(); ++i) seed[i] = static_cast<uint8_t>(i);  // 00 01 .. 1f
  return crypto::SecretKey::fromSeed(seed);
}

TEST(EnvelopeExampleTest, PublicKeyOfTheSeed) {
  EXPECT_EQ(exampleKey().publicKey().hex(), kPublicKeyHex);
}

TEST(EnvelopeExampleTest, FramesMatchTheDocument) {
  const crypto::SecretKey key = exampleKey();
  const std::string payload =
      encodePayload(key.publicKey(), kSeq, kTsMillis, "heartbeat", R"({"n":1})");
  EXPECT_EQ(hexOf(kTopic), kTopicHex);
  EXPECT_EQ(payload, kPayload);
  EXPECT_EQ(hexOf(payload), kPayloadHex);

  std::string scratch;
  EXPECT_EQ(hexOf(signedBytes(kTopic, payload, scratch)), kSignedHex);
  const Auth auth = signEnvelope(key, kTopic, payload, scratch);
  EXPECT_EQ(toHex(auth), kAuthHex);
}

TEST(EnvelopeExampleTest, VerifierAcceptsTheExampleOnceAtItsTime) {
  auto pub = crypto::PublicKey::fromHex(kPublicKeyHex);
  ASSERT_TRUE(pub.ok());
  TrustStore trust;
  ASSERT_TRUE(trust.add(*pub, "example", {"obs.r2"}).ok());
  enjin::testing::FakeClock clock(kTsMillis * 1000);
  VerifierOptions options;
  options.prefixes = {"obs.r2"};
  Verifier verifier(trust, clock, options);

  auto auth = fromHex(kAuthHex);
  ASSERT_TRUE(auth.has_value());
  const std::string_view authFrame(reinterpret_cast<const char*>(auth->data()), auth->size());
  const std::array<std::string_view, 3> frames{kTopic, kPayload, authFrame};

  Verdict verdict = verifier.verify(frames);
  const auto* m = std::get_if<Message>(&verdict);
  ASSERT_NE(m, nullptr) << (std::holds_alternative<Rejection>(verdict)
                                ? std::get<Rejection>(verdict).detail
                                : std::string("filtered"));
  EXPECT_EQ(m->topic, kTopic);
  EXPECT_EQ(m->from, *pub);
  EXPECT_EQ(m->seq, kSeq);
  EXPECT_EQ(m->ts, kTsMillis);
  EXPECT_EQ(m->type, "heartbeat");
  EXPECT_EQ(m->body, nlohmann::json({{"n", 1}}));

  // The same frames again are a replay, as the document says.
  verdict = verifier.verify(frames);
  const auto* r = std::get_if<Rejection>(&verdict);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(rejectReasonName(r->reason), "replay");
}

}  // namespace
}  // namespace enjin::bus
