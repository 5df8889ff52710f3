// Proves RecoverState reads the guest view beyond the ranges the workload
// touched: the rest of a written cluster, and, after a refcount rebuild or a
// crash of recovery itself, every range the image maps to data, must read
// zeroes. Each test runs a real workload, then hands recovery an oracle built
// from a doctored copy of it in which one write never happened (a discard
// elsewhere instead): the image holds data where the oracle says nobody
// wrote, which is what foreign data after a crash looks like.
#include "properties/recovery.h"

#include <gtest/gtest.h>

#include <string>

#include "properties/generate.h"
#include "properties/oracle.h"
#include "properties/runner.h"

namespace qcrash::properties {
namespace {

constexpr uint64_t kKiB = 1024;

Workload FourKiBClusters(std::vector<GuestOp> ops) {
  Workload w;
  w.name = "recovery-test";
  w.image.size_bytes = 256 * kKiB;
  w.image.cluster_bits = 12;
  w.ops = std::move(ops);
  return w;
}

GuestOp W(uint64_t offset, uint64_t length) { return {OpKind::kWrite, offset, length, false}; }
GuestOp D(uint64_t offset, uint64_t length) { return {OpKind::kDiscard, offset, length, false}; }
GuestOp F() { return {OpKind::kFlush, 0, 0, false}; }

// Recovers the prefix state at `point` (records before it landed in order;
// by default the end of the log) against an oracle that believes operation
// 1 was `instead`.
StateResult RecoverAt(const WorkloadRun& run, const GuestOp* instead, uint64_t point,
                      const RecoveryOptions& options = {}) {
  WorkloadRun believed = run;
  if (instead != nullptr) believed.workload.ops[1] = *instead;
  const GuestOracle oracle(believed);
  sim::CrashState state;
  state.point = point;
  return RecoverState(believed, oracle, run.timeline->Point(state.point), state, options);
}
StateResult RecoverEnd(const WorkloadRun& run, const GuestOp* instead,
                       const RecoveryOptions& options = {}) {
  return RecoverAt(run, instead, run.timeline->PointCount() - 1, options);
}

std::string Describe(const StateResult& result) {
  std::string out;
  for (const Violation& v : result.violations) out += v.invariant + ": " + v.message + "\n";
  return out;
}

bool Mentions(const StateResult& result, const std::string& invariant, const std::string& text) {
  for (const Violation& v : result.violations) {
    if (v.invariant == invariant && v.message.find(text) != std::string::npos) return true;
  }
  return false;
}

TEST(Recovery, TheRestOfAWrittenClusterMustReadZeroes) {
  RunOptions options;
  options.open.policy = engine::OrderingPolicy::kOrdered;
  // Two sectors of guest cluster 0: 0x0 and 0x800.
  auto run = RunWorkload(FourKiBClusters({W(0, 512), W(2 * kKiB, 512), F()}), options);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_TRUE(RecoverEnd(*run, nullptr).violations.empty()) << Describe(RecoverEnd(*run, nullptr));
  const GuestOp elsewhere = D(64 * kKiB, 4 * kKiB);
  const StateResult result = RecoverEnd(*run, &elsewhere);
  EXPECT_TRUE(result.raw_clean);  // no check but the read-back can tell
  EXPECT_TRUE(Mentions(result, "I4", "guest sector at 0x800 reads op 1's data"))
      << Describe(result);
}

TEST(Recovery, AfterARefcountRebuildEveryMappedRangeIsRead) {
  RunOptions options;
  options.open.policy = engine::OrderingPolicy::kLazy;
  Workload workload = FourKiBClusters({W(0, 4 * kKiB), W(64 * kKiB, 4 * kKiB), F()});
  workload.image.lazy_refcounts = true;
  auto run = RunWorkload(workload, options);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  // The last crash point whose raw image has the dirty bit and refcounts
  // behind its pointers: the guest flush has written the L2 entries, not yet
  // the refcounts, and recovery rebuilds them from the L2 tables.
  const GuestOp elsewhere = D(128 * kKiB, 4 * kKiB);
  uint64_t point = run->timeline->PointCount();
  for (uint64_t p = 0; p < run->timeline->PointCount(); ++p) {
    const StateResult at = RecoverAt(*run, nullptr, p);
    if (at.raw_refcounts_dirty && at.raw_corruptions != 0) point = p;
  }
  ASSERT_LT(point, run->timeline->PointCount()) << "no crash point needs a refcount rebuild";
  const StateResult result = RecoverAt(*run, &elsewhere, point);
  EXPECT_TRUE(RecoverAt(*run, nullptr, point).violations.empty())
      << Describe(RecoverAt(*run, nullptr, point));
  EXPECT_TRUE(Mentions(result, "I4", "guest sector at 0x10000 reads op 1's data"))
      << Describe(result);
}

TEST(Recovery, AfterACrashOfRecoveryEveryMappedRangeIsRead) {
  RunOptions options;
  options.open.policy = engine::OrderingPolicy::kOrdered;
  auto run = RunWorkload(FourKiBClusters({W(0, 4 * kKiB), W(64 * kKiB, 4 * kKiB), F()}), options);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  RecoveryOptions nested;
  nested.nested_enumerator = "prefix";
  EXPECT_TRUE(RecoverEnd(*run, nullptr, nested).violations.empty())
      << Describe(RecoverEnd(*run, nullptr, nested));
  const GuestOp elsewhere = D(128 * kKiB, 4 * kKiB);
  const StateResult result = RecoverEnd(*run, &elsewhere, nested);
  EXPECT_TRUE(Mentions(result, "I8", "guest sector at 0x10000 reads op 1's data"))
      << Describe(result);
}

// With a backing file, the rest of a partially written cluster must read
// the backing file's data (copy-on-write): a run on an image without one
// (so that the copy brings zeroes, as a copy-on-write that skips the read
// would) fails an oracle that knows of the backing file; the same run held
// to its own oracle passes.
TEST(Recovery, TheRestOfAClusterWrittenOverABackingFileMustReadTheBackingFile) {
  RunOptions options;
  options.open.policy = engine::OrderingPolicy::kOrdered;
  Workload workload = FourKiBClusters({W(2 * kKiB, 512), F()});
  SetBacking(workload);
  auto with = RunWorkload(workload, options);
  ASSERT_TRUE(with.ok()) << with.status().ToString();
  EXPECT_TRUE(RecoverEnd(*with, nullptr).violations.empty())
      << Describe(RecoverEnd(*with, nullptr));
  workload.backing = false;
  workload.image.backing_file.clear();
  workload.image.backing_format.clear();
  auto without = RunWorkload(workload, options);
  ASSERT_TRUE(without.ok()) << without.status().ToString();
  WorkloadRun believed = *without;
  believed.workload.backing = true;
  const GuestOracle oracle(believed);
  sim::CrashState end;
  end.point = without->timeline->PointCount() - 1;
  const StateResult result =
      RecoverState(believed, oracle, without->timeline->Point(end.point), end, {});
  EXPECT_TRUE(Mentions(result, "I4",
                       "guest sector at 0x0 reads zeroes; expected its flushed value: the backing "
                       "file's data for guest sector 0"))
      << Describe(result);
}

// Read operations are held to the guest model as they run: what the last
// write left, zeroes after write-zeroes, old-or-zero after a discard.
TEST(GuestModel, AReadMustReturnWhatTheLastWritesLeft) {
  const Workload no_backing;
  GuestModel model(no_backing);
  model.Apply(W(0, 4 * kKiB), 1);
  model.Apply({OpKind::kWriteZeroes, 1 * kKiB, 512, false}, 2);
  model.Apply(D(2 * kKiB, 1 * kKiB), 3);
  std::vector<uint8_t> bytes(5 * kKiB, 0);
  FillOpContent(1, 0, bytes);  // op 1's data everywhere it wrote...
  std::fill(bytes.begin() + 1 * kKiB, bytes.begin() + 1 * kKiB + 512, 0);  // ...zeroed by op 2
  std::fill(bytes.begin() + 4 * kKiB, bytes.end(), 0);                     // never written
  EXPECT_TRUE(model.CheckRead(0, bytes).ok());
  // A discarded sector may read zeroes or its old data.
  std::fill(bytes.begin() + 2 * kKiB, bytes.begin() + 3 * kKiB, 0);
  EXPECT_TRUE(model.CheckRead(0, bytes).ok());
  // Anything else is wrong: a zeroed sector with its old data, another
  // sector's data, a sector nobody wrote with data.
  std::vector<uint8_t> wrong(512);
  FillOpContent(1, 2, wrong);
  const Status zeroed = model.CheckRead(1 * kKiB, wrong);
  EXPECT_FALSE(zeroed.ok());
  EXPECT_NE(zeroed.ToString().find("guest sector at 0x400 reads op 0's data for guest sector 2"),
            std::string::npos)
      << zeroed.ToString();
  EXPECT_FALSE(model.CheckRead(3 * kKiB, wrong).ok());
  EXPECT_FALSE(model.CheckRead(8 * kKiB, wrong).ok());
  std::vector<uint8_t> right(512);
  FillOpContent(1, 7, right);
  EXPECT_TRUE(model.CheckRead(7 * 512, right).ok());
}

// A snapshot revert, once returned, is durable: the guest reads what it saw
// at the snapshot's create. An oracle that believes no revert happened sees
// the image's reverted sectors as lost writes (I4), and one that believes a
// revert happened where none did sees the old content as wrong (I4).
TEST(Oracle, ARevertThatReturnedReadsTheSnapshotsContent) {
  Workload w = FourKiBClusters({W(0, 8 * kKiB),
                                F(),
                                {OpKind::kSnapshotCreate, 0, 0, false},
                                W(0, 4 * kKiB),
                                W(64 * kKiB, 4 * kKiB),
                                F(),
                                {OpKind::kSnapshotRevert, 0, 0, false}});
  RunOptions options;
  options.open.policy = engine::OrderingPolicy::kOrdered;
  auto run = RunWorkload(w, options);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  ASSERT_TRUE(run->workload_status.ok()) << run->workload_status.ToString();
  ASSERT_EQ(run->snapshot_reverted_to.at(6), 2u);
  const StateResult reverted = RecoverEnd(*run, nullptr);
  EXPECT_TRUE(reverted.violations.empty()) << Describe(reverted);

  WorkloadRun no_revert = *run;
  no_revert.snapshot_reverted_to.clear();
  const GuestOracle believes_none(no_revert);
  sim::CrashState end;
  end.point = run->timeline->PointCount() - 1;
  const StateResult lost = RecoverState(no_revert, believes_none, run->timeline->Point(end.point),
                                        end, RecoveryOptions{});
  EXPECT_TRUE(Mentions(lost, "I4", "guest sector at 0x0")) << Describe(lost);

  Workload kept = w;
  kept.ops.back() = F();  // the same run without the revert
  auto old_run = RunWorkload(kept, options);
  ASSERT_TRUE(old_run.ok());
  WorkloadRun believes_revert = *old_run;
  believes_revert.workload.ops.back() = {OpKind::kSnapshotRevert, 0, 0, false};
  believes_revert.snapshot_reverted_to[6] = 2;
  const GuestOracle oracle(believes_revert);
  end.point = old_run->timeline->PointCount() - 1;
  const StateResult wrong = RecoverState(
      believes_revert, oracle, old_run->timeline->Point(end.point), end, RecoveryOptions{});
  EXPECT_TRUE(Mentions(wrong, "I4", "guest sector at 0x0")) << Describe(wrong);
}

// The snapshots swarm feature reverts too, and its cases stay valid
// workloads (a revert takes the snapshot's disk size).
TEST(Generate, TheSnapshotsFeatureReverts) {
  size_t reverts = 0;
  for (uint64_t seed = 0; seed < 400; ++seed) {
    const GeneratedCase c = GenerateCase(seed, 0, engine::OrderingPolicy::kOrdered);
    ASSERT_TRUE(ValidateWorkload(c.workload).ok()) << "seed " << seed;
    for (const GuestOp& op : c.workload.ops) reverts += op.kind == OpKind::kSnapshotRevert;
  }
  EXPECT_GT(reverts, 10u);
}

}  // namespace
}  // namespace qcrash::properties
