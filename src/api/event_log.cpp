#include "enjin/api/event_log.hpp"

#include <algorithm>
#include <chrono>

namespace enjin::api {

EventLog::EventLog(size_t capacity) : capacity_(std::max<size_t>(1, capacity)) {}

uint64_t EventLog::append(std::string type, std::string data) {
  uint64_t id;
  {
    std::lock_guard lock(mutex_);
    id = ++lastId_;
    events_.push_back(Event{id, std::move(type), std::move(data)});
    while (events_.size() > capacity_) events_.pop_front();
  }
  cv_.notify_all();
  return id;
}

std::vector<EventLog::Event> EventLog::since(uint64_t after, int64_t timeoutMs, bool* missed) {
  std::unique_lock lock(mutex_);
  if (lastId_ <= after && !closed_ && timeoutMs > 0) {
    cv_.wait_for(lock, std::chrono::milliseconds(timeoutMs),
                 [&] { return closed_ || lastId_ > after; });
  }
  // The buffer holds the ids lastId_ - size + 1 .. lastId_, without holes.
  const uint64_t first = lastId_ + 1 - events_.size();
  if (missed != nullptr) *missed = lastId_ > after && first > after + 1;
  std::vector<Event> out;
  if (lastId_ <= after) return out;
  const uint64_t from = std::max(first, after + 1);
  out.reserve(static_cast<size_t>(lastId_ - from + 1));
  for (auto it = events_.begin() + static_cast<std::ptrdiff_t>(from - first); it != events_.end(); ++it) {
    out.push_back(*it);
  }
  return out;
}

void EventLog::close() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  cv_.notify_all();
}

bool EventLog::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

uint64_t EventLog::lastId() const {
  std::lock_guard lock(mutex_);
  return lastId_;
}

}  // namespace enjin::api
