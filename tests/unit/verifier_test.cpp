#include "enjin/bus/verifier.hpp"

#include <gtest/gtest.h>

#include "fakes/fake_clock.hpp"
#include "test_util.hpp"

namespace enjin::bus {
namespace {

using testing::FakeClock;
using testing::keyFromByte;
using testing::makeMessage;
using testing::RawMessage;
using testing::signRaw;

class VerifierTest : public ::testing::Test {
 protected:
  VerifierTest() {
    EXPECT_TRUE(trust_.add(alice_.publicKey(), "alice", {""}).ok());
    EXPECT_TRUE(trust_.add(bob_.publicKey(), "bob", {"obs.r2"}).ok());
  }

  int64_t now() const { return clock_.wallMillis(); }

  // Verifies and expects a rejection with `reason`; checks nothing else moved.
  void expectRejected(const RawMessage& m, RejectReason reason) {
    const auto before = verifier_.counters();
    auto frames = m.frames();
    Verdict v = verifier_.verify(frames);
    auto* r = std::get_if<Rejection>(&v);
    ASSERT_NE(r, nullptr) << "expected " << rejectReasonName(reason);
    EXPECT_EQ(r->reason, reason) << rejectReasonName(r->reason) << ": " << r->detail;
    EXPECT_EQ(verifier_.counters().rejectedFor(reason), before.rejectedFor(reason) + 1);
    EXPECT_EQ(verifier_.counters().accepted, before.accepted);
  }

  Message expectAccepted(const RawMessage& m) {
    auto frames = m.frames();
    Verdict v = verifier_.verify(frames);
    if (auto* r = std::get_if<Rejection>(&v)) {
      ADD_FAILURE() << "rejected (" << rejectReasonName(r->reason) << "): " << r->detail;
      return {};
    }
    return std::get<Message>(std::move(v));
  }

