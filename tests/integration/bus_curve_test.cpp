// CURVE on tcp:// buses, on real sockets on 127.0.0.1: a trusted client gets the signed
// stream; a plaintext client, an unknown key, a revoked key and a client with the wrong server
// key get nothing and each refusal is counted by reason; a tcp:// bus without keys is an error.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <zmq.hpp>

#include "enjin/base/clock.hpp"
#include "enjin/bus/curve.hpp"
#include "enjin/bus/publisher.hpp"
#include "enjin/bus/subscriber.hpp"
#include "test_util.hpp"

namespace enjin::bus {
namespace {

using testing::keyFromByte;

constexpr auto kBound = std::chrono::seconds(5);

class CurveBusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(zmq_has("curve"), 1) << "libzmq without CURVE";
    auto zap = ZapHandler::open(ctx_);
    ASSERT_TRUE(zap.ok()) << zap.error().message;
    zap_ = std::move(*zap);
    ASSERT_TRUE(childTrust_.add(child_.publicKey(), "child", {""}).ok());
    zap_->admit("down", {&childTrust_});
    ASSERT_TRUE(parentTrust_.add(parentPublic_, "parent", {""}).ok());
    PublisherOptions po;
    po.endpoint = "tcp://127.0.0.1:0";
    po.curve.zap = zap_.get();
    po.curve.domain = "down";
    auto pub = Publisher::open(ctx_, keyFromByte(1), clock_, po);
    ASSERT_TRUE(pub.ok()) << pub.error().message;
    pub_ = std::move(*pub);
    endpoint_ = pub_->boundEndpoint();
  }

  // A CURVE subscriber of the down bus with `key`, trusting the parent's messages.
  std::unique_ptr<Subscriber> subscriber(const crypto::SecretKey& key,
                                         std::optional<crypto::PublicKey> server) {
    SubscriberOptions so;
    so.endpoint = endpoint_;
    so.key = &key;
    so.curve.serverKey = server;
    auto sub = Subscriber::open(ctx_, parentTrust_, clock_, so);
    EXPECT_TRUE(sub.ok()) << sub.error().message;
    return sub.ok() ? std::move(*sub) : nullptr;
  }

  // Turns the loop (ZAP, monitors, subscribers) and publishes one message per turn until `done`
  // or kBound passes; returns whether `done` held.
  bool pumpUntil(const std::vector<Subscriber*>& subs, const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + kBound;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::vector<zmq::pollitem_t> items;
      for (zmq::socket_t* s : zap_->sockets()) items.push_back({s->handle(), 0, ZMQ_POLLIN, 0});
      for (Subscriber* s : subs) items.push_back({s->socket().handle(), 0, ZMQ_POLLIN, 0});
      zmq::poll(items, std::chrono::milliseconds(10));
      zap_->serve();
      pub_->pollSubscriptions();
      EXPECT_TRUE(pub_->publish("spec.child", "spec", {{"n", ++sent_}}).ok());
      for (Subscriber* s : subs) s->drain([&](Message&&) { ++received_[s]; });
    }
    return true;
  }

  uint64_t rejected(ConnectionReject r) { return zap_->counters("down").rejectedFor(r); }

  SystemClock clock_;
  zmq::context_t ctx_{1};
  std::unique_ptr<ZapHandler> zap_;
  crypto::SecretKey child_ = keyFromByte(2);
  crypto::SecretKey stranger_ = keyFromByte(3);
  crypto::PublicKey parentPublic_ = keyFromByte(1).publicKey();
  TrustStore childTrust_;   // what the parent admits
  TrustStore parentTrust_;  // what the children accept messages from
  std::unique_ptr<Publisher> pub_;
  std::string endpoint_;
  uint64_t sent_ = 0;
  std::map<Subscriber*, uint64_t> received_;
};

TEST_F(CurveBusTest, TrustedClientReceivesSignedMessages) {
  auto sub = subscriber(child_, parentPublic_);
  ASSERT_NE(sub, nullptr);
  ASSERT_TRUE(pumpUntil({sub.get()}, [&] { return received_[sub.get()] >= 3; }));
  EXPECT_GE(zap_->counters("down").admitted, 1u);
  EXPECT_EQ(sub->counters().rejectedTotal(), 0u);
}

