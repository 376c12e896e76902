#include <sys/stat.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "enjin/base/file.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin {
namespace {

using testing::TempDir;

unsigned modeOf(const std::string& path) {
  struct stat st{};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

size_t entriesIn(const std::string& dir) {
  return static_cast<size_t>(std::distance(std::filesystem::directory_iterator(dir),
                                           std::filesystem::directory_iterator()));
}

TEST(WriteFileAtomic, ReplacesWithTheModeAsked_DurableOrNot) {
  TempDir dir;
  const std::string path = dir / "state.json";
  for (Sync sync : {Sync::kDurable, Sync::kAtomicOnly}) {
    ASSERT_TRUE(writeFileAtomic(path, "one\n", 0600, Replace::kYes, sync).ok());
    ASSERT_TRUE(writeFileAtomic(path, "two\n", 0640, Replace::kYes, sync).ok());
    auto text = readFile(path);
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(*text, "two\n");
    EXPECT_EQ(modeOf(path), 0640u);
    EXPECT_EQ(entriesIn(dir.path()), 1u) << "a temporary file was left behind";
  }
}

TEST(WriteFileAtomic, NoReplaceRefusesAnExistingFileAndKeepsIt) {
  TempDir dir;
  const std::string path = dir / "node.key";
  ASSERT_TRUE(writeFileAtomic(path, "first\n", 0600, Replace::kNo).ok());
  auto st = writeFileAtomic(path, "second\n", 0600, Replace::kNo, Sync::kAtomicOnly);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find(path), std::string::npos) << st.error().message;
  EXPECT_EQ(*readFile(path), "first\n");
  EXPECT_EQ(entriesIn(dir.path()), 1u);
}

TEST(WriteFileAtomic, AMissingFolderIsAnErrorNamingThePath) {
  TempDir dir;
  const std::string path = dir / "no/such/state.json";
  auto st = writeFileAtomic(path, "x", 0600, Replace::kYes, Sync::kAtomicOnly);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find(path), std::string::npos) << st.error().message;
}

}  // namespace
}  // namespace enjin
