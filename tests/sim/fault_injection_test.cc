// Proves the blkdebug-like I/O-error rules fire exactly where they say (Nth
// operation, offset range, one-shot or sticky), that ENOSPC starts where the
// space limit says, and that a failed request leaves no trace in the log.
#include <gtest/gtest.h>

#include <vector>

#include "sim/sim_disk.h"

namespace qcrash::sim {
namespace {

const std::vector<uint8_t> kSector(512, 0x5a);

TEST(FaultInjection, OneShotEioOnTheThirdWriteOnly) {
  SimDisk disk({.faults = {.rules = {{.op = IoOp::kWrite, .nth_op = 3}}}});
  EXPECT_TRUE(disk.Write(0, kSector).ok());
  EXPECT_TRUE(disk.Write(512, kSector).ok());
  const Status third = disk.Write(1024, kSector);
  EXPECT_EQ(third.code(), StatusCode::kIoError);
  EXPECT_NE(third.message().find("write #3"), std::string::npos) << third.ToString();
  EXPECT_TRUE(disk.Write(1024, kSector).ok()) << "a one-shot rule retires";
  EXPECT_EQ(disk.log().size(), 3u) << "the failed write is not logged";
  EXPECT_EQ(disk.faults().fired_count(), 1u);
}

TEST(FaultInjection, StickyNthFlushBreaksEveryLaterFlush) {
  SimDisk disk({.faults = {.rules = {{.op = IoOp::kFlush, .nth_op = 2, .sticky = true}}}});
  EXPECT_TRUE(disk.Flush().ok());
  ASSERT_TRUE(disk.Write(0, kSector).ok());
  EXPECT_EQ(disk.Flush().code(), StatusCode::kIoError);
  EXPECT_EQ(disk.Flush().code(), StatusCode::kIoError);
  EXPECT_EQ(disk.pending_records().size(), 1u) << "a failed flush makes nothing durable";
  EXPECT_TRUE(disk.Write(512, kSector).ok()) << "writes are not affected";
}

TEST(FaultInjection, RangeRuleFailsOnlyOverlappingReadsAndWrites) {
  SimDisk disk(
      {.initial_size_bytes = 8192,
       .faults = {
           .rules = {{.op = IoOp::kRead,
                      .range_offset_bytes = 4096,
                      .range_length_bytes = 512,
                      .sticky = true},
                     {.op = IoOp::kWrite, .range_offset_bytes = 1000, .range_length_bytes = 10}}}});
  std::vector<uint8_t> out(512);
  EXPECT_TRUE(disk.Read(3584, out).ok());
  EXPECT_EQ(disk.Read(3600, out).code(), StatusCode::kIoError);
  EXPECT_EQ(disk.Read(4096, out).code(), StatusCode::kIoError) << "sticky";
  EXPECT_TRUE(disk.Read(4608, out).ok());
  EXPECT_TRUE(disk.Write(0, std::vector<uint8_t>(1000, 1)).ok()) << "ends right before the range";
  EXPECT_EQ(disk.Write(1009, kSector).code(), StatusCode::kIoError);
  EXPECT_TRUE(disk.Write(1009, kSector).ok()) << "one-shot";
}

TEST(FaultInjection, InjectedNoSpaceCodeAndRulesAddedLater) {
  SimDisk disk;
  disk.faults().AddRule({.op = IoOp::kWrite, .nth_op = 1, .code = StatusCode::kNoSpace});
  EXPECT_EQ(disk.Write(0, kSector).code(), StatusCode::kNoSpace);
  EXPECT_TRUE(disk.Write(0, kSector).ok());
}

TEST(FaultInjection, EnospcOnceWritesPassTheSpaceLimit) {
  SimDisk disk({.faults = {.no_space_after_bytes = 4096}});
  EXPECT_TRUE(disk.Write(3584, kSector).ok()) << "ends exactly at the limit";
  EXPECT_EQ(disk.Write(3585, kSector).code(), StatusCode::kNoSpace);
  EXPECT_EQ(disk.Resize(8192, ResizeMode::kSparse).code(), StatusCode::kNoSpace);
  EXPECT_TRUE(disk.Resize(1024, ResizeMode::kSparse).ok()) << "shrinking never needs space";
  EXPECT_EQ(disk.SizeBytes(), 1024u);
  EXPECT_EQ(disk.log().size(), 2u);
}

TEST(FaultInjection, DeviceLimitIsNoSpaceToo) {
  SimDisk disk({.max_size_bytes = 1024});
  EXPECT_EQ(disk.Write(1000, kSector).code(), StatusCode::kNoSpace);
  EXPECT_EQ(disk.Resize(2048, ResizeMode::kSparse).code(), StatusCode::kNoSpace);
}

}  // namespace
}  // namespace qcrash::sim
