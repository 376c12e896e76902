#include "enjin/supervise/toml_fields.hpp"

#include <algorithm>
#include <limits>

namespace enjin::supervise {

namespace {

// Levenshtein distance, for "did you mean" on unknown keys.
size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string_view closestKey(std::string_view key, std::span<const std::string_view> known) {
  std::string_view best;
  size_t bestDistance = 3;  // suggest only close matches
  for (std::string_view k : known) {
    size_t d = editDistance(key, k);
    if (d < bestDistance) {
      bestDistance = d;
      best = k;
    }
  }
  return best;
}

std::string_view tomlTypeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::none: break;
  }
  return "nothing";
}

void TomlFields::failAt(uint32_t line, std::string_view context, std::string_view key,
                        std::string_view what) {
  if (error_) return;
  // Line 0: a table built in memory (an API body), not read from a file.
  std::string msg = source_ + (line != 0 ? ":" + std::to_string(line) : std::string()) + ": ";
  if (!context.empty()) {
    msg += context;
    msg += ": ";
  }
  if (!key.empty()) {
    msg += key;
    msg += ": ";
  }
  msg += what;
  error_ = Error{std::move(msg)};
}

uint32_t TomlTable::lineOf(const toml::node* node) const {
  if (node != nullptr && node->source().begin.line != 0) return node->source().begin.line;
  return table_.source().begin.line;
}

void TomlTable::checkKeys(const toml::table& t, std::string_view prefix,
                          std::span<const std::string_view> known) {
  for (auto&& [key, node] : t) {
    if (std::find(known.begin(), known.end(), key.str()) != known.end()) continue;
    const uint32_t line = key.source().begin.line != 0 ? key.source().begin.line : lineOf(&node);
    const std::string_view guess = closestKey(key.str(), known);
    const std::string didYouMean =
        guess.empty() ? "" : " (did you mean " + std::string(guess) + "?)";
    if (fields_.wording().quoteUnknownKeys) {
      std::string list;
      for (auto k : known) {
        if (!list.empty()) list += ", ";
        list += k;
      }
      failAt(line, "",
             "unknown key '" + std::string(prefix) + std::string(key.str()) + "'" + didYouMean +
                 " (known: " + list + ")");
    } else {
      failAt(line, std::string(prefix) + std::string(key.str()), "unknown key" + didYouMean);
    }
  }
}

std::optional<std::string> TomlTable::string(const toml::node& node, std::string_view key,
                                             bool allowEmpty) {
  const auto* s = node.as_string();
  if (s == nullptr) {
    fail(&node, key,
         fields_.wording().sayGot ? "expected a string, got " + std::string(tomlTypeName(node))
                                  : std::string("expected a string"));
    return std::nullopt;
  }
  const std::string& v = s->get();
  if (v.find('\0') != std::string::npos) {
    fail(&node, key, "contains a NUL byte");
    return std::nullopt;
  }
  if (!allowEmpty && v.empty()) {
    fail(&node, key, "must not be empty");
    return std::nullopt;
  }
  return v;
}

std::optional<int64_t> TomlTable::integer(const toml::node& node, std::string_view key,
                                          int64_t min, int64_t max, std::string_view unit) {
  const auto* i = node.as_integer();
  if (i == nullptr) {
    std::string what = "expected an integer";
    if (!unit.empty()) what += " (" + std::string(unit) + ")";
    if (fields_.wording().sayGot) what += ", got " + std::string(tomlTypeName(node));
    fail(&node, key, what);
    return std::nullopt;
  }
  const int64_t v = i->get();
  if (v >= min && v <= max) return v;
  if (fields_.wording().bracketRanges) {
    fail(&node, key,
         std::to_string(v) + " is out of range [" + std::to_string(min) + ", " +
             std::to_string(max) + "]");
    return std::nullopt;
  }
  std::string what = "expected ";
  if (max == std::numeric_limits<int64_t>::max()) {
    what += "at least " + std::to_string(min);
  } else {
    what += std::to_string(min) + " to " + std::to_string(max);
  }
  fail(&node, key, what + ", got " + std::to_string(v));
  return std::nullopt;
}

std::optional<bool> TomlTable::boolean(const toml::node& node, std::string_view key) {
  const auto* b = node.as_boolean();
  if (b == nullptr) {
    fail(&node, key,
         fields_.wording().sayGot ? "expected true or false, got " + std::string(tomlTypeName(node))
                                  : std::string("expected true or false"));
    return std::nullopt;
  }
  return b->get();
}

std::optional<std::vector<std::string>> TomlTable::strings(const toml::node& node,
                                                           std::string_view key, size_t minSize) {
  const auto* arr = node.as_array();
  if (arr == nullptr) {
    fail(&node, key, "expected an array of strings, got " + std::string(tomlTypeName(node)));
    return std::nullopt;
  }
  if (arr->size() < minSize) {
    fail(&node, key, "must not be empty");
    return std::nullopt;
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < arr->size(); ++i) {
    auto s = string(*arr->get(i), std::string(key) + "[" + std::to_string(i) + "]");
    if (!s) return std::nullopt;
    out.push_back(std::move(*s));
  }
  return out;
}

const toml::table* TomlTable::table(const toml::node& node, std::string_view key) {
  const auto* t = node.as_table();
  if (t == nullptr) fail(&node, key, "expected a table, got " + std::string(tomlTypeName(node)));
  return t;
}

void TomlTable::read(std::string_view key, std::string& out, bool allowEmpty) {
  if (const toml::node* n = table_.get(key)) {
    if (auto v = string(*n, key, allowEmpty)) out = std::move(*v);
  }
}

void TomlTable::read(std::string_view key, int64_t& out, int64_t min, int64_t max,
                     std::string_view unit) {
  if (const toml::node* n = table_.get(key)) {
    if (auto v = integer(*n, key, min, max, unit)) out = *v;
  }
}

}  // namespace enjin::supervise
