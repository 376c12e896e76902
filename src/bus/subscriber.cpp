#include "enjin/bus/subscriber.hpp"

#include <array>
#include <cstdint>
#include <limits>

#include "attach.hpp"
#include "curve_socket.hpp"

namespace enjin::bus {

namespace {
// ZMQ_MAXMSGSIZE is checked per frame, from the frame's header, before libzmq allocates it: a
// larger frame drops the sender's connection (a connecting SUB then reconnects on its own). The
// margin above maxPayloadBytes covers the topic and auth frames and lets a payload slightly over
// the limit reach the verifier, which counts it as oversize; anything beyond is never buffered.
constexpr uint64_t kFrameSizeMargin = 4096;

int64_t maxFrameBytes(size_t maxPayloadBytes) {
  constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  const uint64_t payload = maxPayloadBytes;
  return static_cast<int64_t>(payload >= kMax - kFrameSizeMargin ? kMax : payload + kFrameSizeMargin);
}
}  // namespace

Result<std::unique_ptr<Subscriber>> Subscriber::open(zmq::context_t& ctx, const TrustStore& trust,
                                                     const Clock& clock,
                                                     SubscriberOptions options) {
  try {
    zmq::socket_t sock(ctx, zmq::socket_type::sub);
    sock.set(zmq::sockopt::rcvhwm, options.receiveHighWater);
    // An unauthenticated peer must not make us buffer arbitrarily large frames.
    sock.set(zmq::sockopt::maxmsgsize, maxFrameBytes(options.verify.maxPayloadBytes));
    sock.set(zmq::sockopt::linger, 0);
    sock.set(zmq::sockopt::ipv6, 1);
    if (options.verify.prefixes.empty()) {
      sock.set(zmq::sockopt::subscribe, "");
    } else {
      for (const auto& p : options.verify.prefixes) sock.set(zmq::sockopt::subscribe, p);
    }
    if (auto st = secureSocket(sock, options.endpoint, options.bind, options.key, options.curve);
        !st.ok()) {
      return st.error();
    }
    if (auto st = attach(sock, options.endpoint, options.bind); !st.ok()) return st.error();
    return std::unique_ptr<Subscriber>(
        new Subscriber(std::move(sock), trust, clock, std::move(options.verify)));
  } catch (const zmq::error_t& e) {
    return Error{"socket for " + options.endpoint + ": " + e.what()};
  }
}

Subscriber::Subscriber(zmq::socket_t socket, const TrustStore& trust, const Clock& clock,
                       VerifierOptions options)
    : socket_(std::move(socket)), verifier_(trust, clock, std::move(options)) {}

size_t Subscriber::drain(const OnMessage& onMessage, size_t max) {
  // A v1 message has three frames; a fourth is kept only to be counted, the rest are discarded
  // as they arrive so a hostile sender cannot make us hold many.
  std::array<zmq::message_t, 4> parts;
  size_t n = 0;
  while (n < max) {
    if (!socket_.recv(parts[0], zmq::recv_flags::dontwait)) break;
    size_t count = 1;
    while (parts[std::min<size_t>(count - 1, 3)].more()) {
      zmq::message_t& slot = parts[std::min<size_t>(count, 3)];
      // The rest of a multipart message is already queued: this recv does not wait.
      (void)socket_.recv(slot, zmq::recv_flags::none);
      ++count;
    }
    ++n;
    std::array<std::string_view, 4> frames;
    const size_t kept = std::min<size_t>(count, 4);
    for (size_t i = 0; i < kept; ++i) frames[i] = parts[i].to_string_view();
    // More than four frames is as malformed as four; only the count matters then.
    std::vector<std::string_view> many;
    std::span<const std::string_view> view(frames.data(), kept);
    if (count > 4) {
      many.assign(count, std::string_view{});
      view = many;
    }
    Verdict v = verifier_.verify(view);
    if (auto* m = std::get_if<Message>(&v)) {
      onMessage(std::move(*m));
    } else if (auto* r = std::get_if<Rejection>(&v); r != nullptr && onReject_) {
      onReject_(*r);
    }
  }
  return n;
}

std::string Subscriber::boundEndpoint() const { return socket_.get(zmq::sockopt::last_endpoint); }

}  // namespace enjin::bus
