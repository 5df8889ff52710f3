// Proves the compressed-cluster codecs and write path: zlib and zstd round
// trips (and the streams QEMU may have written: -15 deflate windows, zstd
// frames without a content size, trailing bytes), packing several
// compressed clusters into one host cluster whose refcount counts them,
// frees that drop one share each, the header's compression_type rules,
// and the compressed-sole-user bug switch breaking the count.
#include "engine/compression.h"

#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <random>
#include <vector>

#include "engine/check.h"
#include "engine/endian.h"
#include "engine/image.h"
#include "engine/memory_device.h"
#include "engine/qcow2_format.h"

namespace qcrash::engine {
namespace {

namespace f = format;

std::vector<uint8_t> Patterned(size_t bytes, uint8_t seed) {
  std::vector<uint8_t> out(bytes);
  for (size_t i = 0; i < bytes; ++i) out[i] = static_cast<uint8_t>(seed + (i / 64) % 7);
  return out;
}

std::vector<uint8_t> Random(size_t bytes) {
  std::mt19937 rng(7);
  std::vector<uint8_t> out(bytes);
  for (uint8_t& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

TEST(Compression, RoundTripsBothTypesAndRefusesIncompressibleData) {
  for (const CompressionType type : {CompressionType::kZlib, CompressionType::kZstd}) {
    const std::vector<uint8_t> cluster = Patterned(65536, 3);
    auto compressed = CompressCluster(type, cluster);
    ASSERT_TRUE(compressed.ok());
    ASSERT_FALSE(compressed->empty());
    EXPECT_LT(compressed->size(), 4096u);
    std::vector<uint8_t> back(cluster.size());
    ASSERT_TRUE(DecompressCluster(type, *compressed, back).ok());
    EXPECT_EQ(back, cluster);
    // Trailing bytes (the rest of the entry's last sector) are ignored.
    std::vector<uint8_t> padded = *compressed;
    padded.resize(padded.size() + 300, 0xee);
    ASSERT_TRUE(DecompressCluster(type, padded, back).ok());
    EXPECT_EQ(back, cluster);
    // Cut short: an error, never a partial cluster.
    const std::vector<uint8_t> cut(compressed->begin(),
                                   compressed->begin() + compressed->size() / 2);
    EXPECT_FALSE(DecompressCluster(type, cut, back).ok());
    auto random = CompressCluster(type, Random(4096));
    ASSERT_TRUE(random.ok());
    EXPECT_TRUE(random->empty()) << "random data must be stored uncompressed";
  }
}

TEST(Compression, ZlibReadsWindowBits15Streams) {
  const std::vector<uint8_t> cluster = Patterned(4096, 9);
  z_stream z{};
  ASSERT_EQ(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::vector<uint8_t> out(8192);
  z.next_in = const_cast<uint8_t*>(cluster.data());
  z.avail_in = static_cast<uInt>(cluster.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  ASSERT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(out.size() - z.avail_out);
  deflateEnd(&z);
  std::vector<uint8_t> back(cluster.size());
  ASSERT_TRUE(DecompressCluster(CompressionType::kZlib, out, back).ok());
  EXPECT_EQ(back, cluster);
}

TEST(Compression, ZstdReadsAFrameWithoutContentSize) {
  const std::vector<uint8_t> cluster = Patterned(16384, 1);
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0);
  std::vector<uint8_t> out(ZSTD_compressBound(cluster.size()));
  ZSTD_inBuffer in{cluster.data(), cluster.size(), 0};
  ZSTD_outBuffer output{out.data(), out.size(), 0};
  // Two chunks, as a streaming writer would produce them.
  ZSTD_inBuffer half{cluster.data(), cluster.size() / 2, 0};
  ASSERT_FALSE(ZSTD_isError(ZSTD_compressStream2(cctx, &output, &half, ZSTD_e_continue)));
  in.pos = half.pos;
  ASSERT_EQ(ZSTD_compressStream2(cctx, &output, &in, ZSTD_e_end), 0u);
  ZSTD_freeCCtx(cctx);
  out.resize(output.pos);
  ASSERT_EQ(ZSTD_getFrameContentSize(out.data(), out.size()), ZSTD_CONTENTSIZE_UNKNOWN);
  std::vector<uint8_t> back(cluster.size());
  ASSERT_TRUE(DecompressCluster(CompressionType::kZstd, out, back).ok());
  EXPECT_EQ(back, cluster);
}

std::unique_ptr<Image> MustCreate(MemoryDevice& device, CompressionType type, OpenOptions open = {},
                                  uint64_t size = 1 << 20) {
  CreateOptions create;
  create.size_bytes = size;
  create.cluster_bits = 12;
  create.compression_type = type;
  auto image = Image::Create(device, create, open);
  EXPECT_TRUE(image.ok()) << image.status().ToString();
  return image.ok() ? std::move(image).value() : nullptr;
}

CheckReport MustCheck(MemoryDevice& device) {
  auto report = CheckImage(device, {RepairMode::kNone});
  EXPECT_TRUE(report.ok()) << report.status().ToString();
  return report.ok() ? *report : CheckReport{};
}

class CompressedWrites : public ::testing::TestWithParam<CompressionType> {};

TEST_P(CompressedWrites, PackSharedHostClustersAndFreeOneShareEach) {
  MemoryDevice device;
  auto image = MustCreate(device, GetParam());
  ASSERT_NE(image, nullptr);
  const uint64_t size_before = device.SizeBytes();
  const std::vector<uint8_t> data = Patterned(32768, 0x40);  // 8 clusters
  ASSERT_TRUE(image->WriteCompressed(0, data).ok());
  ASSERT_TRUE(image->Close().ok());
  // An L2 table and at most two host clusters for eight compressed clusters.
  EXPECT_LE(device.SizeBytes() - size_before, 3u * 4096);
  CheckReport report = MustCheck(device);
  EXPECT_EQ(report.corruptions, 0u);
  EXPECT_EQ(report.leaks, 0u);
  EXPECT_EQ(report.compressed_clusters, 8u);
  auto map = image->Map();
  ASSERT_TRUE(map.ok());
  EXPECT_TRUE(map->front().compressed && !map->front().has_offset);
  // Overwrite one, write into part of another, discard one, zero one,
  // compress one again: every other cluster still reads back, no leak.
  std::vector<uint8_t> expected = data;
  const std::vector<uint8_t> plain(4096, 0x77);
  ASSERT_TRUE(image->Write(4096, plain).ok());
  std::copy(plain.begin(), plain.end(), expected.begin() + 4096);
  ASSERT_TRUE(image->Write(8192 + 100, std::span(plain).first(50)).ok());
  std::fill(expected.begin() + 8192 + 100, expected.begin() + 8192 + 150, 0x77);
  ASSERT_TRUE(image->Discard(12288, 4096).ok());
  std::fill(expected.begin() + 12288, expected.begin() + 16384, 0);
  ASSERT_TRUE(image->WriteZeroes(16384, 4096, false).ok());
  std::fill(expected.begin() + 16384, expected.begin() + 20480, 0);
  // As QEMU, a compressed write fills only clusters without a host
  // cluster: the discarded one may be compressed again, a compressed or
  // plain one may not (the refused request, clusters 2 and 3, writes
  // nothing, not even into the discarded cluster 3).
  const std::vector<uint8_t> again = Patterned(8192, 0x90);
  EXPECT_EQ(image->WriteCompressed(8192, again).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(image->WriteCompressed(4096, std::span(again).first(4096)).code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(image->WriteCompressed(12288, std::span(again).first(4096)).ok());
  std::copy(again.begin(), again.begin() + 4096, expected.begin() + 12288);
  std::vector<uint8_t> back(expected.size());
  ASSERT_TRUE(image->Read(0, back).ok());
  EXPECT_EQ(back, expected);
  ASSERT_TRUE(image->Close().ok());
  report = MustCheck(device);
  EXPECT_EQ(report.corruptions, 0u);
  EXPECT_EQ(report.leaks, 0u);
  // Every compressed cluster freed: the host clusters are free again.
  ASSERT_TRUE(image->Discard(0, 32768).ok());
  ASSERT_TRUE(image->Close().ok());
  report = MustCheck(device);
  EXPECT_EQ(report.corruptions, 0u);
  EXPECT_EQ(report.leaks, 0u);
  EXPECT_EQ(report.compressed_clusters, 0u);
}

TEST_P(CompressedWrites, StraddlesIntoTheNextHostClusterOnlyWhenItFollows) {
  MemoryDevice device;
  auto image = MustCreate(device, GetParam());
  ASSERT_NE(image, nullptr);
  // 1024 clusters of patterned data compress to far more than one host
  // cluster: packing must cross host-cluster boundaries.
  const std::vector<uint8_t> data = Patterned(1 << 20, 0x11);
  ASSERT_TRUE(image->WriteCompressed(0, data).ok());
  ASSERT_TRUE(image->Close().ok());
  CheckReport report = MustCheck(device);
  EXPECT_EQ(report.corruptions, 0u);
  EXPECT_EQ(report.leaks, 0u);
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE(image->Read(0, back).ok());
  EXPECT_EQ(back, data);
  ASSERT_TRUE(image->Discard(0, 512 << 10).ok());
  ASSERT_TRUE(image->Close().ok());
  report = MustCheck(device);
  EXPECT_EQ(report.corruptions, 0u);
  EXPECT_EQ(report.leaks, 0u);
}

TEST_P(CompressedWrites, TheLastPartialClusterIsPaddedAndMisalignedWritesAreRefused) {
  MemoryDevice device;
  auto image = MustCreate(device, GetParam(), {}, 6144);
  ASSERT_NE(image, nullptr);
  const std::vector<uint8_t> tail = Patterned(2048, 0x21);
  ASSERT_TRUE(image->WriteCompressed(4096, tail).ok());
  std::vector<uint8_t> back(2048);
  ASSERT_TRUE(image->Read(4096, back).ok());
  EXPECT_EQ(back, tail);
  EXPECT_EQ(image->WriteCompressed(512, Patterned(4096, 1)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(image->WriteCompressed(0, Patterned(2048, 1)).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(image->Close().ok());
  EXPECT_EQ(MustCheck(device).corruptions, 0u);
}

TEST_P(CompressedWrites, RefusedUnderTheJournalPolicy) {
  MemoryDevice device;
  OpenOptions open;
  open.policy = OrderingPolicy::kJournal;
  auto image = MustCreate(device, GetParam(), open);
  ASSERT_NE(image, nullptr);
  EXPECT_EQ(image->WriteCompressed(0, Patterned(4096, 1)).code(), StatusCode::kNotSupported);
}

TEST_P(CompressedWrites, SoleUserSwitchFreesASharedHostCluster) {
  MemoryDevice device;
  OpenOptions open;
  open.faults.compressed_sole_user = true;
  auto image = MustCreate(device, GetParam(), open);
  ASSERT_NE(image, nullptr);
  ASSERT_TRUE(image->WriteCompressed(0, Patterned(16384, 0x33)).ok());
  ASSERT_TRUE(image->Discard(0, 4096).ok());
  ASSERT_TRUE(image->Close().ok());
  EXPECT_GT(MustCheck(device).corruptions, 0u) << "three live compressed clusters lost their host";
}

INSTANTIATE_TEST_SUITE_P(Types, CompressedWrites,
                         ::testing::Values(CompressionType::kZlib, CompressionType::kZstd),
                         [](const ::testing::TestParamInfo<CompressionType>& param_info) {
                           return std::string(
                               CompressionTypeName(static_cast<uint8_t>(param_info.param)));
                         });

TEST(CompressionHeader, TypeAndIncompatibleBitMustAgree) {
  MemoryDevice device;
  auto image = MustCreate(device, CompressionType::kZstd);
  ASSERT_NE(image, nullptr);
  ASSERT_TRUE(image->WriteCompressed(0, Patterned(4096, 5)).ok());
  ASSERT_TRUE(image->Close().ok());
  image.reset();
  uint8_t header[112];
  ASSERT_TRUE(device.Read(0, header).ok());
  EXPECT_EQ(header[f::kOffCompressionType], f::kCompressionZstd);
  const uint64_t incompatible = LoadBe64(header + f::kOffIncompatibleFeatures);
  EXPECT_NE(incompatible & f::kIncompatCompressionType, 0u);
  auto reopened = Image::Open(device, {});
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  std::vector<uint8_t> back(4096);
  ASSERT_TRUE((*reopened)->Read(0, back).ok());
  EXPECT_EQ(back, Patterned(4096, 5));
  reopened->reset();
  // zstd without the bit, the bit with zlib, and an unknown type.
  struct Variant {
    uint8_t type;
    bool bit;
    StatusCode code;
  };
  for (const Variant v :
       {Variant{1, false, StatusCode::kCorruption}, Variant{0, true, StatusCode::kCorruption},
        Variant{2, true, StatusCode::kNotSupported}}) {
    uint8_t changed[112];
    std::copy(std::begin(header), std::end(header), changed);
    changed[f::kOffCompressionType] = v.type;
    StoreBe64(changed + f::kOffIncompatibleFeatures,
              v.bit ? incompatible : incompatible & ~f::kIncompatCompressionType);
    ASSERT_TRUE(device.Write(0, changed).ok());
    auto opened = Image::Open(device, {});
    EXPECT_FALSE(opened.ok()) << int{v.type} << v.bit;
    if (!opened.ok()) {
      EXPECT_EQ(opened.status().code(), v.code) << opened.status().ToString();
    }
  }
}

}  // namespace
}  // namespace qcrash::engine
