// Repair under crash (DESIGN.md I7, I8): repair runs on the simulated disk;
// for every crash state the enumerators yield (prefix, drop-one, tear-one and
// a seeded random sample), a second repair on the crash view succeeds and
// leaves an image that check finds clean, dropping no guest cluster the
// corruption did not touch; and no crash state of the repair has more
// OFLAG_COPIED-with-refcount>=2 entries than the corrupt image had (R9).
#include <gtest/gtest.h>

#include <memory>
#include <set>

#include "engine/check.h"
#include "engine/memory_device.h"
#include "sim/enumerators.h"
#include "sim/sim_disk.h"
#include "tests/check/check_test_util.h"
#include "tests/check/corruptions.h"

namespace qcrash::check_test {
namespace {

using engine::CheckImage;
using engine::RepairMode;

std::vector<uint8_t> SmallBase(bool snapshot) {
  TempDir dir;
  const std::string path = dir.File("small.qcow2");
  EXPECT_TRUE(
      MakeImage(path, "-o cluster_size=4096", "1M",
                {"write -P 0x11 0 24k", "write -c -P 0x22 64k 4k", "write -P 0x33 512k 8k"}));
  if (snapshot) {
    RunCommand("qemu-img snapshot -c s1 '" + path + "'");
    RunCommand("qemu-io -c 'write -P 0x44 4k 4k' '" + path + "'");
  }
  return ReadFileBytes(path);
}

// OFLAG_COPIED set on disk while the refcount is 2 or more (R9 forbids it).
uint64_t CopiedWithSharedRefcount(BlockDevice& device) {
  auto report = CheckImage(device, {RepairMode::kNone});
  if (!report.ok()) return 0;
  uint64_t count = 0;
  for (const engine::Finding& finding : report->findings) {
    const size_t at = finding.message.find(" refcount=");
    if (finding.kind == engine::FindingKind::kCopiedMismatch && at != std::string::npos &&
        std::stoull(finding.message.substr(at + 10)) >= 2) {
      ++count;
    }
  }
  return count;
}

struct CrashStats {
  uint64_t states = 0;
  uint64_t failures = 0;
};

void RecoverEveryState(const sim::CrashTimeline& timeline, const sim::EnumeratorSpec& spec,
                       const std::set<uint64_t>& affected, const std::string& label,
                       uint64_t copied_baseline, CrashStats& stats) {
  auto enumerator = sim::CrashEnumerator::Create(timeline, spec);
  sim::CrashState state;
  while (enumerator->Next(&state) && stats.failures < 5) {
    ++stats.states;
    auto view = sim::CrashTimeline::BuildView(enumerator->point(), state);
    ASSERT_TRUE(view.ok()) << view.status().ToString();
    const std::string where = label + " state " + sim::FormatCrashStateId(state);
    if (CopiedWithSharedRefcount(**view) > copied_baseline) {
      ADD_FAILURE() << where << ": repair left OFLAG_COPIED on a cluster with refcount >= 2";
      ++stats.failures;
    }
    auto second = CheckImage(**view, {RepairMode::kAll});
    if (!second.ok()) {
      ADD_FAILURE() << where << ": second repair failed: " << second.status().ToString();
      ++stats.failures;
      continue;
    }
    for (const engine::DroppedRange& d : second->dropped) {
      if (d.table == "active" && !affected.count(d.guest_offset >> 12)) {
        ADD_FAILURE() << where << ": dropped untouched guest " << HexOffset(d.guest_offset);
        ++stats.failures;
      }
    }
    auto check = CheckImage(**view, {RepairMode::kNone});
    ASSERT_TRUE(check.ok());
    if (check->corruptions || check->leaks || check->check_errors) {
      ADD_FAILURE() << where << ": after recovery " << check->corruptions << " corruptions, "
                    << check->leaks << " leaks, " << check->check_errors << " check errors; first: "
                    << (check->findings.empty() ? "" : check->findings[0].message);
      ++stats.failures;
    }
  }
}

template <size_t kBases, size_t kClasses>
std::vector<std::pair<std::vector<uint8_t>, Corruption>> Cases(
    const std::vector<uint8_t> (&bases)[kBases], const Corruption (&classes)[kClasses]) {
  std::vector<std::pair<std::vector<uint8_t>, Corruption>> cases;
  for (const auto& base : bases) {
    for (Corruption c : classes) cases.emplace_back(base, c);
  }
  return cases;
}

TEST(RepairCrash, EveryCrashStateOfARepairIsRecoveredByASecondRepair) {
  const std::vector<uint8_t> bases[] = {SmallBase(false), SmallBase(true)};
  const Corruption classes[] = {Corruption::kDanglingFree,         Corruption::kSharedCluster,
                                Corruption::kMisalignedData,       Corruption::kDirtyLeak,
                                Corruption::kRefcountTableOverlap, Corruption::kL2IntoMetadata,
                                Corruption::kCopiedFlipped,        Corruption::kRefcountIncrement};
  CrashStats stats;
  for (const auto& [base, corruption] : Cases(bases, classes)) {
    std::vector<uint8_t> image = base;
    const Applied applied = ApplyCorruption(image, corruption, 3);
    ASSERT_TRUE(applied.ok) << CorruptionName(corruption);
    MemoryDevice before(image);
    const uint64_t copied_baseline = CopiedWithSharedRefcount(before);
    sim::SimDisk disk({}, std::make_shared<sim::ChunkedImage>(sim::ChunkedImage::FromBytes(image)));
    auto first = CheckImage(disk, {RepairMode::kAll});
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    ASSERT_GT(disk.log().size(), 0u) << CorruptionName(corruption) << ": repair wrote nothing";
    const sim::CrashTimeline timeline = disk.Timeline();
    const std::set<uint64_t> affected(applied.affected_clusters.begin(),
                                      applied.affected_clusters.end());
    using K = sim::EnumeratorKind;
    for (const sim::EnumeratorSpec& spec :
         {sim::EnumeratorSpec{.kind = K::kPrefix}, sim::EnumeratorSpec{.kind = K::kDropOne},
          sim::EnumeratorSpec{.kind = K::kTearOne},
          sim::EnumeratorSpec{.kind = K::kRandom, .seed = 7, .samples = 150}}) {
      RecoverEveryState(
          timeline, spec, affected,
          std::string(CorruptionName(corruption)) + " " + sim::FormatEnumeratorSpec(spec),
          copied_baseline, stats);
    }
  }
  EXPECT_EQ(stats.failures, 0u);
  EXPECT_GT(stats.states, 100u);
  std::printf("recovered %llu crash states of repair\n",
              static_cast<unsigned long long>(stats.states));
}

}  // namespace
}  // namespace qcrash::check_test
