#include "enjin/bus/topic.hpp"

namespace enjin::bus {

bool isValidTopic(std::string_view topic) {
  if (topic.empty() || topic.size() > kMaxTopicBytes) return false;
  if (topic.front() == '.' || topic.back() == '.') return false;
  char prev = '\0';
  for (char c : topic) {
    if (c < 0x21 || c > 0x7e) return false;
    if (c == '.' && prev == '.') return false;
    prev = c;
  }
  return true;
}

bool topicMatches(std::string_view prefix, std::string_view topic) {
  if (prefix.empty()) return true;
  if (!topic.starts_with(prefix)) return false;
  return topic.size() == prefix.size() || topic[prefix.size()] == '.';
}

}  // namespace enjin::bus
