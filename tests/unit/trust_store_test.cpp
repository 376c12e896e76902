#include "enjin/bus/trust_store.hpp"

#include <gtest/gtest.h>

#include <fstream>

#include "fakes/temp_dir.hpp"
#include "test_util.hpp"

namespace enjin::bus {
namespace {

using testing::TempDir;

TEST(TrustStore, LoadsADirectoryWithAllowLines) {
  TempDir dir;
  auto a = testing::keyFromByte(1);
  auto b = testing::keyFromByte(2);
  { std::ofstream(dir / "ring1-a.pub") << a.publicKey().hex() << "\n"; }
  {
    std::ofstream(dir / "ring2-b.pub") << b.publicKey().hex() << "\n# only observations\n"
                                       << "allow obs.r2\nallow log.r2\n";
  }
  { std::ofstream(dir / "notes.txt") << "ignored\n"; }
  TrustStore store;
  ASSERT_TRUE(store.load(dir.path(), {"spec"}).ok());
  EXPECT_EQ(store.size(), 2u);
  const TrustedKey* ta = store.find(a.publicKey());
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->name, "ring1-a");
  EXPECT_TRUE(ta->mayPublish("spec.r2.x"));  // the default prefixes
  EXPECT_FALSE(ta->mayPublish("obs.r2"));
  const TrustedKey* tb = store.find(b.publicKey());
  ASSERT_NE(tb, nullptr);
  EXPECT_TRUE(tb->mayPublish("obs.r2.web"));
  EXPECT_TRUE(tb->mayPublish("log.r2"));
  EXPECT_FALSE(tb->mayPublish("obs.r20"));
  EXPECT_FALSE(tb->mayPublish("spec.r2"));
}

TEST(TrustStore, AllowStarMeansEveryTopic) {
  TempDir dir;
  auto a = testing::keyFromByte(1);
  { std::ofstream(dir / "a.pub") << a.publicKey().hex() << "\nallow *\n"; }
  TrustStore store;
  ASSERT_TRUE(store.load(dir / "a.pub", {}).ok());
  EXPECT_TRUE(store.find(a.publicKey())->mayPublish("any.topic"));
}

TEST(TrustStore, DenyByDefaultWithNoPrefixes) {
  TrustStore store;
  auto a = testing::keyFromByte(1);
  ASSERT_TRUE(store.add(a.publicKey(), "a", {}).ok());
  EXPECT_FALSE(store.find(a.publicKey())->mayPublish("obs"));
}

TEST(TrustStore, ErrorsNameTheFileAndLine) {
  TempDir dir;
  auto a = testing::keyFromByte(1);
  { std::ofstream(dir / "bad.pub") << a.publicKey().hex() << "\nallow obs..x\n"; }
  TrustStore store;
  auto st = store.load(dir / "bad.pub", {""});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("bad.pub:2"), std::string::npos) << st.error().message;
  { std::ofstream(dir / "short.pub") << "abcd\n"; }
  st = store.load(dir / "short.pub", {""});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("short.pub:1"), std::string::npos) << st.error().message;
  EXPECT_FALSE(store.load(dir / "missing.pub", {""}).ok());
  EXPECT_EQ(store.size(), 0u);
}

}  // namespace
}  // namespace enjin::bus
