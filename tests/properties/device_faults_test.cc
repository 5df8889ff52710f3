// Device faults (properties/device_faults.h): a lying flush is caught under
// the ordered policy, the same construction without the drop is clean, and
// misdirected metadata writes are detected by check.
#include "properties/device_faults.h"

#include <gtest/gtest.h>

namespace qcrash::properties {
namespace {

WorkloadRun RunDefault(engine::OrderingPolicy policy) {
  auto workload = BuiltinWorkload("default");
  EXPECT_TRUE(workload.ok());
  RunOptions options;
  options.open.policy = policy;
  options.open.l2_cache_tables = 2;  // as the suite and `--device-fault` run built-ins
  auto run = RunWorkload(*workload, options);
  EXPECT_TRUE(run.ok()) << run.status().ToString();
  return std::move(*run);
}

TEST(LyingFlush, OrderedDefaultLosesFlushedData) {
  const WorkloadRun run = RunDefault(engine::OrderingPolicy::kOrdered);
  auto report = MeasureLyingFlush(run);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_GT(report->states, 0u);
  EXPECT_GT(report->violating_states, 0u);
  EXPECT_GT(report->invariants["I4"], 0u) << "no lying flush lost acknowledged guest data";
  // The construction did drop something.
  bool dropped = false;
  for (size_t i = 0; i < run.log->size(); ++i) {
    if (run.log->record(i).kind != sim::RecordKind::kFlush) continue;
    auto c = BuildLyingFlushCase(run, i);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    dropped |= c->dropped_sectors > 0;
    EXPECT_EQ(c->state.deviations.size(), c->dropped_sectors);
  }
  EXPECT_TRUE(dropped);
}

TEST(LyingFlush, ControlWithTheEpochLandedIsClean) {
  const WorkloadRun run = RunDefault(engine::OrderingPolicy::kOrdered);
  LyingFlushOptions options;
  options.drop_epoch = false;
  auto control = MeasureLyingFlush(run, options);
  ASSERT_TRUE(control.ok()) << control.status().ToString();
  auto lying = MeasureLyingFlush(run);
  ASSERT_TRUE(lying.ok());
  EXPECT_EQ(control->states, lying->states);  // the same flushes and points
  ASSERT_GT(control->states, 0u);
  EXPECT_EQ(control->violating_states, 0u)
      << (control->examples.empty()
              ? std::string()
              : control->examples.front().invariant + ": " + control->examples.front().message);
}

// The control on every built-in workload and safe policy: merging two
// epochs and crashing at the merged epoch's end with everything landed is a
// prefix state of the original log, which every safe policy survives.
TEST(LyingFlush, ControlIsCleanOnEveryBuiltinWorkloadAndSafePolicy) {
  for (const std::string& name : BuiltinWorkloadNames()) {
    auto workload = BuiltinWorkload(name);
    ASSERT_TRUE(workload.ok());
    for (const engine::OrderingPolicy policy :
         {engine::OrderingPolicy::kWritethrough, engine::OrderingPolicy::kOrdered,
          engine::OrderingPolicy::kLazy, engine::OrderingPolicy::kExtent,
          engine::OrderingPolicy::kJournal}) {
      const bool v3_only =
          policy == engine::OrderingPolicy::kLazy || policy == engine::OrderingPolicy::kJournal;
      if (workload->image.version < 3 && v3_only) continue;
      if (name == "refcount-table-growth" && policy == engine::OrderingPolicy::kWritethrough)
        continue;  // long, as in the suite
      // The device fault models act on the image file's log alone: an image
      // with an external data file, or a workload that commits into its
      // backing file (both a second device), is refused (NotSupported), not
      // measured.
      if (!workload->image.data_file.empty() || RecordsBacking(*workload)) continue;
      RunOptions options;
      options.open.policy = policy;
      options.open.l2_cache_tables = 2;
      auto run = RunWorkload(*workload, options);
      ASSERT_TRUE(run.ok()) << run.status().ToString();
      LyingFlushOptions control;
      control.drop_epoch = false;
      control.flushes_max = 16;
      auto report = MeasureLyingFlush(*run, control);
      ASSERT_TRUE(report.ok()) << report.status().ToString();
      EXPECT_EQ(report->violating_states, 0u)
          << name << " under " << engine::PolicyName(policy) << ": "
          << (report->examples.empty()
                  ? std::string()
                  : report->examples.front().invariant + ": " + report->examples.front().message);
    }
  }
}

TEST(LyingFlush, RejectsARecordThatIsNotAFlush) {
  const WorkloadRun run = RunDefault(engine::OrderingPolicy::kOrdered);
  for (size_t i = 0; i < run.log->size(); ++i) {
    if (run.log->record(i).kind == sim::RecordKind::kFlush) continue;
    EXPECT_FALSE(BuildLyingFlushCase(run, i).ok());
    break;
  }
  EXPECT_FALSE(BuildLyingFlushCase(run, run.log->size()).ok());
}

TEST(Misdirect, MetadataTableWritesAreDetectedAndZonesAddUp) {
  const WorkloadRun run = RunDefault(engine::OrderingPolicy::kOrdered);
  auto report = MeasureMisdirect(run);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  uint64_t misdirected = 0, writes = 0;
  for (const ZoneCounts& z : report->zones) {
    misdirected += z.misdirected;
    writes += z.writes;
    EXPECT_EQ(z.detected + z.silent, z.misdirected);
    EXPECT_LE(z.silent_wrong_data, z.silent);
  }
  EXPECT_EQ(misdirected, report->cases.size());
  EXPECT_EQ(misdirected, report->misdirected);
  EXPECT_EQ(writes, report->write_records);
  size_t tables = 0;
  for (const MisdirectCase& c : report->cases) {
    if (c.zone != Zone::kL1 && c.zone != Zone::kRefcountTable) continue;
    ++tables;
    EXPECT_TRUE(c.detected) << ZoneName(c.zone) << " write, record " << c.record << ", at "
                            << c.offset_bytes << " landed at " << c.landed_bytes;
  }
  EXPECT_GT(tables, 0u) << "the default workload wrote no L1 or refcount-table record";
}

}  // namespace
}  // namespace qcrash::properties
