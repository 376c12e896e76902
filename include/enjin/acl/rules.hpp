// Access rules: which actions on which resources a user may perform. Pure logic; the rules come
// from wherever users are stored and are evaluated here, deny by default.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "enjin/base/result.hpp"

namespace enjin::acl {

enum class Effect { kAllow, kDeny };

struct Rule {
  Effect effect = Effect::kAllow;
  std::string action;
  std::string resource;
  bool operator==(const Rule&) const = default;
};

// An action is RESOURCE:VERB ("nodes:create", "users:read", "metrics:read", "audit:read"); a
// pattern may put `*` in place of a whole segment ("nodes:*", "*:read"); a lone "*" matches every
// action.
bool actionMatches(std::string_view pattern, std::string_view action);

// A resource is a path of segments joined by '/' ("ring1/infra-1/web"). In a pattern `*` matches
// exactly one segment, except as the LAST segment, where it matches one or more remaining segments
// ("ring1/infra-1/*" matches "ring1/infra-1/web" and "ring1/infra-1/web/p"); a lone "*" matches
// every resource. No other globbing.
bool resourceMatches(std::string_view pattern, std::string_view resource);

// {"effect":"allow"|"deny","action":...,"resource":...}: checks the shape and the syntax of both
// patterns (segments [A-Za-z0-9_.-]+ or `*`, action exactly 2 segments or "*"); Error code 400
// naming the field on failure. ruleToJson is the inverse.
Result<Rule> ruleFromJson(const nlohmann::json& j);
nlohmann::json ruleToJson(const Rule& r);

enum class Decision {
  kAllow,
  kDenied,  // an explicit deny matched
  kNoRule,  // no rule matched: denied by default
};

// Deny by default; an explicit deny beats any allow, whatever the order of the rules.
Decision decide(const std::vector<Rule>& rules, std::string_view action, std::string_view resource);

}  // namespace enjin::acl
