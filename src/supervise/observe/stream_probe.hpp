// Private to the tcp and http probes: a numeric address and one TCP check driven by the reactor.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "enjin/base/result.hpp"
#include "enjin/base/unique_fd.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/supervise/probe.hpp"

namespace enjin::supervise::detail {

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
  std::string text;  // "127.0.0.1:8080", "[::1]:8080"
};

// `host` is a numeric IPv4 or IPv6 address (the latter optionally in brackets) or "localhost"
// (127.0.0.1); names are refused because getaddrinfo blocks. `port` is 1..65535.
Result<SocketAddress> numericAddress(std::string_view host, int port);

// Connects without blocking; then, if `request` is not empty, sends it and reads the answer into
// a buffer of at most kMaxResponseBytes, handing it to `parse` after every read. `parse` returns
// the result once it has one; when `complete` (end of stream or buffer full) it must return one.
// With no request, a completed connect is the healthy result.
class StreamProbe final : public Probe {
 public:
  static constexpr size_t kMaxResponseBytes = 8192;
  using Parser =
      std::function<std::optional<ProbeResult>(std::string_view received, bool complete)>;

  // An `address` error is reported by every check, so that a bad probe config shows up as a
  // failing check rather than being lost.
  StreamProbe(Reactor& reactor, Result<SocketAddress> address, std::string request, Parser parse,
              int64_t timeoutMs);
  ~StreamProbe() override;
  StreamProbe(const StreamProbe&) = delete;
  StreamProbe& operator=(const StreamProbe&) = delete;

  void start(std::function<void(ProbeResult)> done) override;
  void cancel() override;

 private:
  enum class Phase { kIdle, kConnecting, kSending, kReceiving };

  void onEvent(uint32_t events);
  void onConnectDone();
  void sendRequest();
  void receive();
  // Reports `result` from a later reactor round: `done` never runs inside start().
  void finishSoon(ProbeResult result);
  // Releases the check's resources, then calls `done`; touches nothing after that call, which
  // may start the next check or destroy the probe.
  void finish(ProbeResult result);
  void release();

  Reactor& reactor_;
  Result<SocketAddress> address_;
  std::string request_;
  Parser parse_;
  int64_t timeoutMs_;

  std::function<void(ProbeResult)> done_;
  Phase phase_ = Phase::kIdle;
  UniqueFd socket_;
  bool watching_ = false;  // socket_ is registered with the reactor
  Reactor::TimerId timer_ = 0;
  size_t sent_ = 0;
  std::string received_;
};

}  // namespace enjin::supervise::detail
