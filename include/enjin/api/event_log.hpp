// A bounded, numbered log of the events the control plane streams (GET /v1/events): the daemon
// appends each tree_event from its reactor thread; every stream reads from its own HTTP thread,
// waiting for what comes after the last event it sent. Events get the ids 1, 2, 3, ... in the
// order they were appended; only the newest `capacity` are kept, so a reader that fell behind
// (or reconnects late) learns that it missed some instead of silently skipping them.
//
// Thread-safe: append, since, close and lastId may be called from any thread.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

namespace enjin::api {

class EventLog {
 public:
  struct Event {
    uint64_t id = 0;
    std::string type;  // the SSE event name: "tree_event"
    std::string data;  // one line of JSON
  };

  explicit EventLog(size_t capacity = 4096);  // at least 1
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Stores the event (dropping the oldest beyond the capacity), wakes the waiting readers and
  // returns its id. After close() the event is still numbered and kept.
  uint64_t append(std::string type, std::string data);

  // The buffered events with an id above `after`, oldest first. When there are none, waits up to
  // timeoutMs (<= 0: not at all) for one; returns at once after close(). Sets *missed (if given)
  // to whether events above `after` were appended but are no longer in the buffer: the first
  // event returned is then the oldest one still kept.
  std::vector<Event> since(uint64_t after, int64_t timeoutMs, bool* missed = nullptr);

  // Wakes every waiter; since() never waits again. For the daemon's shutdown, before its HTTP
  // server stops, so that no stream holds the server up.
  void close();
  bool closed() const;

  // The id of the last event appended (0: none yet).
  uint64_t lastId() const;

 private:
  const size_t capacity_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Event> events_;
  uint64_t lastId_ = 0;
  bool closed_ = false;
};

}  // namespace enjin::api
