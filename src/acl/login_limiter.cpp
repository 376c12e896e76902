#include "enjin/acl/login_limiter.hpp"

#include <algorithm>
#include <utility>

namespace enjin::acl {
namespace {

constexpr int64_t kNanosPerMs = 1'000'000;

std::string userKey(std::string_view user) {
  return "u:" + std::string(user);
}
std::string sourceKey(std::string_view source) {
  return "s:" + std::string(source);
}

}  // namespace

LoginLimiter::LoginLimiter(const Clock& clock) : LoginLimiter(clock, Limits{}) {}

LoginLimiter::LoginLimiter(const Clock& clock, Limits limits) : clock_(clock), limits_(limits) {
  // A user and a source are both recorded on each failure; fewer than two entries would let one
  // push the other out.
  limits_.maxEntries = std::max<size_t>(limits_.maxEntries, 2);
  limits_.maxFailures = std::max(limits_.maxFailures, 1);
}

int64_t LoginLimiter::retryAfterLocked(const std::string& key, int64_t now) const {
  auto it = map_.find(key);
  if (it == map_.end() || it->second.lockedUntilNs <= now) return 0;
  // Rounded up, so that a caller waiting the answer finds the lock gone.
  return (it->second.lockedUntilNs - now + kNanosPerMs - 1) / kNanosPerMs;
}

int64_t LoginLimiter::retryAfterMs(std::string_view user, std::string_view source) const {
  std::lock_guard lock(mu_);
  int64_t now = clock_.monotonicNanos();
  return std::max(retryAfterLocked(userKey(user), now), retryAfterLocked(sourceKey(source), now));
}

void LoginLimiter::failLocked(std::string key, int64_t now) {
  auto it = map_.find(key);
  if (it == map_.end()) {
    // Full: drop the entry touched longest ago to make room.
    while (map_.size() >= limits_.maxEntries) {
      map_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.push_front(key);
    it = map_.emplace(std::move(key), Entry{}).first;
    it->second.lru = lru_.begin();
    it->second.windowStartNs = now;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
  }
  Entry& e = it->second;
  if (now - e.windowStartNs > limits_.windowMs * kNanosPerMs) {
    e.failures = 0;
    e.windowStartNs = now;
  }
  if (e.failures == 0) e.windowStartNs = now;
  if (++e.failures >= limits_.maxFailures) {
    // Locked from this failure on; after the lockout the key starts a fresh window.
    e.lockedUntilNs = now + limits_.lockoutMs * kNanosPerMs;
    e.failures = 0;
  }
}

void LoginLimiter::failed(std::string_view user, std::string_view source) {
  std::lock_guard lock(mu_);
  int64_t now = clock_.monotonicNanos();
  failLocked(userKey(user), now);
  failLocked(sourceKey(source), now);
}

void LoginLimiter::succeeded(std::string_view user, std::string_view /*source*/) {
  std::lock_guard lock(mu_);
  auto it = map_.find(userKey(user));
  if (it == map_.end()) return;
  lru_.erase(it->second.lru);
  map_.erase(it);
}

size_t LoginLimiter::entries() const {
  std::lock_guard lock(mu_);
  return map_.size();
}

}  // namespace enjin::acl
