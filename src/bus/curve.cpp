#include "enjin/bus/curve.hpp"

#include <sodium.h>
#include <spdlog/spdlog.h>

#include <cstdint>
#include <cstring>

#include "curve_socket.hpp"

namespace enjin::bus {

namespace {
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
// ZMQ_ZAP_ENFORCE_DOMAIN is a draft option of libzmq 4.3 (93); set when the library has it.
constexpr int kZapEnforceDomain = 93;

// Wipes a curve secret when it goes out of scope.
struct CurveSecret {
  std::array<uint8_t, crypto::kCurveKeyBytes> bytes{};
  ~CurveSecret() { sodium_memzero(bytes.data(), bytes.size()); }
};
}  // namespace

bool needsCurve(std::string_view endpoint) {
  return endpoint.starts_with("tcp://");
}

std::string_view connectionRejectName(ConnectionReject r) {
  switch (r) {
    case ConnectionReject::kPlaintext:
      return "plaintext";
    case ConnectionReject::kUnknownKey:
      return "unknown_key";
    case ConnectionReject::kHandshake:
      return "handshake";
  }
  return "handshake";
}

Status secureSocket(zmq::socket_t& sock, const std::string& endpoint, bool bind,
                    const crypto::SecretKey* own, const CurveOptions& curve) {
  if (!needsCurve(endpoint)) return {};
  const std::string side = bind ? "binding" : "connecting";
  if (own == nullptr) {
    return Error{endpoint + ": a tcp:// bus speaks CURVE, and the " + side +
                 " side has no key of its own"};
  }
  CurveSecret secret;
  own->curveSecretInto(secret.bytes.data());
  auto ownCurve = own->publicKey().toCurve();
  if (!ownCurve.ok()) return ownCurve.error().wrap(endpoint);
  try {
    if (bind) {
      if (curve.zap == nullptr || curve.domain.empty()) {
        return Error{endpoint +
                     ": a tcp:// bus speaks CURVE, and the binding side has no ZAP "
                     "handler and domain to admit clients"};
      }
      if (!curve.zap->knows(curve.domain)) {
        return Error{endpoint + ": ZAP domain '" + curve.domain + "' admits no trust store"};
      }
      sock.set(zmq::sockopt::curve_server, 1);
      sock.set(zmq::sockopt::curve_secretkey,
               zmq::const_buffer(secret.bytes.data(), secret.bytes.size()));
      sock.set(zmq::sockopt::curve_publickey,
               zmq::const_buffer(ownCurve->data(), ownCurve->size()));
      sock.set(zmq::sockopt::zap_domain, curve.domain);
      const int one = 1;
      (void)zmq_setsockopt(sock.handle(), kZapEnforceDomain, &one, sizeof one);
      if (auto st = curve.zap->watch(sock, curve.domain); !st.ok())
        return st.error().wrap(endpoint);
    } else {
      if (!curve.serverKey) {
        return Error{endpoint +
                     ": a tcp:// bus speaks CURVE, and the connecting side was not "
                     "given the binding side's public key"};
      }
      auto server = curve.serverKey->toCurve();
      if (!server.ok()) return server.error().wrap(endpoint + ": server key");
      sock.set(zmq::sockopt::curve_serverkey, zmq::const_buffer(server->data(), server->size()));
      sock.set(zmq::sockopt::curve_publickey,
               zmq::const_buffer(ownCurve->data(), ownCurve->size()));
      sock.set(zmq::sockopt::curve_secretkey,
               zmq::const_buffer(secret.bytes.data(), secret.bytes.size()));
    }
  } catch (const zmq::error_t& e) {
    return Error{endpoint + ": CURVE: " + e.what()};
  }
  return {};
}

Result<std::unique_ptr<ZapHandler>> ZapHandler::open(zmq::context_t& ctx) {
  if (zmq_has("curve") == 0) return Error{"ZAP handler: this libzmq has no CURVE"};
  try {
    zmq::socket_t zap(ctx, zmq::socket_type::rep);
    zap.set(zmq::sockopt::linger, 0);
    zap.bind(kZapEndpoint);
    return std::unique_ptr<ZapHandler>(new ZapHandler(ctx, std::move(zap)));
  } catch (const zmq::error_t& e) {
    return Error{std::string("ZAP handler: bind ") + kZapEndpoint + ": " + e.what()};
  }
}

ZapHandler::ZapHandler(zmq::context_t& ctx, zmq::socket_t zap) : ctx_(ctx), zap_(std::move(zap)) {}
ZapHandler::~ZapHandler() = default;

void ZapHandler::admit(const std::string& domain, std::vector<const TrustStore*> stores) {
  domains_[domain] = std::move(stores);
  counters_.try_emplace(domain);
}

Status ZapHandler::watch(zmq::socket_t& server, const std::string& domain) {
  const std::string endpoint = "inproc://enjin-zap-monitor-" +
                               std::to_string(reinterpret_cast<uintptr_t>(this)) + "-" +
                               std::to_string(nextMonitor_++);
  if (zmq_socket_monitor(
          server.handle(), endpoint.c_str(),
          ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) != 0) {
    return Error{"monitor of the CURVE handshakes: " + std::string(zmq_strerror(zmq_errno()))};
  }
  try {
    auto pair = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::pair);
    pair->set(zmq::sockopt::linger, 0);
    pair->connect(endpoint);
    monitors_.push_back(Monitor{std::move(pair), domain});
  } catch (const zmq::error_t& e) {
    return Error{"monitor of the CURVE handshakes: connect " + endpoint + ": " + e.what()};
  }
  counters_.try_emplace(domain);
  if (onNewSocket_) onNewSocket_(*monitors_.back().socket);
  return {};
}

