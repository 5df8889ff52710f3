// Proves every on-disk structure of the format layer round-trips (header with
// extensions, refcount packing at every width, compressed L2 entries) and
// that corrupt bytes decode to a clear error, never undefined behaviour.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <vector>

#include "engine/endian.h"
#include "engine/header.h"
#include "engine/qcow2_format.h"

namespace qcrash::engine {
namespace {

namespace f = format;

rc::Gen<std::string> NameGen(size_t max_bytes) {
  return rc::gen::container<std::string>(*rc::gen::inRange<size_t>(1, max_bytes + 1),
                                         rc::gen::inRange<char>('a', 'z' + 1));
}

// A valid header with random fields and extensions.
Header RandomHeader() {
  Header h;
  h.version = *rc::gen::element<uint32_t>(2, 3);
  h.cluster_bits = *rc::gen::inRange<uint32_t>(f::kMinClusterBits, 17);
  h.size_bytes = *rc::gen::inRange<uint64_t>(0, uint64_t{1} << 40);
  h.l1_size = static_cast<uint32_t>(f::L1EntriesFor(h.size_bytes, h.cluster_bits, false)) +
              *rc::gen::inRange<uint32_t>(0, 4);
  RC_PRE(uint64_t{h.l1_size} * 8 <= f::kMaxL1TableBytes);
  h.l1_table_offset = *rc::gen::inRange<uint64_t>(1, 1000) << h.cluster_bits;
  h.refcount_table_offset = *rc::gen::inRange<uint64_t>(1, 1000) << h.cluster_bits;
  h.refcount_table_clusters = *rc::gen::inRange<uint32_t>(1, 4);
  h.nb_snapshots = *rc::gen::inRange<uint32_t>(0, 3);
  if (h.nb_snapshots) h.snapshots_offset = *rc::gen::inRange<uint64_t>(1, 100) << h.cluster_bits;
  if (h.version == 3) {
    h.incompatible_features = *rc::gen::inRange<uint64_t>(0, 4);  // dirty, corrupt
    h.compatible_features = *rc::gen::arbitrary<uint64_t>();
    h.autoclear_features = *rc::gen::arbitrary<uint64_t>();
    h.refcount_order = *rc::gen::inRange<uint32_t>(0, 7);
    h.header_length = *rc::gen::element<uint32_t>(104, 112, 120);
    if (h.header_length > 105) {
      h.header_tail = *rc::gen::container<std::vector<uint8_t>>(h.header_length - 105,
                                                                rc::gen::arbitrary<uint8_t>());
    }
    if (*rc::gen::arbitrary<bool>()) h.feature_names = DefaultFeatureNames();
  } else {
    h.refcount_order = 4;
    h.header_length = 72;
  }
  if (*rc::gen::arbitrary<bool>()) {
    h.backing_file = *NameGen(40);
    if (*rc::gen::arbitrary<bool>())
      h.backing_format = *rc::gen::element<std::string>("raw", "qcow2");
  }
  const int unknown = *rc::gen::inRange(0, 3);
  for (int i = 0; i < unknown; ++i) {
    h.unknown_extensions.push_back(
        {0x10000000u + static_cast<uint32_t>(i),
         *rc::gen::container<std::vector<uint8_t>>(*rc::gen::inRange<size_t>(0, 30),
                                                   rc::gen::arbitrary<uint8_t>())});
  }
  return h;
}

RC_GTEST_PROP(Header, EncodeDecodeRoundTrip, ()) {
  const Header h = RandomHeader();
  auto encoded = EncodeHeader(h);
  RC_PRE(encoded.ok());  // very small clusters cannot hold every extension
  RC_ASSERT(encoded->size() == h.cluster_bytes());
  auto decoded = DecodeHeader(*encoded, uint64_t{1} << 50);
  RC_ASSERT(decoded.ok());
  // The encoder places the backing file name; those two fields are derived.
  Header expected = h;
  if (!h.backing_file.empty()) {
    RC_ASSERT(decoded->backing_file_size == h.backing_file.size());
    RC_ASSERT(decoded->backing_file_offset + h.backing_file.size() <= h.cluster_bytes());
    expected.backing_file_offset = decoded->backing_file_offset;
    expected.backing_file_size = decoded->backing_file_size;
  }
  if (decoded->feature_names.empty() && !h.feature_names.empty()) {
    // Only a header that needs more than one sector with the table drops it.
    Header without = h;
    without.feature_names.clear();
    auto bare = EncodeHeader(without);
    RC_ASSERT(bare.ok());
    size_t used = bare->size();
    while (used > 0 && (*bare)[used - 1] == 0) --used;
    RC_ASSERT(used + 16 + 48 * h.feature_names.size() > 504 || h.cluster_bytes() <= 1024);
    expected.feature_names.clear();
  }
  RC_ASSERT(*decoded == expected);
  auto again = EncodeHeader(*decoded);
  RC_ASSERT(again.ok());
  RC_ASSERT(*again == *encoded);
}

// Random mutations of a valid header decode to a value or an error; under
// ASan and UBSan this proves the decoder never reads out of bounds.
RC_GTEST_PROP(Header, MutatedBytesNeverMisbehave, ()) {
  const Header h = RandomHeader();
  auto encoded = EncodeHeader(h);
  RC_PRE(encoded.ok());
  std::vector<uint8_t> bytes = *encoded;
  const int flips = *rc::gen::inRange(1, 20);
  for (int i = 0; i < flips; ++i) {
    const size_t at = *rc::gen::inRange<size_t>(0, std::min<size_t>(bytes.size(), 1024));
    bytes[at] = *rc::gen::arbitrary<uint8_t>();
  }
  bytes.resize(*rc::gen::inRange<size_t>(0, bytes.size() + 1));
  auto decoded = DecodeHeader(bytes, bytes.size());
  if (!decoded.ok()) RC_ASSERT(!decoded.status().message().empty());
}

TEST(Header, UnknownIncompatibleBitIsRefusedByName) {
  Header h;
  h.cluster_bits = 16;
  h.l1_table_offset = 0x30000;
  h.refcount_table_offset = 0x10000;
  h.refcount_table_clusters = 1;
  h.incompatible_features = uint64_t{1} << 5;  // no qcow2 feature has it yet
  h.feature_names = {{0, 5, "future feature"}};
  auto encoded = EncodeHeader(h);
  ASSERT_TRUE(encoded.ok());
  auto decoded = DecodeHeader(*encoded, 1 << 20);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), StatusCode::kNotSupported);
  EXPECT_NE(decoded.status().message().find("future feature"), std::string::npos)
      << decoded.status().ToString();
}

