#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "enjin/acl/login_limiter.hpp"
#include "enjin/acl/password.hpp"
#include "enjin/acl/rules.hpp"
#include "enjin/acl/tokens.hpp"
#include "fakes/fake_clock.hpp"

namespace enjin::acl {
namespace {

using nlohmann::json;

struct MatchCase {
  const char* pattern;
  const char* subject;
  bool matches;
};

TEST(AclRules, ActionMatchingTable) {
  const MatchCase cases[] = {
      {"*", "nodes:create", true},
      {"*", "audit:read", true},
      {"nodes:create", "nodes:create", true},
      {"nodes:*", "nodes:create", true},
      {"nodes:*", "nodes:delete", true},
      {"*:read", "users:read", true},
      {"*:read", "metrics:read", true},
      {"*:*", "audit:read", true},
      {"nodes:*", "nodesx:create", false},
      {"nodes:*", "node:create", false},
      {"nodes:create", "nodes:created", false},
      {"*:read", "users:write", false},
      {"*:read", "users:readx", false},
      {"nodes:*", "nodes", false},
      {"nodes:*", "nodes:", false},
      {"nodes:*", "nodes:create:x", false},
      {"*:*", "nodes", false},
      {"nodes", "nodes", false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(actionMatches(c.pattern, c.subject), c.matches)
        << "'" << c.pattern << "' vs '" << c.subject << "'";
  }
}

TEST(AclRules, ResourceMatchingTable) {
  const MatchCase cases[] = {
      {"*", "ring1", true},
      {"*", "ring1/infra-1/web/p", true},
      {"ring1", "ring1", true},
      {"ring1/infra-1/web", "ring1/infra-1/web", true},
      {"ring1/*", "ring1/infra-1", true},
      {"ring1/*", "ring1/infra-1/web/p", true},
      {"ring1/infra-1/*", "ring1/infra-1/web", true},
      {"ring1/infra-1/*", "ring1/infra-1/web/p", true},
      {"*/a", "x/a", true},
      {"ring1/*/web", "ring1/infra-1/web", true},
      {"ring1/*", "ring1", false},
      {"*/a", "x/y/a", false},
      {"*/a", "a", false},
      {"ring1/*/web", "ring1/infra-1/x/web", false},
      {"ring1/infra-1/*", "ring1/infra-2/web", false},
      {"ring1", "ring1/infra-1", false},
      {"ring1", "ring10", false},
      {"ring1/infra-1", "ring1/infra-10", false},
      {"ring1/*", "ring1/", false},
      {"ring1/*", "ring1/a//b", false},
      {"r*", "ring1", false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(resourceMatches(c.pattern, c.subject), c.matches)
        << "'" << c.pattern << "' vs '" << c.subject << "'";
  }
}

TEST(AclRules, DecideDenyBeatsAllowAndDefaultIsNoRule) {
  std::vector<Rule> rules;
  EXPECT_EQ(decide(rules, "nodes:create", "ring1/a"), Decision::kNoRule);

  rules.push_back({Effect::kAllow, "nodes:*", "ring1/*"});
  EXPECT_EQ(decide(rules, "nodes:create", "ring1/a"), Decision::kAllow);
  EXPECT_EQ(decide(rules, "users:create", "ring1/a"), Decision::kNoRule);
  EXPECT_EQ(decide(rules, "nodes:create", "ring2/a"), Decision::kNoRule);

  // The deny comes after the allow here and before it in the reversed list; it wins both ways.
  rules.push_back({Effect::kDeny, "nodes:delete", "ring1/prod/*"});
  EXPECT_EQ(decide(rules, "nodes:delete", "ring1/prod/db"), Decision::kDenied);
  EXPECT_EQ(decide(rules, "nodes:delete", "ring1/dev/db"), Decision::kAllow);
  EXPECT_EQ(decide(rules, "nodes:create", "ring1/prod/db"), Decision::kAllow);
  std::vector<Rule> reversed(rules.rbegin(), rules.rend());
  EXPECT_EQ(decide(reversed, "nodes:delete", "ring1/prod/db"), Decision::kDenied);

  // A deny alone gives kDenied, not kNoRule.
  std::vector<Rule> onlyDeny{{Effect::kDeny, "*", "*"}};
  EXPECT_EQ(decide(onlyDeny, "audit:read", "x"), Decision::kDenied);
}

TEST(AclRules, RuleJsonRoundTrip) {
  for (const Rule& r : {Rule{Effect::kAllow, "nodes:*", "ring1/infra-1/*"},
                        Rule{Effect::kDeny, "*", "*"}, Rule{Effect::kAllow, "*:read", "a.b_c-d"}}) {
    json j = ruleToJson(r);
    auto back = ruleFromJson(j);
    ASSERT_TRUE(back.ok()) << j.dump() << ": " << back.error().message;
    EXPECT_EQ(*back, r);
  }
  auto deny =
      ruleFromJson(json::parse(R"({"effect":"deny","action":"audit:read","resource":"x"})"));
  ASSERT_TRUE(deny.ok());
  EXPECT_EQ(deny->effect, Effect::kDeny);
  EXPECT_EQ(ruleToJson(*deny)["effect"], "deny");
}

TEST(AclRules, RuleFromJsonRejectsBadInput) {
  struct Bad {
    const char* text;
    const char* field;  // what the message must name
  };
  const Bad cases[] = {
      {R"({"effect":"permit","action":"nodes:read","resource":"*"})", "effect"},
      {R"({"effect":"Allow","action":"nodes:read","resource":"*"})", "effect"},
      {R"({"action":"nodes:read","resource":"*"})", "effect"},
      {R"({"effect":1,"action":"nodes:read","resource":"*"})", "effect"},
      {R"({"effect":"allow","action":"nodes:read:x","resource":"*"})", "action"},
      {R"({"effect":"allow","action":"nodes","resource":"*"})", "action"},
      {R"({"effect":"allow","action":"nodes:","resource":"*"})", "action"},
      {R"({"effect":"allow","action":"no des:read","resource":"*"})", "action"},
      {R"({"effect":"allow","action":"nodes:r*","resource":"*"})", "action"},
      {R"({"effect":"allow","action":["nodes:read"],"resource":"*"})", "action"},
      {R"({"effect":"allow","resource":"*"})", "action"},
      {R"({"effect":"allow","action":"nodes:read","resource":"ring1//a"})", "resource"},
      {R"({"effect":"allow","action":"nodes:read","resource":"ring1/"})", "resource"},
      {R"({"effect":"allow","action":"nodes:read","resource":""})", "resource"},
      {R"({"effect":"allow","action":"nodes:read","resource":"ring*"})", "resource"},
      {R"({"effect":"allow","action":"nodes:read","resource":7})", "resource"},
      {R"({"effect":"allow","action":"nodes:read","resource":null})", "resource"},
      {R"({"effect":"allow","action":"nodes:read","resource":"*","extra":1})", "extra"},
      {R"(["allow","nodes:read","*"])", "rule"},
      {R"("allow")", "rule"},
  };
  for (const auto& c : cases) {
    auto r = ruleFromJson(json::parse(c.text));
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.error().code, 400) << c.text;
    EXPECT_NE(r.error().message.find(c.field), std::string::npos)
        << c.text << " -> " << r.error().message;
  }
}

TEST(AclPassword, PolicyCountsCodePoints) {
  EXPECT_TRUE(checkPasswordPolicy("abcdefghijkl").ok());  // 12
  auto shortOne = checkPasswordPolicy("abcdefghijk");     // 11
  ASSERT_FALSE(shortOne.ok());
  EXPECT_EQ(shortOne.error().code, 400);
  EXPECT_EQ(shortOne.error().message, "password: at least 12 characters");

  // "é" is two bytes: 11 characters in 12 bytes is too short, 12 characters in 13 bytes is enough.
  std::string eleven =
      "\xc3\xa9"
      "bcdefghijk";
  ASSERT_EQ(eleven.size(), 12u);
  EXPECT_FALSE(checkPasswordPolicy(eleven).ok());
  EXPECT_TRUE(checkPasswordPolicy(eleven + "l").ok());
  // Twelve 3-byte characters (U+20AC).
  std::string euros;
  for (int i = 0; i < 12; ++i) euros += "\xe2\x82\xac";
  EXPECT_TRUE(checkPasswordPolicy(euros).ok());
  EXPECT_FALSE(checkPasswordPolicy(euros.substr(3)).ok());

  auto nul = checkPasswordPolicy(std::string("abcdefgh\0ijklmn", 15));
  ASSERT_FALSE(nul.ok());
  EXPECT_NE(nul.error().message.find("NUL"), std::string::npos);
  EXPECT_TRUE(checkPasswordPolicy(std::string(kMaxPasswordBytes, 'a')).ok());
  auto tooLong = checkPasswordPolicy(std::string(kMaxPasswordBytes + 1, 'a'));
  ASSERT_FALSE(tooLong.ok());
  EXPECT_EQ(tooLong.error().code, 400);
}

TEST(AclPassword, HashAndVerify) {
  auto h = hashPassword("correct horse battery");
  ASSERT_TRUE(h.ok()) << h.error().message;
  EXPECT_EQ(h->rfind("$argon2id$", 0), 0u) << *h;
  EXPECT_TRUE(isPasswordHash(*h)) << *h;
  EXPECT_TRUE(verifyPassword(*h, "correct horse battery"));
  EXPECT_FALSE(verifyPassword(*h, "correct horse batterY"));
  EXPECT_FALSE(verifyPassword(*h, ""));
  // A fresh salt each time: same password, different hash, both verify.
  auto h2 = hashPassword("correct horse battery");
  ASSERT_TRUE(h2.ok());
  EXPECT_NE(*h, *h2);
  EXPECT_TRUE(verifyPassword(*h2, "correct horse battery"));

  // Malformed or damaged hashes are false, not a crash.
  EXPECT_FALSE(verifyPassword("", "correct horse battery"));
  EXPECT_FALSE(verifyPassword("not a hash", "correct horse battery"));
  EXPECT_FALSE(verifyPassword(h->substr(0, h->size() - 4), "correct horse battery"));
  EXPECT_FALSE(verifyPassword(std::string(1000, '$'), "correct horse battery"));
  std::string withNul = *h;
  withNul[withNul.size() / 2] = '\0';
  EXPECT_FALSE(verifyPassword(withNul, "correct horse battery"));

  EXPECT_FALSE(verifyAgainstDummy("correct horse battery"));
  EXPECT_FALSE(verifyAgainstDummy("enjin dummy password for unknown users"));
}

TEST(AclPassword, IsPasswordHashRejectsJunk) {
  const std::string good =
      "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$"
      "ZGVhZGJlZWZkZWFkYmVlZmRlYWRiZWVmZGVhZGJlZWY";
  EXPECT_TRUE(isPasswordHash(good));
  for (const std::string& junk : {std::string(""), std::string("hunter2hunter2"),
                                  std::string("$argon2i$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA"),
                                  std::string("$argon2id$v=18$m=65536,t=2,p=1$c2FsdA$aGFzaA"),
                                  std::string("$argon2id$v=19$m=,t=2,p=1$c2FsdA$aGFzaA"),
                                  std::string("$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$"),
                                  std::string("$argon2id$v=19$m=65536,t=2,p=1$$aGFzaA"),
                                  std::string("$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGF zaA"),
                                  std::string("$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA$"),
                                  good + "\n", good + std::string(600, 'A')}) {
    EXPECT_FALSE(isPasswordHash(junk)) << junk;
  }
}

TEST(AclTokens, ShapeUniquenessAndHash) {
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    std::string t = newToken();
    EXPECT_EQ(t.size(), 43u) << t;
    EXPECT_TRUE(looksLikeToken(t)) << t;
    EXPECT_TRUE(seen.insert(t).second) << "repeated token " << t;
  }
  std::string t = *seen.begin();
  std::string h = tokenHash(t);
  EXPECT_EQ(h.size(), 64u);
  EXPECT_EQ(h.find_first_not_of("0123456789abcdef"), std::string::npos) << h;
  EXPECT_EQ(tokenHash(t), h);
  EXPECT_NE(tokenHash(*std::next(seen.begin())), h);
  // BLAKE2b-256 of the empty input (RFC 7693 parameters, no key).
  EXPECT_EQ(tokenHash(""), "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");

  EXPECT_FALSE(looksLikeToken(t.substr(1)));
  EXPECT_FALSE(looksLikeToken(t + "A"));
  std::string bad = t;
  bad[5] = '+';
  EXPECT_FALSE(looksLikeToken(bad));
  bad[5] = '=';
  EXPECT_FALSE(looksLikeToken(bad));
  EXPECT_FALSE(looksLikeToken(""));
}

TEST(AclTokens, ConstantTimeEquals) {
  EXPECT_TRUE(constantTimeEquals("", ""));
  EXPECT_TRUE(constantTimeEquals("abc", "abc"));
  EXPECT_FALSE(constantTimeEquals("abc", "abd"));
  EXPECT_FALSE(constantTimeEquals("abc", "abcd"));
  EXPECT_FALSE(constantTimeEquals("", "a"));
  std::string h = tokenHash("x");
  EXPECT_TRUE(constantTimeEquals(h, tokenHash("x")));
  EXPECT_FALSE(constantTimeEquals(h, tokenHash("y")));
}

TEST(AclLoginLimiter, LocksAfterMaxFailuresAndUnlocksAfterLockout) {
  testing::FakeClock clock;
  LoginLimiter limiter(clock);  // 5 failures in 60 s -> 60 s lockout
  for (int i = 0; i < 4; ++i) {
    limiter.failed("bob", "10.0.0.1");
    EXPECT_EQ(limiter.retryAfterMs("bob", "10.0.0.1"), 0) << "after failure " << i + 1;
    clock.advanceMillis(1000);
  }
  limiter.failed("bob", "10.0.0.1");
  EXPECT_EQ(limiter.retryAfterMs("bob", "10.0.0.1"), 60'000);
  // The user is locked from any address.
  EXPECT_EQ(limiter.retryAfterMs("bob", "10.9.9.9"), 60'000);
  clock.advanceMillis(59'999);
  EXPECT_EQ(limiter.retryAfterMs("bob", "10.9.9.9"), 1);
  clock.advanceMillis(1);
  EXPECT_EQ(limiter.retryAfterMs("bob", "10.0.0.1"), 0);
  // A fresh window after the lockout: one more failure does not lock again.
  limiter.failed("bob", "10.0.0.1");
  EXPECT_EQ(limiter.retryAfterMs("bob", "10.0.0.1"), 0);
}

TEST(AclLoginLimiter, FailuresOutsideTheWindowDoNotAddUp) {
  testing::FakeClock clock;
  LoginLimiter limiter(clock, {.maxFailures = 3, .windowMs = 10'000, .lockoutMs = 5'000});
  for (int i = 0; i < 10; ++i) {
    limiter.failed("bob", "src");
    clock.advanceMillis(6'000);  // a window holds two of them at most
    EXPECT_EQ(limiter.retryAfterMs("bob", "src"), 0) << i;
  }
  clock.advanceMillis(11'000);
  for (int i = 0; i < 2; ++i) {
    limiter.failed("bob", "src");
    clock.advanceMillis(1'000);
  }
  EXPECT_EQ(limiter.retryAfterMs("bob", "src"), 0);
  limiter.failed("bob", "src");
  EXPECT_EQ(limiter.retryAfterMs("bob", "src"), 5'000);
}

TEST(AclLoginLimiter, SourceLockAppliesToOtherUsers) {
  testing::FakeClock clock;
  LoginLimiter limiter(clock);
  const char* users[] = {"a", "b", "c", "d", "e"};
  for (const char* u : users) limiter.failed(u, "203.0.113.7");
  // No single user has five failures, but the source has: locked for every user, other sources
  // are free.
  EXPECT_EQ(limiter.retryAfterMs("zed", "203.0.113.7"), 60'000);
  EXPECT_EQ(limiter.retryAfterMs("a", "203.0.113.8"), 0);
  // A success clears the user's entry but not the source's.
  limiter.succeeded("a", "203.0.113.7");
  EXPECT_EQ(limiter.retryAfterMs("a", "203.0.113.7"), 60'000);
}

TEST(AclLoginLimiter, SucceededClearsTheUser) {
  testing::FakeClock clock;
  LoginLimiter limiter(clock);
  for (int i = 0; i < 5; ++i) limiter.failed("bob", "src-" + std::to_string(i));
  EXPECT_EQ(limiter.retryAfterMs("bob", "elsewhere"), 60'000);
  limiter.succeeded("bob", "elsewhere");
  EXPECT_EQ(limiter.retryAfterMs("bob", "elsewhere"), 0);
  // Four failures after the success do not lock: the count started again.
  for (int i = 0; i < 4; ++i) limiter.failed("bob", "other-" + std::to_string(i));
  EXPECT_EQ(limiter.retryAfterMs("bob", "elsewhere"), 0);
}

TEST(AclLoginLimiter, EntriesAreBoundedOldestDroppedFirst) {
  testing::FakeClock clock;
  LoginLimiter limiter(
      clock, {.maxFailures = 5, .windowMs = 60'000, .lockoutMs = 60'000, .maxEntries = 100});
  for (int i = 0; i < 5; ++i) limiter.failed("old", "old-src");
  ASSERT_EQ(limiter.retryAfterMs("old", "x"), 60'000);
  EXPECT_EQ(limiter.entries(), 2u);
  for (int i = 0; i < 1000; ++i) {
    limiter.failed("u" + std::to_string(i), "s" + std::to_string(i));
    ASSERT_LE(limiter.entries(), 100u);
  }
  EXPECT_EQ(limiter.entries(), 100u);
  // The first entries were dropped; the newest remain.
  EXPECT_EQ(limiter.retryAfterMs("old", "x"), 0);
  for (int i = 0; i < 4; ++i) limiter.failed("u999", "s999");
  EXPECT_EQ(limiter.retryAfterMs("u999", "x"), 60'000);
}

TEST(AclLoginLimiter, ConcurrentCallersKeepItConsistent) {
  testing::FakeClock clock;
  LoginLimiter limiter(clock, {.maxFailures = 5, .windowMs = 60'000, .lockoutMs = 60'000,
                               .maxEntries = 64});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&limiter, t] {
      for (int i = 0; i < 2000; ++i) {
        std::string user = "u" + std::to_string(t) + "-" + std::to_string(i % 50);
        limiter.failed(user, "s" + std::to_string(i % 7));
        (void)limiter.retryAfterMs(user, "s0");
        if (i % 3 == 0) limiter.succeeded(user, "s0");
        (void)limiter.entries();
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_LE(limiter.entries(), 64u);
  // The seven sources each failed far more than five times: all locked.
  EXPECT_EQ(limiter.retryAfterMs("nobody", "s3"), 60'000);
}

}  // namespace
}  // namespace enjin::acl
