// Proves the engine's behaviours that QEMU's tools cannot see directly: the
// 2017 reservation rule (a write into an allocated zero cluster keeps its
// host cluster, unless the bug switch is on), the corrupt bit, feature-bit
// handling, shrink rules and the per-policy flush accounting.
#include "engine/image.h"

#include <gtest/gtest.h>

#include <vector>

#include "engine/check.h"
#include "engine/endian.h"
#include "engine/memory_device.h"
#include "engine/qcow2_format.h"

namespace qcrash::engine {
namespace {

namespace f = format;

std::unique_ptr<Image> MustCreate(MemoryDevice& device, CreateOptions create = {},
                                  OpenOptions open = {}) {
  if (create.size_bytes == 0) create.size_bytes = 16 << 20;
  auto image = Image::Create(device, create, open);
  EXPECT_TRUE(image.ok()) << image.status().ToString();
  return image.ok() ? std::move(image).value() : nullptr;
}

uint64_t HostOffsetOf(Image& image, uint64_t guest_offset) {
  auto map = image.Map();
  EXPECT_TRUE(map.ok());
  for (const MapExtent& e : *map) {
    if (guest_offset >= e.start && guest_offset < e.start + e.length) {
      return e.has_offset ? e.offset + (guest_offset - e.start) : 0;
    }
  }
  return 0;
}

TEST(Image, WriteIntoAllocatedZeroClusterKeepsTheHostCluster) {
  MemoryDevice device;
  auto image = MustCreate(device);
  const std::vector<uint8_t> data(4096, 0x5a);
  ASSERT_TRUE(image->Write(0, data).ok());
  const uint64_t host = HostOffsetOf(*image, 0);
  ASSERT_NE(host, 0u);
  ASSERT_TRUE(image->WriteZeroes(0, 65536, /*may_unmap=*/false).ok());
  EXPECT_EQ(HostOffsetOf(*image, 0), host) << "zero-alloc keeps the allocation";
  ASSERT_TRUE(image->Write(512, data).ok());
  EXPECT_EQ(HostOffsetOf(*image, 0), host) << "a write reuses the reserved cluster";
  std::vector<uint8_t> back(8192);
  ASSERT_TRUE(image->Read(0, back).ok());
  EXPECT_EQ(back[0], 0) << "the stale data before the write must read as zero";
  EXPECT_EQ(back[512], 0x5a);
  EXPECT_EQ(back[4608], 0);
}

TEST(Image, ZeroClusterReallocSwitchMovesTheAllocation) {
  MemoryDevice device;
  OpenOptions open;
  open.faults.zero_cluster_realloc = true;
  auto image = MustCreate(device, {}, open);
  const std::vector<uint8_t> data(4096, 0x5a);
  ASSERT_TRUE(image->Write(0, data).ok());
  const uint64_t host = HostOffsetOf(*image, 0);
  ASSERT_TRUE(image->WriteZeroes(0, 65536, false).ok());
  ASSERT_TRUE(image->Write(512, data).ok());
  EXPECT_NE(HostOffsetOf(*image, 0), host);
}

TEST(Image, UnmapFreesAndDiscardReadsZero) {
  MemoryDevice device;
  auto image = MustCreate(device);
  const std::vector<uint8_t> data(65536 * 2, 0x11);
  ASSERT_TRUE(image->Write(0, data).ok());
  ASSERT_TRUE(image->WriteZeroes(0, 65536, /*may_unmap=*/true).ok());
  ASSERT_TRUE(image->Discard(65536, 65536).ok());
  std::vector<uint8_t> back(data.size(), 1);
  ASSERT_TRUE(image->Read(0, back).ok());
  EXPECT_EQ(back, std::vector<uint8_t>(back.size(), 0));
  auto map = image->Map();
  ASSERT_TRUE(map.ok());
  for (const MapExtent& e : *map) EXPECT_FALSE(e.data);
}

TEST(Image, CorruptBitOpensReadOnly) {
  MemoryDevice device;
  {
    auto image = MustCreate(device);
    ASSERT_TRUE(image->Close().ok());
  }
  std::vector<uint8_t> bytes = device.bytes();
  bytes[f::kOffIncompatibleFeatures + 7] |= 2;
  MemoryDevice corrupt(bytes);
  auto image = Image::Open(corrupt, {});
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  EXPECT_TRUE((*image)->read_only());
  const std::vector<uint8_t> data(512, 1);
  EXPECT_EQ((*image)->Write(0, data).code(), StatusCode::kReadOnly);
  EXPECT_EQ(corrupt.bytes(), bytes) << "nothing written to a corrupt image";
}

TEST(Image, DanglingL1EntrySetsTheCorruptBit) {
  MemoryDevice device;
  {
    auto image = MustCreate(device);
    ASSERT_TRUE(image->Close().ok());
  }
  std::vector<uint8_t> bytes = device.bytes();
  const uint64_t l1 = LoadBe64(&bytes[f::kOffL1TableOffset]);
  StoreBe64(&bytes[l1], 0x8000000000001200ULL);  // unaligned L2 offset
  MemoryDevice broken(bytes);
  auto image = Image::Open(broken, {});
  ASSERT_TRUE(image.ok());
  std::vector<uint8_t> out(512);
  EXPECT_TRUE((*image)->Read(0, out).IsCorruption());
  EXPECT_TRUE((*image)->read_only());
  EXPECT_NE(broken.bytes()[f::kOffIncompatibleFeatures + 7] & 2, 0);
}

TEST(Image, UnknownAutoclearBitsAreClearedUnknownExtensionsKept) {
  MemoryDevice device;
  {
    auto image = MustCreate(device);
    ASSERT_TRUE(image->Close().ok());
  }
  std::vector<uint8_t> bytes = device.bytes();
  auto header = DecodeHeader(bytes, bytes.size());
  ASSERT_TRUE(header.ok());
  header->autoclear_features |= uint64_t{1} << 40;
  header->unknown_extensions.push_back({0x77777777, {1, 2, 3}});
  auto encoded = EncodeHeader(*header);
  ASSERT_TRUE(encoded.ok());
  std::copy(encoded->begin(), encoded->end(), bytes.begin());
  MemoryDevice patched(bytes);
  auto image = Image::Open(patched, {});
  ASSERT_TRUE(image.ok());
  auto reread = DecodeHeader(patched.bytes(), patched.SizeBytes());
  ASSERT_TRUE(reread.ok());
  EXPECT_EQ(reread->autoclear_features, 0u);
  ASSERT_EQ(reread->unknown_extensions.size(), 1u);
  EXPECT_EQ(reread->unknown_extensions[0].data, (std::vector<uint8_t>{1, 2, 3}));
}

// A shrink drops what lies past the new end: the host clusters are freed,
// and a disk grown again reads zeroes there (the part of the last cluster
// past the new end included).
TEST(Image, ShrinkDropsTheTailAndAGrowthReadsZeroes) {
  MemoryDevice device;
  auto image = MustCreate(device);
  const std::vector<uint8_t> data(256 << 10, 3);
  ASSERT_TRUE(image->Write(4 << 20, data).ok());
  const uint64_t allocated = image->stats().clusters_allocated;
  ASSERT_TRUE(image->Truncate((4 << 20) + 1536, Preallocation::kOff).ok());
  EXPECT_EQ(image->size_bytes(), (4u << 20) + 1536);
  ASSERT_TRUE(image->Truncate(12 << 20, Preallocation::kOff).ok());
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE(image->Read(4 << 20, back).ok());
  for (size_t i = 0; i < back.size(); ++i) {
    ASSERT_EQ(back[i], i < 1536 ? 3 : 0) << "byte " << i;
  }
  ASSERT_TRUE(image->Close().ok());
  auto report = CheckImage(device, {RepairMode::kNone});
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->corruptions + report->leaks, 0u);
  EXPECT_GT(allocated, 1u);
}

TEST(Image, GrowingPastTheL1RelocatesIt) {
  MemoryDevice device;
  CreateOptions create;
  create.cluster_bits = 9;
  create.size_bytes = 1 << 20;
  auto image = MustCreate(device, create);
  const uint64_t old_l1 = image->header().l1_table_offset;
  ASSERT_TRUE(image->Truncate(64 << 20, Preallocation::kOff).ok());
  EXPECT_NE(image->header().l1_table_offset, old_l1);
  const std::vector<uint8_t> data(512, 9);
  ASSERT_TRUE(image->Write(60 << 20, data).ok());
  std::vector<uint8_t> back(512);
  ASSERT_TRUE(image->Read(60 << 20, back).ok());
  EXPECT_EQ(back, data);
}

// Each policy's flush price on the same workload: writethrough pays most,
// unsafe least; ordered and extent sit between. This pins the direction the
// bench reports, not exact numbers.
TEST(Image, FlushPriceFollowsThePolicy) {
  auto flushes = [](OrderingPolicy policy) {
    MemoryDevice device;
    OpenOptions open;
    open.policy = policy;
    auto image = MustCreate(device, {}, open);
    const std::vector<uint8_t> data(4096, 1);
    const uint64_t before = device.flush_count();
    for (uint64_t i = 0; i < 64; ++i) EXPECT_TRUE(image->Write(i * 65536 * 3, data).ok());
    EXPECT_TRUE(image->Flush().ok());
    return device.flush_count() - before;
  };
  const uint64_t writethrough = flushes(OrderingPolicy::kWritethrough);
  const uint64_t ordered = flushes(OrderingPolicy::kOrdered);
  const uint64_t unsafe = flushes(OrderingPolicy::kUnsafe);
  EXPECT_GT(writethrough, ordered);
  EXPECT_GE(ordered, unsafe);
  EXPECT_EQ(unsafe, 1u);
}

TEST(Image, LazyPolicySetsTheDirtyBitUntilClose) {
  MemoryDevice device;
  OpenOptions open;
  open.policy = OrderingPolicy::kLazy;
  auto image = MustCreate(device, {}, open);
  const std::vector<uint8_t> data(4096, 1);
  ASSERT_TRUE(image->Write(1 << 20, data).ok());
  EXPECT_NE(device.bytes()[f::kOffIncompatibleFeatures + 7] & 1, 0);
  ASSERT_TRUE(image->Close().ok());
  EXPECT_EQ(device.bytes()[f::kOffIncompatibleFeatures + 7] & 1, 0);
}

TEST(Image, BackingFileReadsThroughUnallocatedClusters) {
  MemoryDevice base_device(std::vector<uint8_t>(1 << 20, 0x42));
  MemoryDevice top_device;
  CreateOptions create;
  create.size_bytes = 2 << 20;
  create.backing_file = "base.raw";
  create.backing_format = "raw";
  OpenOptions open;
  open.open_backing = [&](const std::string& name) -> Result<std::unique_ptr<BlockDevice>> {
    EXPECT_EQ(name, "base.raw");
    return std::unique_ptr<BlockDevice>(new MemoryDevice(base_device.bytes()));
  };
  auto image = MustCreate(top_device, create, open);
  const std::vector<uint8_t> data(512, 7);
  ASSERT_TRUE(
      image->Write(4096, data).ok());  // COW: the rest of the cluster comes from the backing
  std::vector<uint8_t> back(8192);
  ASSERT_TRUE(image->Read(0, back).ok());
  EXPECT_EQ(back[0], 0x42);
  EXPECT_EQ(back[4096], 7);
  EXPECT_EQ(back[4608], 0x42);
  std::vector<uint8_t> past(512, 1);
  ASSERT_TRUE(image->Read((1 << 20) + 512, past).ok());
  EXPECT_EQ(past, std::vector<uint8_t>(512, 0)) << "past the backing file's end reads zero";
}

// Two raw backing files that agree in the first 256 KiB and differ after.
struct TwoBackings {
  MemoryDevice first{std::vector<uint8_t>(1 << 20, 0x42)};
  MemoryDevice second{[] {
    std::vector<uint8_t> bytes(1 << 20, 0x42);
    std::fill(bytes.begin() + (256 << 10), bytes.end(), 0x99);
    return bytes;
  }()};
  BackingOpener Opener() {
    return [this](const std::string& name) -> Result<std::unique_ptr<BlockDevice>> {
      if (name == "first.raw") return std::unique_ptr<BlockDevice>(new MemoryDevice(first.bytes()));
      if (name == "second.raw")
        return std::unique_ptr<BlockDevice>(new MemoryDevice(second.bytes()));
      return Status::IoError("no such file: " + name);
    };
  }
};

std::vector<uint8_t> GuestBytes(Image& image) {
  std::vector<uint8_t> bytes(image.size_bytes());
  EXPECT_TRUE(image.Read(0, bytes).ok());
  return bytes;
}

TEST(Image, SafeRebaseKeepsWhatTheGuestReadsAndNamesTheNewFile) {
  TwoBackings files;
  MemoryDevice top_device;
  CreateOptions create;
  create.size_bytes = 1 << 20;
  create.cluster_bits = 12;
  create.backing_file = "first.raw";
  create.backing_format = "raw";
  OpenOptions open;
  open.open_backing = files.Opener();
  auto image = MustCreate(top_device, create, open);
  const std::vector<uint8_t> data(4096, 7);
  ASSERT_TRUE(image->Write(512 << 10, data).ok());
  const std::vector<uint8_t> before = GuestBytes(*image);
  ASSERT_TRUE(image->Rebase("second.raw", "raw", /*unsafe=*/false).ok());
  EXPECT_EQ(image->header().backing_file, "second.raw");
  EXPECT_EQ(GuestBytes(*image), before);
  ASSERT_TRUE(image->Close().ok());
  // Reopened over the new file, every range where it differs was copied.
  auto reopened = Image::Open(top_device, open);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ(GuestBytes(**reopened), before);
  auto map = (*reopened)->Map();
  ASSERT_TRUE(map.ok());
  for (const MapExtent& e : *map) {
    // The first 256 KiB agree: still read through the backing file.
    EXPECT_EQ(e.depth, e.start < (256 << 10) ? 1u : 0u) << e.start;
  }
  // Flattened: no backing file, the same guest bytes.
  ASSERT_TRUE((*reopened)->Rebase("", std::nullopt, false).ok());
  EXPECT_EQ((*reopened)->header().backing_file, "");
  ASSERT_TRUE((*reopened)->Close().ok());
  OpenOptions alone;
  auto flat = Image::Open(top_device, alone);
  ASSERT_TRUE(flat.ok());
  EXPECT_EQ(GuestBytes(**flat), before);
  auto report = CheckImage(top_device, {RepairMode::kNone});
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->corruptions + report->leaks, 0u);
}

TEST(Image, UnsafeRebaseRewritesTheNameOnlyAndSafeRefusesAMissingFile) {
  TwoBackings files;
  MemoryDevice top_device;
  CreateOptions create;
  create.size_bytes = 1 << 20;
  create.backing_file = "first.raw";
  create.backing_format = "raw";
  OpenOptions open;
  open.open_backing = files.Opener();
  auto image = MustCreate(top_device, create, open);
  const Status missing = image->Rebase("gone.raw", "raw", /*unsafe=*/false);
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(missing.ToString().find("Could not open new backing file 'gone.raw'"),
            std::string::npos)
      << missing.ToString();
  EXPECT_EQ(image->header().backing_file, "first.raw");
  ASSERT_TRUE(image->Rebase("second.raw", "raw", /*unsafe=*/true).ok());
  ASSERT_TRUE(image->Close().ok());
  auto reopened = Image::Open(top_device, open);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ((*reopened)->header().backing_file, "second.raw");
  std::vector<uint8_t> tail(512);
  ASSERT_TRUE((*reopened)->Read(512 << 10, tail).ok());
  EXPECT_EQ(tail, std::vector<uint8_t>(512, 0x99)) << "nothing was copied: the new file shows";
}

}  // namespace
}  // namespace qcrash::engine
