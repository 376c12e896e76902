#include "enjin/bus/seq_counter.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "enjin/base/file.hpp"
#include "fakes/fake_clock.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::bus {
namespace {

using testing::FakeClock;
using testing::TempDir;

TEST(SeqCounter, StartsAtTheClockAndRisesByOne) {
  FakeClock clock(5'000'000);
  auto c = SeqCounter::open(clock, "");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c->next(), 5'000'000u);
  EXPECT_EQ(*c->next(), 5'000'001u);
  EXPECT_EQ(c->last(), 5'000'001u);
}

TEST(SeqCounter, KeepsRisingAcrossRestartsEvenWhenTheClockGoesBack) {
  TempDir dir;
  FakeClock clock(5'000'000);
  uint64_t last = 0;
  {
    auto c = SeqCounter::open(clock, dir / "node.seq");
    ASSERT_TRUE(c.ok());
    for (int i = 0; i < 1000; ++i) last = *c->next();
  }
  clock.setWallMicros(1'000);  // the clock jumped back an hour... or to 1970
  auto c = SeqCounter::open(clock, dir / "node.seq");
  ASSERT_TRUE(c.ok());
  EXPECT_GT(*c->next(), last);

  struct stat st;
  ASSERT_EQ(::stat((dir / "node.seq").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(SeqCounter, RenewsTheReservationBeforePassingIt) {
  TempDir dir;
  FakeClock clock(1'000);
  auto c = SeqCounter::open(clock, dir / "node.seq");
  ASSERT_TRUE(c.ok());
  uint64_t last = 0;
  for (uint64_t i = 0; i < SeqCounter::kReserveAhead + 10; ++i) last = *c->next();
  auto text = readFile(dir / "node.seq");
  ASSERT_TRUE(text.ok());
  EXPECT_GE(std::stoull(*text), last);
  // A crash now: the next run starts above everything sent.
  auto again = SeqCounter::open(clock, dir / "node.seq");
  EXPECT_GT(*again->next(), last);
}

TEST(SeqCounter, RefusesACorruptFile) {
  TempDir dir;
  { std::ofstream(dir / "node.seq") << "12ab\n"; }
  FakeClock clock;
  auto c = SeqCounter::open(clock, dir / "node.seq");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("node.seq"), std::string::npos);
}

TEST(SeqCounter, FailsWhenItCannotPersist) {
  FakeClock clock;
  auto c = SeqCounter::open(clock, "/nonexistent-dir/node.seq");
  EXPECT_FALSE(c.ok());
}

}  // namespace
}  // namespace enjin::bus
