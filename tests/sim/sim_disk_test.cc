// Proves the simulated disk keeps durable and pending data apart as the crash
// model says, and that its write log saves, loads, summarises and replays
// exactly, rejecting damaged input with a clear Corruption status.
#include "sim/sim_disk.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/memory_device.h"
#include "sim/log_summary.h"

namespace qcrash::sim {
namespace {

std::vector<uint8_t> Bytes(size_t n, uint8_t value) { return std::vector<uint8_t>(n, value); }

std::string TempPath(const std::string& stem) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/qcrash-sim-" + stem + "-" + std::to_string(::getpid());
}

// A small history with every record kind, used by several tests.
SimDisk MakeDisk() {
  SimDisk disk({.sector_bytes = 512, .initial_size_bytes = 4096});
  EXPECT_TRUE(disk.Write(0, Bytes(1024, 0xaa)).ok());
  EXPECT_TRUE(disk.Flush().ok());
  EXPECT_TRUE(disk.Write(512, Bytes(600, 0xbb)).ok());
  EXPECT_TRUE(disk.WriteFua(3000, Bytes(100, 0xcc)).ok());
  EXPECT_TRUE(disk.Resize(8192, ResizeMode::kSparse).ok());
  EXPECT_TRUE(disk.Write(8000, Bytes(400, 0xdd)).ok());  // grows the disk
  return disk;
}

TEST(SimDisk, ReadsSeeLatestWhileDurableMediaHoldOnlyFlushedAndFuaData) {
  SimDisk disk({.sector_bytes = 512, .initial_size_bytes = 2048});
  ASSERT_TRUE(disk.Write(0, Bytes(512, 1)).ok());
  ASSERT_TRUE(disk.WriteFua(1024, Bytes(512, 2)).ok());
  std::vector<uint8_t> out(512);
  ASSERT_TRUE(disk.Read(0, out).ok());
  EXPECT_EQ(out, Bytes(512, 1));
  std::vector<uint8_t> durable(512);
  disk.durable_image().Read(0, durable);
  EXPECT_EQ(durable, Bytes(512, 0)) << "an unflushed write is not durable";
  disk.durable_image().Read(1024, durable);
  EXPECT_EQ(durable, Bytes(512, 2)) << "a FUA write is durable at once";
  EXPECT_EQ(disk.pending_records(), std::vector<size_t>{0});
  ASSERT_TRUE(disk.Flush().ok());
  disk.durable_image().Read(0, durable);
  EXPECT_EQ(durable, Bytes(512, 1));
  EXPECT_TRUE(disk.pending_records().empty());
  EXPECT_EQ(disk.Read(2040, out).code(), StatusCode::kIoError);
}

TEST(SimDisk, GeometryReportsSectorSizeAndAtomicity) {
  SimDisk disk({.sector_bytes = 4096, .atomic_sector = false});
  EXPECT_EQ(disk.Geometry().sector_bytes, 4096u);
  EXPECT_FALSE(disk.Geometry().atomic_sector);
  EXPECT_TRUE(SimDisk().Geometry().atomic_sector);
  EXPECT_EQ(SimDisk().Geometry().sector_bytes, 512u);
}

TEST(SimDisk, LogRecordsEveryKindInOrder) {
  SimDisk disk = MakeDisk();
  const WriteLog& log = disk.log();
  ASSERT_EQ(log.size(), 6u);
  EXPECT_EQ(log.record(0).kind, RecordKind::kWrite);
  EXPECT_EQ(log.record(1).kind, RecordKind::kFlush);
  EXPECT_EQ(log.record(3).kind, RecordKind::kWriteFua);
  EXPECT_EQ(log.record(4).kind, RecordKind::kResize);
  EXPECT_EQ(log.record(4).offset_bytes, 8192u);
  EXPECT_EQ(disk.SizeBytes(), 8400u);
  EXPECT_EQ(log.initial_size_bytes(), 4096u);
}

TEST(WriteLog, BinaryFormRoundTripsThroughMemoryAndFile) {
  SimDisk disk = MakeDisk();
  const std::vector<uint8_t> encoded = disk.log().Encode();
  auto decoded = WriteLog::Decode(encoded);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->Encode(), encoded);