TEST_F(CurveBusTest, PlaintextClientGetsNothingAndIsCounted) {
  auto trusted = subscriber(child_, parentPublic_);
  zmq::socket_t plain(ctx_, zmq::socket_type::sub);
  plain.set(zmq::sockopt::linger, 0);
  plain.set(zmq::sockopt::subscribe, "");
  plain.connect(endpoint_);
  ASSERT_TRUE(pumpUntil({trusted.get()}, [&] {
    return received_[trusted.get()] >= 3 && rejected(ConnectionReject::kPlaintext) >= 1;
  }));
  zmq::message_t m;
  EXPECT_FALSE(plain.recv(m, zmq::recv_flags::dontwait)) << "a plaintext client got data";
  EXPECT_EQ(rejected(ConnectionReject::kUnknownKey), 0u);
}

TEST_F(CurveBusTest, UnknownKeyGetsNothingAndIsCounted) {
  auto trusted = subscriber(child_, parentPublic_);
  auto stranger = subscriber(stranger_, parentPublic_);
  ASSERT_TRUE(pumpUntil({trusted.get(), stranger.get()}, [&] {
    return received_[trusted.get()] >= 3 && rejected(ConnectionReject::kUnknownKey) >= 1;
  }));
  EXPECT_EQ(received_[stranger.get()], 0u);
  EXPECT_EQ(rejected(ConnectionReject::kPlaintext), 0u);
}

TEST_F(CurveBusTest, RevokedKeyCannotConnectAnew) {
  auto first = subscriber(child_, parentPublic_);
  ASSERT_TRUE(pumpUntil({first.get()}, [&] { return received_[first.get()] >= 1; }));
  first.reset();
  received_.clear();  // the next subscriber may get the freed one's address
  ASSERT_TRUE(childTrust_.remove(child_.publicKey()));
  auto again = subscriber(child_, parentPublic_);
  ASSERT_TRUE(
      pumpUntil({again.get()}, [&] { return rejected(ConnectionReject::kUnknownKey) >= 1; }));
  // A few more turns: still nothing reaches the revoked key.
  const uint64_t sentBefore = sent_;
  ASSERT_TRUE(pumpUntil({again.get()}, [&] { return sent_ >= sentBefore + 20; }));
  EXPECT_EQ(received_[again.get()], 0u);
}

TEST_F(CurveBusTest, WrongServerKeyGetsNothingAndIsCounted) {
  auto trusted = subscriber(child_, parentPublic_);
  auto confused = subscriber(child_, stranger_.publicKey());
  ASSERT_TRUE(pumpUntil({trusted.get(), confused.get()}, [&] {
    return received_[trusted.get()] >= 3 && rejected(ConnectionReject::kHandshake) >= 1;
  }));
  EXPECT_EQ(received_[confused.get()], 0u);
}

TEST_F(CurveBusTest, UpBusBindingSubscriberAdmitsTrustedPublisher) {
  // The up bus: the parent binds a SUB (the CURVE server), a child connects a PUB.
  zap_->admit("up", {&childTrust_});
  SubscriberOptions so;
  so.endpoint = "tcp://127.0.0.1:0";
  so.bind = true;
  const crypto::SecretKey parent = keyFromByte(1);
  so.key = &parent;
  so.curve.zap = zap_.get();
  so.curve.domain = "up";
  auto up = Subscriber::open(ctx_, childTrust_, clock_, so);
  ASSERT_TRUE(up.ok()) << up.error().message;
  PublisherOptions po;
  po.endpoint = (*up)->boundEndpoint();
  po.bind = false;
  po.curve.serverKey = parentPublic_;
  auto childPub = Publisher::open(ctx_, keyFromByte(2), clock_, po);
  ASSERT_TRUE(childPub.ok()) << childPub.error().message;
  uint64_t got = 0;
  const auto deadline = std::chrono::steady_clock::now() + kBound;
  while (got == 0) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "nothing arrived on the up bus";
    std::vector<zmq::pollitem_t> items;
    for (zmq::socket_t* s : zap_->sockets()) items.push_back({s->handle(), 0, ZMQ_POLLIN, 0});
    items.push_back({(*up)->socket().handle(), 0, ZMQ_POLLIN, 0});
    zmq::poll(items, std::chrono::milliseconds(10));
    zap_->serve();
    (*childPub)->pollSubscriptions();
    ASSERT_TRUE((*childPub)->publish("obs.child", "heartbeat", {{"ok", true}}).ok());
    (*up)->drain([&](Message&& m) {
      EXPECT_EQ(m.from, child_.publicKey());
      ++got;
    });
  }
  EXPECT_GE(zap_->counters("up").admitted, 1u);
}

