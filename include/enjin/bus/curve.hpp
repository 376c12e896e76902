// CurveZMQ on tcp:// buses: connection-level encryption and authentication under the
// per-message signatures (which stay). Every bus socket on a tcp:// endpoint speaks CURVE with
// keys derived from its daemon's ed25519 identity; ipc:// endpoints stay NULL (file modes guard
// them). proto/envelope.md section 1 is the normative text.
//
// - The binding side is the CURVE server: its curve secret is its ed25519 secret converted
//   (crypto_sign_ed25519_sk_to_curve25519). Its socket carries a ZAP domain that names the bus;
//   the ZapHandler of its context answers each handshake: 200 for a client whose curve public
//   key is the curve form of a key in one of the domain's trust stores, 400 otherwise.
// - The connecting side is the CURVE client: its own keypair converted the same way, and the
//   server's curve public key converted from the server's ed25519 public key, which it already
//   trusts (a child knows its parent's key).
// - A tcp:// endpoint without what its side needs is an error naming the endpoint; there is no
//   fallback to plaintext.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "enjin/base/result.hpp"
#include "enjin/bus/trust_store.hpp"
#include "enjin/crypto/keys.hpp"

namespace enjin::bus {

class ZapHandler;

// Whether `endpoint` is one that must speak CURVE (tcp://).
bool needsCurve(std::string_view endpoint);

// What a bus socket needs beyond its own key to speak CURVE; read only for tcp:// endpoints.
struct CurveOptions {
  // Binding side: the handler that admits clients (must outlive the socket) and the ZAP domain
  // the socket announces, which names the bus in counters ("down", "up", "observe") and selects
  // the trust stores admitted (ZapHandler::admit).
  ZapHandler* zap = nullptr;
  std::string domain;
  // Connecting side: the binding side's ed25519 public key.
  std::optional<crypto::PublicKey> serverKey;
};

// Why a connection to a CURVE server was refused. The names are those of the metrics.
enum class ConnectionReject : uint8_t {
  kPlaintext,   // the peer spoke another mechanism (NULL, PLAIN): a plaintext client
  kUnknownKey,  // CURVE with a client key in none of the domain's trust stores (ZAP 400)
  kHandshake,   // any other handshake failure (wrong server key, garbage, bad ZAP traffic)
};
inline constexpr size_t kConnectionRejectCount = 3;
std::string_view connectionRejectName(ConnectionReject r);

// Counters of one ZAP domain (one bus). They only ever rise.
struct ConnectionCounters {
  uint64_t admitted = 0;
  std::array<uint64_t, kConnectionRejectCount> rejected{};

  uint64_t rejectedFor(ConnectionReject r) const { return rejected[static_cast<size_t>(r)]; }
};

// The ZAP handler (RFC 27) of one ZeroMQ context, and the handshake monitor of its CURVE server
// sockets. It runs on whichever thread owns the trust stores it reads (in a daemon, the
// reactor: TrustStore is not thread-safe, and answering on the reactor makes a revocation close
// the door for the very next handshake). Nothing here blocks: serve() answers what is waiting.
//
// Lifetime: create it before any CURVE server socket of the context and destroy it after the
// last one. libzmq 4.3's stable API has no ZMQ_ZAP_ENFORCE_DOMAIN, and without it a server
// socket whose context has no ZAP handler admits every client; the sockets set the option
// when the library offers it.
class ZapHandler {
 public:
  // Binds inproc://zeromq.zap.01 on `ctx` (a second handler on one context fails).
  static Result<std::unique_ptr<ZapHandler>> open(zmq::context_t& ctx);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // Clients of domain `domain` are admitted when their key is in one of `stores` (read at every
  // handshake: a key added or removed later counts from the next one). The stores must outlive
  // the handler, or be replaced by another admit() first. A domain never named here admits none.
  void admit(const std::string& domain, std::vector<const TrustStore*> stores);
  bool knows(const std::string& domain) const { return domains_.contains(domain); }

  // Watches the handshakes of CURVE server socket `server` of domain `domain` (before it
  // binds), to count refused plaintext and broken handshakes.
  Status watch(zmq::socket_t& server, const std::string& domain);

  // Every socket to poll for ZMQ_POLLIN before serve(): the ZAP socket and one monitor per
  // watched server. `onNewSocket`, when set, hears each socket added later (a reactor
  // registers them), and at once each that exists.
  std::vector<zmq::socket_t*> sockets();
  void setOnNewSocket(std::function<void(zmq::socket_t&)> onNewSocket);

  // Answers every waiting ZAP request and reads every waiting monitor event; never blocks.
  // Returns how many it handled.
  size_t serve();

  // Counters of `domain` (zero for one never seen).
  ConnectionCounters counters(const std::string& domain) const;
  const std::map<std::string, ConnectionCounters>& allCounters() const { return counters_; }

 private:
  ZapHandler(zmq::context_t& ctx, zmq::socket_t zap);
  bool answerOne();
  void readEvents(zmq::socket_t& monitor, const std::string& domain);

  zmq::context_t& ctx_;
  zmq::socket_t zap_;
  struct Monitor {
    std::unique_ptr<zmq::socket_t> socket;
    std::string domain;
  };
  std::vector<Monitor> monitors_;
  std::map<std::string, std::vector<const TrustStore*>> domains_;
  std::map<std::string, ConnectionCounters> counters_;
  std::function<void(zmq::socket_t&)> onNewSocket_;
  uint64_t nextMonitor_ = 0;
};

}  // namespace enjin::bus
