// Proves a CrashView reads exactly what a naive full copy of the same crash
// state holds, for random logs and states; that writes to a view stay in the
// view; that nested crash states (a crash during recovery) enumerate; and
// that views share the durable base instead of copying it.
#include "sim/crash_view.h"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <utility>
#include <vector>

#include "sim/enumerators.h"
#include "sim/sim_disk.h"
#include "tests/sim/naive_crash.h"
#include "tests/sim/random_history.h"

namespace qcrash::sim {
namespace {

std::vector<uint8_t> Bytes(size_t n, uint8_t value) { return std::vector<uint8_t>(n, value); }

std::vector<uint8_t> ReadAll(CrashView& view) {
  std::vector<uint8_t> out(view.SizeBytes());
  EXPECT_TRUE(view.Read(0, out).ok());
  return out;
}

std::shared_ptr<const ChunkedImage> ImageOf(const std::vector<uint8_t>& bytes) {
  return std::make_shared<const ChunkedImage>(ChunkedImage::FromBytes(bytes));
}

// For random logs, at every point, a random state's view equals the naive
// full copy: whole-image reads, random sub-range reads and Materialize().
// The pending shape (sectors and version counts) matches the naive model too.
RC_GTEST_PROP(CrashView, ReadsExactlyWhatANaiveFullCopyHolds, ()) {
  const auto history = testing::GenRandomHistory();
  const bool non_atomic = *rc::gen::inRange(0, 3) == 0;
  CrashTimeline timeline(ImageOf(history.initial), history.log, {.enabled = non_atomic});
  for (uint64_t p = 0; p < timeline.PointCount(); ++p) {
    const auto point = timeline.Point(p);
    const testing::NaivePoint naive = testing::NaiveReplay(history.initial, *history.log, p);
    size_t naive_pending = 0;
    for (const auto& [sector, entry] : naive.sectors) {
      if (entry.versions.empty()) continue;
      ++naive_pending;
      const int64_t index = point->FindPending(sector);
      RC_ASSERT(index >= 0);
      RC_ASSERT(point->pending[static_cast<size_t>(index)].count == entry.versions.size());
    }
    RC_ASSERT(point->pending.size() == naive_pending);

    const CrashState state = testing::GenStateAt(*point);
    const auto expected = testing::NaiveCrashImage(history.initial, *history.log, state);
    RC_ASSERT(expected.has_value());
    auto view = CrashTimeline::BuildView(point, state);
    RC_ASSERT(view.ok());
    RC_ASSERT(ReadAll(**view) == *expected);
    RC_ASSERT((*view)->Materialize().Flatten() == *expected);
    if (!expected->empty()) {
      const uint64_t offset = *rc::gen::inRange<uint64_t>(0, expected->size());
      const uint64_t length = *rc::gen::inRange<uint64_t>(0, expected->size() - offset + 1);
      std::vector<uint8_t> part(length);
      RC_ASSERT((*view)->Read(offset, part).ok());
      RC_ASSERT(std::equal(part.begin(), part.end(), expected->begin() + offset));
    }
  }
}

// Writes, shrinks and regrowths on a view behave like the same calls on a
// flat copy of its bytes (a MemoryDevice), and never touch the shared base.
RC_GTEST_PROP(CrashView, WritesBehaveLikeAFlatCopy, ()) {
  const auto history = testing::GenRandomHistory(12);
  CrashTimeline timeline(ImageOf(history.initial), history.log);
  const auto point = timeline.Point(*rc::gen::inRange<uint64_t>(0, timeline.PointCount()));
  const CrashState state = testing::GenStateAt(*point);
  auto view = CrashTimeline::BuildView(point, state);
  RC_ASSERT(view.ok());
  const std::vector<uint8_t> base_before = point->base->Flatten();
  std::vector<uint8_t> flat = ReadAll(**view);
  const int steps = *rc::gen::inRange(0, 12);
  for (int i = 0; i < steps; ++i) {
    if (*rc::gen::inRange(0, 4) == 0) {
      const uint64_t size = *rc::gen::inRange<uint64_t>(0, 40000);
      RC_ASSERT((*view)->Resize(size, ResizeMode::kSparse).ok());
      flat.resize(size, 0);
    } else {
      const uint64_t offset = *rc::gen::inRange<uint64_t>(0, 40000);
      const auto data =
          testing::Pattern(*rc::gen::inRange<size_t>(0, 5000), *rc::gen::arbitrary<uint8_t>());
      RC_ASSERT((*view)->Write(offset, data).ok());
      if (offset + data.size() > flat.size()) flat.resize(offset + data.size(), 0);
      std::copy(data.begin(), data.end(), flat.begin() + static_cast<ptrdiff_t>(offset));
    }
  }
  RC_ASSERT(ReadAll(**view) == flat);
  RC_ASSERT((*view)->Materialize().Flatten() == flat);
  RC_ASSERT(point->base->Flatten() == base_before);
}

TEST(CrashView, RejectsStatesThatDoNotFitThePoint) {
  auto log = std::make_shared<WriteLog>(512, 4096);
  log->AppendWrite(0, Bytes(1024, 1), false);
  CrashTimeline timeline(nullptr, log);
  for (const char* id : {"p2", "p1:5=0", "p1:0=2", "p1:0=0/1@256", "p1:0=g"}) {
    auto view = timeline.BuildView(*ParseCrashStateId(id));
    EXPECT_EQ(view.status().code(), StatusCode::kInvalidArgument) << id;
  }
  CrashTimeline non_atomic(nullptr, log, {.enabled = true});
  EXPECT_TRUE(non_atomic.BuildView(*ParseCrashStateId("p1:0=1/0@1,1=g")).ok());
  EXPECT_FALSE(non_atomic.BuildView(*ParseCrashStateId("p1:0=1/1@1")).ok());
  EXPECT_FALSE(non_atomic.BuildView(*ParseCrashStateId("p1:0=1/0@512")).ok());
}

TEST(CrashView, ReadPastTheEndIsAnIoError) {
  auto log = std::make_shared<WriteLog>(512, 1000);
  CrashTimeline timeline(nullptr, log);
  auto view = timeline.BuildView({0, {}});
  ASSERT_TRUE(view.ok());
  std::vector<uint8_t> out(16);
  EXPECT_EQ((*view)->Read(990, out).code(), StatusCode::kIoError);
  EXPECT_TRUE((*view)->Geometry().atomic_sector);
}

// A view on a 64 MiB disk shares every chunk of its epoch's durable image:
// building it copies only the pending sectors' overlay.
TEST(CrashView, SharesTheDurableBaseInsteadOfCopyingIt) {
  SimDisk disk({.sector_bytes = 4096, .initial_size_bytes = uint64_t{64} << 20});
  for (uint64_t i = 0; i < 64; ++i) ASSERT_TRUE(disk.Write(i << 20, Bytes(4096, 1)).ok());
  ASSERT_TRUE(disk.Flush().ok());
  for (uint64_t i = 0; i < 50; ++i) ASSERT_TRUE(disk.Write(i * 8192, Bytes(4096, 2)).ok());
  const CrashTimeline timeline = disk.Timeline();
  EXPECT_EQ(timeline.Point(0)->base, timeline.Point(1)->base) << "one base per flush epoch";
  const auto point = timeline.Point(timeline.PointCount() - 1);
  EXPECT_EQ(point->pending.size(), 50u);
  auto view = CrashTimeline::BuildView(point, {point->point, {point->ChoiceAt(3, 0)}});
  ASSERT_TRUE(view.ok());
  EXPECT_EQ((*view)->crash_point().base.get(), point->base.get());
  const ChunkedImage materialized = (*view)->Materialize();
  EXPECT_EQ(materialized.SharedChunkCount(*point->base), 64u - 1) << "only chunk 0 is copied";
  std::vector<uint8_t> sector(4096);
  ASSERT_TRUE((*view)->Read(3 * 8192, sector).ok());
  EXPECT_EQ(sector, Bytes(4096, 0)) << "sector 6 dropped to its durable zeroes";
  ASSERT_TRUE((*view)->Read(4 * 8192, sector).ok());
  EXPECT_EQ(sector, Bytes(4096, 2));
}

// Recovery writes on a crash view are logged; their own crash states (a
// crash during recovery) enumerate and build on top of the outer state.
TEST(CrashView, NestedCrashStatesDuringRecovery) {
  auto log = std::make_shared<WriteLog>(512, 2048);
  log->AppendWrite(0, Bytes(512, 'a'), false);
  log->AppendWrite(512, Bytes(512, 'b'), false);
  CrashTimeline timeline(nullptr, log);
  auto outer = timeline.BuildView(*ParseCrashStateId("p2:0=0"));  // 'a' lost, 'b' landed
  ASSERT_TRUE(outer.ok());
  CrashView& view = **outer;
  EXPECT_FALSE(view.NestedTimeline().ok()) << "nothing logged yet";
  view.StartLog();
  // "Recovery": rewrite sector 0, flush, then write sectors 2-3 unflushed.
  ASSERT_TRUE(view.Write(0, Bytes(512, 'r')).ok());
  ASSERT_TRUE(view.Flush().ok());
  ASSERT_TRUE(view.Write(1024, Bytes(1024, 's')).ok());
  auto nested = view.NestedTimeline();
  ASSERT_TRUE(nested.ok());
  EXPECT_EQ(nested->PointCount(), 4u);
  EXPECT_EQ(CountCrashStates(*nested, {.kind = EnumeratorKind::kExhaustive}),
            1u + 2 + 1 + 4);  // p0, p1 {0}, p2 after the flush, p3 {2, 3}
  auto torn = nested->BuildView(*ParseCrashStateId("p3:3=0"));
  ASSERT_TRUE(torn.ok());
  std::vector<uint8_t> expected = Bytes(512, 'r');
  for (uint8_t c : {'b', 's', '\0'}) {
    const auto part = Bytes(512, c);
    expected.insert(expected.end(), part.begin(), part.end());
  }
  EXPECT_EQ(ReadAll(**torn), expected);
  auto before = nested->BuildView(*ParseCrashStateId("p1:0=0"));
  ASSERT_TRUE(before.ok());
  std::vector<uint8_t> first(512);
  ASSERT_TRUE((*before)->Read(0, first).ok());
  EXPECT_EQ(first, Bytes(512, 0)) << "the outer state's durable zeroes, under the nested crash";
  // Nesting goes deeper: the nested view logs too.
  (*torn)->StartLog();
  ASSERT_TRUE((*torn)->WriteFua(0, Bytes(10, 'x')).ok());
  auto deeper = (*torn)->NestedTimeline();
  ASSERT_TRUE(deeper.ok());
  EXPECT_EQ(deeper->Point(1)->pending.size(), 0u) << "a FUA write is durable";
}

}  // namespace
}  // namespace qcrash::sim
