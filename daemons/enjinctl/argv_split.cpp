#include "argv_split.hpp"

namespace enjin::ctl {

Result<std::vector<std::string>> splitCommandLine(std::string_view text) {
  std::vector<std::string> words;
  std::string word;
  bool inWord = false;  // a word is open, though it may still be empty ('' or "")
  enum class Quote { kNone, kSingle, kDouble } quote = Quote::kNone;
  size_t quoteAt = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quote == Quote::kSingle) {
      if (c == '\'') {
        quote = Quote::kNone;
      } else {
        word += c;
      }
      continue;
    }
    if (quote == Quote::kDouble) {
      if (c == '"') {
        quote = Quote::kNone;
      } else if (c == '\\' && i + 1 < text.size() &&
                 std::string_view("$`\"\\\n").find(text[i + 1]) != std::string_view::npos) {
        if (text[i + 1] != '\n') word += text[i + 1];
        ++i;
      } else {
        word += c;
      }
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\n') {
      if (inWord) words.push_back(std::move(word));
      word.clear();
      inWord = false;
      continue;
    }
    if (c == '\\') {
      if (i + 1 == text.size()) {
        return Error{"--cmd: a backslash at the end (column " + std::to_string(i + 1) +
                         ") escapes nothing",
                     400};
      }
      ++i;
      if (text[i] == '\n') continue;  // a line continuation
      word += text[i];
      inWord = true;
      continue;
    }
    if (c == '\'' || c == '"') {
      quote = c == '\'' ? Quote::kSingle : Quote::kDouble;
      quoteAt = i;
      inWord = true;
      continue;
    }
    word += c;
    inWord = true;
  }
  if (quote != Quote::kNone) {
    return Error{std::string("--cmd: the ") + (quote == Quote::kSingle ? "single" : "double") +
                     " quote at column " + std::to_string(quoteAt + 1) + " is never closed",
                 400};
  }
  if (inWord) words.push_back(std::move(word));
  return words;
}

std::string joinCommandLine(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) {
    if (!out.empty()) out += ' ';
    bool safe = !w.empty();
    for (const char c : w) {
      const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                         std::string_view("-_./:=,+@%").find(c) != std::string_view::npos;
      if (!plain) safe = false;
    }
    if (safe) {
      out += w;
      continue;
    }
    out += '\'';
    for (const char c : w) {
      if (c == '\'') {
        out += "'\\''";
      } else {
        out += c;
      }
    }
    out += '\'';
  }
  return out;
}

}  // namespace enjin::ctl