TEST(Header, ErrorsNameOffsetAndField) {
  Header h;
  h.cluster_bits = 16;
  h.refcount_table_offset = 0x10000;
  h.refcount_table_clusters = 1;
  auto encoded = EncodeHeader(h);
  ASSERT_TRUE(encoded.ok());
  std::vector<uint8_t> bytes = *encoded;
  StoreBe32(&bytes[f::kOffClusterBits], 30);
  auto decoded = DecodeHeader(bytes, bytes.size());
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().message().rfind("header offset 0x14 (cluster_bits)", 0), 0u)
      << decoded.status().message();
  StoreBe32(&bytes[f::kOffClusterBits], 16);
  StoreBe32(&bytes[f::kOffL1Size], 0x7fffffff);
  decoded = DecodeHeader(bytes, bytes.size());
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), StatusCode::kLimit);
}

TEST(Header, ExtensionLengthPastClusterIsCorruption) {
  Header h;
  h.cluster_bits = 9;
  h.refcount_table_offset = 512;
  h.refcount_table_clusters = 1;
  auto encoded = EncodeHeader(h);
  ASSERT_TRUE(encoded.ok());
  std::vector<uint8_t> bytes = *encoded;
  StoreBe32(&bytes[112], 0x12345678);
  StoreBe32(&bytes[116], 0xfffffff0);
  auto decoded = DecodeHeader(bytes, bytes.size());
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(decoded.status().IsCorruption());
}

