// Metrics in the Prometheus text exposition format (version 0.0.4), for the control plane's
// GET /metrics.
//
// Contracts:
// - Values are lock-free atomics: Counter, Gauge and Histogram may be updated from any thread
//   (in practice the reactor thread) while another thread (an HTTP thread) renders.
// - Registration and render() are thread-safe; they take the registry's lock, updates never do.
// - A registered metric lives as long as its registry, and so does the reference handed out.
// - Misuse (a bad name, a name reused with another type, help or buckets) is a programming error:
//   std::logic_error, at registration, or at render for a collector's families.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace enjin::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

static_assert(std::atomic<double>::is_always_lock_free);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

class Registry;

// Only goes up. A negative or NaN increment is dropped: a counter that went down would read as a
// restart of the process to whoever scrapes it.
class Counter {
 public:
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  void inc(double by = 1) {
    if (by >= 0) value_.fetch_add(by, std::memory_order_relaxed);
  }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  friend class Registry;
  Counter() = default;
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double by) { value_.fetch_add(by, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  friend class Registry;
  Gauge() = default;
  std::atomic<double> value_{0};
};

// Rendered as cumulative buckets (le="..."), _sum and _count. Each observation lands in one
// bucket; the cumulative counts and _count are summed at render time, so _count always equals
// the le="+Inf" bucket even while observations race with the render.
class Histogram {
 public:
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void observe(double v);

 private:
  friend class Registry;
  explicit Histogram(std::vector<double> bounds);

  std::vector<double> bounds_;                        // strictly ascending; +Inf implicit
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1, not cumulative
  std::atomic<double> sum_{0};
};

// Bucket bounds: `count` le values start, start·factor, start·factor², ... (start > 0,
// factor > 1, count >= 1, else std::logic_error). +Inf is implicit.
std::vector<double> exponentialBuckets(double start, double factor, int count);

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // The same name and labels (in any order) give the same object. A name registered with another
  // type or help, or a histogram with other bounds, throws std::logic_error, as do names that do
  // not match [a-zA-Z_:][a-zA-Z0-9_:]*, label names that do not match [a-zA-Z_][a-zA-Z0-9_]* or
  // start with "__", a label name given twice, and "le" on a histogram. Bounds must be strictly
  // ascending and not NaN; a trailing +Inf is dropped (it is implicit).
  Counter& counter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& gauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram& histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                       const Labels& labels = {});

  // Families computed when rendered (e.g. nodes by state from a snapshot).
  class Writer {
   public:
    // Starts (or, with the same type and help, continues) a family. `type` is "counter" or
    // "gauge". Names are checked as for registration; a name a registered metric or another
    // family already uses with another type or help throws std::logic_error.
    void family(const std::string& name, const std::string& type, const std::string& help);
    // A sample of the last family() (std::logic_error before any). Label names are checked.
    void sample(const Labels& labels, double value);

   private:
    friend class Registry;
    struct Collected;
    explicit Writer(Collected& out) : out_(out) {}
    Collected& out_;
  };
  // `collect` runs on the rendering thread, outside the registry's lock, once per render() (so
  // concurrent renders call it concurrently). It must outlive the registry's use of it.
  void addCollector(std::function<void(Writer&)> collect);

  // Every family once, sorted by name: # HELP, # TYPE, then its samples. Registered samples are
  // sorted by their labels, collected ones keep their order. Label values are escaped (\\, \",
  // \n), HELP text too (\\, \n); values are +Inf, -Inf, NaN, an integer without exponent when the
  // value is one exactly (up to 2^53), else the shortest decimal that reads back the same.
  std::string render() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace enjin::metrics
