// Proves the crash-state machinery of sim/crash_model.h: the spec's worked
// example, id round trips, enumerator counts equal to their closed forms,
// deterministic enumeration, and shards that partition every enumerator.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "sim/crash_view.h"
#include "sim/enumerators.h"
#include "tests/sim/random_history.h"

namespace qcrash::sim {
namespace {

std::vector<uint8_t> Bytes(size_t n, uint8_t value) { return std::vector<uint8_t>(n, value); }

std::vector<uint8_t> ReadAll(CrashView& view) {
  std::vector<uint8_t> out(view.SizeBytes());
  EXPECT_TRUE(view.Read(0, out).ok());
  return out;
}

std::vector<uint8_t> Concat(std::initializer_list<std::vector<uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (const auto& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

// The worked example of the crash_model.h spec comment, byte for byte.
TEST(CrashModel, WorkedExampleOfTheSpec) {
  auto log = std::make_shared<WriteLog>(512, 0);
  log->AppendWrite(0, Bytes(1024, 'A'), false);
  log->AppendFlush();
  log->AppendWrite(512, Bytes(512, 'B'), false);
  log->AppendWrite(512, Bytes(1024, 'C'), false);
  log->AppendWrite(1536, Bytes(512, 'D'), true);
  CrashTimeline timeline(nullptr, log);
  EXPECT_EQ(timeline.EpochCount(), 2u);
  const auto point = timeline.Point(5);
  ASSERT_EQ(point->pending.size(), 2u);
  EXPECT_EQ(point->pending[0].sector, 1u);
  EXPECT_EQ(point->pending[0].count, 2u);
  EXPECT_EQ(point->pending[1].count, 1u);
  EXPECT_EQ(point->ChoiceCount(0) * point->ChoiceCount(1), 6u);  // 3 x 2 crash states
  auto latest = timeline.BuildView(*ParseCrashStateId("p5"));
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(ReadAll(**latest), Concat({Bytes(512, 'A'), Bytes(1024, 'C'), Bytes(512, 'D')}));
  auto mixed = timeline.BuildView(*ParseCrashStateId("p5:1=1,2=0"));
  ASSERT_TRUE(mixed.ok());
  EXPECT_EQ(ReadAll(**mixed),
            Concat({Bytes(512, 'A'), Bytes(512, 'B'), Bytes(512, 0), Bytes(512, 'D')}));
}

TEST(CrashStateId, FormatsAndParsesEveryChoiceKind) {
  CrashState state{12,
                   {{3, ChoiceKind::kVersion, 0, 0, 0},
                    {7, ChoiceKind::kMix, 0, 2, 256},
                    {9, ChoiceKind::kGarbage, 0, 0, 0}}};
  EXPECT_EQ(FormatCrashStateId(state), "p12:3=0,7=0/2@256,9=g");
  EXPECT_EQ(*ParseCrashStateId("p12:3=0,7=0/2@256,9=g"), state);
  EXPECT_EQ(FormatCrashStateId(*ParseCrashStateId("p0")), "p0");
}

TEST(CrashStateId, RejectsMalformedIdsWithAClearMessage) {
  for (const char* id :
       {"", "q1", "p", "p1:", "p1:3", "p1:3=", "p1:3=1,", "p1:4=0,3=0", "p1:3=0,3=1", "p01",
        "p1:3=1/2", "p1:3=1/2@", "p-1", "p1:3=99999999999", "p99999999999999999999"}) {
    auto parsed = ParseCrashStateId(id);
    EXPECT_FALSE(parsed.ok()) << id;
    if (!parsed.ok()) {
      EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
    }
  }
}

RC_GTEST_PROP(CrashStateId, RoundTripsAnyCanonicalState, ()) {
  CrashState state;
  state.point = *rc::gen::arbitrary<uint64_t>();
  uint64_t sector = *rc::gen::inRange<uint64_t>(0, 1000);
  const int count = *rc::gen::inRange(0, 8);
  for (int i = 0; i < count; ++i) {
    SectorChoice choice{sector, static_cast<ChoiceKind>(*rc::gen::inRange(0, 3)), 0, 0, 0};
    if (choice.kind != ChoiceKind::kGarbage) choice.version = *rc::gen::arbitrary<uint32_t>();
    if (choice.kind == ChoiceKind::kMix) {
      choice.second_version = *rc::gen::arbitrary<uint32_t>();
      choice.cut_bytes = *rc::gen::arbitrary<uint32_t>();
    }
    state.deviations.push_back(choice);
    sector += *rc::gen::inRange<uint64_t>(1, uint64_t{1} << 40);
  }
  const std::string id = FormatCrashStateId(state);
  auto parsed = ParseCrashStateId(id);
  RC_ASSERT(parsed.ok());
  RC_ASSERT(*parsed == state);
  RC_ASSERT(FormatCrashStateId(*parsed) == id);
}

// Pending shape per point (sector: versions), worked out by hand:
//   p0 -  p1 {0:1,1:1,2:1}  p2 {0:1,1:2,2:1}  p3 -  p4 {2:1,3:1}
//   p5 {2:2,3:1}  p6 {2:3,3:1}  p7 {2:3,3:1} (sector 4 FUA-durable)
//   p8 {2:3,3:1,4:1}
std::shared_ptr<WriteLog> ShapedLog() {
  auto log = std::make_shared<WriteLog>(512, 8192);
  log->AppendWrite(0, Bytes(1536, 1), false);
  log->AppendWrite(512, Bytes(512, 2), false);
  log->AppendFlush();
  log->AppendWrite(1024, Bytes(1024, 3), false);
  log->AppendWrite(1024, Bytes(512, 4), false);
  log->AppendWrite(1024, Bytes(512, 5), false);
  log->AppendWrite(2048, Bytes(512, 6), true);
  log->AppendWrite(2048, Bytes(100, 7), false);
  return log;
}

// Enumerates spec and checks: the count equals the closed form, the states
// are distinct, each id rebuilds a view.
uint64_t EnumerateAndCheck(const CrashTimeline& timeline, const EnumeratorSpec& spec) {
  auto enumerator = CrashEnumerator::Create(timeline, spec);
  std::set<std::string> ids;
  CrashState state;
  uint64_t count = 0;
  while (enumerator->Next(&state)) {
    ++count;
    const std::string id = FormatCrashStateId(state);
    EXPECT_TRUE(ids.insert(id).second) << id;  // random too: drawn without replacement
    EXPECT_TRUE(CrashTimeline::BuildView(enumerator->point(), state).ok()) << id;
    EXPECT_EQ(*ParseCrashStateId(id), state);
  }
  EXPECT_EQ(count, CountCrashStates(timeline, spec)) << FormatEnumeratorSpec(spec);
  return count;
}

TEST(Enumerators, CountsEqualTheirClosedForms) {
  CrashTimeline timeline(nullptr, ShapedLog());
  using K = EnumeratorKind;
  EXPECT_EQ(EnumerateAndCheck(timeline, {.kind = K::kPrefix}), 9u);
  EXPECT_EQ(EnumerateAndCheck(timeline, {.kind = K::kDropOne}), 17u);  // sum of pending
  EXPECT_EQ(EnumerateAndCheck(timeline, {.kind = K::kTearOne}), 3u);   // (3-1) + (2-1)
  // Exhaustive = sum over points of the product of (versions + 1).
  EXPECT_EQ(EnumerateAndCheck(timeline, {.kind = K::kExhaustive}),
            1 + 8 + 12 + 1 + 4 + 6 + 8 + 8 + 16u);
  auto limited = CrashEnumerator::Create(timeline, {.kind = K::kExhaustive, .limit = 8});
  EXPECT_EQ(EnumerateAndCheck(timeline, {.kind = K::kExhaustive, .limit = 8}), 36u);
  CrashState state;
  while (limited->Next(&state)) {
  }
  EXPECT_EQ(limited->skipped_points(), 2u);  // p2 (12) and p8 (16)
  // Bounded(K) = sum over points of e_0 + ... + e_K of the alternatives.
  EXPECT_EQ(EnumerateAndCheck(timeline, {.kind = K::kBounded, .bound = 0}), 9u);
  EXPECT_EQ(EnumerateAndCheck(timeline, {.kind = K::kBounded, .bound = 1}), 34u);
  EXPECT_EQ(EnumerateAndCheck(timeline, {.kind = K::kBounded, .bound = 2}), 58u);
  EXPECT_EQ(EnumerateAndCheck(timeline, {.kind = K::kBounded, .bound = 10}), 64u);
  EXPECT_EQ(EnumerateAndCheck(timeline, {.kind = K::kRandom, .seed = 7, .samples = 50}), 50u);
}

TEST(Enumerators, NonAtomicModeAddsMixesAndGarbage) {
  // Per sector (v+1) atomic + (v+1)v mixes at one cut + 1 garbage = (v+1)^2 + 1.
  CrashTimeline timeline(nullptr, ShapedLog(), {.enabled = true});
  EXPECT_EQ(EnumerateAndCheck(timeline, {.kind = EnumeratorKind::kExhaustive}),
            1 + 125 + 250 + 1 + 25 + 50 + 85 + 85 + 425u);
  EXPECT_EQ(EnumerateAndCheck(timeline, {.kind = EnumeratorKind::kBounded, .bound = 1}),
            9 + 3 * 4 + (4 + 9 + 4) + (4 + 4) + (9 + 4) + 2 * (16 + 4) + (16 + 4 + 4u));
}

TEST(Enumerators, TearOneLandsAPrefixOfTheWrite) {
  CrashTimeline timeline(nullptr, ShapedLog());
  auto enumerator = CrashEnumerator::Create(timeline, {.kind = EnumeratorKind::kTearOne});
  std::vector<std::string> ids;
  CrashState state;
  while (enumerator->Next(&state)) ids.push_back(FormatCrashStateId(state));
  EXPECT_EQ(ids, (std::vector<std::string>{"p1:1=0,2=0", "p1:2=0", "p4:3=0"}));
}

TEST(Enumerators, SpecsParseAndFormat) {
  for (const char* text :
       {"prefix", "drop-one", "tear-one", "bounded:2", "exhaustive:4096", "random:42:1000",
        "bounded:1@2/4", "epochs", "epochs@1/3", "data:65536", "data:16@1/2"}) {
    auto spec = ParseEnumeratorSpec(text);
    ASSERT_TRUE(spec.ok()) << text;
    EXPECT_EQ(FormatEnumeratorSpec(*spec), text);
  }
  for (const char* text : {"", "bounded", "random:1", "prefix:3", "drop-one@4/4", "nope",
                           "epochs:1", "exhaustive:x", "bounded:1@1/0", "data", "data:0"}) {
    EXPECT_FALSE(ParseEnumeratorSpec(text).ok()) << text;
  }
}

EnumeratorSpec GenSpec() {
  EnumeratorSpec spec;
  spec.kind = static_cast<EnumeratorKind>(*rc::gen::inRange(0, 7));
  spec.bound = *rc::gen::inRange<uint64_t>(0, 3);
  spec.limit = *rc::gen::inRange<uint64_t>(0, 200);
  spec.seed = *rc::gen::arbitrary<uint64_t>();
  spec.samples = *rc::gen::inRange<uint64_t>(0, 60);
  return spec;
}

std::vector<std::string> AllIds(const CrashTimeline& timeline, const EnumeratorSpec& spec,
                                std::vector<uint64_t>* indices = nullptr) {
  auto enumerator = CrashEnumerator::Create(timeline, spec);
  std::vector<std::string> ids;
  CrashState state;
  while (enumerator->Next(&state)) {
    ids.push_back(FormatCrashStateId(state));
    if (indices != nullptr) indices->push_back(enumerator->index());
  }
  return ids;
}

// data:<limit>: records 0, 1, 3, 4, 5 wrote guest data, 6 and 7 (sector 4)
// did not; per point the product of the data sectors' choices, sector 4 at
// latest.
TEST(Enumerators, DataVariesTheDataSectorsOnly) {
  CrashTimeline timeline(nullptr, ShapedLog());
  EnumeratorSpec spec{.kind = EnumeratorKind::kData, .limit = 1000};
  EXPECT_EQ(EnumerateAndCheck(timeline, spec), 9u);  // no classes: each point's latest state
  spec.data_records = std::make_shared<const std::vector<bool>>(
      std::vector<bool>{true, true, false, true, true, true, false, false});
  EXPECT_EQ(EnumerateAndCheck(timeline, spec), 1 + 8 + 12 + 1 + 4 + 6 + 8 + 8 + 8u);
  std::vector<std::string> ids = AllIds(timeline, spec);
  // p1 in odometer order: every data sector durable first, latest last.
  EXPECT_EQ(std::vector<std::string>(ids.begin() + 1, ids.begin() + 4),
            (std::vector<std::string>{"p1:0=0,1=0,2=0", "p1:0=0,1=0", "p1:0=0,2=0"}));
  EXPECT_EQ(ids[8], "p1");
  for (const std::string& id : ids) {
    if (id.rfind("p8", 0) == 0) {
      EXPECT_EQ(id.find("4="), std::string::npos) << id;
    }
  }
  // At most <limit> per point, and the shards split the same sequence.
  spec.limit = 5;
  EXPECT_EQ(EnumerateAndCheck(timeline, spec), 1 + 5 + 5 + 1 + 4 + 5 + 5 + 5 + 5u);
  std::vector<std::string> all = AllIds(timeline, spec), shards;
  for (uint64_t i = 0; i < 3; ++i) {
    EnumeratorSpec shard = spec;
    shard.shard_index = i;
    shard.shard_count = 3;
    EXPECT_EQ(EnumerateAndCheck(timeline, shard), (36 + 2 - i) / 3);
    for (const std::string& id : AllIds(timeline, shard)) shards.push_back(id);
  }
  std::sort(all.begin(), all.end());
  std::sort(shards.begin(), shards.end());
  EXPECT_EQ(shards, all);
}

// Two rounds: every point's first 16 states, then the rest of each point's,
// so that a cut still reached the last point. p1 holds 5 data sectors (32
// states), p2 6 (64).
TEST(Enumerators, DataTakesEveryPointsFirstStatesFirst) {
  auto log = std::make_shared<WriteLog>(512, 8192);
  log->AppendWrite(0, Bytes(2560, 1), false);
  log->AppendWrite(4096, Bytes(512, 2), false);
  CrashTimeline timeline(nullptr, log);
  EnumeratorSpec spec{.kind = EnumeratorKind::kData, .limit = 1000};
  spec.data_records = std::make_shared<const std::vector<bool>>(std::vector<bool>{true, true});
  EXPECT_EQ(EnumerateAndCheck(timeline, spec), 1 + 32 + 64u);
  const std::vector<std::string> ids = AllIds(timeline, spec);
  EXPECT_EQ(ids[1], "p1:0=0,1=0,2=0,3=0,4=0");       // round one: p1's states 0..15
  EXPECT_EQ(ids[17], "p2:0=0,1=0,2=0,3=0,4=0,8=0");  // then p2's
  EXPECT_EQ(ids[33], "p1:1=0,2=0,3=0,4=0");          // round two: p1's state 16
  EXPECT_EQ(ids[48], "p1");                          // its last (latest)
  EXPECT_EQ(ids[49], "p2:0=0,2=0,3=0,4=0,8=0");      // p2's state 16
  EXPECT_EQ(ids.back(), "p2");
}

// Shards i/N of any enumerator are disjoint, their union is the unsharded
// sequence (index by index), and each shard's size is its closed form.
RC_GTEST_PROP(Enumerators, ShardsPartitionEveryEnumerator, ()) {
  const auto history = testing::GenRandomHistory(12);
  CrashTimeline timeline(
      std::make_shared<const ChunkedImage>(ChunkedImage::FromBytes(history.initial)), history.log,
      {.enabled = *rc::gen::inRange(0, 4) == 0});
  EnumeratorSpec spec = GenSpec();
  const std::vector<std::string> whole = AllIds(timeline, spec);
  RC_ASSERT(whole.size() == CountCrashStates(timeline, spec));
  RC_ASSERT(AllIds(timeline, spec) == whole);  // deterministic
  spec.shard_count = *rc::gen::inRange<uint64_t>(1, 6);
  std::map<uint64_t, std::string> seen;
  for (spec.shard_index = 0; spec.shard_index < spec.shard_count; ++spec.shard_index) {
    std::vector<uint64_t> indices;
    const std::vector<std::string> part = AllIds(timeline, spec, &indices);
    RC_ASSERT(part.size() == CountCrashStates(timeline, spec));
    for (size_t i = 0; i < part.size(); ++i) {
      RC_ASSERT(seen.emplace(indices[i], part[i]).second);  // disjoint
    }
  }
  RC_ASSERT(seen.size() == whole.size());  // the union is the whole
  for (const auto& [index, id] : seen) RC_ASSERT(whole[index] == id);
}

// Epochs: at p2 (the header-writing epoch, first) and p8, per write, the
// write lost and the write alone; repeats and the prefix state dropped.
TEST(Enumerators, EpochsLoseEachWriteAndLandEachAlone) {
  CrashTimeline timeline(nullptr, ShapedLog());
  EXPECT_EQ(AllIds(timeline, {.kind = EnumeratorKind::kEpochs}),
            (std::vector<std::string>{"p2:0=0,2=0", "p2:1=1",     // r0 lost, alone
                                      "p8:3=0", "p8:2=1,4=0",     // r3
                                      "p8:2=2,3=0,4=0",           // r4 alone
                                      "p8:2=2", "p8:3=0,4=0",     // r5
                                      "p8:4=0", "p8:2=0,3=0"}));  // r7
  EXPECT_EQ(EnumerateAndCheck(timeline, {.kind = EnumeratorKind::kEpochs}), 9u);
}

// Sampling without replacement: asked for more states than there are, the
// random enumerator draws each state of the space exactly once.
TEST(Enumerators, RandomDrawsWithoutReplacement) {
  CrashTimeline timeline(nullptr, ShapedLog());
  std::vector<std::string> all = AllIds(timeline, {.kind = EnumeratorKind::kExhaustive});
  std::vector<std::string> drawn =
      AllIds(timeline, {.kind = EnumeratorKind::kRandom, .seed = 3, .samples = 1000});
  EXPECT_EQ(drawn.size(), 64u);
  EXPECT_EQ(CountCrashStates(timeline, {.kind = EnumeratorKind::kRandom, .samples = 1000}), 64u);
  std::sort(all.begin(), all.end());
  std::sort(drawn.begin(), drawn.end());
  EXPECT_EQ(drawn, all);
}

TEST(Enumerators, RandomIsDeterministicPerSeed) {
  CrashTimeline timeline(nullptr, ShapedLog());
  const EnumeratorSpec a{.kind = EnumeratorKind::kRandom, .seed = 1, .samples = 40};
  const EnumeratorSpec b{.kind = EnumeratorKind::kRandom, .seed = 2, .samples = 40};
  EXPECT_EQ(AllIds(timeline, a), AllIds(timeline, a));
  EXPECT_NE(AllIds(timeline, a), AllIds(timeline, b));
}

}  // namespace
}  // namespace qcrash::sim
