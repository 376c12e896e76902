// Typed fields out of TOML tables, with errors that name the file, the line, the table and the
// key: the one reader behind spec files (spec_file.cpp) and the daemons' config files
// (src/ring/config.cpp). Under include/ so that the ring subsystem can share it, but it exposes
// toml++ types: include it only from .cpp files that link toml++, never from another header.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <toml++/toml.h>
#include <vector>

#include "enjin/base/result.hpp"

namespace enjin::supervise {

// The key of `known` within two edits of `key` ("" if none): "did you mean" for unknown keys.
std::string_view closestKey(std::string_view key, std::span<const std::string_view> known);

// "a string", "an integer", ...: for "expected X, got Y".
std::string_view tomlTypeName(const toml::node& node);

// How a file's messages are worded. Spec files and daemon configs grew their own wording before
// they shared a reader; operators (and tests) know both, so both are kept.
struct TomlWording {
  // "expected a string, got an integer" rather than "expected a string".
  bool sayGot = true;
  // "unknown key 'colour' (did you mean color?) (known: a, b)" rather than
  // "colour: unknown key (did you mean color?)".
  bool quoteUnknownKeys = false;
  // "5 is out of range [10, 3600000]" rather than "expected 10 to 3600000, got 5".
  bool bracketRanges = false;
};

// The errors of one file. The first error wins: later reads still run but record nothing, which
// keeps each field's code a straight line (the result is thrown away on failure).
class TomlFields {
 public:
  explicit TomlFields(std::string source, TomlWording wording = {})
      : source_(std::move(source)), wording_(wording) {}

  const std::string& source() const { return source_; }
  const TomlWording& wording() const { return wording_; }
  bool failed() const { return error_.has_value(); }
  const Error& error() const { return *error_; }
  Error takeError() { return std::move(*error_); }

  // "SOURCE:LINE: CONTEXT: KEY: WHAT"; context and key may be empty.
  void failAt(uint32_t line, std::string_view context, std::string_view key,
              std::string_view what);
  // An error made elsewhere (e.g. by a nested reader), already located.
  void failWith(Error e) {
    if (!error_) error_ = std::move(e);
  }

 private:
  std::string source_;
  TomlWording wording_;
  std::optional<Error> error_;
};

// One table being read: errors carry `context` ("process 'web'", "ring1 node 'a'", or nothing),
// and a key that is missing is blamed on the table's own line.
class TomlTable {
 public:
  TomlTable(TomlFields& fields, const toml::table& table, std::string context)
      : fields_(fields), table_(table), context_(std::move(context)) {}

  TomlFields& fields() const { return fields_; }
  const toml::table& table() const { return table_; }
  const std::string& context() const { return context_; }
  bool failed() const { return fields_.failed(); }

  // The node's line, or the table's when the node is absent or has none.
  uint32_t lineOf(const toml::node* node) const;
  void fail(const toml::node* node, std::string_view key, std::string_view what) {
    fields_.failAt(lineOf(node), context_, key, what);
  }
  void failAt(uint32_t line, std::string_view key, std::string_view what) {
    fields_.failAt(line, context_, key, what);
  }

  // Every key of `t` (this table or one nested in it, named by `prefix` such as "health.")
  // must be one of `known`.
  void checkKeys(const toml::table& t, std::string_view prefix,
                 std::span<const std::string_view> known);
  void checkKeys(std::span<const std::string_view> known) { checkKeys(table_, "", known); }

  // Typed reads of a node; each records an error and returns nothing on a wrong type or value.
  // Strings never hold a NUL (they end up in argv, envp or paths, where it would cut them).
  std::optional<std::string> string(const toml::node& node, std::string_view key,
                                    bool allowEmpty = true);
  // `unit` ("milliseconds") is named in the type error.
  std::optional<int64_t> integer(const toml::node& node, std::string_view key, int64_t min,
                                 int64_t max, std::string_view unit = {});
  std::optional<bool> boolean(const toml::node& node, std::string_view key);
  // An array of strings; `minSize` elements at least.
  std::optional<std::vector<std::string>> strings(const toml::node& node, std::string_view key,
                                                  size_t minSize);
  const toml::table* table(const toml::node& node, std::string_view key);

  // The same, of this table's key when it is present: `out` is left alone when it is absent
  // or wrong.
  void read(std::string_view key, std::string& out, bool allowEmpty = true);
  void read(std::string_view key, int64_t& out, int64_t min, int64_t max,
            std::string_view unit = {});

 private:
  TomlFields& fields_;
  const toml::table& table_;
  std::string context_;
};

}  // namespace enjin::supervise
