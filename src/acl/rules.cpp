#include "enjin/acl/rules.hpp"

#include <nlohmann/json.hpp>
#include <tuple>

namespace enjin::acl {
namespace {

constexpr size_t kMaxPatternBytes = 1024;

// Splits on `sep`; "a//b" gives an empty middle segment, "" gives one empty segment.
std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    if (pos == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

// `*` stands for one whole, non-empty segment; anything else must be equal.
bool segmentMatches(std::string_view pattern, std::string_view segment) {
  if (pattern == "*") return !segment.empty();
  return pattern == segment;
}

bool validSegment(std::string_view s) {
  if (s == "*") return true;
  if (s.empty()) return false;
  for (char c : s) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Error badField(std::string_view field, std::string_view why) {
  return Error{std::string(field) + ": " + std::string(why), 400};
}

Status checkPattern(std::string_view field, std::string_view pattern, char sep, bool exactlyTwo) {
  if (pattern.size() > kMaxPatternBytes) return badField(field, "longer than 1024 bytes");
  if (pattern == "*") return {};
  auto segments = split(pattern, sep);
  if (exactlyTwo && segments.size() != 2) {
    return badField(field, "'" + std::string(pattern) + "' is not RESOURCE:VERB or *");
  }
  for (auto seg : segments) {
    if (seg.empty()) return badField(field, "'" + std::string(pattern) + "' has an empty segment");
    if (!validSegment(seg)) {
      return badField(field,
                      "'" + std::string(pattern) + "': a segment is * or made of [A-Za-z0-9_.-]");
    }
  }
  return {};
}

}  // namespace

bool actionMatches(std::string_view pattern, std::string_view action) {
  if (pattern == "*") return true;
  auto p = split(pattern, ':');
  auto a = split(action, ':');
  if (p.size() != 2 || a.size() != 2) return false;
  return segmentMatches(p[0], a[0]) && segmentMatches(p[1], a[1]);
}

bool resourceMatches(std::string_view pattern, std::string_view resource) {
  if (pattern == "*") return true;
  auto p = split(pattern, '/');
  auto r = split(resource, '/');
  // A trailing `*` takes one or more segments; everywhere else the counts must agree.
  bool tail = p.back() == "*";
  if (tail ? r.size() < p.size() : r.size() != p.size()) return false;
  for (size_t i = 0; i < p.size(); ++i) {
    if (!segmentMatches(p[i], r[i])) return false;
  }
  if (tail) {
    for (size_t i = p.size(); i < r.size(); ++i) {
      if (r[i].empty()) return false;
    }
  }
  return true;
}

Result<Rule> ruleFromJson(const nlohmann::json& j) {
  if (!j.is_object()) return Error{"rule: not an object", 400};
  for (const auto& [key, value] : j.items()) {
    if (key != "effect" && key != "action" && key != "resource") {
      return Error{"rule: unknown field '" + key + "'", 400};
    }
  }
  Rule rule;
  auto effect = j.find("effect");
  if (effect == j.end() || !effect->is_string()) {
    return badField("effect", "a string \"allow\" or \"deny\" is required");
  }
  const auto& e = effect->get_ref<const std::string&>();
  if (e == "allow") {
    rule.effect = Effect::kAllow;
  } else if (e == "deny") {
    rule.effect = Effect::kDeny;
  } else {
    return badField("effect", "must be \"allow\" or \"deny\"");
  }
  for (auto [field, out, sep, two] : {std::tuple{"action", &rule.action, ':', true},
                                      std::tuple{"resource", &rule.resource, '/', false}}) {
    auto it = j.find(field);
    if (it == j.end() || !it->is_string()) return badField(field, "a string is required");
    *out = it->get<std::string>();
    if (auto st = checkPattern(field, *out, sep, two); !st) return st.error();
  }
  return rule;
}

nlohmann::json ruleToJson(const Rule& r) {
  return nlohmann::json{{"effect", r.effect == Effect::kDeny ? "deny" : "allow"},
                        {"action", r.action},
                        {"resource", r.resource}};
}

Decision decide(const std::vector<Rule>& rules, std::string_view action,
                std::string_view resource) {
  bool allowed = false;
  for (const auto& r : rules) {
    if (!actionMatches(r.action, action) || !resourceMatches(r.resource, resource)) continue;
    if (r.effect == Effect::kDeny) return Decision::kDenied;
    allowed = true;
  }
  return allowed ? Decision::kAllow : Decision::kNoRule;
}

}  // namespace enjin::acl
