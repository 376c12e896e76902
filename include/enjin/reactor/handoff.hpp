// Work handed to the reactor thread from other threads (HTTP workers, probes): a queue under a
// mutex and an eventfd the reactor watches. The reactor drains the whole queue on each wake-up,
// so a burst of posts costs one wake-up.
//
//   Handoff handoff(reactor);                       // on the reactor thread
//   handoff.post([&] { ... runs on the reactor ... });  // from any thread
//   auto v = handoff.call<int>([&] { return store.count(); }, 2000);  // from another thread
//
// call() blocks its (non-reactor) caller until the reactor has run the function, or the timeout
// passed (then nullopt, and the function's result, if it still runs, is dropped). Never call()
// from the reactor thread: it would wait for itself.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "enjin/base/unique_fd.hpp"

namespace enjin {

class Reactor;

class Handoff {
 public:
  // Registers an eventfd with `reactor`; create and destroy on the reactor thread.
  explicit Handoff(Reactor& reactor);
  ~Handoff();
  Handoff(const Handoff&) = delete;
  Handoff& operator=(const Handoff&) = delete;

  // Thread-safe. After close(), posts are dropped (and return false).
  bool post(std::function<void()> fn);
  // Refuses later posts, and ends every call() still waiting (nullopt) within 50 ms; what is
  // queued still runs on the next drain. Thread-safe.
  void close();
  bool closed() const;
  // Posted functions not yet run.
  size_t pending() const;

  template <class T>
  std::optional<T> call(std::function<T()> fn, int64_t timeoutMs) {
    struct Slot {
      std::mutex m;
      std::condition_variable cv;
      std::optional<T> value;
      bool done = false;
    };
    auto slot = std::make_shared<Slot>();
    if (!post([slot, fn = std::move(fn)] {
          T v = fn();
          std::lock_guard lock(slot->m);
          slot->value = std::move(v);
          slot->done = true;
          slot->cv.notify_one();
        })) {
      return std::nullopt;
    }
    // Waits in short slices, so that a close() (the daemon is stopping, and its reactor may be
    // busy joining the very thread that waits here) ends the wait within one slice.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
    std::unique_lock lock(slot->m);
    while (!slot->done) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline || closed()) return std::nullopt;
      slot->cv.wait_for(lock, std::min<std::chrono::steady_clock::duration>(
                                  deadline - now, std::chrono::milliseconds(50)));
    }
    return std::move(slot->value);
  }

 private:
  void drain();

  Reactor& reactor_;
  UniqueFd event_;
  mutable std::mutex mutex_;
  std::deque<std::function<void()>> queue_;
  bool closed_ = false;
};

}  // namespace enjin
