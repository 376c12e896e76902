#include "enjin/reactor/handoff.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "enjin/reactor/reactor.hpp"

namespace enjin {

Handoff::Handoff(Reactor& reactor)
    : reactor_(reactor), event_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!event_) throw std::runtime_error("eventfd: " + std::string(std::strerror(errno)));
  auto st = reactor_.addFd(event_.get(), EPOLLIN, [this](uint32_t) { drain(); });
  if (!st.ok()) throw std::runtime_error("handoff: " + st.error().message);
}

Handoff::~Handoff() {
  close();
  reactor_.removeFd(event_.get());
}

bool Handoff::post(std::function<void()> fn) {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return false;
    const bool wasEmpty = queue_.empty();
    queue_.push_back(std::move(fn));
    if (!wasEmpty) return true;  // a wake-up is already on its way
  }
  const uint64_t one = 1;
  // EAGAIN only if the counter is saturated, in which case the reactor is already woken.
  (void)!::write(event_.get(), &one, sizeof one);
  return true;
}

void Handoff::close() {
  std::lock_guard lock(mutex_);
  closed_ = true;
}

bool Handoff::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

size_t Handoff::pending() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

void Handoff::drain() {
  uint64_t count;
  (void)!::read(event_.get(), &count, sizeof count);
  std::deque<std::function<void()>> batch;
  {
    std::lock_guard lock(mutex_);
    batch.swap(queue_);
  }
  for (auto& fn : batch) fn();
}

}  // namespace enjin
