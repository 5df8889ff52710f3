// Proves the two concrete block devices honour the BlockDevice contract alike:
// bounds-checked reads, growing writes, resize, and clear errors.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/file_device.h"
#include "engine/memory_device.h"

namespace qcrash {
namespace {

std::string TempPath(const std::string& stem) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/qcrash-" + stem + "-" + std::to_string(::getpid());
}

TEST(MemoryDevice, ReadPastEndIsAnIoErrorNamingTheOffset) {
  MemoryDevice device(std::vector<uint8_t>(1024, 7));
  std::vector<uint8_t> buffer(16);
  const Status status = device.Read(1020, buffer);
  EXPECT_EQ(status.code(), StatusCode::kIoError);
  EXPECT_NE(status.message().find("0x3fc"), std::string::npos) << status.ToString();
}

TEST(MemoryDevice, WriteGrowsAndHoleReadsAsZero) {
  MemoryDevice device;
  const std::vector<uint8_t> data(10, 0xab);
  ASSERT_TRUE(device.Write(100, data).ok());
  EXPECT_EQ(device.SizeBytes(), 110u);
  std::vector<uint8_t> head(100, 1);
  ASSERT_TRUE(device.Read(0, head).ok());
  EXPECT_EQ(head, std::vector<uint8_t>(100, 0));
}

TEST(MemoryDevice, GrowthIsBoundedByTheLimit) {
  MemoryDevice device({}, {}, 4096);
  const std::vector<uint8_t> data(8, 1);
  EXPECT_EQ(device.Write(4090, data).code(), StatusCode::kNoSpace);
  EXPECT_EQ(device.Resize(8192, ResizeMode::kSparse).code(), StatusCode::kNoSpace);
}

TEST(FileDevice, ReadOnlyRefusesWritesAndMissingFileIsOneClearError) {
  auto missing = FileDevice::Open("/nonexistent/qcrash.img", FileDevice::Mode::kReadOnly);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/qcrash.img"), std::string::npos);

  const std::string path = TempPath("ro");
  {
    auto created = FileDevice::Open(path, FileDevice::Mode::kCreate);
    ASSERT_TRUE(created.ok());
  }
  auto device = FileDevice::Open(path, FileDevice::Mode::kReadOnly);
  ASSERT_TRUE(device.ok());
  const std::vector<uint8_t> data(4, 1);
  EXPECT_EQ((*device)->Write(0, data).code(), StatusCode::kReadOnly);
  std::filesystem::remove(path);
}

// The case RapidCheck found in CI: an empty write past the end grew the file
// device's size but not the file, so a read of that size failed.
TEST(FileDevice, AnEmptyWritePastTheEndGrowsNeitherDevice) {
  const std::string path = TempPath("empty");
  auto file = FileDevice::Open(path, FileDevice::Mode::kCreate);
  ASSERT_TRUE(file.ok());
  MemoryDevice memory;
  ASSERT_TRUE((*file)->Write(1, {}).ok());
  ASSERT_TRUE(memory.Write(1, {}).ok());
  EXPECT_EQ((*file)->SizeBytes(), 0u);
  EXPECT_EQ(memory.SizeBytes(), 0u);
  file.value().reset();
  std::filesystem::remove(path);
}

// A random sequence of writes and resizes leaves a FileDevice and a
// MemoryDevice with the same size and bytes: the file device is a faithful
// BlockDevice, so tests on memory speak for files too.
RC_GTEST_PROP(FileDevice, BehavesLikeMemoryDevice, ()) {
  const std::string path = TempPath("prop");
  auto file = FileDevice::Open(path, FileDevice::Mode::kCreate);
  RC_ASSERT(file.ok());
  MemoryDevice memory;
  const int steps = *rc::gen::inRange(1, 20);
  for (int i = 0; i < steps; ++i) {
    if (*rc::gen::inRange(0, 5) == 0) {
      const uint64_t size = *rc::gen::inRange<uint64_t>(0, 70000);
      RC_ASSERT(memory.Resize(size, ResizeMode::kSparse).ok());
      RC_ASSERT((*file)->Resize(size, ResizeMode::kSparse).ok());
    } else {
      const uint64_t offset = *rc::gen::inRange<uint64_t>(0, 65536);
      const auto data = *rc::gen::container<std::vector<uint8_t>>(
          *rc::gen::inRange<size_t>(0, 5000), rc::gen::arbitrary<uint8_t>());
      RC_ASSERT(memory.Write(offset, data).ok());
      RC_ASSERT((*file)->Write(offset, data).ok());
    }
  }
  RC_ASSERT((*file)->Flush().ok());
  RC_ASSERT((*file)->SizeBytes() == memory.SizeBytes());
  std::vector<uint8_t> from_file(memory.SizeBytes());
  RC_ASSERT((*file)->Read(0, from_file).ok());
  RC_ASSERT(from_file == memory.bytes());
  file.value().reset();
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace qcrash
