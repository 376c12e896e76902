#include "enjin/supervise/proc_stat.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <string>

namespace enjin::supervise {
namespace {

int64_t cpuNanos() {
  timespec ts;
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

// A stat line with `comm`, utime 250, stime 50 and rss 10 pages; other fields distinct numbers.
std::string statLine(const std::string& comm) {
  std::string line = "4242 (" + comm + ") S";
  for (int field = 4; field <= 52; ++field) {
    int value = field;
    if (field == 14) value = 250;
    if (field == 15) value = 50;
    if (field == 24) value = 10;
    line += " " + std::to_string(value);
  }
  return line + "\n";
}

TEST(ProcStat, ParsesFieldsAfterTheLastParenthesis) {
  for (const std::string comm : {"sleep", "a) 1 2 (b", ") ) )", " x "}) {
    auto stat = parseProcStat(statLine(comm), 100, 4096);
    ASSERT_TRUE(stat.has_value()) << comm;
    EXPECT_EQ(stat->cpuSeconds, 3.0) << comm;
    EXPECT_EQ(stat->residentBytes, 40960u) << comm;
  }
  EXPECT_FALSE(parseProcStat("4242 sleep S 1 2 3", 100, 4096));
  EXPECT_FALSE(parseProcStat("4242 (sleep) S 1 2 3", 100, 4096));
  EXPECT_FALSE(parseProcStat("", 100, 4096));
  std::string bad = statLine("sleep");
  bad.replace(bad.find(" 250 "), 5, " 2x0 ");
  EXPECT_FALSE(parseProcStat(bad, 100, 4096));
}

TEST(ProcStat, ReadsCpuAndMemoryOfABusyChild) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // A name with spaces and parentheses: the fields must be found after the last ')'.
    ::prctl(PR_SET_NAME, "a) 1 2 (b", 0, 0, 0);
    const int64_t start = cpuNanos();
    volatile uint64_t x = 0;
    while (cpuNanos() - start < 60'000'000) x = x + 1;
    char c = 'r';
    (void)!::write(ready[1], &c, 1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);

  auto stat = readProcStat(pid);
  ::kill(pid, SIGKILL);
  int status;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(stat.has_value());
  EXPECT_GT(stat->cpuSeconds, 0.0);
  EXPECT_LT(stat->cpuSeconds, 5.0);
  EXPECT_GT(stat->residentBytes, 0u);

  // Reaped: the pid is gone (it could be reused, but not this soon in practice).
  EXPECT_FALSE(readProcStat(pid).has_value());
}

TEST(ProcStat, ResidentMemoryOfThisProcessIsPlausible) {
  auto stat = readProcStat(::getpid());
  ASSERT_TRUE(stat.has_value());
  // The test binary and its libraries: more than a megabyte, less than a few gigabytes.
  EXPECT_GT(stat->residentBytes, 1u << 20);
  EXPECT_LT(stat->residentBytes, 4ull << 30);
}

TEST(ProcStat, NothingForAPidThatDoesNotExist) {
  EXPECT_FALSE(readProcStat(-1).has_value());
  EXPECT_FALSE(readProcStat(0x3fffffff).has_value());  // above pid_max's ceiling
}

}  // namespace
}  // namespace enjin::supervise
