// Topics: 1-255 bytes of printable ASCII without spaces (0x21-0x7e), made of non-empty
// dot-separated segments. Prefixes (subscriptions, ACL entries) match whole segments only.
#pragma once

#include <cstddef>
#include <string_view>

namespace enjin::bus {

inline constexpr size_t kMaxTopicBytes = 255;

bool isValidTopic(std::string_view topic);

// True when `prefix` names `topic` or one of its ancestors: "obs.r2" matches "obs.r2" and
// "obs.r2.x", never "obs.r20.x". The empty prefix matches every topic.
bool topicMatches(std::string_view prefix, std::string_view topic);

}  // namespace enjin::bus
