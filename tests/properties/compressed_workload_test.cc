// Proves the compressed built-in workloads test what they claim: run to the
// end, they leave host clusters shared by several compressed clusters and at
// least one compressed cluster straddling two host clusters, each host
// cluster's refcount equal to its number of users, and the image clean; and
// that generated workloads draw compressed writes (zlib and zstd) from a
// stream of their own, only over clusters no earlier write touched.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "engine/check.h"
#include "engine/endian.h"
#include "engine/image.h"
#include "engine/memory_device.h"
#include "engine/qcow2_format.h"
#include "properties/generate.h"
#include "properties/runner.h"
#include "properties/workload.h"

namespace qcrash::properties {
namespace {

namespace f = engine::format;

// Users per host cluster of the compressed entries of the active L1, and
// how many entries span two host clusters.
struct Packing {
  std::map<uint64_t, uint64_t> users;
  uint64_t entries = 0;
  uint64_t straddling = 0;
};

Packing ReadPacking(MemoryDevice& device, const engine::Header& header) {
  Packing p;
  const uint64_t cb = header.cluster_bytes();
  for (uint64_t i = 0; i < header.l1_size; ++i) {
    uint8_t bytes[8];
    EXPECT_TRUE(device.Read(header.l1_table_offset + i * 8, bytes).ok());
    const uint64_t l2 = LoadBe64(bytes) & f::kL1EntryOffsetMask;
    if (l2 == 0) continue;
    std::vector<uint8_t> table(cb);
    EXPECT_TRUE(device.Read(l2, table).ok());
    for (uint64_t j = 0; j < cb / 8; ++j) {
      const uint64_t entry = LoadBe64(&table[j * 8]);
      if (!(entry & f::kOflagCompressed)) continue;
      const f::CompressedExtent e = f::DecodeCompressed(entry, header.cluster_bits);
      const uint64_t first = e.host_offset / cb, last = (e.host_offset + e.bytes - 1) / cb;
      ++p.entries;
      p.straddling += first != last;
      for (uint64_t c = first; c <= last; ++c) ++p.users[c];
    }
  }
  return p;
}

uint64_t Refcount(MemoryDevice& device, const engine::Header& header, uint64_t cluster) {
  const uint64_t per = f::RefcountBlockEntries(header.cluster_bits, header.refcount_order);
  uint8_t bytes[8];
  EXPECT_TRUE(device.Read(header.refcount_table_offset + cluster / per * 8, bytes).ok());
  const uint64_t block = LoadBe64(bytes) & f::kRefcountTableOffsetMask;
  std::vector<uint8_t> data(header.cluster_bytes());
  EXPECT_TRUE(device.Read(block, data).ok());
  return f::GetRefcount(data, cluster % per, header.refcount_order);
}

class CompressedWorkload : public ::testing::TestWithParam<std::string> {};

TEST_P(CompressedWorkload, PacksStraddlesAndCountsUsers) {
  auto workload = BuiltinWorkload(GetParam());
  ASSERT_TRUE(workload.ok());
  MemoryDevice device;
  auto created = engine::Image::Create(device, workload->image, {});
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  std::unique_ptr<engine::Image> image = std::move(created).value();
  for (size_t i = 0; i < workload->ops.size(); ++i) {
    if (i > 0 && workload->ops[i - 1].kind == OpKind::kClose) {
      image.reset();
      auto opened = engine::Image::Open(device, {});
      ASSERT_TRUE(opened.ok()) << opened.status().ToString();
      image = std::move(opened).value();
    }
    const Status status = RunGuestOp(*image, workload->ops[i], i + 1);
    ASSERT_TRUE(status.ok()) << DescribeOp(workload->ops[i]) << ": " << status.ToString();
  }
  const engine::Header header = image->header();
  const Packing packing = ReadPacking(device, header);
  EXPECT_GT(packing.entries, 40u);
  EXPECT_GE(packing.straddling, 1u) << "no compressed cluster straddles two host clusters";
  uint64_t shared = 0;
  for (const auto& [cluster, users] : packing.users) {
    shared += users > 1;
    EXPECT_EQ(Refcount(device, header, cluster), users) << "host cluster " << cluster;
  }
  EXPECT_GE(shared, 2u);
  auto report = engine::CheckImage(device, {engine::RepairMode::kNone});
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->corruptions, 0u);
  EXPECT_EQ(report->leaks, 0u);
}

INSTANTIATE_TEST_SUITE_P(Builtin, CompressedWorkload,
                         ::testing::Values("compressed", "compressed-zstd"),
                         [](const ::testing::TestParamInfo<std::string>& param_info) {
                           return param_info.param == "compressed" ? std::string("zlib")
                                                                   : std::string("zstd");
                         });

TEST(GeneratedCompressedWrites, ComeWithTheirFeatureOnlyOverUntouchedClusters) {
  int zlib = 0, zstd = 0;
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    const GeneratedCase c = GenerateCase(seed, 0, engine::OrderingPolicy::kOrdered);
    const bool feature = c.features.find("compressed") != std::string::npos;
    const uint64_t cb = uint64_t{1} << c.workload.image.cluster_bits;
    std::set<uint64_t> touched;
    bool any = false;
    for (const GuestOp& op : c.workload.ops) {
      const bool data = op.kind == OpKind::kWrite || op.kind == OpKind::kWriteZeroes ||
                        op.kind == OpKind::kWriteCompressed;
      if (op.kind == OpKind::kWriteCompressed) {
        any = true;
        EXPECT_EQ(op.offset_bytes % cb, 0u) << c.workload.name;
        for (uint64_t g = op.offset_bytes / cb; g * cb < op.offset_bytes + op.length_bytes; ++g)
          EXPECT_EQ(touched.count(g), 0u) << c.workload.name << " " << DescribeOp(op);
      }
      if (data) {
        for (uint64_t g = op.offset_bytes / cb; g * cb < op.offset_bytes + op.length_bytes; ++g)
          touched.insert(g);
      }
    }
    EXPECT_TRUE(feature || !any) << c.workload.name;
    EXPECT_TRUE(ValidateWorkload(c.workload).ok()) << c.workload.name;
    if (any) {
      (c.workload.image.compression_type == engine::CompressionType::kZstd ? zstd : zlib)++;
    }
    // Never under the journal policy, which writes no compressed cluster.
    const GeneratedCase j = GenerateCase(seed, 0, engine::OrderingPolicy::kJournal);
    for (const GuestOp& op : j.workload.ops) EXPECT_NE(op.kind, OpKind::kWriteCompressed);
  }
  EXPECT_GT(zlib, 0);
  EXPECT_GT(zstd, 0);
}

}  // namespace
}  // namespace qcrash::properties
