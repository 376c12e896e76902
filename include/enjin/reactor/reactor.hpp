// One reactor per daemon, on one thread: zmq_poll over the ZeroMQ sockets plus one epoll fd that
// gathers every plain fd (pidfds, signalfd, pipes, unix sockets), and a set of timers on the
// injected clock's monotonic time. With nothing to do it sleeps until the next timer: no polling
// loop, no periodic wake-up of its own.
//
// Contracts:
// - Callbacks run on the reactor thread, one at a time, and must not block.
// - A callback may add or remove any fd, socket or timer, including its own; a removed handler is
//   never called again, even if its fd was ready in the same round.
// - Timers fire in deadline order; timers with equal deadlines fire in the order they were added.
// - Nothing here is thread-safe; other threads hand work over through an fd (eventfd) they own.
#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "enjin/base/clock.hpp"
#include "enjin/base/result.hpp"
#include "enjin/base/unique_fd.hpp"

namespace zmq {
class socket_t;
}

namespace enjin {

class Reactor {
 public:
  using FdHandler = std::function<void(uint32_t events)>;  // EPOLLIN, EPOLLOUT, EPOLLHUP, ...
  using SocketHandler = std::function<void()>;             // the socket has messages to read
  using TimerHandler = std::function<void()>;
  using TimerId = uint64_t;

  // `clock` must outlive the reactor.
  static Result<std::unique_ptr<Reactor>> create(const Clock& clock);
  ~Reactor();

  // Watches `fd` (not owned) for `events` (level-triggered). One handler per fd.
  Status addFd(int fd, uint32_t events, FdHandler handler);
  Status modifyFd(int fd, uint32_t events);
  // Unknown fds are ignored. Call before closing the fd.
  void removeFd(int fd);

  // Calls `handler` while `socket` (not owned) has messages waiting (ZMQ_POLLIN).
  void addSocket(zmq::socket_t& socket, SocketHandler handler);
  void removeSocket(zmq::socket_t& socket);

  // Runs `handler` once, when the monotonic clock reaches `deadlineNanos`.
  TimerId addTimerAt(int64_t deadlineNanos, TimerHandler handler);
  TimerId addTimerAfterMillis(int64_t delayMillis, TimerHandler handler);
  // The monotonic time `delayMillis` from now (now for 0 or less; saturated, never overflowing).
  int64_t deadlineAfterMillis(int64_t delayMillis) const;
  // Unknown or already-fired ids are ignored.
  void cancelTimer(TimerId id);
  // The deadline of the earliest timer, if any.
  std::optional<int64_t> nextDeadline() const;

  // Waits for at most `maxWaitMillis` (-1: until something happens; 0: do not wait), then runs
  // every ready handler and every due timer once. Returns the number of handlers run. A wait cut
  // short by the next timer lasts until its deadline, rounded up to whole milliseconds, so that
  // timer runs in this round rather than the loop spinning. A signal (EINTR) ends the wait early,
  // with nothing ready. Order within a round: ready fds, then ready sockets, then due timers
  // (deadline, then insertion order). A timer added by a callback of this round runs in a later
  // round, even if it is already due.
  size_t runOnce(int64_t maxWaitMillis = -1);
  // Runs until stop() is called from a handler; returns at once if stop() came before. Either
  // way the stop request is used up, so run() may be called again.
  void run();
  void stop() { stopping_ = true; }

  // Called for each timer the reactor fires, just before its handler, with how late it fires:
  // the clock's monotonic time then minus its deadline, never negative. Measures loop lag (time
  // spent in earlier handlers of the round, or a wait that overslept). Unset (the default, or an
  // empty function) costs nothing, not even a clock read.
  void setLagObserver(std::function<void(int64_t lateNanos)> observer) {
    lagObserver_ = std::move(observer);
  }

  const Clock& clock() const { return clock_; }
  // Wake-ups counted since creation, for tests and the idle-cost benchmark: returns from a wait
  // that was allowed to sleep (its timeout was not 0), whatever ended it (an fd, a socket, a
  // timer, a signal). runOnce(0), and a round with a timer already due, never count.
  uint64_t wakeups() const { return wakeups_; }

 private:
  explicit Reactor(const Clock& clock, UniqueFd epoll);
  int waitTimeoutMillis(int64_t maxWaitMillis) const;
  size_t runDueTimers();

  struct FdEntry {
    uint32_t events;
    // Carried in the epoll event next to the fd, so an event gathered for an fd that a handler
    // then removed is not delivered to a new registration that reused the same fd number.
    uint32_t serial;
    std::shared_ptr<FdHandler> handler;  // shared so a handler survives its own removal
  };
  struct SocketEntry {
    zmq::socket_t* socket;
    std::shared_ptr<SocketHandler> handler;
  };

  const Clock& clock_;
  UniqueFd epoll_;
  std::unordered_map<int, FdEntry> fds_;
  std::vector<SocketEntry> sockets_;
  std::map<std::pair<int64_t, TimerId>, TimerHandler> timers_;
  std::unordered_map<TimerId, int64_t> timerDeadlines_;
  TimerId nextTimerId_ = 1;
  uint32_t nextFdSerial_ = 0;
  uint64_t wakeups_ = 0;
  std::function<void(int64_t)> lagObserver_;
  bool stopping_ = false;
};

// Timers that die with their owner. An object whose timer callbacks use `this` adds them here
// instead of to the reactor directly: whatever is still pending when the object goes is
// cancelled, so no callback ever runs on a destroyed owner. Same thread rules as the reactor.
class OwnedTimers {
 public:
  explicit OwnedTimers(Reactor& reactor) : reactor_(reactor) {}
  ~OwnedTimers();
  OwnedTimers(const OwnedTimers&) = delete;
  OwnedTimers& operator=(const OwnedTimers&) = delete;

  Reactor::TimerId at(int64_t deadlineNanos, Reactor::TimerHandler handler);
  Reactor::TimerId after(int64_t delayMillis, Reactor::TimerHandler handler);
  // Unknown or already-fired ids are ignored, as by the reactor.
  void cancel(Reactor::TimerId id);
  void cancelAll();
  size_t pending() const { return pending_.size(); }

 private:
  Reactor& reactor_;
  std::unordered_set<Reactor::TimerId> pending_;
};

}  // namespace enjin