TEST_F(CurveBusTest, TcpEndpointWithoutKeysIsAnErrorNamingIt) {
  // Binding side without a ZAP handler.
  auto noZap =
      Publisher::open(ctx_, keyFromByte(4), clock_, {"tcp://127.0.0.1:0", true, "", 10, {}});
  ASSERT_FALSE(noZap.ok());
  EXPECT_NE(noZap.error().message.find("tcp://127.0.0.1:0"), std::string::npos)
      << noZap.error().message;
  EXPECT_NE(noZap.error().message.find("ZAP"), std::string::npos) << noZap.error().message;
  // A domain the handler does not admit anyone on.
  PublisherOptions po{"tcp://127.0.0.1:0", true, "", 10, {}};
  po.curve.zap = zap_.get();
  po.curve.domain = "nobody";
  auto noDomain = Publisher::open(ctx_, keyFromByte(4), clock_, po);
  ASSERT_FALSE(noDomain.ok());
  EXPECT_NE(noDomain.error().message.find("'nobody'"), std::string::npos)
      << noDomain.error().message;
  // Connecting side without its own key, then without the server's.
  SubscriberOptions so;
  so.endpoint = endpoint_;
  so.curve.serverKey = parentPublic_;
  auto noKey = Subscriber::open(ctx_, parentTrust_, clock_, so);
  ASSERT_FALSE(noKey.ok());
  EXPECT_NE(noKey.error().message.find(endpoint_), std::string::npos) << noKey.error().message;
  so.key = &child_;
  so.curve.serverKey.reset();
  auto noServer = Subscriber::open(ctx_, parentTrust_, clock_, so);
  ASSERT_FALSE(noServer.ok());
  EXPECT_NE(noServer.error().message.find("public key"), std::string::npos)
      << noServer.error().message;
  // ipc:// needs none of it.
  SubscriberOptions ipcOptions;
  ipcOptions.endpoint = "ipc:///tmp/enjin-curve-test-unused";
  auto ipc = Subscriber::open(ctx_, parentTrust_, clock_, ipcOptions);
  EXPECT_TRUE(ipc.ok()) << ipc.error().message;
}

TEST(CurveKeys, CurveFormsMatchLibsodiumPairs) {
  // The curve public key the server derives from a client's ed25519 key is the one that
  // client's curve secret yields: the ZAP lookup depends on it.
  auto key = keyFromByte(7);
  auto pub = key.publicKey().toCurve();
  ASSERT_TRUE(pub.ok());
  std::array<uint8_t, 32> secret{};
  key.curveSecretInto(secret.data());
  char secretZ85[41];
  char derived[41];
  char expected[41];
  ASSERT_NE(zmq_z85_encode(secretZ85, secret.data(), secret.size()), nullptr);
  ASSERT_EQ(zmq_curve_public(derived, secretZ85), 0);
  ASSERT_NE(zmq_z85_encode(expected, pub->data(), pub->size()), nullptr);
  EXPECT_STREQ(derived, expected);
  TrustStore trust;
  ASSERT_TRUE(trust.add(key.publicKey(), "k", {""}).ok());
  ASSERT_NE(trust.findByCurve(*pub), nullptr);
  ASSERT_TRUE(trust.remove(key.publicKey()));
  EXPECT_EQ(trust.findByCurve(*pub), nullptr);
}

}  // namespace
}  // namespace enjin::bus
