#include "enjin/bus/publisher.hpp"

#include <nlohmann/json.hpp>

#include "attach.hpp"
#include "curve_socket.hpp"
#include "enjin/bus/envelope.hpp"
#include "enjin/bus/topic.hpp"

namespace enjin::bus {

Result<std::unique_ptr<Publisher>> Publisher::open(zmq::context_t& ctx, crypto::SecretKey key,
                                                   const Clock& clock,
                                                   PublisherOptions options) {
  auto seq = SeqCounter::open(clock, options.seqFile);
  if (!seq.ok()) return seq.error().wrap("open publisher on " + options.endpoint);
  try {
    zmq::socket_t sock(ctx, zmq::socket_type::xpub);
    sock.set(zmq::sockopt::sndhwm, options.sendHighWater);
    sock.set(zmq::sockopt::linger, 1000);
    sock.set(zmq::sockopt::ipv6, 1);
    if (auto st = secureSocket(sock, options.endpoint, options.bind, &key, options.curve);
        !st.ok()) {
      return st.error();
    }
    if (auto st = attach(sock, options.endpoint, options.bind); !st.ok()) return st.error();
    return std::unique_ptr<Publisher>(
        new Publisher(std::move(sock), std::move(key), clock, std::move(*seq)));
  } catch (const zmq::error_t& e) {
    return Error{"socket for " + options.endpoint + ": " + e.what()};
  }
}

Publisher::Publisher(zmq::socket_t socket, crypto::SecretKey key, const Clock& clock,
                     SeqCounter seq)
    : socket_(std::move(socket)), key_(std::move(key)), clock_(clock), seq_(std::move(seq)) {}

Status Publisher::publish(std::string_view topic, std::string_view type,
                          const nlohmann::json& body) {
  if (!body.is_object()) return Error{"publish on '" + std::string(topic) + "': body must be an object"};
  std::string serialized;
  try {
    serialized = body.dump();
  } catch (const nlohmann::json::exception& e) {
    return Error{"publish on '" + std::string(topic) + "': " + e.what()};
  }
  return publishSerialized(topic, type, serialized);
}

Status Publisher::publishSerialized(std::string_view topic, std::string_view type,
                                    std::string_view bodyJson) {
  if (!isValidTopic(topic)) return Error{"publish: invalid topic '" + std::string(topic) + "'"};
  if (type.empty()) return Error{"publish on '" + std::string(topic) + "': empty type"};
  auto seq = seq_.next();
  if (!seq.ok()) return seq.error().wrap("publish on '" + std::string(topic) + "'");
  std::string payload;
  try {
    payload = encodePayload(key_.publicKey(), *seq, clock_.wallMillis(), type, bodyJson);
  } catch (const nlohmann::json::exception& e) {
    return Error{"publish on '" + std::string(topic) + "': type: " + e.what()};
  }
  // Receivers refuse larger payloads (and libzmq cuts a connecting one off for good): say so
  // here, naming the topic, rather than let the message vanish.
  if (payload.size() > kDefaultMaxPayloadBytes) {
    return Error{"publish on '" + std::string(topic) + "': payload of " +
                 std::to_string(payload.size()) + " bytes is over the limit of " +
                 std::to_string(kDefaultMaxPayloadBytes)};
  }
  const Auth auth = signEnvelope(key_, topic, payload, scratch_);
  try {
    socket_.send(zmq::buffer(topic), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    socket_.send(zmq::buffer(payload), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    socket_.send(zmq::buffer(auth), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    return Error{"publish on '" + std::string(topic) + "': " + e.what()};
  }
  return {};
}

size_t Publisher::pollSubscriptions(const OnSubscription& onChange) {
  zmq::message_t msg;
  while (socket_.recv(msg, zmq::recv_flags::dontwait)) {
    // XPUB reports a topic prefix when it gains its first subscriber (0x01) and loses its
    // last one (0x00); other frames are not subscriptions.
    if (msg.size() == 0) continue;
    const auto kind = static_cast<const uint8_t*>(msg.data())[0];
    if (kind == 1) {
      ++subscribedPrefixes_;
    } else if (kind == 0 && subscribedPrefixes_ > 0) {
      --subscribedPrefixes_;
    } else {
      continue;
    }
    if (onChange) {
      onChange(std::string_view(static_cast<const char*>(msg.data()) + 1, msg.size() - 1),
               kind == 1);
    }
  }
  return subscribedPrefixes_;
}

std::string Publisher::boundEndpoint() const {
  return socket_.get(zmq::sockopt::last_endpoint);
}

}  // namespace enjin::bus
