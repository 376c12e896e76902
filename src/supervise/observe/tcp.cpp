// The tcp probe (healthy when a connect succeeds) and the connection machinery it shares with the
// http probe.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "enjin/supervise/probe.hpp"
#include "stream_probe.hpp"

namespace enjin::supervise {

namespace detail {

Result<SocketAddress> numericAddress(std::string_view host, int port) {
  const std::string where = "address '" + std::string(host) + "' port " + std::to_string(port);
  if (port < 1 || port > 65535) return Error{where + ": port is not in 1..65535"};
  std::string_view bare = host;
  const bool bracketed = bare.size() >= 2 && bare.front() == '[' && bare.back() == ']';
  if (bracketed) bare = bare.substr(1, bare.size() - 2);
  const std::string name = bare == "localhost" ? "127.0.0.1" : std::string(bare);

  SocketAddress out;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
  if (!bracketed && ::inet_pton(AF_INET, name.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    out.length = sizeof(sockaddr_in);
    out.text = name + ":" + std::to_string(port);
  } else if (::inet_pton(AF_INET6, name.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    out.length = sizeof(sockaddr_in6);
    out.text = "[" + name + "]:" + std::to_string(port);
  } else {
    return Error{where + ": not a numeric IPv4 or IPv6 address nor localhost"};
  }
  return out;
}

StreamProbe::StreamProbe(Reactor& reactor, Result<SocketAddress> address, std::string request,
                         Parser parse, int64_t timeoutMs)
    : reactor_(reactor),
      address_(std::move(address)),
      request_(std::move(request)),
      parse_(std::move(parse)),
      timeoutMs_(timeoutMs) {}

StreamProbe::~StreamProbe() {
  cancel();
}

void StreamProbe::start(std::function<void(ProbeResult)> done) {
  cancel();
  done_ = std::move(done);
  if (!address_.ok()) return finishSoon({false, address_.error().message});
  const SocketAddress& address = *address_;

  socket_.reset(::socket(address.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!socket_) return finishSoon({false, errnoError("socket for " + address.text, errno).message});
  // A non-blocking connect either completes at once or reports EINPROGRESS (EINTR: it goes on in
  // the background); both end in the socket becoming writable, with the outcome in SO_ERROR.
  if (::connect(socket_.get(), reinterpret_cast<const sockaddr*>(&address.storage),
                address.length) != 0 &&
      errno != EINPROGRESS && errno != EINTR) {
    return finishSoon({false, errnoError("connect " + address.text, errno).message});
  }
  if (auto st = reactor_.addFd(socket_.get(), EPOLLOUT, [this](uint32_t ev) { onEvent(ev); });
      !st.ok()) {
    return finishSoon({false, st.error().message});
  }
  watching_ = true;
  phase_ = Phase::kConnecting;
  timer_ = reactor_.addTimerAfterMillis(timeoutMs_, [this] {
    timer_ = 0;
    finish({false, "timed out after " + std::to_string(timeoutMs_) + " ms"});
  });
}

void StreamProbe::cancel() {
  release();
  done_ = nullptr;
}

void StreamProbe::release() {
  if (timer_ != 0) reactor_.cancelTimer(std::exchange(timer_, 0));
  if (watching_) {
    reactor_.removeFd(socket_.get());
    watching_ = false;
  }
  socket_.reset();
  phase_ = Phase::kIdle;
  sent_ = 0;
  received_.clear();
}

void StreamProbe::finishSoon(ProbeResult result) {
  release();
  timer_ = reactor_.addTimerAfterMillis(0, [this, result = std::move(result)]() mutable {
    timer_ = 0;
    finish(std::move(result));
  });
}

void StreamProbe::finish(ProbeResult result) {
  release();
  auto done = std::exchange(done_, nullptr);
  if (done) done(std::move(result));
}

void StreamProbe::onEvent(uint32_t events) {
  switch (phase_) {
    case Phase::kConnecting:
      if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) onConnectDone();
      return;
    case Phase::kSending:
      sendRequest();
      return;
    case Phase::kReceiving:
      receive();
      return;
    case Phase::kIdle:
      return;
  }
}

void StreamProbe::onConnectDone() {
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(socket_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) return finish({false, errnoError("connect " + address_->text, err).message});
  if (request_.empty()) return finish({true, "connected to " + address_->text});
  phase_ = Phase::kSending;
  sendRequest();
}

void StreamProbe::sendRequest() {
  while (sent_ < request_.size()) {
    // MSG_NOSIGNAL: a peer that closed early is an error here, not a SIGPIPE for the daemon.
    const ssize_t n = ::send(socket_.get(), request_.data() + sent_, request_.size() - sent_,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // still EPOLLOUT: called again
      return finish({false, errnoError("send to " + address_->text, errno).message});
    }
    sent_ += static_cast<size_t>(n);
  }
  if (auto st = reactor_.modifyFd(socket_.get(), EPOLLIN); !st.ok()) {
    return finish({false, st.error().message});
  }
  phase_ = Phase::kReceiving;
}

void StreamProbe::receive() {
  char buf[kMaxResponseBytes];
  const size_t room = kMaxResponseBytes - received_.size();
  const ssize_t n = ::recv(socket_.get(), buf, room, MSG_DONTWAIT);
  if (n < 0) {
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) return;  // level-triggered
    return finish({false, errnoError("receive from " + address_->text, errno).message});
  }
  received_.append(buf, static_cast<size_t>(n));
  const bool complete = n == 0 || received_.size() >= kMaxResponseBytes;
  if (auto result = parse_(received_, complete)) return finish(std::move(*result));
  if (complete) return finish({false, "no answer from " + address_->text});  // parser bug guard
}

}  // namespace detail

std::unique_ptr<Probe> makeTcpProbe(Reactor& reactor, std::string host, int port,
                                    int64_t timeoutMs) {
  auto address = detail::numericAddress(host, port);
  if (!address.ok()) address = address.error().wrap("tcp probe");
  return std::make_unique<detail::StreamProbe>(reactor, std::move(address), std::string(),
                                               detail::StreamProbe::Parser(), timeoutMs);
}

}  // namespace enjin::supervise
