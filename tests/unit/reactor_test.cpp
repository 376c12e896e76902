#include "enjin/reactor/reactor.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "fakes/fake_clock.hpp"

namespace enjin {
namespace {

using testing::FakeClock;

std::unique_ptr<Reactor> makeReactor(const Clock& clock) {
  auto r = Reactor::create(clock);
  EXPECT_TRUE(r.ok());
  return std::move(r).value();
}

UniqueFd makeEventFd() {
  return UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
}

void notify(int fd) {
  uint64_t one = 1;
  ASSERT_EQ(::write(fd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
}

void drain(int fd) {
  uint64_t n;
  (void)!::read(fd, &n, sizeof n);
}

int64_t elapsedMillis(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               since)
      .count();
}

TEST(Reactor, CallsAnFdHandlerWhileTheFdIsReady) {
  FakeClock clock;
  auto reactor = makeReactor(clock);
  auto efd = makeEventFd();
  std::vector<uint32_t> seen;
  ASSERT_TRUE(reactor->addFd(efd.get(), EPOLLIN, [&](uint32_t ev) { seen.push_back(ev); }).ok());

  EXPECT_EQ(reactor->runOnce(0), 0u);
  notify(efd.get());
  EXPECT_EQ(reactor->runOnce(0), 1u);
  // Level-triggered: still ready until read.
  EXPECT_EQ(reactor->runOnce(0), 1u);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen[0] & EPOLLIN);
  drain(efd.get());
  EXPECT_EQ(reactor->runOnce(0), 0u);
  reactor->removeFd(efd.get());
}

TEST(Reactor, ReportsPipeWritabilityAndHangUp) {
  FakeClock clock;
  auto reactor = makeReactor(clock);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  UniqueFd readEnd(p[0]), writeEnd(p[1]);

  uint32_t readEvents = 0, writeEvents = 0;
  ASSERT_TRUE(reactor->addFd(readEnd.get(), EPOLLIN, [&](uint32_t ev) { readEvents = ev; }).ok());
  ASSERT_TRUE(reactor->addFd(writeEnd.get(), 0, [&](uint32_t ev) { writeEvents = ev; }).ok());
  EXPECT_EQ(reactor->runOnce(0), 0u);
  ASSERT_TRUE(reactor->modifyFd(writeEnd.get(), EPOLLOUT).ok());
  EXPECT_EQ(reactor->runOnce(0), 1u);
  EXPECT_TRUE(writeEvents & EPOLLOUT);

  reactor->removeFd(writeEnd.get());
  writeEnd.reset();
  EXPECT_EQ(reactor->runOnce(0), 1u);
  EXPECT_TRUE(readEvents & EPOLLHUP);
  reactor->removeFd(readEnd.get());
}

TEST(Reactor, RefusesASecondHandlerForAnFdAndUnknownFds) {
  FakeClock clock;
  auto reactor = makeReactor(clock);
  auto efd = makeEventFd();
  ASSERT_TRUE(reactor->addFd(efd.get(), EPOLLIN, [](uint32_t) {}).ok());
  auto again = reactor->addFd(efd.get(), EPOLLIN, [](uint32_t) {});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().message, "watch fd " + std::to_string(efd.get()) + ": already watched");
  auto modify = reactor->modifyFd(9999, EPOLLIN);
  ASSERT_FALSE(modify.ok());
  EXPECT_EQ(modify.error().message, "modify fd 9999: not watched");
  auto bad = reactor->addFd(9999, EPOLLIN, [](uint32_t) {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message, "watch fd 9999: Bad file descriptor");
  reactor->removeFd(9999);  // ignored
  reactor->removeFd(efd.get());
}

TEST(Reactor, NeverCallsAHandlerRemovedEarlierInTheSameRound) {
  FakeClock clock;
  auto reactor = makeReactor(clock);
  auto a = makeEventFd();
  auto b = makeEventFd();
  int calls = 0;
  // Whichever runs first removes both; the other, though ready in the same round, never runs.
  auto removeBoth = [&](uint32_t) {
    ++calls;
    reactor->removeFd(a.get());
    reactor->removeFd(b.get());
  };
  ASSERT_TRUE(reactor->addFd(a.get(), EPOLLIN, removeBoth).ok());
  ASSERT_TRUE(reactor->addFd(b.get(), EPOLLIN, removeBoth).ok());
  notify(a.get());
  notify(b.get());
  EXPECT_EQ(reactor->runOnce(0), 1u);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(reactor->runOnce(0), 0u);
}

TEST(Reactor, AHandlerMayRemoveItselfAndKeepUsingItsCaptures) {
  FakeClock clock;
  auto reactor = makeReactor(clock);
  auto efd = makeEventFd();
  auto counter = std::make_shared<int>(0);
  ASSERT_TRUE(reactor
                  ->addFd(efd.get(), EPOLLIN,
                          [&reactor, &efd, counter](uint32_t) {
                            reactor->removeFd(efd.get());
                            ++*counter;  // the handler object is still alive here
                          })
                  .ok());
  notify(efd.get());
  EXPECT_EQ(reactor->runOnce(0), 1u);
  EXPECT_EQ(*counter, 1);
  EXPECT_EQ(reactor->runOnce(0), 0u);
}

TEST(Reactor, AnEventForARemovedFdDoesNotReachANewHandlerOnTheSameNumber) {
  FakeClock clock;
  auto reactor = makeReactor(clock);
  auto a = makeEventFd();
  auto b = makeEventFd();
  int firstRounds = 0;
  int replacementCalls = 0;
  // Whichever runs first closes the other and opens a new (not ready) eventfd, which gets the
  // freed number, with a new handler. The stale event gathered for the old fd must not reach it.
  auto replaceOther = [&](UniqueFd& other) {
    ++firstRounds;
    reactor->removeFd(a.get());
    reactor->removeFd(b.get());
    const int oldNumber = other.get();
    other.reset();
    other = makeEventFd();
    ASSERT_EQ(other.get(), oldNumber);
    ASSERT_TRUE(reactor->addFd(other.get(), EPOLLIN, [&](uint32_t) { ++replacementCalls; }).ok());
  };
  ASSERT_TRUE(reactor->addFd(a.get(), EPOLLIN, [&](uint32_t) { replaceOther(b); }).ok());
  ASSERT_TRUE(reactor->addFd(b.get(), EPOLLIN, [&](uint32_t) { replaceOther(a); }).ok());
  notify(a.get());
  notify(b.get());
  EXPECT_EQ(reactor->runOnce(0), 1u);
  EXPECT_EQ(firstRounds, 1);
  EXPECT_EQ(replacementCalls, 0);
  EXPECT_EQ(reactor->runOnce(0), 0u);
  reactor->removeFd(a.get());
  reactor->removeFd(b.get());
}

TEST(Reactor, RunsTimersInDeadlineThenInsertionOrder) {
  FakeClock clock;
  auto reactor = makeReactor(clock);
  std::vector<std::string> fired;
  reactor->addTimerAfterMillis(30, [&] { fired.push_back("30"); });
  reactor->addTimerAfterMillis(10, [&] { fired.push_back("10a"); });
  reactor->addTimerAfterMillis(20, [&] { fired.push_back("20"); });
  reactor->addTimerAt(10'000'000, [&] { fired.push_back("10b"); });
  EXPECT_EQ(reactor->nextDeadline(), 10'000'000);

  EXPECT_EQ(reactor->runOnce(0), 0u);
  clock.advanceMillis(9);
  EXPECT_EQ(reactor->runOnce(0), 0u);
  clock.advanceMillis(1);
  EXPECT_EQ(reactor->runOnce(0), 2u);
  EXPECT_EQ(fired, (std::vector<std::string>{"10a", "10b"}));
  EXPECT_EQ(reactor->nextDeadline(), 20'000'000);
  clock.advanceMillis(100);
  EXPECT_EQ(reactor->runOnce(0), 2u);
  EXPECT_EQ(fired, (std::vector<std::string>{"10a", "10b", "20", "30"}));
  EXPECT_EQ(reactor->nextDeadline(), std::nullopt);
  EXPECT_EQ(reactor->runOnce(0), 0u);
}

TEST(Reactor, ATimerCancelledByAnotherInTheSameRoundDoesNotRun) {
  FakeClock clock;
  auto reactor = makeReactor(clock);
  std::vector<std::string> fired;
  Reactor::TimerId second = 0;
  reactor->addTimerAfterMillis(5, [&] {
    fired.push_back("first");
    reactor->cancelTimer(second);
  });
  second = reactor->addTimerAfterMillis(5, [&] { fired.push_back("second"); });
  auto third = reactor->addTimerAfterMillis(7, [&] { fired.push_back("third"); });
  reactor->cancelTimer(third);
  reactor->cancelTimer(third);  // already cancelled: ignored
  reactor->cancelTimer(12345);  // unknown: ignored
  clock.advanceMillis(10);
  EXPECT_EQ(reactor->runOnce(0), 1u);
  EXPECT_EQ(fired, (std::vector<std::string>{"first"}));
  EXPECT_EQ(reactor->nextDeadline(), std::nullopt);
}

TEST(Reactor, ATimerAddedByATimerForNowRunsInTheNextRound) {
  FakeClock clock;
  auto reactor = makeReactor(clock);
  int runs = 0;
  std::function<void()> rearm = [&] {
    ++runs;
    reactor->addTimerAfterMillis(0, rearm);
  };
  reactor->addTimerAfterMillis(0, rearm);
  EXPECT_EQ(reactor->runOnce(0), 1u);
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(reactor->runOnce(0), 1u);
  EXPECT_EQ(runs, 2);
}

TEST(Reactor, FiredTimerIdsAreIgnoredByCancel) {
  FakeClock clock;
  auto reactor = makeReactor(clock);
  int runs = 0;
  auto id = reactor->addTimerAfterMillis(1, [&] { ++runs; });
  clock.advanceMillis(1);
  EXPECT_EQ(reactor->runOnce(0), 1u);
  reactor->cancelTimer(id);
  auto later = reactor->addTimerAfterMillis(1, [&] { ++runs; });
  EXPECT_NE(later, id);
  clock.advanceMillis(1);
  EXPECT_EQ(reactor->runOnce(0), 1u);
  EXPECT_EQ(runs, 2);
}

TEST(OwnedTimers, CancelsWhatIsPendingWhenItsOwnerGoes) {
  FakeClock clock;
  auto reactor = makeReactor(clock);
  int runs = 0;
  {
    OwnedTimers timers(*reactor);
    timers.after(1, [&] { ++runs; });
    timers.after(5, [&] { ++runs; });
    clock.advanceMillis(1);
    EXPECT_EQ(reactor->runOnce(0), 1u);
    EXPECT_EQ(runs, 1);
    EXPECT_EQ(timers.pending(), 1u);  // a fired timer is no longer held
  }
  EXPECT_EQ(reactor->nextDeadline(), std::nullopt);
  clock.advanceMillis(10);
  EXPECT_EQ(reactor->runOnce(0), 0u);
  EXPECT_EQ(runs, 1);
}

TEST(OwnedTimers, CancelIgnoresFiredAndUnknownIds) {
  FakeClock clock;
  auto reactor = makeReactor(clock);
  OwnedTimers timers(*reactor);
  int runs = 0;
  auto fired = timers.after(1, [&] { ++runs; });
  clock.advanceMillis(1);
  EXPECT_EQ(reactor->runOnce(0), 1u);
  // Not the owner's: a timer added to the reactor directly is not cancelled through it.
  auto foreign = reactor->addTimerAfterMillis(1, [&] { ++runs; });
  timers.cancel(fired);
  timers.cancel(foreign);
  auto pending = timers.after(1, [&] { ++runs; });
  timers.cancel(pending);
  EXPECT_EQ(timers.pending(), 0u);
  clock.advanceMillis(1);
  EXPECT_EQ(reactor->runOnce(0), 1u);
  EXPECT_EQ(runs, 2);
}

// A fake clock that a timer handler moves forward, as a slow handler would move the real one.
class SteppingClock final : public Clock {
 public:
  int64_t wallMicros() const override { return 0; }
  int64_t monotonicNanos() const override { return mono_; }
  void advanceNanos(int64_t ns) { mono_ += ns; }