  const std::string path = TempPath("log");
  ASSERT_TRUE(disk.log().SaveToFile(path).ok());
  auto loaded = WriteLog::LoadFromFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->Encode(), encoded);
  std::filesystem::remove(path);
  EXPECT_EQ(WriteLog::LoadFromFile(path).status().code(), StatusCode::kIoError);
}

TEST(WriteLog, DamagedInputIsACorruptionNamingTheOffset) {
  const std::vector<uint8_t> good = MakeDisk().log().Encode();
  auto expect_corruption = [](std::vector<uint8_t> bytes, const std::string& needle) {
    auto decoded = WriteLog::Decode(bytes);
    ASSERT_FALSE(decoded.ok());
    EXPECT_EQ(decoded.status().code(), StatusCode::kCorruption);
    EXPECT_NE(decoded.status().message().find(needle), std::string::npos)
        << decoded.status().ToString();
  };
  expect_corruption({good.begin(), good.begin() + 10}, "header");
  std::vector<uint8_t> bad_magic = good;
  bad_magic[0] = 'X';
  expect_corruption(bad_magic, "magic");
  std::vector<uint8_t> bad_sector = good;
  bad_sector[8] = 7;
  expect_corruption(bad_sector, "sector_bytes");
  std::vector<uint8_t> bad_kind = good;
  bad_kind[kLogHeaderBytes] = 9;
  expect_corruption(bad_kind, "0x20");
  std::vector<uint8_t> huge_length = good;
  for (int i = 0; i < 8; ++i) huge_length[kLogHeaderBytes + 9 + i] = 0xff;
  expect_corruption(huge_length, "length");
  expect_corruption({good.begin(), good.end() - 5}, "truncated");
  std::vector<uint8_t> trailing = good;
  trailing.push_back(0);
  expect_corruption(trailing, "trailing");
}

// Every prefix of every byte string decodes to a value or an error, never UB
// (the sanitizer build runs this).
TEST(WriteLog, EveryTruncationDecodesSafely) {
  const std::vector<uint8_t> good = MakeDisk().log().Encode();
  for (size_t n = 0; n < good.size(); n += 7) {
    auto decoded = WriteLog::Decode(std::span<const uint8_t>(good.data(), n));
    EXPECT_FALSE(decoded.ok());
  }
}

TEST(WriteLog, ReplayOntoTheInitialImageRebuildsTheLatestImage) {
  SimDisk disk = MakeDisk();
  MemoryDevice device(std::vector<uint8_t>(4096, 0));
  ASSERT_TRUE(ReplayLog(disk.log(), disk.log().size(), device).ok());
  EXPECT_EQ(device.bytes(), disk.latest_image().Flatten());
  EXPECT_EQ(device.flush_count(), 1u);
  EXPECT_EQ(ReplayLog(disk.log(), 99, device).code(), StatusCode::kInvalidArgument);
}

TEST(WriteLog, PrefixKeepsTheFirstRecordsAndTheirData) {
  SimDisk disk = MakeDisk();
  const WriteLog prefix = disk.log().Prefix(3);
  ASSERT_EQ(prefix.size(), 3u);
  EXPECT_EQ(prefix.data_bytes(), 1624u);
  EXPECT_EQ(prefix.DataOf(prefix.record(2)).size(), 600u);
}

TEST(LogSummary, JsonCountsEveryKindAndEpoch) {
  SimDisk disk = MakeDisk();
  const std::string json = LogSummaryJson(disk.log(), 2);
  for (const char* needle :
       {"\"record_count\": 6", "\"writes\": 3", "\"fua_writes\": 1", "\"flushes\": 1",
        "\"resizes\": 1", "\"epochs\": 3", "\"records_truncated\": true", "\"kind\": \"flush\""}) {
    EXPECT_NE(json.find(needle), std::string::npos) << needle << " in " << json;
  }
  const std::string path = TempPath("summary");
  ASSERT_TRUE(SaveLogSummary(disk.log(), path).ok());
  EXPECT_GT(std::filesystem::file_size(path), 100u);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace qcrash::sim
