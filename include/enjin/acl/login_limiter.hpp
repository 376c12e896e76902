// Limits failed logins, per user and per source address independently, so that neither guessing
// one user's password from many addresses nor many users' from one address goes fast.
// Thread-safe (HTTP threads call it); time comes from the injected Clock (monotonicNanos).
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "enjin/base/clock.hpp"

namespace enjin::acl {

class LoginLimiter {
 public:
  struct Limits {
    int maxFailures = 5;  // this many failures inside windowMs lock the key
    int64_t windowMs = 60'000;
    int64_t lockoutMs = 60'000;
    size_t maxEntries = 10'000;  // users and sources together
  };

  explicit LoginLimiter(const Clock& clock);
  LoginLimiter(const Clock& clock, Limits limits);

  // 0: a login may be tried; else the milliseconds until it may (the larger of the user's and the
  // source's).
  int64_t retryAfterMs(std::string_view user, std::string_view source) const;
  // Counts a failure against both the user and the source. A key's window opens at its first
  // failure and lasts windowMs (a failure after it opens a new one); the maxFailures-th failure
  // inside one window locks the key for lockoutMs from that failure, and the count starts again.
  void failed(std::string_view user, std::string_view source);
  // Clears the user's entry (not the source's: one good password must not reset an address that
  // is guessing others).
  void succeeded(std::string_view user, std::string_view source);
  // Bounded by maxEntries: the entries touched longest ago are dropped first.
  size_t entries() const;

 private:
  struct Entry {
    int failures = 0;
    int64_t windowStartNs = 0;
    int64_t lockedUntilNs = 0;
    std::list<std::string>::iterator lru;
  };

  int64_t retryAfterLocked(const std::string& key, int64_t now) const;
  void failLocked(std::string key, int64_t now);

  const Clock& clock_;
  Limits limits_;
  mutable std::mutex mu_;
  // Keys are "u:<user>" and "s:<source>". lru_ front = most recently touched.
  std::unordered_map<std::string, Entry> map_;
  std::list<std::string> lru_;
};

}  // namespace enjin::acl