 private:
  int64_t mono_ = 0;
};

TEST(Reactor, TheLagObserverSeesHowLateEachTimerFires) {
  SteppingClock clock;
  auto reactor = makeReactor(clock);
  std::vector<std::pair<std::string, int64_t>> seen;  // (last timer run, lateness)
  std::string last = "none";
  reactor->setLagObserver([&](int64_t late) { seen.emplace_back(last, late); });

  reactor->addTimerAt(5'000'000, [&] {
    last = "5ms";
    clock.advanceNanos(4'000'000);  // a slow handler: the next timer fires later still
  });
  reactor->addTimerAt(10'000'000, [&] { last = "10ms"; });
  auto cancelled = reactor->addTimerAt(11'000'000, [&] { last = "cancelled"; });
  reactor->cancelTimer(cancelled);
  reactor->addTimerAt(20'000'000, [&] { last = "20ms"; });

  clock.advanceNanos(12'000'000);
  EXPECT_EQ(reactor->runOnce(0), 2u);
  // 5 ms timer at 12 ms: 7 ms late; the 10 ms timer after the slow handler, at 16 ms: 6 ms.
  EXPECT_EQ(seen, (std::vector<std::pair<std::string, int64_t>>{{"none", 7'000'000},
                                                                 {"5ms", 6'000'000}}));
  clock.advanceNanos(4'000'000);  // 20 ms exactly: on time
  EXPECT_EQ(reactor->runOnce(0), 1u);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[2], (std::pair<std::string, int64_t>{"10ms", 0}));

