#include "enjin/metrics/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <mutex>
#include <stdexcept>

namespace enjin::metrics {
namespace {

enum class Type { kCounter, kGauge, kHistogram };

const char* typeName(Type t) {
  switch (t) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  return "?";
}

bool isMetricName(const std::string& s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool isLabelName(const std::string& s) {
  if (s.empty() || s.rfind("__", 0) == 0) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

void checkName(const std::string& name) {
  if (!isMetricName(name)) {
    throw std::logic_error("metric '" + name + "': name must match [a-zA-Z_:][a-zA-Z0-9_:]*");
  }
}

// Checks every label name and returns the labels sorted by name, the form a metric is known by.
Labels normalLabels(const std::string& metric, Labels labels, bool histogram) {
  std::sort(labels.begin(), labels.end());
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::string& key = labels[i].first;
    if (!isLabelName(key)) {
      throw std::logic_error("metric '" + metric + "': label '" + key +
                             "': name must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __");
    }
    if (i > 0 && labels[i - 1].first == key) {
      throw std::logic_error("metric '" + metric + "': label '" + key + "' given twice");
    }
    if (histogram && key == "le") {
      throw std::logic_error("metric '" + metric + "': label 'le' is reserved for buckets");
    }
  }
  return labels;
}

std::string formatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Up to 2^53 every integer is a double exactly; beyond it the shortest form is clearer.
  if (v == std::trunc(v) && std::fabs(v) <= 9007199254740992.0) {
    return std::to_string(static_cast<int64_t>(v));
  }
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

void appendEscaped(std::string& out, const std::string& s, bool quotes) {
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quotes) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

// `{a="x",le="1"}`, or nothing with no labels at all.
void appendLabels(std::string& out, const Labels& labels, const std::string* le = nullptr) {
  if (labels.empty() && le == nullptr) return;
  out += '{';
  bool first = true;
  auto one = [&](const std::string& key, const std::string& value) {
    if (!first) out += ',';
    first = false;
    out += key;
    out += "=\"";
    appendEscaped(out, value, true);
    out += '"';
  };
  for (const auto& [key, value] : labels) one(key, value);
  if (le != nullptr) one("le", *le);
  out += '}';
}

void appendSample(std::string& out, const std::string& name, const Labels& labels, double value,
                  const std::string* le = nullptr) {
  out += name;
  appendLabels(out, labels, le);
  out += ' ';
  out += formatValue(value);
  out += '\n';
}

void appendHeader(std::string& out, const std::string& name, const char* type,
                  const std::string& help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  appendEscaped(out, help, false);
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

// Strictly ascending, no NaN, a trailing +Inf dropped; -Inf is allowed as a first bound.
std::vector<double> normalBounds(const std::string& metric, std::vector<double> bounds) {
  if (!bounds.empty() && bounds.back() == INFINITY) bounds.pop_back();
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (std::isnan(bounds[i]) || bounds[i] == INFINITY || (i > 0 && !(bounds[i - 1] < bounds[i]))) {
      throw std::logic_error("histogram '" + metric +
                             "': bucket bounds must be strictly ascending numbers");
    }
  }
  return bounds;
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {}

void Histogram::observe(double v) {
  // The first bucket whose bound is >= v; NaN is <= no bound and goes to +Inf (and makes _sum NaN,
  // as in the Prometheus clients).
  size_t i = std::isnan(v)
                 ? bounds_.size()
                 : static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                       bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

std::vector<double> exponentialBuckets(double start, double factor, int count) {
  if (!(start > 0) || !(factor > 1) || count < 1) {
    throw std::logic_error("exponentialBuckets: needs start > 0, factor > 1 and count >= 1");
  }
  std::vector<double> out;
  out.reserve(static_cast<size_t>(count));
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) out.push_back(v);
  return out;
}

struct Registry::Impl {
  struct Family {
    Type type;
    std::string help;
    std::vector<double> bounds;  // histograms
    std::map<Labels, std::unique_ptr<Counter>> counters;
    std::map<Labels, std::unique_ptr<Gauge>> gauges;
    std::map<Labels, std::unique_ptr<Histogram>> histograms;
  };

  Family& family(const std::string& name, Type type, const std::string& help) {
    checkName(name);
    auto [it, added] = families.try_emplace(name, Family{type, help, {}, {}, {}, {}});
    Family& f = it->second;
    if (!added && (f.type != type || f.help != help)) {
      throw std::logic_error("metric '" + name + "': registered as a " + typeName(f.type) +
                             " with help \"" + f.help + "\", now as a " + typeName(type) +
                             " with help \"" + help + "\"");
    }
    return f;
  }

  mutable std::mutex mu;
  std::map<std::string, Family> families;
  std::vector<std::shared_ptr<std::function<void(Writer&)>>> collectors;
};

struct Registry::Writer::Collected {
  struct Family {
    std::string type;
    std::string help;
    std::vector<std::pair<Labels, double>> samples;
  };
  std::map<std::string, Family> families;
  Family* current = nullptr;
  std::string currentName;
};

void Registry::Writer::family(const std::string& name, const std::string& type,
                              const std::string& help) {
  checkName(name);
  if (type != "counter" && type != "gauge") {
    throw std::logic_error("metric '" + name + "': collected type '" + type +
                           "' is not counter or gauge");
  }
  auto [it, added] = out_.families.try_emplace(name, Collected::Family{type, help, {}});
  if (!added && (it->second.type != type || it->second.help != help)) {
    throw std::logic_error("metric '" + name + "': collected as a " + it->second.type +
                           " with help \"" + it->second.help + "\", now as a " + type +
                           " with help \"" + help + "\"");
  }
  out_.current = &it->second;
  out_.currentName = name;
}

void Registry::Writer::sample(const Labels& labels, double value) {
  if (out_.current == nullptr) throw std::logic_error("metrics collector: sample before family");
  for (const auto& [key, _] : labels) {
    if (!isLabelName(key)) {
      throw std::logic_error("metric '" + out_.currentName + "': label '" + key +
                             "': name must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __");
    }
  }
  out_.current->samples.emplace_back(labels, value);
}

Registry::Registry() : impl_(std::make_unique<Impl>()) {}
Registry::~Registry() = default;

Counter& Registry::counter(const std::string& name, const std::string& help, const Labels& labels) {
  Labels key = normalLabels(name, labels, false);
  std::lock_guard lock(impl_->mu);
  auto& slot = impl_->family(name, Type::kCounter, help).counters[std::move(key)];
  if (!slot) slot.reset(new Counter());
  return *slot;
}

Gauge& Registry::gauge(const std::string& name, const std::string& help, const Labels& labels) {
  Labels key = normalLabels(name, labels, false);
  std::lock_guard lock(impl_->mu);
  auto& slot = impl_->family(name, Type::kGauge, help).gauges[std::move(key)];
  if (!slot) slot.reset(new Gauge());
  return *slot;
}

Histogram& Registry::histogram(const std::string& name, const std::string& help,
                               std::vector<double> bounds, const Labels& labels) {
  Labels key = normalLabels(name, labels, true);
  bounds = normalBounds(name, std::move(bounds));
  std::lock_guard lock(impl_->mu);
  Impl::Family& f = impl_->family(name, Type::kHistogram, help);
  if (f.histograms.empty()) {
    f.bounds = bounds;
  } else if (f.bounds != bounds) {
    throw std::logic_error("histogram '" + name + "': registered with other bucket bounds");
  }
  auto& slot = f.histograms[std::move(key)];
  if (!slot) slot.reset(new Histogram(std::move(bounds)));
  return *slot;
}

void Registry::addCollector(std::function<void(Writer&)> collect) {
  std::lock_guard lock(impl_->mu);
  impl_->collectors.push_back(std::make_shared<std::function<void(Writer&)>>(std::move(collect)));
}

std::string Registry::render() const {
  // Collectors run outside the lock, on copies of their handles, so a slow one does not hold up
  // registrations on the reactor thread.
  std::vector<std::shared_ptr<std::function<void(Writer&)>>> collectors;
  {
    std::lock_guard lock(impl_->mu);
    collectors = impl_->collectors;
  }
  Writer::Collected collected;
  Writer writer(collected);
  for (const auto& collect : collectors) (*collect)(writer);

  std::map<std::string, std::string> blocks;  // by family name: the order of the output
  {
    std::lock_guard lock(impl_->mu);
    for (const auto& [name, f] : impl_->families) {
      if (collected.families.count(name) != 0) {
        throw std::logic_error("metric '" + name + "': both registered and collected");
      }
      std::string& out = blocks[name];
      appendHeader(out, name, typeName(f.type), f.help);
      for (const auto& [labels, c] : f.counters) appendSample(out, name, labels, c->value());
      for (const auto& [labels, g] : f.gauges) appendSample(out, name, labels, g->value());
      for (const auto& [labels, h] : f.histograms) {
        uint64_t cumulative = 0;
        for (size_t i = 0; i <= f.bounds.size(); ++i) {
          cumulative += h->buckets_[i].load(std::memory_order_relaxed);
          const std::string le = i < f.bounds.size() ? formatValue(f.bounds[i]) : "+Inf";
          appendSample(out, name + "_bucket", labels, static_cast<double>(cumulative), &le);
        }
        appendSample(out, name + "_sum", labels, h->sum_.load(std::memory_order_relaxed));
        appendSample(out, name + "_count", labels, static_cast<double>(cumulative));
      }
    }
  }
  for (const auto& [name, f] : collected.families) {
    std::string& out = blocks[name];
    appendHeader(out, name, f.type.c_str(), f.help);
    for (const auto& [labels, value] : f.samples) appendSample(out, name, labels, value);
  }

  std::string text;
  for (const auto& [_, block] : blocks) text += block;
  return text;
}

}  // namespace enjin::metrics
