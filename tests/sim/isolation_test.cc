// Proves process isolation: a workload child killed mid-run (by the parent,
// on a record count or at a random instant) or dying on its own leaves a
// write log of whole records that the parent replays and enumerates.
#include "sim/isolation.h"

#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <vector>

#include "sim/enumerators.h"

namespace qcrash::sim {
namespace {

// Writes sector i with byte (i % 251) for ever, flushing every 8 writes.
Status EndlessWorkload(SimDisk& disk) {
  std::vector<uint8_t> sector(512);
  for (uint64_t i = 0;; ++i) {
    std::fill(sector.begin(), sector.end(), static_cast<uint8_t>(i % 251));
    QCRASH_RETURN_IF_ERROR(disk.Write((i % 4096) * 512, sector));
    if (i % 8 == 7) QCRASH_RETURN_IF_ERROR(disk.Flush());
  }
}

// Checks the log is exactly the workload's history, record by record.
void ExpectWorkloadPrefix(const WriteLog& log) {
  uint64_t write = 0;
  for (size_t r = 0; r < log.size(); ++r) {
    const LogRecord& record = log.record(r);
    if (write % 8 == 0 && write > 0 && log.record(r - 1).kind == RecordKind::kWrite) {
      ASSERT_EQ(record.kind, RecordKind::kFlush) << "record " << r;
      continue;
    }
    ASSERT_EQ(record.kind, RecordKind::kWrite) << "record " << r;
    ASSERT_EQ(record.offset_bytes, (write % 4096) * 512);
    const auto data = log.DataOf(record);
    ASSERT_EQ(data.size(), 512u);
    ASSERT_EQ(data[0], write % 251);
    ASSERT_EQ(data[511], write % 251);
    ++write;
  }
}

TEST(Isolation, ChildKilledAfterACountLeavesAUsableLog) {
  auto run = RunIsolated({.initial_size_bytes = 1 << 20}, nullptr, EndlessWorkload,
                         {.kill_after_records = 500});
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_TRUE(run->killed_by_parent);
  EXPECT_FALSE(run->timed_out);
  EXPECT_EQ(run->signal, SIGKILL);
  EXPECT_GE(run->log.size(), 500u);
  ExpectWorkloadPrefix(run->log);
  // The parent enumerates the crash states of the log written so far.
  CrashTimeline timeline(nullptr, std::make_shared<const WriteLog>(run->log));
  const EnumeratorSpec spec{.kind = EnumeratorKind::kDropOne};
  auto enumerator = CrashEnumerator::Create(timeline, spec);
  CrashState state;
  uint64_t states = 0;
  while (enumerator->Next(&state)) {
    ASSERT_TRUE(CrashTimeline::BuildView(enumerator->point(), state).ok());
    ++states;
  }
  EXPECT_EQ(states, CountCrashStates(timeline, spec));
  EXPECT_GT(states, 0u);
}

TEST(Isolation, ChildKilledAtARandomInstantLeavesWholeRecords) {
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    auto run = RunIsolated({.initial_size_bytes = 1 << 20}, nullptr, EndlessWorkload,
                           {.kill_within_micros = 20000, .seed = seed});
    ASSERT_TRUE(run.ok()) << run.status().ToString();
    EXPECT_TRUE(run->killed_by_parent);
    EXPECT_EQ(run->signal, SIGKILL);
    ExpectWorkloadPrefix(run->log);
  }
}

TEST(Isolation, ChildThatAbortsOnItsOwnKeepsItsLog) {
  auto workload = [](SimDisk& disk) -> Status {
    for (int i = 0; i < 10; ++i)
      QCRASH_RETURN_IF_ERROR(disk.Write(i * 512, std::vector<uint8_t>(512, 1)));
    std::abort();  // as a sanitizer report would end the child
  };
  auto run = RunIsolated({}, nullptr, workload, {});
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_FALSE(run->killed_by_parent);
  EXPECT_EQ(run->signal, SIGABRT);
  EXPECT_EQ(run->log.size(), 10u);
}

TEST(Isolation, ChildThatFinishesReportsItsExitCodeAndFullLog) {
  auto run = RunIsolated({.sector_bytes = 4096}, nullptr, [](SimDisk& disk) -> Status {
    QCRASH_RETURN_IF_ERROR(disk.Write(0, std::vector<uint8_t>(8192, 3)));
    QCRASH_RETURN_IF_ERROR(disk.Flush());
    return Status::IoError("the workload reports a failure");
  });
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->exit_code, 1);
  EXPECT_EQ(run->signal, 0);
  EXPECT_EQ(run->log.size(), 2u);
  EXPECT_EQ(run->log.sector_bytes(), 4096u);
}

TEST(Isolation, AFullSharedLogFailsTheChildsWritesNotTheParent) {
  auto run = RunIsolated({}, nullptr, EndlessWorkload, {.log_capacity_bytes = 64 * 1024});
  ASSERT_TRUE(run.ok());
  EXPECT_TRUE(run->log_overflowed);
  EXPECT_EQ(run->exit_code, 1) << "the write that did not fit returned NoSpace";
  ExpectWorkloadPrefix(run->log);
  EXPECT_GT(run->log.size(), 100u);
}

}  // namespace
}  // namespace qcrash::sim
