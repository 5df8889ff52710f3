// Unit tests of the repair planner (engine/repair_plan.h): proves that a
// proposal from check's walk is applied only under RepairMode::kAll (the
// new entry, the "Repairing" finding, the dropped guest range, the snapshot
// cut) and is otherwise reported as check reports it, with the entry kept.
#include "engine/repair_plan.h"

#include <gtest/gtest.h>

#include "engine/memory_device.h"

namespace qcrash::engine::check_internal {
namespace {

namespace f = format;

// A context over a 1 MiB file of 64 KiB clusters (the planner reads no byte).
struct Fixture {
  explicit Fixture(RepairMode mode) : device(std::vector<uint8_t>(1 << 20)) {
    header.cluster_bits = 16;
    header.size_bytes = uint64_t{1} << 30;
    header.nb_snapshots = 3;
    CheckOptions options;
    options.repair = mode;
    ctx = std::make_unique<CheckContext>(device, header, options);
    EXPECT_TRUE(ctx->Init().ok());
  }
  MemoryDevice device;
  Header header;
  std::unique_ptr<CheckContext> ctx;
  L1Source source{"active", 0x30000, 16, true};
};

EntryProposal MisalignedDataCluster(const L1Source& source, uint64_t entry) {
  EntryProposal p;
  p.table = EntryProposal::Table::kL2;
  p.edit = EntryProposal::Edit::kDropPointer;
  p.source = &source;
  p.l1_index = 0;
  p.l2_offset = 0x40000;
  p.l2_index = 3;
  p.entry = entry;
  p.kind = FindingKind::kMisaligned;
  p.target = 0x50200;
  p.why = "offset=0x50200: Data cluster is not properly aligned";
  p.unapplied_severity = Severity::kCorruption;
  p.unapplied_message =
      "ERROR offset=0x50200: Data cluster is not properly aligned; L2 entry corrupted.";
  return p;
}

TEST(RepairPlan, CheckOnlyReportsTheProposalAndKeepsTheEntry) {
  Fixture fx(RepairMode::kNone);
  const uint64_t entry = 0x50200 | f::kOflagCopied;
  EXPECT_FALSE(DecideEntryEdit(*fx.ctx, MisalignedDataCluster(fx.source, entry)).has_value());
  ASSERT_EQ(fx.ctx->report.findings.size(), 1u);
  const Finding& finding = fx.ctx->report.findings[0];
  EXPECT_FALSE(finding.repaired);
  EXPECT_EQ(finding.severity, Severity::kCorruption);
  EXPECT_EQ(finding.message,
            "ERROR offset=0x50200: Data cluster is not properly aligned; L2 entry corrupted.");
  EXPECT_EQ(finding.owner, "active L1[0] -> L2 0x40000[3] (guest 0x30000)");
  EXPECT_TRUE(fx.ctx->report.dropped.empty());
  EXPECT_EQ(fx.ctx->report.corruptions, 1u);
}

TEST(RepairPlan, RepairAllDropsThePointerAndRecordsTheGuestRange) {
  Fixture fx(RepairMode::kAll);
  const uint64_t entry = 0x50200 | f::kOflagCopied;
  const std::optional<uint64_t> replacement =
      DecideEntryEdit(*fx.ctx, MisalignedDataCluster(fx.source, entry));
  ASSERT_TRUE(replacement.has_value());
  EXPECT_EQ(*replacement, 0u);
  ASSERT_EQ(fx.ctx->report.findings.size(), 1u);
  EXPECT_TRUE(fx.ctx->report.findings[0].repaired);
  EXPECT_EQ(fx.ctx->report.findings[0].message,
            "Repairing: offset=0x50200: Data cluster is not properly aligned; L2 entry "
            "0x8000000000050200 dropped");
  ASSERT_EQ(fx.ctx->report.dropped.size(), 1u);
  EXPECT_EQ(fx.ctx->report.dropped[0].guest_offset, 0x30000u);
  EXPECT_EQ(fx.ctx->report.corruptions_fixed, 1u);
}

TEST(RepairPlan, ARepairedPreallocatedZeroClusterStaysZeroAndLosesNoData) {
  Fixture fx(RepairMode::kAll);
  const std::optional<uint64_t> replacement =
      DecideEntryEdit(*fx.ctx, MisalignedDataCluster(fx.source, 0x50200 | f::kOflagZero));
  ASSERT_TRUE(replacement.has_value());
  EXPECT_EQ(*replacement, f::kOflagZero);
  EXPECT_TRUE(fx.ctx->report.dropped.empty());
}

TEST(RepairPlan, ClearBitsIsPrefixedByTheDecision) {
  for (RepairMode mode : {RepairMode::kLeaks, RepairMode::kAll}) {
    Fixture fx(mode);
    EntryProposal p;
    p.table = EntryProposal::Table::kL1;
    p.edit = EntryProposal::Edit::kClearBits;
    p.source = &fx.source;
    p.l1_index = 2;
    p.entry = 0x40000 | (uint64_t{1} << 62) | 1;
    p.bits = 1;
    p.kind = FindingKind::kReservedBits;
    p.target = 0x30010;
    p.why = " found L1 entry with reserved bits set: 0x4000000000040001";
    const std::optional<uint64_t> replacement = DecideEntryEdit(*fx.ctx, p);
    ASSERT_EQ(fx.ctx->report.findings.size(), 1u);
    if (mode == RepairMode::kAll) {
      ASSERT_TRUE(replacement.has_value());
      EXPECT_EQ(*replacement, p.entry & ~uint64_t{1});
      EXPECT_EQ(fx.ctx->report.findings[0].message,
                "Repairing found L1 entry with reserved bits set: 0x4000000000040001");
    } else {
      EXPECT_FALSE(replacement.has_value());
      EXPECT_EQ(fx.ctx->report.findings[0].message,
                "ERROR found L1 entry with reserved bits set: 0x4000000000040001");
    }
  }
}

TEST(RepairPlan, ASnapshotCutKeepsTheEntriesBeforeTheBrokenOne) {
  Fixture all(RepairMode::kAll);
  EXPECT_TRUE(DecideSnapshotCut(*all.ctx, {1, 0x20040, "snapshot 2 (b)", "it is broken"}));
  EXPECT_EQ(all.ctx->snapshots_kept, std::optional<uint32_t>(1));
  EXPECT_EQ(all.ctx->report.findings[0].message,
            "Repairing: it is broken; discarding snapshot table entries 1..2");
  Fixture check(RepairMode::kNone);
  EXPECT_FALSE(DecideSnapshotCut(*check.ctx, {1, 0x20040, "snapshot 2 (b)", "it is broken"}));
  EXPECT_FALSE(check.ctx->snapshots_kept.has_value());
  EXPECT_EQ(check.ctx->report.findings[0].message, "ERROR it is broken");
}

}  // namespace
}  // namespace qcrash::engine::check_internal