RC_GTEST_PROP(Refcount, PackingRoundTripsAndLeavesNeighboursAlone, ()) {
  const uint32_t order = *rc::gen::inRange<uint32_t>(0, 7);
  const uint32_t cluster_bits = *rc::gen::inRange<uint32_t>(9, 13);
  std::vector<uint8_t> block(size_t{1} << cluster_bits);
  const uint64_t entries = f::RefcountBlockEntries(cluster_bits, order);
  std::vector<uint64_t> model(entries, 0);
  const int writes = *rc::gen::inRange(1, 200);
  for (int i = 0; i < writes; ++i) {
    const uint64_t index = *rc::gen::inRange<uint64_t>(0, entries);
    const uint64_t max = f::MaxRefcount(order);
    const uint64_t value = *rc::gen::inRange<uint64_t>(0, max == ~uint64_t{0} ? max : max + 1);
    f::SetRefcount(block, index, order, value);
    model[index] = value;
  }
  for (uint64_t i = 0; i < entries; ++i) RC_ASSERT(f::GetRefcount(block, i, order) == model[i]);
}

TEST(Refcount, NarrowWidthsPackFromTheLeastSignificantBit) {
  std::vector<uint8_t> block(512, 0);
  f::SetRefcount(block, 1, 0, 1);  // 1-bit: entry 1 is bit 1 of byte 0
  EXPECT_EQ(block[0], 0x02);
  f::SetRefcount(block, 1, 2, 0xa);  // 4-bit: entry 1 is the high nibble of byte 0
  EXPECT_EQ(block[0], 0xa2);
  f::SetRefcount(block, 1, 4, 0x1234);  // 16-bit big-endian at byte 2
  EXPECT_EQ(block[2], 0x12);
  EXPECT_EQ(block[3], 0x34);
}

RC_GTEST_PROP(CompressedEntry, RoundTripsOffsetAndCoversLength, ()) {
  const uint32_t cluster_bits = *rc::gen::inRange<uint32_t>(9, 22);
  const uint32_t x = f::CompressedOffsetBits(cluster_bits);
  const uint64_t offset =
      *rc::gen::inRange<uint64_t>(0, std::min<uint64_t>(uint64_t{1} << x, uint64_t{1} << 50));
  const uint64_t bytes = *rc::gen::inRange<uint64_t>(1, (uint64_t{1} << cluster_bits) + 1);
  const uint64_t entry = f::EncodeCompressed(offset, bytes, cluster_bits);
  RC_ASSERT((entry & f::kOflagCompressed) != 0);
  RC_ASSERT((entry & f::kOflagCopied) == 0);
  const f::CompressedExtent extent = f::DecodeCompressed(entry, cluster_bits);
  RC_ASSERT(extent.host_offset == offset);
  RC_ASSERT(extent.bytes >= bytes);
  RC_ASSERT(extent.bytes < bytes + 512);
}

// The figures QEMU's iotest 190 prints for a 2 TiB disk (qemu-img measure):
// fully allocated with 64 KiB and 2 MiB clusters, and two bitmaps (512-byte
// and 2 MiB granules) plus their directory cluster.
TEST(Measure, FullyAllocatedAndBitmapSizesAreQemus) {
  constexpr uint64_t kTwoTiB = uint64_t{2} << 40;
  EXPECT_EQ(f::FullyAllocatedBytes(kTwoTiB, 16, 4, false), 2199359062016u);
  EXPECT_EQ(f::FullyAllocatedBytes(kTwoTiB, 21, 4, false), 2199042129920u);
  EXPECT_EQ(f::BitmapBytes(kTwoTiB, 9, 16) + f::BitmapBytes(kTwoTiB, 21, 16) + 65536, 537198592u);
  EXPECT_EQ(f::BitmapBytes(kTwoTiB, 9, 21) + f::BitmapBytes(kTwoTiB, 21, 21) + (2u << 20),
            545259520u);
  // A 1 GiB disk, QEMU's defaults: header, L1, L2 tables, refcounts, data.
  EXPECT_EQ(f::FullyAllocatedBytes(uint64_t{1} << 30, 16, 4, false), 1074135040u);
  EXPECT_EQ(f::BitmapDirectoryEntryBytes(2), 32u);
}

}  // namespace
}  // namespace qcrash::engine