  FakeClock clock_;
  TrustStore trust_;
  crypto::SecretKey alice_ = keyFromByte(1);
  crypto::SecretKey bob_ = keyFromByte(2);
  crypto::SecretKey mallory_ = keyFromByte(3);
  Verifier verifier_{trust_, clock_};
};

TEST_F(VerifierTest, AcceptsAndDeliversEveryField) {
  Message m = expectAccepted(makeMessage(alice_, "obs.r2.web", 7, now(), R"({"state":"up"})", "obs"));
  EXPECT_EQ(m.topic, "obs.r2.web");
  EXPECT_EQ(m.from, alice_.publicKey());
  EXPECT_EQ(m.seq, 7u);
  EXPECT_EQ(m.ts, now());
  EXPECT_EQ(m.type, "obs");
  EXPECT_EQ(m.body["state"], "up");
  EXPECT_EQ(verifier_.counters().accepted, 1u);
  EXPECT_EQ(verifier_.lastSeq(alice_.publicKey()), 7u);
}

TEST_F(VerifierTest, MalformedFrameCounts) {
  auto m = makeMessage(alice_, "t", 1, now());
  std::vector<std::string_view> two{m.topic, m.payload};
  std::vector<std::string_view> four{m.topic, m.payload, m.auth, m.auth};
  for (auto* frames : {&two, &four}) {
    Verdict v = verifier_.verify(*frames);
    ASSERT_TRUE(std::holds_alternative<Rejection>(v));
    EXPECT_EQ(std::get<Rejection>(v).reason, RejectReason::kMalformed);
  }
  EXPECT_EQ(verifier_.counters().rejectedFor(RejectReason::kMalformed), 2u);
}

TEST_F(VerifierTest, MalformedAuthAndTopic) {
  auto m = makeMessage(alice_, "t", 1, now());
  m.auth.pop_back();
  expectRejected(m, RejectReason::kMalformed);
  expectRejected(makeMessage(alice_, "a..b", 1, now()), RejectReason::kMalformed);
  auto empty = makeMessage(alice_, "t", 1, now());
  empty.topic.clear();
  expectRejected(empty, RejectReason::kMalformed);
}

TEST_F(VerifierTest, Oversize) {
  expectRejected(makeMessage(alice_, std::string(256, 'a'), 1, now()), RejectReason::kOversize);
  std::string big = R"({"x":")" + std::string(kDefaultMaxPayloadBytes, 'a') + R"("})";
  expectRejected(makeMessage(alice_, "t", 1, now(), big), RejectReason::kOversize);
}

TEST_F(VerifierTest, UnknownKey) {
  expectRejected(makeMessage(mallory_, "t", 1, now()), RejectReason::kUnknownKey);
}

TEST_F(VerifierTest, BadSignatureOnAnyFlippedBit) {
  auto good = makeMessage(alice_, "obs.x", 1, now());
  for (size_t i = 0; i < good.payload.size(); i += 7) {
    auto m = good;
    m.payload[i] ^= 0x01;
    expectRejected(m, RejectReason::kBadSignature);
  }
  auto t = good;
  t.topic[0] ^= 0x02;  // 'o' -> 'm': still a valid topic, no longer the signed one
  expectRejected(t, RejectReason::kBadSignature);
  for (size_t i = 32; i < 96; i += 5) {
    auto m = good;
    m.auth[i] ^= 0x40;
    expectRejected(m, RejectReason::kBadSignature);
  }
  expectAccepted(good);  // nothing above moved the seq mark
}

TEST_F(VerifierTest, MalformedPayloadsAreCaughtOnlyAfterTheSignature) {
  const auto pk = alice_.publicKey().hex();
  const std::string ts = std::to_string(now());
  const std::string cases[] = {
      "not json",
      "[1,2,3]",
      "{\"v\":1,\"from\":\"" + pk + "\",\"seq\":1,\"ts\":" + ts + ",\"type\":\"x\",\"body\":{\"a\":\"\xff\"}}",
      "{\"v\":1,\"v\":1,\"from\":\"" + pk + "\",\"seq\":1,\"ts\":" + ts + ",\"type\":\"x\",\"body\":{}}",
      "{\"v\":2,\"from\":\"" + pk + "\",\"seq\":1,\"ts\":" + ts + ",\"type\":\"x\",\"body\":{}}",
      "{\"v\":1,\"from\":\"" + pk + "\",\"seq\":-1,\"ts\":" + ts + ",\"type\":\"x\",\"body\":{}}",
      "{\"v\":1,\"from\":\"" + pk + "\",\"seq\":1.5,\"ts\":" + ts + ",\"type\":\"x\",\"body\":{}}",
      "{\"v\":1,\"from\":\"" + pk + "\",\"seq\":18446744073709551616,\"ts\":" + ts + ",\"type\":\"x\",\"body\":{}}",
      "{\"v\":1,\"from\":\"" + pk + "\",\"seq\":1,\"ts\":" + ts + ",\"type\":\"\",\"body\":{}}",
      "{\"v\":1,\"from\":\"" + pk + "\",\"seq\":1,\"ts\":" + ts + ",\"type\":\"x\",\"body\":[]}",
      "{\"v\":1,\"from\":\"" + pk + "\",\"seq\":1,\"ts\":" + ts + ",\"type\":\"x\"}",
      "{\"v\":1,\"from\":\"" + pk + "\",\"seq\":1,\"ts\":" + ts + ",\"type\":\"x\",\"body\":{},\"extra\":0}",
      "{\"v\":1,\"from\":\"" + pk + "\",\"seq\":1,\"ts\":" + ts + ",\"type\":\"x\",\"body\":" +
          std::string(10000, '[') + std::string(10000, ']') + "}",
  };
  for (const auto& payload : cases) {
    SCOPED_TRACE(payload.substr(0, 120));
    expectRejected(signRaw(alice_, "t", payload), RejectReason::kMalformed);
    // The same bytes from an untrusted key never reach the parser.
    expectRejected(signRaw(mallory_, "t", payload), RejectReason::kUnknownKey);
  }
}

TEST_F(VerifierTest, IdentityWhenFromNamesAnotherKey) {
  // Alice signs a payload that claims to come from Bob.
  auto payload = encodePayload(bob_.publicKey(), 1, now(), "x", "{}");
  expectRejected(signRaw(alice_, "obs.r2", payload), RejectReason::kIdentity);
  EXPECT_EQ(verifier_.lastSeq(bob_.publicKey()), 0u);
  EXPECT_EQ(verifier_.lastSeq(alice_.publicKey()), 0u);
}

TEST_F(VerifierTest, StaleOutsideTheWindowEitherWay) {
  expectRejected(makeMessage(alice_, "t", 1, now() - 10 * 60 * 1000), RejectReason::kStale);
  expectRejected(makeMessage(alice_, "t", 2, now() + 30'001), RejectReason::kStale);
  expectAccepted(makeMessage(alice_, "t", 3, now() - 30'000));
  expectAccepted(makeMessage(alice_, "t", 4, now() + 30'000));
}

TEST_F(VerifierTest, TimestampsAtTheEdgesOfInt64) {
  const auto pk = alice_.publicKey().hex();
  auto withTs = [&](const std::string& ts) {
    return signRaw(alice_, "t",
                   R"({"v":1,"from":")" + pk + R"(","seq":1,"ts":)" + ts + R"(,"type":"x","body":{}})");
  };
  expectRejected(withTs("-9223372036854775808"), RejectReason::kStale);
  expectRejected(withTs("9223372036854775807"), RejectReason::kStale);
  expectRejected(withTs("9223372036854775808"), RejectReason::kMalformed);
  expectRejected(withTs("18446744073709551615"), RejectReason::kMalformed);
}

TEST_F(VerifierTest, FromMustBeTheExactLowercaseHex) {
  std::string upper = alice_.publicKey().hex();
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto payload = R"({"v":1,"from":")" + upper + R"(","seq":1,"ts":)" + std::to_string(now()) +
                 R"(,"type":"x","body":{}})";
  expectRejected(signRaw(alice_, "t", payload), RejectReason::kIdentity);
}

TEST_F(VerifierTest, ReplayAndTheSeqMarkMovesOnlyOnAcceptance) {
  auto first = makeMessage(alice_, "t", 100, now());
  expectAccepted(first);
  expectRejected(first, RejectReason::kReplay);
  expectRejected(makeMessage(alice_, "t", 99, now()), RejectReason::kReplay);
  // A forged message with a huge seq does not move the mark...
  auto forged = makeMessage(alice_, "t", UINT64_MAX, now());
  forged.auth[40] ^= 1;
  expectRejected(forged, RejectReason::kBadSignature);
  // ...nor does a validly signed one that fails a later check.
  expectRejected(makeMessage(bob_, "spec.r1", 1'000'000, now()), RejectReason::kAcl);
  expectAccepted(makeMessage(bob_, "obs.r2", 10, now()));
  expectRejected(makeMessage(alice_, "t", 5000, now() - 31'000), RejectReason::kStale);
  EXPECT_EQ(verifier_.lastSeq(alice_.publicKey()), 100u);
  expectAccepted(makeMessage(alice_, "t", 101, now()));
}

TEST_F(VerifierTest, AclBySegmentPrefix) {
  expectAccepted(makeMessage(bob_, "obs.r2", 1, now()));
  expectAccepted(makeMessage(bob_, "obs.r2.web", 2, now()));
  expectRejected(makeMessage(bob_, "obs.r20.web", 3, now()), RejectReason::kAcl);
  expectRejected(makeMessage(bob_, "spec.r2", 4, now()), RejectReason::kAcl);
}

TEST_F(VerifierTest, RevokedKeyIsUnknown) {
  expectAccepted(makeMessage(alice_, "t", 1, now()));
  ASSERT_TRUE(trust_.remove(alice_.publicKey()));
  expectRejected(makeMessage(alice_, "t", 2, now()), RejectReason::kUnknownKey);
}

TEST_F(VerifierTest, SubscribedPrefixesFilterBySegments) {
  VerifierOptions opts;
  opts.prefixes = {"obs.r2"};
  Verifier v(trust_, clock_, opts);
  auto in = makeMessage(alice_, "obs.r2.x", 1, now());
  auto out = makeMessage(alice_, "obs.r20.x", 2, now());
  EXPECT_TRUE(std::holds_alternative<Message>(v.verify(in.frames())));
  EXPECT_TRUE(std::holds_alternative<Filtered>(v.verify(out.frames())));
  EXPECT_EQ(v.counters().filtered, 1u);
  EXPECT_EQ(v.counters().rejectedTotal(), 0u);
}

TEST_F(VerifierTest, ReasonNamesAreTheProtocolNames) {
  const char* names[] = {"malformed", "oversize", "unknown_key", "bad_signature",
                         "identity",  "stale",    "replay",      "acl"};
  for (size_t i = 0; i < kRejectReasonCount; ++i) {
    EXPECT_EQ(rejectReasonName(static_cast<RejectReason>(i)), names[i]);
  }
}

}  // namespace
}  // namespace enjin::bus
