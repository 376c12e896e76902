#include "enjin/reactor/reactor.hpp"

#include <sys/epoll.h>
#include <zmq.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <zmq.hpp>

namespace enjin {

namespace {

// Events taken from epoll per round. More ready fds stay ready (level-triggered) and are taken
// in the next round, which then does not wait.
constexpr int kMaxEvents = 64;
constexpr int64_t kNanosPerMilli = 1'000'000;

// A broken invariant (a bad fd, a terminated context under a registered socket): crash loudly and
// let the supervisor above restart us.
[[noreturn]] void die(const char* what, int err) {
  std::fprintf(stderr, "enjin: reactor: %s: %s\n", what, std::strerror(err));
  std::abort();
}

uint64_t packFdData(int fd, uint32_t serial) {
  return uint64_t{serial} << 32 | static_cast<uint32_t>(fd);
}

}  // namespace

Result<std::unique_ptr<Reactor>> Reactor::create(const Clock& clock) {
  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll) return errnoError("create reactor: epoll_create1", errno);
  return std::unique_ptr<Reactor>(new Reactor(clock, std::move(epoll)));
}

Reactor::Reactor(const Clock& clock, UniqueFd epoll) : clock_(clock), epoll_(std::move(epoll)) {}

Reactor::~Reactor() = default;

Status Reactor::addFd(int fd, uint32_t events, FdHandler handler) {
  if (fds_.contains(fd)) return Error{"watch fd " + std::to_string(fd) + ": already watched"};
  const uint32_t serial = nextFdSerial_++;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = packFdData(fd, serial);
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    return errnoError("watch fd " + std::to_string(fd), errno);
  }
  fds_.emplace(fd, FdEntry{events, serial, std::make_shared<FdHandler>(std::move(handler))});
  return {};
}

Status Reactor::modifyFd(int fd, uint32_t events) {
  auto it = fds_.find(fd);
  if (it == fds_.end()) return Error{"modify fd " + std::to_string(fd) + ": not watched"};
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = packFdData(fd, it->second.serial);
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) != 0) {
    return errnoError("modify fd " + std::to_string(fd), errno);
  }
  it->second.events = events;
  return {};
}

