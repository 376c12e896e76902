// Expected failures as values. A Result<T> holds either a T or an Error whose message names the
// object and the cause; each layer adds its own context with Error::wrap, so the final message
// reads outermost first: "failed to load key 'a.key': open: No such file or directory".
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace enjin {

struct Error {
  std::string message;
  // What kind of failure, where a caller must tell kinds apart: the HTTP status an API answers
  // with (400 bad input, 404 no such object, 409 conflict, ...). 0: not classified.
  int code = 0;

  // Returns this error with `context` put in front: "<context>: <message>"; the code stays.
  [[nodiscard]] Error wrap(std::string_view context) const {
    std::string out(context);
    out += ": ";
    out += message;
    return Error{std::move(out), code};
  }
};

// "what: strerror(errno)".
Error errnoError(std::string_view what, int err);

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { assert(!ok()); return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { assert(!ok_); return error_; }

 private:
  Error error_;
  bool ok_ = true;
};

using Status = Result<void>;

}  // namespace enjin
