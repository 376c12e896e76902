#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "enjin/supervise/observation.hpp"

namespace enjin::supervise {

std::string_view checkUseName(CheckUse use) {
  return use == CheckUse::kReadiness ? "readiness" : "health";
}

Result<std::unique_ptr<Probe>> ObservationStrategy::makeProbe(Reactor&, const CheckTarget&) const {
  return Error{"observation '" + std::string(name()) + "' is not polled"};
}

void ObservationRegistry::add(std::unique_ptr<ObservationStrategy> strategy) {
  for (const auto& known : strategies_) {
    if (known->name() == strategy->name()) {
      // Two strategies under one name is a wiring bug in main(), not a runtime condition.
      std::fprintf(stderr, "ObservationRegistry: observation '%.*s' registered twice\n",
                   static_cast<int>(strategy->name().size()), strategy->name().data());
      std::abort();
    }
  }
  strategies_.push_back(std::move(strategy));
}

namespace {

std::string joined(std::vector<std::string_view> names) {
  std::sort(names.begin(), names.end());
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + std::string(n);
  return out.empty() ? "none" : out;
}

}  // namespace

Result<const ObservationStrategy*> ObservationRegistry::find(std::string_view name) const {
  std::vector<std::string_view> names;
  for (const auto& strategy : strategies_) {
    if (strategy->name() == name) return strategy.get();
    names.push_back(strategy->name());
  }
  return Error{"unknown observation '" + std::string(name) + "' (known: " + joined(names) + ")"};
}

Status ObservationRegistry::check(std::string_view name, CheckUse use) const {
  if (name == "none") return {};
  auto found = find(name);
  if (!found.ok()) return found.error();
  if ((*found)->usableFor(use)) return {};
  std::vector<std::string_view> usable;
  for (const auto& s : strategies_) {
    if (s->usableFor(use)) usable.push_back(s->name());
  }
  return Error{"observation '" + std::string(name) + "' cannot be a " +
               std::string(checkUseName(use)) + " check (these can: " + joined(usable) + ")"};
}

namespace {

class Pushed final : public ObservationStrategy {
 public:
  Pushed(std::string_view name, bool forReadiness) : name_(name), forReadiness_(forReadiness) {}
  std::string_view name() const override { return name_; }
  bool usableFor(CheckUse use) const override {
    return forReadiness_ && use == CheckUse::kReadiness;
  }

 private:
  std::string_view name_;
  bool forReadiness_;
};

class Tcp final : public ObservationStrategy {
 public:
  std::string_view name() const override { return "tcp"; }
  bool usableFor(CheckUse) const override { return true; }
  bool polled() const override { return true; }
  Result<std::unique_ptr<Probe>> makeProbe(Reactor& reactor, const CheckTarget& t) const override {
    return makeTcpProbe(reactor, t.host, t.port, t.timeoutMs);
  }
};

class Http final : public ObservationStrategy {
 public:
  std::string_view name() const override { return "http"; }
  bool usableFor(CheckUse) const override { return true; }
  bool polled() const override { return true; }
  Result<std::unique_ptr<Probe>> makeProbe(Reactor& reactor, const CheckTarget& t) const override {
    return makeHttpProbe(reactor, t.url, t.timeoutMs);
  }
};

class Exec final : public ObservationStrategy {
 public:
  std::string_view name() const override { return "exec"; }
  bool usableFor(CheckUse use) const override { return use == CheckUse::kHealth; }
  bool polled() const override { return true; }
  Result<std::unique_ptr<Probe>> makeProbe(Reactor& reactor, const CheckTarget& t) const override {
    if (t.command.empty()) return Error{"exec check: no command"};
    return makeExecProbe(reactor, t.command, t.timeoutMs, t.identity);
  }
};

}  // namespace

std::unique_ptr<ObservationStrategy> makeProcessObservation() {
  return std::make_unique<Pushed>("process", false);
}
std::unique_ptr<ObservationStrategy> makeNotifyObservation() {
  return std::make_unique<Pushed>("notify", true);
}
std::unique_ptr<ObservationStrategy> makeHeartbeatObservation() {
  return std::make_unique<Pushed>("heartbeat", false);
}
std::unique_ptr<ObservationStrategy> makeTcpObservation() { return std::make_unique<Tcp>(); }
std::unique_ptr<ObservationStrategy> makeHttpObservation() { return std::make_unique<Http>(); }
std::unique_ptr<ObservationStrategy> makeExecObservation() { return std::make_unique<Exec>(); }

}  // namespace enjin::supervise
