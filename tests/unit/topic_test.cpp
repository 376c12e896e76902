#include "enjin/bus/topic.hpp"

#include <gtest/gtest.h>

namespace enjin::bus {
namespace {

TEST(Topic, ValidTopics) {
  EXPECT_TRUE(isValidTopic("obs"));
  EXPECT_TRUE(isValidTopic("obs.r2.web-1"));
  EXPECT_TRUE(isValidTopic(std::string(255, 'a')));
}

TEST(Topic, InvalidTopics) {
  EXPECT_FALSE(isValidTopic(""));
  EXPECT_FALSE(isValidTopic(std::string(256, 'a')));
  EXPECT_FALSE(isValidTopic(".obs"));
  EXPECT_FALSE(isValidTopic("obs."));
  EXPECT_FALSE(isValidTopic("obs..r2"));
  EXPECT_FALSE(isValidTopic("obs r2"));
  EXPECT_FALSE(isValidTopic(std::string("obs\0r2", 6)));
  EXPECT_FALSE(isValidTopic("obs\x7f"));
  EXPECT_FALSE(isValidTopic("caf\xc3\xa9"));
}

TEST(Topic, PrefixMatchesWholeSegmentsOnly) {
  EXPECT_TRUE(topicMatches("obs.r2", "obs.r2"));
  EXPECT_TRUE(topicMatches("obs.r2", "obs.r2.x"));
  EXPECT_TRUE(topicMatches("obs.r2", "obs.r2.x.y"));
  EXPECT_FALSE(topicMatches("obs.r2", "obs.r20.x"));
  EXPECT_FALSE(topicMatches("obs.r2", "obs.r20"));
  EXPECT_FALSE(topicMatches("obs.r2", "obs"));
  EXPECT_FALSE(topicMatches("obs.r2", "spec.r2"));
  EXPECT_TRUE(topicMatches("", "anything.at.all"));
}

}  // namespace
}  // namespace enjin::bus
