// Proves Image::ApplySnapshot (qemu-img snapshot -a) on the engine alone:
// the active state reads the snapshot's content, which stays readable as a
// snapshot; the disk takes the snapshot's size; refcounts and COPIED are
// consistent after it (check clean, under every policy that writes
// snapshots); an unknown name, the journal policy and a refcount that would
// overflow are refused before anything is written.
#include <gtest/gtest.h>

#include <vector>

#include "engine/check.h"
#include "engine/image.h"
#include "engine/memory_device.h"

namespace qcrash::engine {
namespace {

std::unique_ptr<Image> MustCreate(MemoryDevice& device, CreateOptions create, OpenOptions open) {
  auto image = Image::Create(device, create, open);
  EXPECT_TRUE(image.ok()) << image.status().ToString();
  return image.ok() ? std::move(image).value() : nullptr;
}

void ExpectBytes(Image& image, uint64_t offset, uint64_t length, uint8_t value) {
  std::vector<uint8_t> back(length);
  ASSERT_TRUE(image.Read(offset, back).ok());
  for (uint64_t i = 0; i < length; ++i) ASSERT_EQ(back[i], value) << "guest byte " << offset + i;
}

void ExpectClean(MemoryDevice& device) {
  auto report = CheckImage(device, {RepairMode::kNone});
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->corruptions, 0u);
  EXPECT_EQ(report->leaks, 0u);
}

class ApplySnapshotTest : public ::testing::TestWithParam<OrderingPolicy> {};

TEST_P(ApplySnapshotTest, TheActiveStateReadsTheSnapshotAgainAndTheSnapshotStays) {
  MemoryDevice device;
  CreateOptions create;
  create.size_bytes = 4 << 20;
  create.cluster_bits = 12;
  OpenOptions open;
  open.policy = GetParam();
  auto image = MustCreate(device, create, open);
  ASSERT_TRUE(image->Write(0, std::vector<uint8_t>(64 << 10, 1)).ok());
  ASSERT_TRUE(image->CreateSnapshot("one").ok());
  ASSERT_TRUE(image->Write(0, std::vector<uint8_t>(16 << 10, 2)).ok());
  ASSERT_TRUE(image->Write(2 << 20, std::vector<uint8_t>(8 << 10, 3)).ok());
  ASSERT_TRUE(image->CreateSnapshot("two").ok());
  ASSERT_TRUE(image->Write(4 << 10, std::vector<uint8_t>(4 << 10, 4)).ok());

  ASSERT_TRUE(image->ApplySnapshot("one").ok());
  ExpectBytes(*image, 0, 64 << 10, 1);
  ExpectBytes(*image, 2 << 20, 8 << 10, 0);
  // A write after the apply copies: the snapshot keeps its content.
  ASSERT_TRUE(image->Write(0, std::vector<uint8_t>(4 << 10, 5)).ok());
  std::vector<uint8_t> in_snapshot(4 << 10);
  ASSERT_TRUE(image->ReadSnapshot("one", 0, in_snapshot).ok());
  EXPECT_EQ(in_snapshot, std::vector<uint8_t>(4 << 10, 1));
  ASSERT_TRUE(image->Close().ok());
  ExpectClean(device);

  ASSERT_TRUE(image->ApplySnapshot("2").ok()) << "by id";
  ExpectBytes(*image, 0, 16 << 10, 2);
  ExpectBytes(*image, 16 << 10, 48 << 10, 1);
  ExpectBytes(*image, 2 << 20, 8 << 10, 3);
  ASSERT_TRUE(image->DeleteSnapshot("one").ok());
  ASSERT_TRUE(image->DeleteSnapshot("two").ok());
  ASSERT_TRUE(image->Close().ok());
  ExpectClean(device);
  // Alone again: the next write goes in place (COPIED was restored).
  ASSERT_TRUE(image->Write(0, std::vector<uint8_t>(4 << 10, 6)).ok());
  ASSERT_TRUE(image->Close().ok());
  ExpectClean(device);
  ExpectBytes(*image, 0, 4 << 10, 6);
}

INSTANTIATE_TEST_SUITE_P(Policies, ApplySnapshotTest,
                         ::testing::Values(OrderingPolicy::kWritethrough, OrderingPolicy::kOrdered,
                                           OrderingPolicy::kLazy, OrderingPolicy::kExtent),
                         [](const auto& param_info) {
                           return std::string(PolicyName(param_info.param));
                         });

TEST(ApplySnapshot, TheDiskTakesTheSnapshotsSize) {
  MemoryDevice device;
  CreateOptions create;
  create.size_bytes = 1 << 20;
  create.cluster_bits = 9;
  auto image = MustCreate(device, create, {});
  ASSERT_TRUE(image->Write(0, std::vector<uint8_t>(4096, 7)).ok());
  ASSERT_TRUE(image->CreateSnapshot("small").ok());
  ASSERT_TRUE(image->Truncate(64 << 20, Preallocation::kOff).ok());  // the L1 grows
  ASSERT_TRUE(image->Write(60 << 20, std::vector<uint8_t>(512, 8)).ok());
  ASSERT_TRUE(image->ApplySnapshot("small").ok());
  EXPECT_EQ(image->size_bytes(), 1u << 20);
  ExpectBytes(*image, 0, 4096, 7);
  ASSERT_TRUE(image->Close().ok());
  ExpectClean(device);
}

TEST(ApplySnapshot, RefusesAnUnknownNameTheJournalAndAnOverflowBeforeWriting) {
  MemoryDevice device;
  CreateOptions create;
  create.size_bytes = 1 << 20;
  create.refcount_order = 1;  // 2-bit refcounts: at most 3 references
  auto image = MustCreate(device, create, {});
  ASSERT_TRUE(image->Write(0, std::vector<uint8_t>(4096, 1)).ok());
  ASSERT_TRUE(image->CreateSnapshot("a").ok());
  ASSERT_TRUE(image->CreateSnapshot("b").ok());  // the data cluster: 3 references
  ASSERT_TRUE(image->Close().ok());
  const std::vector<uint8_t> before = device.bytes();
  EXPECT_FALSE(image->ApplySnapshot("none").ok());
  const Status overflow = image->ApplySnapshot("a");
  EXPECT_EQ(overflow.code(), StatusCode::kLimit) << overflow.ToString();
  EXPECT_EQ(device.bytes(), before) << "a refused apply writes nothing";

  MemoryDevice journal_device;
  OpenOptions journal;
  journal.policy = OrderingPolicy::kJournal;
  CreateOptions v3;
  v3.size_bytes = 1 << 20;
  auto journaled = MustCreate(journal_device, v3, journal);
  EXPECT_EQ(journaled->ApplySnapshot("a").code(), StatusCode::kNotSupported);
}

}  // namespace
}  // namespace qcrash::engine