std::vector<zmq::socket_t*> ZapHandler::sockets() {
  std::vector<zmq::socket_t*> out{&zap_};
  for (auto& m : monitors_) out.push_back(m.socket.get());
  return out;
}

void ZapHandler::setOnNewSocket(std::function<void(zmq::socket_t&)> onNewSocket) {
  onNewSocket_ = std::move(onNewSocket);
  if (!onNewSocket_) return;
  for (zmq::socket_t* s : sockets()) onNewSocket_(*s);
}

size_t ZapHandler::serve() {
  size_t n = 0;
  while (answerOne()) ++n;
  for (auto& m : monitors_) readEvents(*m.socket, m.domain);
  return n;
}

bool ZapHandler::answerOne() {
  // A ZAP request (RFC 27): version, request id, domain, address, routing id, mechanism, then
  // the mechanism's credentials (CURVE: the client's 32-byte public key).
  std::vector<zmq::message_t> frames;
  zmq::message_t part;
  if (!zap_.recv(part, zmq::recv_flags::dontwait)) return false;
  frames.push_back(std::move(part));
  while (frames.back().more() && frames.size() < 16) {
    zmq::message_t next;
    (void)zap_.recv(next, zmq::recv_flags::none);  // the rest of a message is already queued
    frames.push_back(std::move(next));
  }
  while (frames.back().more()) {  // more than 16 frames: malformed, discard the rest
    zmq::message_t rest;
    (void)zap_.recv(rest, zmq::recv_flags::none);
  }
  const std::string requestId = frames.size() > 1 ? frames[1].to_string() : "";
  const std::string domain = frames.size() > 2 ? frames[2].to_string() : "";
  std::string status = "400";
  std::string text = "unknown key";
  std::string userId;
  ConnectionCounters& counters = counters_[domain];
  if (frames.size() != 7 || frames[0].to_string_view() != "1.0" ||
      frames[5].to_string_view() != "CURVE" || frames[6].size() != crypto::kCurveKeyBytes) {
    text = "malformed request";
    ++counters.rejected[static_cast<size_t>(ConnectionReject::kHandshake)];
  } else {
    crypto::CurvePublicKey curve{};
    std::memcpy(curve.data(), frames[6].data(), curve.size());
    const TrustedKey* found = nullptr;
    if (auto d = domains_.find(domain); d != domains_.end()) {
      for (const TrustStore* store : d->second) {
        if ((found = store->findByCurve(curve)) != nullptr) break;
      }
    }
    if (found != nullptr) {
      status = "200";
      text = "OK";
      userId = found->key.hex();
      ++counters.admitted;
    } else {
      ++counters.rejected[static_cast<size_t>(ConnectionReject::kUnknownKey)];
      spdlog::warn("bus '{}': refused a CURVE client from {}: its key is not trusted", domain,
                   frames[3].to_string());
    }
  }
  try {
    zap_.send(zmq::buffer(std::string_view("1.0")), zmq::send_flags::sndmore);
    zap_.send(zmq::buffer(requestId), zmq::send_flags::sndmore);
    zap_.send(zmq::buffer(status), zmq::send_flags::sndmore);
    zap_.send(zmq::buffer(text), zmq::send_flags::sndmore);
    zap_.send(zmq::buffer(userId), zmq::send_flags::sndmore);
    zap_.send(zmq::message_t(), zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    spdlog::error("ZAP handler: reply to request {}: {}", requestId, e.what());
  }
  return true;
}

void ZapHandler::readEvents(zmq::socket_t& monitor, const std::string& domain) {
  // A monitor event (libzmq 4.3): a 6-byte frame (uint16 event, uint32 value), then the
  // endpoint.
  zmq::message_t head;
  while (monitor.recv(head, zmq::recv_flags::dontwait)) {
    zmq::message_t address;
    if (head.more()) (void)monitor.recv(address, zmq::recv_flags::none);
    if (head.size() != 6) continue;
    uint16_t event = 0;
    uint32_t value = 0;
    std::memcpy(&event, head.data(), 2);
    std::memcpy(&value, static_cast<const uint8_t*>(head.data()) + 2, 4);
    ConnectionCounters& counters = counters_[domain];
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
        value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
      ++counters.rejected[static_cast<size_t>(ConnectionReject::kPlaintext)];
      spdlog::warn("bus '{}': refused a plaintext connection on {}", domain, address.to_string());
    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
               event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
      ++counters.rejected[static_cast<size_t>(ConnectionReject::kHandshake)];
    }
  }
}

ConnectionCounters ZapHandler::counters(const std::string& domain) const {
  auto it = counters_.find(domain);
  return it == counters_.end() ? ConnectionCounters{} : it->second;
}

}  // namespace enjin::bus