  // Unset: timers still run, nothing is observed.
  reactor->setLagObserver(nullptr);
  reactor->addTimerAfterMillis(1, [&] { last = "after"; });
  clock.advanceNanos(3'000'000);
  EXPECT_EQ(reactor->runOnce(0), 1u);
  EXPECT_EQ(last, "after");
  EXPECT_EQ(seen.size(), 3u);
}

TEST(Reactor, WaitsForTheRealClockToReachATimerAndNoLonger) {
  SystemClock clock;
  auto reactor = makeReactor(clock);
  bool fired = false;
  const int64_t deadline = clock.monotonicNanos() + 30'000'000;
  reactor->addTimerAt(deadline, [&] { fired = true; });
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(reactor->runOnce(-1), 1u);
  EXPECT_TRUE(fired);
  EXPECT_GE(clock.monotonicNanos(), deadline);
  EXPECT_LT(elapsedMillis(start), 1000);
  // One wait, or none when this thread was descheduled past the deadline before the round.
  EXPECT_LE(reactor->wakeups(), 1u);
}

TEST(Reactor, RoundsASubMillisecondWaitUpSoItDoesNotSpin) {
  SystemClock clock;
  auto reactor = makeReactor(clock);
  bool fired = false;
  reactor->addTimerAt(clock.monotonicNanos() + 100'000, [&] { fired = true; });  // 0.1 ms
  // A wait rounded down to 0 ms would return with the timer not yet due: the one round runs it.
  EXPECT_EQ(reactor->runOnce(-1), 1u);
  EXPECT_TRUE(fired);
  // Under load the 0.1 ms may have passed before the round began, which then does not wait.
  EXPECT_LE(reactor->wakeups(), 1u);
}

TEST(Reactor, MaxWaitBoundsTheWaitWhenNothingHappens) {
  SystemClock clock;
  auto reactor = makeReactor(clock);
  reactor->addTimerAfterMillis(10'000, [] {});
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(reactor->runOnce(20), 0u);
  const auto waited = elapsedMillis(start);
  EXPECT_GE(waited, 20);
  EXPECT_LT(waited, 5000);
  EXPECT_EQ(reactor->wakeups(), 1u);
}

TEST(Reactor, CountsNoWakeUpForRoundsThatDoNotWait) {
  FakeClock clock;
  auto reactor = makeReactor(clock);
  auto efd = makeEventFd();
  ASSERT_TRUE(reactor->addFd(efd.get(), EPOLLIN, [&](uint32_t) { drain(efd.get()); }).ok());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(reactor->runOnce(0), 0u);
  notify(efd.get());
  EXPECT_EQ(reactor->runOnce(0), 1u);
  reactor->addTimerAfterMillis(0, [] {});  // already due: the round does not wait
  EXPECT_EQ(reactor->runOnce(-1), 1u);
  EXPECT_EQ(reactor->wakeups(), 0u);
  notify(efd.get());
  EXPECT_EQ(reactor->runOnce(-1), 1u);  // allowed to sleep: a wake-up, even if it did not need to
  EXPECT_EQ(reactor->wakeups(), 1u);
  reactor->removeFd(efd.get());
}

TEST(Reactor, AnIdleLoopWakesOnlyForItsTimers) {
  SystemClock clock;
  auto reactor = makeReactor(clock);
  int ticks = 0;
  std::function<void()> tick = [&] {
    if (++ticks == 3) {
      reactor->stop();
    } else {
      reactor->addTimerAfterMillis(10, tick);
    }
  };
  reactor->addTimerAfterMillis(10, tick);
  reactor->run();
  EXPECT_EQ(ticks, 3);
  // One wake-up per timer at most (fewer when the thread was descheduled past a deadline).
  EXPECT_LE(reactor->wakeups(), 3u);
}

TEST(Reactor, RunReturnsOnStopAndCanRunAgain) {
  FakeClock clock;
  auto reactor = makeReactor(clock);
  int runs = 0;
  reactor->addTimerAfterMillis(0, [&] {
    ++runs;
    reactor->stop();
  });
  reactor->run();
  EXPECT_EQ(runs, 1);
  reactor->stop();
  reactor->run();  // a stop before run(): returns at once
  reactor->addTimerAfterMillis(0, [&] {
    ++runs;
    reactor->stop();
  });
  reactor->run();
  EXPECT_EQ(runs, 2);
}

TEST(Reactor, DispatchesZmqSocketsAndPlainFdsTogether) {
  FakeClock clock;
  auto reactor = makeReactor(clock);
  zmq::context_t ctx;
  zmq::socket_t server(ctx, zmq::socket_type::pair);
  zmq::socket_t client(ctx, zmq::socket_type::pair);
  server.set(zmq::sockopt::linger, 0);
  client.set(zmq::sockopt::linger, 0);
  server.bind("inproc://reactor-pair");
  client.connect("inproc://reactor-pair");

  std::vector<std::string> got;
  reactor->addSocket(server, [&] {
    zmq::message_t msg;
    // One message per call: the handler runs again while more are waiting.
    if (server.recv(msg, zmq::recv_flags::dontwait)) got.push_back(msg.to_string());
  });
  auto efd = makeEventFd();
  int fdCalls = 0;
  ASSERT_TRUE(reactor
                  ->addFd(efd.get(), EPOLLIN,
                          [&](uint32_t) {
                            ++fdCalls;
                            drain(efd.get());
                          })
                  .ok());

  EXPECT_EQ(reactor->runOnce(0), 0u);
  client.send(zmq::str_buffer("one"), zmq::send_flags::none);
  client.send(zmq::str_buffer("two"), zmq::send_flags::none);
  EXPECT_EQ(reactor->runOnce(2000), 1u);
  EXPECT_EQ(reactor->runOnce(2000), 1u);
  EXPECT_EQ(got, (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(reactor->runOnce(0), 0u);

  // The epoll fd rides in zmq_poll while a socket is registered.
  notify(efd.get());
  EXPECT_EQ(reactor->runOnce(2000), 1u);
  EXPECT_EQ(fdCalls, 1);

  // A socket removed by an earlier handler of the round is not called.
  client.send(zmq::str_buffer("three"), zmq::send_flags::none);
  notify(efd.get());
  reactor->removeFd(efd.get());
  ASSERT_TRUE(reactor
                  ->addFd(efd.get(), EPOLLIN,
                          [&](uint32_t) {
                            drain(efd.get());
                            reactor->removeSocket(server);
                          })
                  .ok());
  // Let the message arrive before the round so both are ready in it.
  const auto start = std::chrono::steady_clock::now();
  while (!(server.get(zmq::sockopt::events) & ZMQ_POLLIN) && elapsedMillis(start) < 5000) {
    std::this_thread::yield();
  }
  EXPECT_EQ(reactor->runOnce(2000), 1u);
  EXPECT_EQ(got.size(), 2u);
  reactor->removeFd(efd.get());
}

TEST(Reactor, DispatchesPubSubOverInproc) {
  FakeClock clock;
  auto reactor = makeReactor(clock);
  zmq::context_t ctx;
  zmq::socket_t pub(ctx, zmq::socket_type::pub);
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  pub.set(zmq::sockopt::linger, 0);
  sub.set(zmq::sockopt::linger, 0);
  pub.bind("inproc://reactor-pubsub");
  sub.set(zmq::sockopt::subscribe, "t.");
  sub.connect("inproc://reactor-pubsub");

  std::vector<std::string> got;
  reactor->addSocket(sub, [&] {
    zmq::message_t msg;
    while (sub.recv(msg, zmq::recv_flags::dontwait)) got.push_back(msg.to_string());
  });
  // The subscription reaches the publisher asynchronously: publish until one arrives.
  const auto start = std::chrono::steady_clock::now();
  while (got.empty() && elapsedMillis(start) < 5000) {
    pub.send(zmq::str_buffer("x.ignored"), zmq::send_flags::none);
    pub.send(zmq::str_buffer("t.hello"), zmq::send_flags::none);
    reactor->runOnce(10);
  }
  ASSERT_FALSE(got.empty());
  for (const auto& m : got) EXPECT_EQ(m, "t.hello");
  reactor->removeSocket(sub);
  reactor->removeSocket(sub);  // unknown: ignored
}

void ignoreSignal(int) {}

TEST(Reactor, ASignalEndsTheWaitEarlyWithNothingRun) {
  struct sigaction action {};
  action.sa_handler = ignoreSignal;  // no SA_RESTART; epoll_wait and poll never restart anyway
  struct sigaction old {};
  ASSERT_EQ(::sigaction(SIGUSR1, &action, &old), 0);

  SystemClock clock;
  auto reactor = makeReactor(clock);
  zmq::context_t ctx;
  zmq::socket_t idle(ctx, zmq::socket_type::pair);
  idle.set(zmq::sockopt::linger, 0);
  reactor->addTimerAfterMillis(10'000, [] {});

  const pthread_t self = ::pthread_self();
  for (bool withSocket : {false, true}) {
    if (withSocket) reactor->addSocket(idle, [] {});
    std::atomic<bool> returned = false;
    // Signals until the wait ends, in case one lands before the reactor starts waiting.
    std::thread poker([self, &returned] {
      while (!returned) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (!returned) ::pthread_kill(self, SIGUSR1);
      }
    });
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(reactor->runOnce(-1), 0u);
    returned = true;
    EXPECT_LT(elapsedMillis(start), 5000);
    poker.join();
  }
  reactor->removeSocket(idle);
  ASSERT_EQ(::sigaction(SIGUSR1, &old, nullptr), 0);
}

}  // namespace
}  // namespace enjin
