#include "enjin/base/strict_json.hpp"

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace enjin {
namespace {

using nlohmann::json;

// A SAX handler that builds the DOM itself so it can refuse what nlohmann accepts: duplicate
// keys (nlohmann keeps the last), deep nesting (refused before the parser descends) and
// integers too large for 64 bits (nlohmann turns them into doubles).
class StrictBuilder {
 public:
  StrictBuilder(json& root, size_t maxDepth) : root_(root), maxDepth_(maxDepth) {}

  bool null() { return put(nullptr); }
  bool boolean(bool v) { return put(v); }
  bool number_integer(json::number_integer_t v) { return put(v); }
  bool number_unsigned(json::number_unsigned_t v) { return put(v); }
  bool number_float(json::number_float_t v, const std::string& raw) {
    if (raw.find_first_of(".eE") == std::string::npos) {
      return fail("integer " + raw.substr(0, 40) + " does not fit in 64 bits");
    }
    return put(v);
  }
  bool string(std::string& v) { return put(std::move(v)); }
  bool binary(json::binary_t&) { return fail("binary values are not JSON"); }

  bool start_object(size_t) { return open(json::value_t::object); }
  bool start_array(size_t) { return open(json::value_t::array); }
  bool end_object() { stack_.pop_back(); return true; }
  bool end_array() { stack_.pop_back(); return true; }

  bool key(std::string& k) {
    json& obj = *stack_.back();
    auto [it, inserted] = obj.get_ref<json::object_t&>().try_emplace(k);
    if (!inserted) return fail("duplicate key '" + k.substr(0, 40) + "'");
    slot_ = &it->second;
    return true;
  }

  bool parse_error(size_t position, const std::string&, const nlohmann::detail::exception& e) {
    if (error_.empty()) {
      error_ = "invalid JSON at byte " + std::to_string(position) + ": " + e.what();
    }
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  // Where the next value goes: the root, the next array element, or the slot of the last key.
  json* target() {
    if (stack_.empty()) return &root_;
    json& top = *stack_.back();
    if (top.is_array()) {
      top.get_ref<json::array_t&>().emplace_back();
      return &top.get_ref<json::array_t&>().back();
    }
    return slot_;
  }

  template <class V>
  bool put(V&& v) {
    *target() = std::forward<V>(v);
    return true;
  }

  bool open(json::value_t t) {
    if (stack_.size() >= maxDepth_) {
      return fail("nesting deeper than " + std::to_string(maxDepth_));
    }
    json* slot = target();
    *slot = json(t);
    stack_.push_back(slot);
    return true;
  }

  bool fail(std::string why) {
    if (error_.empty()) error_ = std::move(why);
    return false;
  }

  json& root_;
  size_t maxDepth_;
  std::vector<json*> stack_;  // open containers; pointers stay valid while they are open
  json* slot_ = nullptr;
  std::string error_;
};

}  // namespace

Status parseStrictJson(std::string_view text, json& out, size_t maxDepth) {
  out = json();
  // nlohmann's lexer takes a NUL byte for the end of input and would ignore what follows it.
  // Valid JSON never holds a raw NUL (in strings it must be escaped), so refuse it outright.
  if (text.find('\0') != std::string_view::npos) {
    return Error{"invalid JSON: NUL byte at " + std::to_string(text.find('\0'))};
  }
  StrictBuilder builder(out, maxDepth);
  bool ok = false;
  try {
    ok = json::sax_parse(text.begin(), text.end(), &builder, json::input_format_t::json,
                         /*strict=*/true, /*ignore_comments=*/false);
  } catch (const std::exception& e) {
    return Error{std::string("invalid JSON: ") + e.what()};
  }
  if (!ok) {
    out = json();
    return Error{builder.error().empty() ? "invalid JSON" : builder.error()};
  }
  return {};
}

}  // namespace enjin