void Reactor::removeFd(int fd) {
  auto it = fds_.find(fd);
  if (it == fds_.end()) return;
  // Fails only if the fd was closed first (EBADF), which already took it out of the epoll set.
  (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  fds_.erase(it);
}

void Reactor::addSocket(zmq::socket_t& socket, SocketHandler handler) {
  auto handlerPtr = std::make_shared<SocketHandler>(std::move(handler));
  for (auto& entry : sockets_) {
    if (entry.socket == &socket) {
      entry.handler = std::move(handlerPtr);
      return;
    }
  }
  sockets_.push_back(SocketEntry{&socket, std::move(handlerPtr)});
}

void Reactor::removeSocket(zmq::socket_t& socket) {
  std::erase_if(sockets_, [&](const SocketEntry& e) { return e.socket == &socket; });
}

Reactor::TimerId Reactor::addTimerAt(int64_t deadlineNanos, TimerHandler handler) {
  const TimerId id = nextTimerId_++;
  timers_.emplace(std::make_pair(deadlineNanos, id), std::move(handler));
  timerDeadlines_.emplace(id, deadlineNanos);
  return id;
}

int64_t Reactor::deadlineAfterMillis(int64_t delayMillis) const {
  const int64_t now = clock_.monotonicNanos();
  if (delayMillis <= 0) return now;
  return delayMillis > (INT64_MAX - now) / kNanosPerMilli ? INT64_MAX
                                                          : now + delayMillis * kNanosPerMilli;
}

Reactor::TimerId Reactor::addTimerAfterMillis(int64_t delayMillis, TimerHandler handler) {
  return addTimerAt(deadlineAfterMillis(delayMillis), std::move(handler));
}

void Reactor::cancelTimer(TimerId id) {
  auto it = timerDeadlines_.find(id);
  if (it == timerDeadlines_.end()) return;
  timers_.erase(std::make_pair(it->second, id));
  timerDeadlines_.erase(it);
}

OwnedTimers::~OwnedTimers() { cancelAll(); }

void OwnedTimers::cancelAll() {
  // Taken out first: cancelling destroys a handler, and what it captured may come back here.
  const auto pending = std::exchange(pending_, {});
  for (Reactor::TimerId id : pending) reactor_.cancelTimer(id);
}

Reactor::TimerId OwnedTimers::at(int64_t deadlineNanos, Reactor::TimerHandler handler) {
  // The id is known only once added; the callback reads it from the slot it shares.
  auto slot = std::make_shared<Reactor::TimerId>(0);
  const Reactor::TimerId id =
      reactor_.addTimerAt(deadlineNanos, [this, slot, handler = std::move(handler)] {
        pending_.erase(*slot);
        handler();
      });
  *slot = id;
  pending_.insert(id);
  return id;
}

Reactor::TimerId OwnedTimers::after(int64_t delayMillis, Reactor::TimerHandler handler) {
  return at(reactor_.deadlineAfterMillis(delayMillis), std::move(handler));
}

void OwnedTimers::cancel(Reactor::TimerId id) {
  if (pending_.erase(id) != 0) reactor_.cancelTimer(id);
}

std::optional<int64_t> Reactor::nextDeadline() const {
  if (timers_.empty()) return std::nullopt;
  return timers_.begin()->first.first;
}

int Reactor::waitTimeoutMillis(int64_t maxWaitMillis) const {
  int64_t timeout = maxWaitMillis < 0 ? -1 : maxWaitMillis;
  if (!timers_.empty() && timeout != 0) {
    const int64_t left = timers_.begin()->first.first - clock_.monotonicNanos();
    // Rounded up: waking before the deadline would find the timer not yet due and spin.
    const int64_t leftMillis =
        left <= 0 ? 0 : left / kNanosPerMilli + (left % kNanosPerMilli != 0 ? 1 : 0);
    timeout = timeout < 0 ? leftMillis : std::min(timeout, leftMillis);
  }
  return static_cast<int>(std::min<int64_t>(timeout, INT_MAX));
}

size_t Reactor::runOnce(int64_t maxWaitMillis) {
  const int timeout = waitTimeoutMillis(maxWaitMillis);

  std::array<epoll_event, kMaxEvents> events;
  int eventCount = 0;
  // Sockets zmq_poll found readable, by address: looked up again before each call because an
  // earlier handler of this round may have removed (and destroyed) one.
  std::vector<zmq::socket_t*> readySockets;

  if (sockets_.empty()) {
    // No ZeroMQ socket: wait on epoll alone, and never touch libzmq's poller.
    eventCount = ::epoll_wait(epoll_.get(), events.data(), kMaxEvents, timeout);
    if (eventCount < 0) {
      if (errno != EINTR) die("epoll_wait", errno);
      eventCount = 0;
    }
  } else {
    std::vector<zmq_pollitem_t> items;
    items.reserve(sockets_.size() + 1);
    for (const auto& entry : sockets_) {
      items.push_back(zmq_pollitem_t{entry.socket->handle(), 0, ZMQ_POLLIN, 0});
    }
    items.push_back(zmq_pollitem_t{nullptr, epoll_.get(), ZMQ_POLLIN, 0});
    const int rc = ::zmq_poll(items.data(), static_cast<int>(items.size()), timeout);
    if (rc < 0) {
      if (zmq_errno() != EINTR) die("zmq_poll", zmq_errno());
    } else if (rc > 0) {
      for (size_t i = 0; i + 1 < items.size(); ++i) {
        if (items[i].revents & ZMQ_POLLIN) readySockets.push_back(sockets_[i].socket);
      }
      if (items.back().revents & ZMQ_POLLIN) {
        eventCount = ::epoll_wait(epoll_.get(), events.data(), kMaxEvents, 0);
        if (eventCount < 0) {
          if (errno != EINTR) die("epoll_wait", errno);
          eventCount = 0;
        }
      }
    }
  }
  if (timeout != 0) ++wakeups_;

  size_t ran = 0;
  for (int i = 0; i < eventCount; ++i) {
    const int fd = static_cast<int>(static_cast<uint32_t>(events[i].data.u64));
    const auto serial = static_cast<uint32_t>(events[i].data.u64 >> 32);
    auto it = fds_.find(fd);
    if (it == fds_.end() || it->second.serial != serial) continue;  // removed this round
    std::shared_ptr<FdHandler> handler = it->second.handler;        // survives its own removal
    (*handler)(events[i].events);
    ++ran;
  }

  for (zmq::socket_t* socket : readySockets) {
    auto it = std::find_if(sockets_.begin(), sockets_.end(),
                           [&](const SocketEntry& e) { return e.socket == socket; });
    if (it == sockets_.end()) continue;  // removed this round
    // An earlier handler may have drained it: call only while a message is waiting.
    int zmqEvents = 0;
    size_t size = sizeof zmqEvents;
    if (::zmq_getsockopt(socket->handle(), ZMQ_EVENTS, &zmqEvents, &size) != 0) {
      die("zmq_getsockopt ZMQ_EVENTS", zmq_errno());
    }
    if (!(zmqEvents & ZMQ_POLLIN)) continue;
    std::shared_ptr<SocketHandler> handler = it->handler;
    (*handler)();
    ++ran;
  }

  return ran + runDueTimers();
}

size_t Reactor::runDueTimers() {
  if (timers_.empty()) return 0;
  const int64_t now = clock_.monotonicNanos();
  // The due set is fixed before any callback runs: a timer a callback adds, even for "now", waits
  // for the next round, so a timer that re-arms itself at 0 ms cannot starve the loop.
  std::vector<std::pair<int64_t, TimerId>> due;
  for (auto it = timers_.begin(); it != timers_.end() && it->first.first <= now; ++it) {
    due.push_back(it->first);
  }
  size_t ran = 0;
  for (const auto& key : due) {
    auto it = timers_.find(key);
    if (it == timers_.end()) continue;  // cancelled by an earlier callback
    TimerHandler handler = std::move(it->second);
    timers_.erase(it);
    timerDeadlines_.erase(key.second);
    if (lagObserver_) lagObserver_(std::max<int64_t>(0, clock_.monotonicNanos() - key.first));
    handler();
    ++ran;
  }
  return ran;
}

void Reactor::run() {
  while (!stopping_) runOnce(-1);
  stopping_ = false;
}

}  // namespace enjin
