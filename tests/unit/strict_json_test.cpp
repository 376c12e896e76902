#include "enjin/base/strict_json.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace enjin {
namespace {

using nlohmann::json;

Status parse(std::string_view text, json& out) { return parseStrictJson(text, out); }

TEST(StrictJson, AcceptsOrdinaryDocuments) {
  json j;
  ASSERT_TRUE(parse(R"({"a":[1,2,{"b":null}],"c":"\u00e9","d":-5,"e":1.5,"f":18446744073709551615})", j).ok());
  EXPECT_EQ(j["a"][2]["b"], nullptr);
  EXPECT_EQ(j["c"], "\xc3\xa9");
  EXPECT_EQ(j["d"], -5);
  EXPECT_EQ(j["f"].get<uint64_t>(), UINT64_MAX);
  EXPECT_TRUE(parse("[]", j).ok());
  EXPECT_TRUE(parse("  {}  ", j).ok());
}

TEST(StrictJson, RefusesDuplicateKeys) {
  json j;
  auto st = parse(R"({"seq":1,"seq":2})", j);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("duplicate key 'seq'"), std::string::npos);
  EXPECT_FALSE(parse(R"({"a":{"x":1,"x":1}})", j).ok());
  // Same key in different objects is fine.
  EXPECT_TRUE(parse(R"({"a":{"x":1},"b":{"x":1}})", j).ok());
}

TEST(StrictJson, BoundsDepth) {
  json j;
  std::string deep32 = std::string(32, '[') + std::string(32, ']');
  EXPECT_TRUE(parse(deep32, j).ok());
  std::string deep33 = std::string(33, '[') + std::string(33, ']');
  auto st = parse(deep33, j);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("deeper than 32"), std::string::npos);
  std::string deep10k = std::string(10000, '[') + std::string(10000, ']');
  EXPECT_FALSE(parse(deep10k, j).ok());
  std::string deepObjects;
  for (int i = 0; i < 10000; ++i) deepObjects += R"({"a":)";
  EXPECT_FALSE(parse(deepObjects, j).ok());
}

TEST(StrictJson, RefusesIntegersThatDoNotFit) {
  json j;
  EXPECT_FALSE(parse(R"({"seq":18446744073709551616})", j).ok());
  EXPECT_FALSE(parse(R"({"ts":-9223372036854775809})", j).ok());
  EXPECT_TRUE(parse(R"({"ts":-9223372036854775808})", j).ok());
  EXPECT_TRUE(parse(R"({"x":1e30})", j).ok());  // a float written as one is a float
}

TEST(StrictJson, RefusesInvalidUtf8AndTrailingData) {
  json j;
  EXPECT_FALSE(parse("{\"a\":\"\xff\"}", j).ok());
  EXPECT_FALSE(parse("{\"a\":\"\xc3\"}", j).ok());          // truncated sequence
  EXPECT_FALSE(parse("{\"a\":\"\xed\xa0\x80\"}", j).ok());  // encoded surrogate
  EXPECT_FALSE(parse(R"({"a":"\ud800"})", j).ok());          // lone escaped surrogate
  EXPECT_FALSE(parse("{} {}", j).ok());
  EXPECT_FALSE(parse(std::string_view("{\"a\":1}\0", 8), j).ok());
  EXPECT_FALSE(parse("", j).ok());
  EXPECT_FALSE(parse("{\"a\":1,}", j).ok());
  EXPECT_FALSE(parse("{/*c*/}", j).ok());
}

}  // namespace
}  // namespace enjin
