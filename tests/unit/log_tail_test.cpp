// The apps' log tail (api/log_tail.hpp) on real files: a tenant's symlinks and files are never
// followed or read as root, a jump past 4 MiB resumes at a line start, and a rotated file is
// read to its end before the new one.
#include "enjin/api/log_tail.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "fakes/temp_dir.hpp"

namespace enjin::api {
namespace {

namespace fs = std::filesystem;

// A log line as the log writer makes it: 27 characters of time, the stream, the text.
std::string line(int n, const std::string& text = "hello") {
  char t[64];
  std::snprintf(t, sizeof t, "2026-12-07T15:00:00.%06dZ", n % 1'000'000);
  return std::string(t) + " stdout " + text + " " + std::to_string(n) + "\n";
}

void append(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::app) << text;
}

class LogTailTest : public ::testing::Test {
 protected:
  void SetUp() override {
    node_ = dir_.path() + "/nodes/shop-1";
    fs::create_directories(node_ + "/logs");
  }
  LogFiles files() const { return {{"shop-1", node_, "logs/shop.log", ::getuid()}}; }
  std::string log() const { return node_ + "/logs/shop.log"; }

  testing::TempDir dir_;
  std::string node_;
};

TEST_F(LogTailTest, ReadsTheTailThenWhatComes) {
  append(log(), line(1) + line(2) + line(3));
  LogTail tail;
  EXPECT_EQ(tail.start(files(), 2), "shop-1 | " + line(2) + "shop-1 | " + line(3));
  append(log(), line(4) + "2026-12-07T15:00:00.000005Z stdout unfini");
  EXPECT_EQ(tail.poll(files()), "shop-1 | " + line(4));
  append(log(), "shed\n");
  EXPECT_EQ(tail.poll(files()), "shop-1 | 2026-12-07T15:00:00.000005Z stdout unfinished\n");
  EXPECT_EQ(tail.poll(files()), "");
}

TEST_F(LogTailTest, ASymlinkInAPathComponentIsNotFollowed) {
  // The tenant swaps its logs folder for a symlink to a folder it should not read.
  const std::string secret = dir_.path() + "/secret";
  fs::create_directories(secret);
  append(secret + "/shop.log", line(1, "root-only"));
  fs::remove_all(node_ + "/logs");
  fs::create_directory_symlink(secret, node_ + "/logs");
  LogTail tail;
  std::string out = tail.start(files(), 10);
  EXPECT_EQ(out.find("root-only"), std::string::npos) << out;
  EXPECT_NE(out.find("shop-1 | enjin: cannot read its log: "), std::string::npos) << out;
  EXPECT_NE(out.find("symlink"), std::string::npos) << out;
  append(secret + "/shop.log", line(2, "root-only"));
  out = tail.poll(files());
  EXPECT_EQ(out.find("root-only"), std::string::npos) << out;
  // And the last component a symlink too.
  fs::remove(node_ + "/logs");
  fs::create_directories(node_ + "/logs");
  fs::create_symlink(secret + "/shop.log", log());
  LogTail again;
  out = again.start(files(), 10);
  EXPECT_EQ(out.find("root-only"), std::string::npos) << out;
  EXPECT_NE(out.find("symlink"), std::string::npos) << out;
}

TEST_F(LogTailTest, AFileOfAnotherOwnerIsRefused) {
  append(log(), line(1, "theirs"));
  LogFiles f = files();
  if (::geteuid() == 0) {
    ASSERT_EQ(::chown(log().c_str(), 54321, 54321), 0);
    f[0].uid = 54322;
  } else {
    f[0].uid = ::getuid() + 1;
  }
  LogTail tail;
  std::string out = tail.start(f, 10);
  EXPECT_EQ(out.find("theirs"), std::string::npos) << out;
  EXPECT_NE(out.find("refused: owned by uid"), std::string::npos) << out;
  // The error is said once, not at every poll.
  EXPECT_EQ(tail.poll(f), "");
  f[0].uid = ::geteuid() == 0 ? 54321 : ::getuid();
  LogTail mine;
  EXPECT_EQ(mine.start(f, 10), "shop-1 | " + line(1, "theirs"));
}

TEST_F(LogTailTest, AJumpPastTheBoundResumesAtALineStart) {
  append(log(), line(0));
  LogTail tail;
  ASSERT_EQ(tail.start(files(), 10), "shop-1 | " + line(0));
  // Over 4 MiB at once, in lines of 50 and some bytes: the bound lands inside a line.
  std::string big;
  for (int n = 1; big.size() < (5u << 20); ++n) big += line(n, "padding-to-make-it-longer");
  // A read of the last 4 MiB begins at big[size - 4 MiB]: made to fall inside a line.
  while (big[big.size() - (4u << 20) - 1] == '\n') big.insert(big.size() - 1, "z");
  append(log(), big);
  const std::string out = tail.poll(files());
  ASSERT_FALSE(out.empty());
  std::istringstream in(out);
  std::string l;
  int count = 0;
  while (std::getline(in, l)) {
    ++count;
    ASSERT_EQ(l.rfind("shop-1 | 2026-12-07T15:00:00.", 0), 0u) << "line " << count << ": " << l;
    ASSERT_NE(l.find(" stdout padding-to-make-it-longer "), std::string::npos) << l;
  }
  EXPECT_GT(count, 1000);
  EXPECT_EQ(out.back(), '\n');
}

TEST_F(LogTailTest, ARotatedFileIsReadToItsEndBeforeTheNewOne) {
  append(log(), line(1));
  LogTail tail;
  ASSERT_EQ(tail.start(files(), 10), "shop-1 | " + line(1));
  // Lines land in the old file, then it is rotated (log_writer.hpp: NAME.log -> NAME.log.1, a
  // new NAME.log), then lines land in the new one: all between two polls.
  append(log(), line(2) + line(3));
  ASSERT_EQ(::rename(log().c_str(), (log() + ".1").c_str()), 0);
  append(log(), line(4));
  EXPECT_EQ(tail.poll(files()),
            "shop-1 | " + line(2) + "shop-1 | " + line(3) + "shop-1 | " + line(4));
  append(log(), line(5));
  EXPECT_EQ(tail.poll(files()), "shop-1 | " + line(5));
}

}  // namespace
}  // namespace enjin::api
