#include "enjin/supervise/log_writer.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "enjin/base/file.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::supervise {
namespace {

// 2026-11-26T06:40:00.123456Z
constexpr int64_t kWall = 1'795'675'200'123'456;
constexpr std::string_view kStamp = "2026-11-26T06:40:00.123456Z";
constexpr size_t kMax = LogWriter::kMaxLineBytes;

std::string read(const std::string& path) {
  auto text = readFile(path);
  EXPECT_TRUE(text.ok()) << text.error().message;
  return text.ok() ? *text : std::string();
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::string line(std::string_view tag, std::string_view text) {
  return std::string(kStamp) + " " + std::string(tag) + " " + std::string(text);
}

LogWriter openLog(const std::string& path, uint64_t maxBytes = 1 << 20, uint32_t keep = 5) {
  auto w = LogWriter::open(path, LogConfig{maxBytes, keep});
  EXPECT_TRUE(w.ok()) << w.error().message;
  return std::move(w).value();
}

void appendOk(LogWriter& w, LogStream s, std::string_view chunk, int64_t wall = kWall) {
  Status st = w.append(s, chunk, wall);
  ASSERT_TRUE(st.ok()) << st.error().message;
}

TEST(LogWriterLines, SplitAcrossChunks) {
  testing::TempDir dir;
  LogWriter w = openLog(dir / "web.log");
  appendOk(w, LogStream::kStdout, "hel");
  EXPECT_EQ(read(dir / "web.log"), "");  // a partial line waits for its end
  appendOk(w, LogStream::kStdout, "lo\nwor");
  appendOk(w, LogStream::kStdout, "ld\n\nlast");
  EXPECT_EQ(lines(read(dir / "web.log")),
            (std::vector<std::string>{line("stdout", "hello"), line("stdout", "world"),
                                      line("stdout", "")}));
  ASSERT_TRUE(w.finish(LogStream::kStdout, kWall).ok());
  EXPECT_EQ(lines(read(dir / "web.log")).back(), line("stdout", "last"));
  EXPECT_EQ(w.size(), read(dir / "web.log").size());
  // Nothing pending: finishing again writes nothing.
  ASSERT_TRUE(w.finish(LogStream::kStdout, kWall).ok());
  EXPECT_EQ(lines(read(dir / "web.log")).size(), 4u);
}

TEST(LogWriterLines, StdoutAndStderrPartialsKeptApart) {
  testing::TempDir dir;
  LogWriter w = openLog(dir / "web.log");
  appendOk(w, LogStream::kStdout, "out-a");
  appendOk(w, LogStream::kStderr, "err-a");
  appendOk(w, LogStream::kStdout, "-b");
  appendOk(w, LogStream::kStderr, "-b\nerr-2\n");
  appendOk(w, LogStream::kStdout, "-c\n");
  EXPECT_EQ(read(dir / "web.log"), line("stderr", "err-a-b") + "\n" + line("stderr", "err-2") +
                                       "\n" + line("stdout", "out-a-b-c") + "\n");
}

TEST(LogWriterLines, LongLineCutIntoMarkedPieces) {
  testing::TempDir dir;
  LogWriter w = openLog(dir / "web.log");
  std::string longLine = std::string(kMax, 'a') + std::string(kMax, 'b') + "ccc";
  appendOk(w, LogStream::kStderr, longLine + "\nnext\n");
  EXPECT_EQ(lines(read(dir / "web.log")),
            (std::vector<std::string>{line("stderr", std::string(kMax, 'a')),
                                      line("stderr+", std::string(kMax, 'b')),
                                      line("stderr+", "ccc"), line("stderr", "next")}));
}

TEST(LogWriterLines, LineOfExactlyTheLimitIsNotCut) {
  testing::TempDir dir;
  LogWriter w = openLog(dir / "web.log");
  appendOk(w, LogStream::kStdout, std::string(kMax, 'x') + "\n");
  EXPECT_EQ(lines(read(dir / "web.log")),
            (std::vector<std::string>{line("stdout", std::string(kMax, 'x'))}));
}

TEST(LogWriterLines, LongPartialLineIsWrittenBeforeItsEnd) {
  testing::TempDir dir;
  LogWriter w = openLog(dir / "web.log");
  // A process printing without newlines: the buffer must not grow without bound.
  for (int i = 0; i < 5; ++i) appendOk(w, LogStream::kStdout, std::string(kMax / 2, 'p'));
  appendOk(w, LogStream::kStderr, "between\n");
  appendOk(w, LogStream::kStdout, "end\n");
  // 5/2 kMax + 3 bytes: two full pieces went out early, the rest when the newline came.
  EXPECT_EQ(lines(read(dir / "web.log")),
            (std::vector<std::string>{line("stdout", std::string(kMax, 'p')),
                                      line("stdout+", std::string(kMax, 'p')),
                                      line("stderr", "between"),
                                      line("stdout+", std::string(kMax / 2, 'p') + "end")}));
  // The next line starts afresh, unmarked.
  appendOk(w, LogStream::kStdout, "fresh\n");
  EXPECT_EQ(lines(read(dir / "web.log")).back(), line("stdout", "fresh"));
}

TEST(LogWriterLines, FinishWritesTheLastPieceOfALongLine) {
  testing::TempDir dir;
  LogWriter w = openLog(dir / "web.log");
  appendOk(w, LogStream::kStdout, std::string(kMax + 10, 'q'));
  ASSERT_TRUE(w.finish(LogStream::kStdout, kWall).ok());
  appendOk(w, LogStream::kStdout, "again\n");
  EXPECT_EQ(lines(read(dir / "web.log")),
            (std::vector<std::string>{line("stdout", std::string(kMax, 'q')),
                                      line("stdout+", std::string(10, 'q')),
                                      line("stdout", "again")}));
}

TEST(LogWriterLines, CutDoesNotSplitUtf8) {
  testing::TempDir dir;
  LogWriter w = openLog(dir / "web.log");
  // "é" is 2 bytes and would straddle the limit: the cut moves before it.
  appendOk(w, LogStream::kStdout, std::string(kMax - 1, 'a') + "\xc3\xa9z\n");
  EXPECT_EQ(lines(read(dir / "web.log")),
            (std::vector<std::string>{line("stdout", std::string(kMax - 1, 'a')),
                                      line("stdout+", "\xc3\xa9z")}));
}

TEST(LogWriterTime, TimestampsAreUtcWithMicroseconds) {
  testing::TempDir dir;
  LogWriter w = openLog(dir / "t.log");
  appendOk(w, LogStream::kStdout, "a\n", kWall);
  appendOk(w, LogStream::kStdout, "b\n", 1'764'139'200'000'007);
  appendOk(w, LogStream::kStdout, "c\n", 0);
  appendOk(w, LogStream::kStdout, "d\n", 951'782'400'999'999);  // 2000-02-29 (leap day)
  appendOk(w, LogStream::kStdout, "e\n", -1);
  EXPECT_EQ(lines(read(dir / "t.log")),
            (std::vector<std::string>{"2026-11-26T06:40:00.123456Z stdout a",
                                      "2025-11-26T06:40:00.000007Z stdout b",
                                      "1970-01-01T00:00:00.000000Z stdout c",
                                      "2000-02-29T00:00:00.999999Z stdout d",
                                      "1969-12-31T23:59:59.999999Z stdout e"}));
}

TEST(LogWriterFile, ReopenAppendsAndCountsTheExistingSize) {
  testing::TempDir dir;
  {
    LogWriter w = openLog(dir / "web.log");
    appendOk(w, LogStream::kStdout, "one\ntwo\n");
  }
  const size_t before = read(dir / "web.log").size();
  LogWriter w = openLog(dir / "web.log");
  EXPECT_EQ(w.size(), before);
  appendOk(w, LogStream::kStderr, "three\n");
  EXPECT_EQ(lines(read(dir / "web.log")),
            (std::vector<std::string>{line("stdout", "one"), line("stdout", "two"),
                                      line("stderr", "three")}));
  EXPECT_EQ(w.size(), read(dir / "web.log").size());
  EXPECT_EQ(w.path(), dir / "web.log");
}

TEST(LogWriterFile, ExistingSizeTriggersRotation) {
  testing::TempDir dir;
  const std::string old(4090, 'o');
  ASSERT_TRUE(writeFileAtomic(dir / "web.log", old, 0640).ok());
  LogWriter w = openLog(dir / "web.log", 4096, 2);
  appendOk(w, LogStream::kStdout, "new\n");
  EXPECT_EQ(read(dir / "web.log.1"), old);
  EXPECT_EQ(lines(read(dir / "web.log")), (std::vector<std::string>{line("stdout", "new")}));
}

TEST(LogWriterFile, CreatedWithMode0640) {
  testing::TempDir dir;
  LogWriter w = openLog(dir / "web.log");
  struct stat st;
  ASSERT_EQ(::stat((dir / "web.log").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777 & ~0640u, 0u);  // the umask may take more away, never add
  EXPECT_NE(st.st_mode & 0600, 0u);
}

TEST(LogWriterFile, ErrorsNameTheFile) {
  testing::TempDir dir;
  auto w = LogWriter::open(dir / "missing/web.log", LogConfig{});
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().message, "open " + (dir / "missing/web.log") + ": No such file or directory");
}

// Every "n=NNNNN" line number found across the given files, in file order.
std::vector<int> numbersIn(const std::vector<std::string>& paths) {
  std::vector<int> out;
  for (const auto& p : paths) {
    for (const auto& l : lines(read(p))) {
      auto at = l.find(" stdout n=");
      EXPECT_NE(at, std::string::npos) << l;
      if (at != std::string::npos) out.push_back(std::stoi(l.substr(at + 10)));
    }
  }
  return out;
}

std::set<std::string> filesIn(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    out.insert(e.path().filename().string());
  }
  return out;
}

// Writes lines "n=1" .. "n=count", some split across chunks.
void writeNumbered(LogWriter& w, int count) {
  std::string pending;
  for (int n = 1; n <= count; ++n) {
    pending += "n=" + std::to_string(n) + " " + std::string(static_cast<size_t>(n % 37), '.') + "\n";
    if (n % 3 == 0) {
      size_t half = pending.size() / 2;
      appendOk(w, LogStream::kStdout, std::string_view(pending).substr(0, half));
      appendOk(w, LogStream::kStdout, std::string_view(pending).substr(half));
      pending.clear();
    }
  }
  appendOk(w, LogStream::kStdout, pending);
}

TEST(LogWriterRotation, KeepTwoLosesNoLineWhileTheyFit) {
  testing::TempDir dir;
  const uint64_t maxBytes = 4096;
  LogWriter w = openLog(dir / "web.log", maxBytes, 2);
  // About 2.5 files' worth of lines (~55 bytes each): all of them must still be there.
  const int count = 180;
  writeNumbered(w, count);
  EXPECT_EQ(filesIn(dir.path()), (std::set<std::string>{"web.log", "web.log.1", "web.log.2"}));
  std::vector<int> numbers =
      numbersIn({dir / "web.log.2", dir / "web.log.1", dir / "web.log"});
  std::vector<int> expected;
  for (int n = 1; n <= count; ++n) expected.push_back(n);
  EXPECT_EQ(numbers, expected);
  for (const char* name : {"web.log", "web.log.1", "web.log.2"}) {
    EXPECT_LE(read(dir / name).size(), maxBytes) << name;
  }
  EXPECT_EQ(w.size(), read(dir / "web.log").size());
}

TEST(LogWriterRotation, KeepTwoDropsOnlyTheOldestFiles) {
  testing::TempDir dir;
  LogWriter w = openLog(dir / "web.log", 4096, 2);
  const int count = 2000;  // many rotations
  writeNumbered(w, count);
  EXPECT_EQ(filesIn(dir.path()), (std::set<std::string>{"web.log", "web.log.1", "web.log.2"}));
  // What is left is an unbroken run ending at the last line: whole files went, no single line.
  std::vector<int> numbers =
      numbersIn({dir / "web.log.2", dir / "web.log.1", dir / "web.log"});
  ASSERT_FALSE(numbers.empty());
  EXPECT_EQ(numbers.back(), count);
  for (size_t i = 1; i < numbers.size(); ++i) ASSERT_EQ(numbers[i], numbers[i - 1] + 1) << i;
  EXPECT_GT(numbers.size(), 100u);
}

TEST(LogWriterRotation, KeepZeroStartsANewFile) {
  testing::TempDir dir;
  LogWriter w = openLog(dir / "web.log", 4096, 0);
  writeNumbered(w, 500);
  EXPECT_EQ(filesIn(dir.path()), (std::set<std::string>{"web.log"}));
  std::vector<int> numbers = numbersIn({dir / "web.log"});
  ASSERT_FALSE(numbers.empty());
  EXPECT_EQ(numbers.back(), 500);
  EXPECT_LE(read(dir / "web.log").size(), 4096u);
  EXPECT_EQ(w.size(), read(dir / "web.log").size());
}

TEST(LogWriterRotation, LineBiggerThanMaxBytesGetsAFileOfItsOwn) {
  testing::TempDir dir;
  LogWriter w = openLog(dir / "web.log", 4096, 3);
  appendOk(w, LogStream::kStdout, "small\n");
  appendOk(w, LogStream::kStdout, std::string(5000, 'L') + "\n");
  appendOk(w, LogStream::kStdout, "after\n");
  EXPECT_EQ(lines(read(dir / "web.log.2")), (std::vector<std::string>{line("stdout", "small")}));
  EXPECT_EQ(lines(read(dir / "web.log.1")),
            (std::vector<std::string>{line("stdout", std::string(5000, 'L'))}));
  EXPECT_EQ(lines(read(dir / "web.log")), (std::vector<std::string>{line("stdout", "after")}));
}

}  // namespace
}  // namespace enjin::supervise
