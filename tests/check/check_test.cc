// Unit tests of engine/check + repair on images made by qemu-img and
// corrupted by hand, of the OFD image lock against qemu-io, and of the
// `qcrash check` command's qemu-img compatible JSON.
#include "engine/check.h"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <nlohmann/json.hpp>
#include <thread>

#include "engine/header.h"
#include "engine/image.h"
#include "engine/image_lock.h"
#include "engine/journal_format.h"
#include "engine/memory_device.h"
#include "tests/check/check_test_util.h"
#include "tests/check/corruptions.h"

namespace qcrash::check_test {
namespace {

using engine::CheckImage;
using engine::CheckReport;
using engine::FindingKind;
using engine::RepairMode;
using engine::Severity;

const std::vector<std::string> kWrites = {"write -P 0x11 0 192k", "write -c -P 0x22 1M 64k",
                                          "write -z 2M 64k", "write -P 0x33 5M 8k"};

std::vector<uint8_t> MakeBytes(const std::string& options, bool snapshot = false) {
  TempDir dir;
  const std::string path = dir.File("base.qcow2");
  std::vector<std::string> writes = kWrites;
  // Compressed clusters share host clusters: impossible with 1-bit refcounts;
  // and a compressed write must cover whole clusters (not with 2 MiB ones).
  if (options.find("refcount_bits=1") != std::string::npos ||
      options.find("cluster_size=2M") != std::string::npos) {
    writes.erase(writes.begin() + 1);
  }
  EXPECT_TRUE(MakeImage(path, options, "8M", writes)) << options;
  if (snapshot) {
    RunCommand("qemu-img snapshot -c s1 '" + path + "'");
    RunCommand("qemu-io -c 'write -P 0x55 32k 64k' '" + path + "'");
  }
  return ReadFileBytes(path);
}

const std::vector<uint8_t>& Base64k() {
  static const auto* bytes = new std::vector<uint8_t>(MakeBytes(""));
  return *bytes;
}

CheckReport Check(MemoryDevice& device, RepairMode mode) {
  auto report = CheckImage(device, {mode});
  EXPECT_TRUE(report.ok()) << report.status().ToString();
  return report.ok() ? *report : CheckReport{};
}

bool Clean(const CheckReport& r) {
  return r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0;
}

const engine::Finding* FindKind(const CheckReport& r, FindingKind kind) {
  for (const auto& finding : r.findings) {
    if (finding.kind == kind) return &finding;
  }
  return nullptr;
}

// Valid images of every shape qemu-img makes check clean, with no finding
// other than information.
TEST(Check, ValidImagesAreClean) {
  const std::vector<std::pair<std::string, bool>> shapes = {
      {"", false},
      {"-o compat=0.10", true},
      {"-o cluster_size=512", false},
      {"-o refcount_bits=1", false},
      {"-o cluster_size=2M,refcount_bits=64", false},
      {"-o cluster_size=4096", true},
      {"-o lazy_refcounts=on", false}};
  for (const auto& [options, snapshot] : shapes) {
    MemoryDevice device(MakeBytes(options, snapshot));
    const CheckReport r = Check(device, RepairMode::kNone);
    EXPECT_TRUE(Clean(r)) << options;
    for (const auto& finding : r.findings) {
      EXPECT_EQ(finding.severity, Severity::kInfo) << options << ": " << finding.message;
    }
    EXPECT_GT(r.allocated_clusters, 0u) << options;
  }
}

// Each finding names the offset, the cluster and the owner.
TEST(Check, FindingsNameOffsetClusterAndOwner) {
  struct Expect {
    Corruption corruption;
    FindingKind kind;
    const char* owner_part;
  };
  const Expect cases[] = {
      {Corruption::kSharedCluster, FindingKind::kRefcountTooLow, "active L1[0] -> L2"},
      {Corruption::kPastEof, FindingKind::kPastEnd, "active L1[0] -> L2"},
      {Corruption::kL2IntoMetadata, FindingKind::kOverlap, "(guest 0x"},
      {Corruption::kRefcountTableReserved, FindingKind::kInvalidRefcountEntry, "refcount table[0]"},
      {Corruption::kCopiedFlipped, FindingKind::kCopiedMismatch, "active L1[0] -> L2"},
      {Corruption::kMisalignedData, FindingKind::kMisaligned, "active L1[0]"},
      {Corruption::kL1Reserved, FindingKind::kReservedBits, "active L1[0]"},
      {Corruption::kLeak, FindingKind::kLeak, "no owner"},
      {Corruption::kDanglingFree, FindingKind::kUnreferencedInUse, "active L1[0] -> L2"},
      {Corruption::kCompressedCopied, FindingKind::kCompressedInvalid, "active L1[0] -> L2"},
  };
  for (const Expect& e : cases) {
    std::vector<uint8_t> image = Base64k();
    ASSERT_TRUE(ApplyCorruption(image, e.corruption, 0).ok) << CorruptionName(e.corruption);
    MemoryDevice device(image);
    const CheckReport r = Check(device, RepairMode::kNone);
    const engine::Finding* finding = FindKind(r, e.kind);
    ASSERT_NE(finding, nullptr) << CorruptionName(e.corruption);
    EXPECT_NE(finding->owner.find(e.owner_part), std::string::npos)
        << CorruptionName(e.corruption) << ": owner '" << finding->owner << "'";
    EXPECT_EQ(finding->cluster_index, finding->host_offset >> 16) << CorruptionName(e.corruption);
    EXPECT_FALSE(Clean(r)) << CorruptionName(e.corruption);
  }
}

// -r all leaves every class clean, and a second repair writes and flushes nothing.
TEST(Repair, AllIsCleanAndIdempotentForEveryClass) {
  for (int c = 0; c < kCorruptionCount; ++c) {
    std::vector<uint8_t> image = Base64k();
    if (!ApplyCorruption(image, static_cast<Corruption>(c), 2).ok) continue;
    MemoryDevice device(image);
    const CheckReport repaired = Check(device, RepairMode::kAll);
    EXPECT_TRUE(Clean(repaired)) << CorruptionName(static_cast<Corruption>(c));
    EXPECT_GT(repaired.corruptions_fixed + repaired.leaks_fixed, 0u)
        << CorruptionName(static_cast<Corruption>(c));
    EXPECT_TRUE(Clean(Check(device, RepairMode::kNone)))
        << CorruptionName(static_cast<Corruption>(c));
    CountingDevice counting(device);
    auto again = CheckImage(counting, {RepairMode::kAll});
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(counting.writes, 0u) << CorruptionName(static_cast<Corruption>(c));
    EXPECT_EQ(counting.flushes, 0u) << CorruptionName(static_cast<Corruption>(c));
    EXPECT_EQ(again->bytes_written, 0u);
  }
}

// -r leaks lowers refcounts only; it refuses to rebuild and leaves corruptions.
TEST(Repair, LeaksModeFixesOnlyLeaks) {
  std::vector<uint8_t> image = Base64k();
  ASSERT_TRUE(ApplyCorruption(image, Corruption::kLeak, 0).ok);
  MemoryDevice leaky(image);
  const CheckReport fixed = Check(leaky, RepairMode::kLeaks);
  EXPECT_EQ(fixed.leaks_fixed, 1u);
  EXPECT_TRUE(Clean(Check(leaky, RepairMode::kNone)));

  image = Base64k();
  ASSERT_TRUE(ApplyCorruption(image, Corruption::kSharedCluster, 0).ok);
  MemoryDevice shared(image);
  const CheckReport kept = Check(shared, RepairMode::kLeaks);
  EXPECT_EQ(kept.corruptions, 1u) << "the shared cluster stays";
  EXPECT_EQ(kept.leaks_fixed, 1u) << "the cluster the entry pointed to before was leaked";

  image = Base64k();
  ASSERT_TRUE(ApplyCorruption(image, Corruption::kDanglingFree, 0).ok);
  MemoryDevice dangling(image);
  EXPECT_GT(Check(dangling, RepairMode::kLeaks).check_errors, 0u) << "needs a rebuild";
  EXPECT_EQ(dangling.bytes(), image);
}

// Repair drops only untrusted pointers and says which guest ranges lost data.
TEST(Repair, ReportsDroppedGuestRanges) {
  std::vector<uint8_t> image = Base64k();
  const Applied applied = ApplyCorruption(image, Corruption::kMisalignedData, 1);
  ASSERT_TRUE(applied.ok);
  MemoryDevice device(image);
  const CheckReport r = Check(device, RepairMode::kAll);
  ASSERT_EQ(r.dropped.size(), 1u);
  EXPECT_EQ(r.dropped[0].table, "active");
  EXPECT_EQ(r.dropped[0].guest_offset, applied.affected_clusters[0] << 16);
  EXPECT_EQ(r.dropped[0].length_bytes, 65536u);
}

// After a clean repair the dirty (lazy refcounts) and corrupt bits are clear.
TEST(Repair, ClearsDirtyAndCorruptBits) {
  std::vector<uint8_t> image = Base64k();
  ASSERT_TRUE(ApplyCorruption(image, Corruption::kDirtyLeak, 0).ok);
  image[f::kOffIncompatibleFeatures + 7] |= 2;  // corrupt
  MemoryDevice device(image);
  const CheckReport r = Check(device, RepairMode::kAll);
  EXPECT_TRUE(r.header_bits_cleared);
  EXPECT_EQ(LoadBe64(&device.bytes()[f::kOffIncompatibleFeatures]), 0u);
  EXPECT_TRUE(Clean(Check(device, RepairMode::kNone)));
}

// A broken refcount table is rebuilt: new blocks and table, header switched.
TEST(Repair, RebuildsBrokenRefcountStructure) {
  for (Corruption c : {Corruption::kRefcountTableReserved, Corruption::kRefcountTablePastEof,
                       Corruption::kRefcountTableOverlap, Corruption::kRefcountTableMisaligned}) {
    std::vector<uint8_t> image = Base64k();
    ASSERT_TRUE(ApplyCorruption(image, c, 0).ok);
    MemoryDevice device(image);
    const CheckReport r = Check(device, RepairMode::kAll);
    EXPECT_TRUE(r.refcounts_rebuilt) << CorruptionName(c);
    EXPECT_NE(LoadBe64(&device.bytes()[f::kOffRefcountTableOffset]),
              LoadBe64(&image[f::kOffRefcountTableOffset]));
    EXPECT_TRUE(Clean(Check(device, RepairMode::kNone))) << CorruptionName(c);
  }
}

// A repair that ran leaves the image clean, and a second repair writes and
// flushes nothing (I7).
void ExpectRepairConverges(MemoryDevice& device, const std::string& what) {
  const CheckReport repaired = Check(device, RepairMode::kAll);
  EXPECT_TRUE(Clean(repaired)) << what;
  const CheckReport after = Check(device, RepairMode::kNone);
  EXPECT_TRUE(Clean(after)) << what;
  for (const auto& finding : after.findings) {
    EXPECT_EQ(finding.severity, Severity::kInfo) << what << ": " << finding.message;
  }
  CountingDevice counting(device);
  auto again = CheckImage(counting, {RepairMode::kAll});
  ASSERT_TRUE(again.ok()) << what;
  EXPECT_EQ(counting.writes, 0u) << what;
  EXPECT_EQ(counting.flushes, 0u) << what;
}

// More findings than a report keeps (kMaxFindings): a rebuild still counts
// every one of them as fixed, so the report comes out clean, the corrupt bit
// is cleared and a second repair writes nothing. 12,288 data clusters and
// their L2 tables are leaked (the active L1 zeroed) and the refcount table
// has a reserved bit set, which forces the rebuild.
TEST(Repair, RebuildFixesFindingsBeyondTheKeptOnes) {
  TempDir dir;
  const std::string path = dir.File("many.qcow2");
  ASSERT_TRUE(MakeImage(path, "-o cluster_size=512", "8M", {"write -P 0x5a 0 6M"}));
  std::vector<uint8_t> image = ReadFileBytes(path);
  const uint64_t l1 = LoadBe64(&image[f::kOffL1TableOffset]);
  const uint32_t l1_entries = LoadBe32(&image[f::kOffL1Size]);
  std::fill(image.begin() + l1, image.begin() + l1 + l1_entries * 8, 0);
  const uint64_t table = LoadBe64(&image[f::kOffRefcountTableOffset]);
  image[table + 7] |= 0x02;                        // reserved bit of refcount table entry 0
  image[f::kOffIncompatibleFeatures + 7] |= 0x02;  // corrupt bit
  MemoryDevice device(image);
  const CheckReport before = Check(device, RepairMode::kNone);
  ASSERT_GT(before.leaks + before.corruptions, engine::kMaxFindings);
  MemoryDevice repair(image);
  const CheckReport repaired = Check(repair, RepairMode::kAll);
  EXPECT_TRUE(repaired.refcounts_rebuilt);
  EXPECT_GT(repaired.findings_omitted, 0u);
  EXPECT_GT(repaired.leaks_fixed, engine::kMaxFindings);
  EXPECT_EQ(repaired.leaks, 0u);
  EXPECT_EQ(repaired.corruptions, 0u);
  EXPECT_TRUE(repaired.header_bits_cleared);
  ExpectRepairConverges(repair, "many findings");
}

// A caller comparing corruption (I8's "no worse than before recovery") needs
// every corruption, not the first kMaxFindings: here a junk L2 table of 64 KiB
// clusters (8192 entries, each with reserved bits and a misaligned offset past
// the end of the file) gives more findings than are kept, and the L2 table's
// own refcount of 0, found after the walk, is only in the listed set.
TEST(Check, ListsEveryCorruptClusterPastTheKeptFindings) {
  TempDir dir;
  const std::string path = dir.File("junk-l2.qcow2");
  ASSERT_TRUE(MakeImage(path, "-o cluster_size=64k", "2M", {"write -P 0x5a 0 4k"}));
  std::vector<uint8_t> image = ReadFileBytes(path);
  const uint64_t l1 = LoadBe64(&image[f::kOffL1TableOffset]);
  const uint64_t l2 = LoadBe64(&image[l1]) & f::kL1EntryOffsetMask;
  for (uint64_t i = 0; i < 8192; ++i) StoreBe64(&image[l2 + i * 8], 0x8100fffffff00200);
  const uint64_t table = LoadBe64(&image[f::kOffRefcountTableOffset]);
  const uint64_t block = LoadBe64(&image[table]);
  StoreBe16(&image[block + (l2 >> 16) * 2], 0);  // the L2 table's refcount
  MemoryDevice device(image);
  engine::CheckOptions options;
  options.list_corrupt_clusters = true;
  auto listed = CheckImage(device, options);
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_GT(listed->findings_omitted, 0u);
  const std::pair<uint64_t, engine::FindingKind> l2_refcount{
      l2 >> 16, engine::FindingKind::kUnreferencedInUse};
  EXPECT_TRUE(std::none_of(
      listed->findings.begin(), listed->findings.end(), [&](const engine::Finding& finding) {
        return finding.cluster_index == l2_refcount.first && finding.kind == l2_refcount.second;
      }));
  EXPECT_EQ(listed->corrupt_clusters.count(l2_refcount), 1u);
  const CheckReport unlisted = Check(device, RepairMode::kNone);
  EXPECT_TRUE(unlisted.corrupt_clusters.empty());
  EXPECT_EQ(unlisted.corruptions, listed->corruptions);
}

// F1: check -r all discards a broken snapshot table tail (an entry too large
// or past the end of the file, a misaligned or oversized snapshot L1), as
// QEMU does: nb_snapshots drops to the entries before it and the discarded
// snapshots' clusters are freed, so the image comes out clean.
TEST(Repair, DiscardsBrokenSnapshotTableTail) {
  static const auto* base = new std::vector<uint8_t>(MakeBytes("-o cluster_size=4096", true));
  ASSERT_EQ(LoadBe32(&(*base)[f::kOffNbSnapshots]), 1u);
  const uint64_t entry = LoadBe64(&(*base)[f::kOffSnapshotsOffset]);
  const struct {
    const char* what;
    uint32_t field_offset;  // inside the snapshot table entry
    uint32_t width_bytes;
    uint64_t value;
  } cases[] = {
      {"extra data too large", 36, 4, 0x10000},
      {"entry past the end of the file", 14, 2, 0xffff},  // name_size, table moved to the end
      {"misaligned snapshot L1", 0, 8, 0},                // set below: L1 offset + 512
      {"snapshot L1 too large", 8, 4, 0x10000000},
  };
  for (const auto& c : cases) {
    std::vector<uint8_t> image = *base;
    if (c.width_bytes == 8) {
      StoreBe64(&image[entry + c.field_offset], LoadBe64(&image[entry]) + 512);
    } else if (c.width_bytes == 4) {
      StoreBe32(&image[entry + c.field_offset], static_cast<uint32_t>(c.value));
    } else {
      // Move the table into a cluster appended at the end, so that the
      // name runs past the end of the file.
      const uint64_t moved = image.size();
      image.resize(moved + 4096, 0);
      std::copy(image.begin() + static_cast<long>(entry),
                image.begin() + static_cast<long>(entry + 4096 - 64),
                image.begin() + static_cast<long>(moved));
      StoreBe64(&image[f::kOffSnapshotsOffset], moved);
      StoreBe16(&image[moved + c.field_offset], static_cast<uint16_t>(c.value));
    }
    MemoryDevice device(image);
    const CheckReport checked = Check(device, RepairMode::kNone);
    ASSERT_NE(FindKind(checked, FindingKind::kSnapshotTable), nullptr) << c.what;
    const CheckReport repaired = Check(device, RepairMode::kAll);
    const engine::Finding* finding = FindKind(repaired, FindingKind::kSnapshotTable);
    ASSERT_NE(finding, nullptr) << c.what;
    EXPECT_TRUE(finding->repaired) << c.what;
    EXPECT_EQ(LoadBe32(&device.bytes()[f::kOffNbSnapshots]), 0u) << c.what;
    EXPECT_EQ(LoadBe64(&device.bytes()[f::kOffSnapshotsOffset]), 0u) << c.what;
    EXPECT_GT(repaired.leaks_fixed, 0u) << c.what << ": the snapshot's clusters are freed";
    ExpectRepairConverges(device, c.what);
  }
}

// F2: a header naming the largest refcount table (8 MiB of zeroes, 1 Mi
// entries, mostly past the end of the file) checks without error, again and
// again; its speed (once ~50 ms a check) is measured in
// bench/check_engine_bench.cc, not asserted here.
TEST(Check, HugeEmptyRefcountTableChecks) {
  // 10 KiB, 1 KiB clusters, refcount_table_clusters = 8192 (found by check_fuzzer).
  const std::vector<uint8_t> image = ReadFileBytes(
      std::string(QCRASH_SOURCE_DIR) + "/corpus/check_fuzzer/regress-slow-8mib-refcount-table");
  ASSERT_EQ(LoadBe32(&image[f::kOffRefcountTableClusters]), 8192u);
  MemoryDevice device(image);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(CheckImage(device, {RepairMode::kNone}).ok());
  EXPECT_TRUE(device.bytes() == image) << "a check wrote";
}

// A rebuild that would have to start 128 GiB past the end of a 941-byte file
// (the active L1 is named out there; found by repair_fuzzer as an OOM of the
// rebuild's per-cluster arrays) fails with Limit before repair writes a byte.
TEST(Repair, RebuildFarPastTheEndFailsBeforeWriting) {
  const std::vector<uint8_t> image =
      ReadFileBytes(std::string(QCRASH_SOURCE_DIR) +
                    "/corpus/repair_fuzzer/regress-oom-rebuild-far-past-eof-41cdbfd4");
  MemoryDevice device(image);
  CountingDevice counting(device);
  auto report = CheckImage(counting, {RepairMode::kAll});
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().code(), StatusCode::kLimit);
  EXPECT_NE(report.status().message().find("nothing written"), std::string::npos);
  EXPECT_EQ(counting.writes, 0u);
  EXPECT_EQ(device.bytes(), image);
}

// F4: the refcount rebuild never places a new cluster on a table lying past
// the end of the file (here the active L1): it allocates after it, so the
// grown file holds the table, which the rebuild counts. An active L1 past the
// end with the refcounts intact is repaired the same way (found by
// repair_fuzzer after F4: it stayed a corruption).
TEST(Repair, RebuildAvoidsTablesPastTheEnd) {
  TempDir dir;
  const std::string path = dir.File("empty.qcow2");
  ASSERT_TRUE(MakeImage(path, "-o cluster_size=512", "1M", {}));
  const std::vector<uint8_t> base = ReadFileBytes(path);
  const ImageLayout l = LayoutOf(base);
  for (const bool drop_refcount_block : {true, false}) {
    for (const uint64_t gap_clusters : {uint64_t{1}, uint64_t{300}}) {
      const std::string what =
          std::string(drop_refcount_block ? "no refcount block" : "refcounts intact") + ", L1 " +
          std::to_string(gap_clusters) + " clusters past the end";
      std::vector<uint8_t> image = base;
      const uint64_t l1_offset = ((image.size() + 511) / 512 + gap_clusters) * 512;
      StoreBe64(&image[f::kOffL1TableOffset], l1_offset);
      if (drop_refcount_block) StoreBe64(&image[l.refcount_table_offset], 0);
      MemoryDevice device(image);
      const CheckReport repaired = Check(device, RepairMode::kAll);
      EXPECT_TRUE(repaired.refcounts_rebuilt) << what;
      const uint64_t new_table = LoadBe64(&device.bytes()[f::kOffRefcountTableOffset]);
      EXPECT_GT(new_table, l1_offset) << what;
      for (uint64_t i = 0; i * 8 < 512; ++i) {
        const uint64_t block = LoadBe64(&device.bytes()[new_table + i * 8]);
        EXPECT_TRUE(block == 0 || block > l1_offset) << what << ": block " << i;
      }
      ASSERT_GE(device.bytes().size(), l1_offset + uint64_t{l.l1_size} * 8) << what;
      for (uint32_t i = 0; i < l.l1_size; ++i) {
        EXPECT_EQ(LoadBe64(&device.bytes()[l1_offset + i * 8]), 0u) << what << ": L1 entry " << i;
      }
      ExpectRepairConverges(device, what);
    }
  }
}

// A refcount table past the end is replaced by the rebuild, so its past-end
// finding counts as fixed and the corrupt bit is cleared in the same run
// (found by repair_fuzzer: the second repair cleared it, writing 8 bytes).
TEST(Repair, RefcountTablePastTheEndIsFixedInOneRun) {
  std::vector<uint8_t> image = Base64k();
  StoreBe64(&image[f::kOffRefcountTableOffset], (image.size() + 65535) / 65536 * 65536 + 65536);
  image[f::kOffIncompatibleFeatures + 7] |= 2;  // corrupt
  MemoryDevice device(image);
  const CheckReport repaired = Check(device, RepairMode::kAll);
  const engine::Finding* past_end = FindKind(repaired, FindingKind::kPastEnd);
  ASSERT_NE(past_end, nullptr);
  EXPECT_TRUE(past_end->repaired);
  EXPECT_TRUE(repaired.header_bits_cleared);
  ExpectRepairConverges(device, "refcount table past the end, corrupt bit set");
}

// A snapshot table that shares a cluster with the active L1 is discarded
// whole: repair's L1 edits would otherwise rewrite the snapshot entries
// (found by repair_fuzzer: the rewritten snapshot's clusters leaked).
TEST(Repair, DiscardsSnapshotTableOverlappingTheActiveL1) {
  std::vector<uint8_t> image = MakeBytes("-o cluster_size=4096", true);
  StoreBe64(&image[f::kOffL1TableOffset], LoadBe64(&image[f::kOffSnapshotsOffset]));
  MemoryDevice device(image);
  ExpectRepairConverges(device, "snapshot table inside the active L1");
  EXPECT_EQ(LoadBe32(&device.bytes()[f::kOffNbSnapshots]), 0u);
}

// A corrupt bitmap structure (here an invalid bitmap table entry, found by
// repair_fuzzer) is repaired by discarding every bitmap: autoclear bit 0 is
// cleared and the bitmap clusters are freed, so the image comes out clean.
TEST(Repair, DiscardsBitmapsWhenOneIsCorrupt) {
  TempDir dir;
  const std::string path = dir.File("bitmap.qcow2");
  ASSERT_TRUE(MakeImage(path, "", "8M", {"write -P 0x11 0 64k"}));
  ASSERT_EQ(RunCommand("qemu-img bitmap --add '" + path + "' b0").exit_code, 0);
  std::vector<uint8_t> image = ReadFileBytes(path);
  auto header = engine::DecodeHeader({image.data(), 65536}, image.size());
  ASSERT_TRUE(header.ok() && header->bitmaps.has_value());
  const uint64_t table = LoadBe64(&image[header->bitmaps->directory_offset]);
  StoreBe64(&image[table], 0x1010101010101010);  // reserved bits set
  MemoryDevice device(image);
  const CheckReport checked = Check(device, RepairMode::kNone);
  ASSERT_NE(FindKind(checked, FindingKind::kReservedBits), nullptr);
  ExpectRepairConverges(device, "invalid bitmap table entry");
  EXPECT_EQ(LoadBe64(&device.bytes()[f::kOffAutoclearFeatures]) & f::kAutoclearBitmaps, 0u);
}

// An image built in memory: 512-byte clusters, 1-bit refcounts, an 8 KiB
// journal (the journal policy) and 16 KiB of 0xab at guest offset 0
// (entries 0..31 of the first L2 table).
struct JournalImage {
  std::vector<uint8_t> bytes;
  engine::Header header;
  uint64_t l2_offset = 0;
  uint64_t journal_offset = 0;
};

JournalImage MakeRc1JournalImage() {
  MemoryDevice device;
  engine::CreateOptions create;
  create.size_bytes = 1 << 20;
  create.cluster_bits = 9;
  create.refcount_order = 0;
  engine::OpenOptions open;
  open.policy = engine::OrderingPolicy::kJournal;
  open.journal.size_bytes = 8192;
  {
    auto image = engine::Image::Create(device, create, open);
    EXPECT_TRUE(image.ok()) << image.status().ToString();
    if (!image.ok()) return {};
    const Status wrote = (*image)->Write(0, std::vector<uint8_t>(16 << 10, 0xab));
    EXPECT_TRUE(wrote.ok()) << wrote.ToString();
    const Status closed = (*image)->Close();
    EXPECT_TRUE(closed.ok()) << closed.ToString();
  }
  JournalImage made;
  made.bytes = device.bytes();
  auto header = engine::DecodeHeader({made.bytes.data(), 512}, made.bytes.size());
  EXPECT_TRUE(header.ok());
  if (!header.ok()) return {};
  made.header = *header;
  for (const engine::HeaderExtension& e : header->unknown_extensions) {
    if (e.type != engine::journal::kExtJournal) continue;
    auto location = engine::journal::DecodeLocation(e.data, 9, made.bytes.size());
    if (location.ok()) made.journal_offset = location->offset_bytes;
  }
  EXPECT_NE(made.journal_offset, 0u);
  made.l2_offset = Load64(made.bytes, header->l1_table_offset) & f::kL1EntryOffsetMask;
  return made;
}

// Issue 17's image: the L2 table torn, entries 32..63 (guest 16..32 KiB)
// holding garbage that points into metadata, mostly compressed-looking (bit
// 62), into the journal and into the L2 table itself. Its bytes are
// corpus/repair_fuzzer/regress-rc1-torn-l2-compressed-into-journal-and-itself.
JournalImage MakeTornL2IntoMetadataImage() {
  JournalImage torn = MakeRc1JournalImage();
  if (torn.bytes.empty()) return torn;
  const uint64_t journal = torn.journal_offset;
  for (uint64_t j = 32; j < 64; ++j) {
    uint64_t entry = 0;
    switch (j % 4) {
      case 0:
        entry = f::EncodeCompressed(journal + j * 40, 600, 9);
        break;  // 2 sectors
      case 1:
        entry = f::EncodeCompressed(torn.l2_offset + j * 8, 100, 9);
        break;  // itself
      case 2:
        entry = f::EncodeCompressed(journal + 512 * (j % 8), 300, 9);
        break;
      case 3:
        entry = f::kOflagCopied | (journal + 512 * (j % 8));
        break;  // standard
    }
    Store64(torn.bytes, torn.l2_offset + j * 8, entry);
  }
  return torn;
}

// Issue 17: entries that point into metadata overflowed the 1-bit counts
// before repair dropped them (the journal was not in the metadata map), so
// the repaired image still had refcount overflows. Repair drops every such
// entry before counting (32 corruptions fixed, 32 guest clusters dropped),
// keeps the untorn half's data, and converges.
TEST(Repair, DropsTornL2EntriesIntoMetadataBeforeCounting) {
  const JournalImage torn = MakeTornL2IntoMetadataImage();
  ASSERT_FALSE(torn.bytes.empty());
  MemoryDevice device(torn.bytes);
  EXPECT_NE(FindKind(Check(device, RepairMode::kNone), FindingKind::kRefcountOverflow), nullptr);
  MemoryDevice probe(torn.bytes);
  const CheckReport repaired = Check(probe, RepairMode::kAll);
  EXPECT_EQ(repaired.corruptions_fixed, 32u);
  EXPECT_EQ(repaired.dropped.size(), 32u);
  ExpectRepairConverges(device, "torn L2 into the journal and itself");
  for (uint64_t j = 0; j < 64; ++j) {
    EXPECT_EQ(Load64(device.bytes(), torn.l2_offset + j * 8) == 0, j >= 32) << "entry " << j;
  }
  engine::OpenOptions read_only;
  read_only.read_only = true;
  auto image = engine::Image::Open(device, read_only);
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  std::vector<uint8_t> guest(32 << 10);
  ASSERT_TRUE((*image)->Read(0, guest).ok());
  EXPECT_EQ(std::vector<uint8_t>(guest.begin(), guest.begin() + (16 << 10)),
            std::vector<uint8_t>(16 << 10, 0xab));
  EXPECT_EQ(std::vector<uint8_t>(guest.begin() + (16 << 10), guest.end()),
            std::vector<uint8_t>(16 << 10, 0));
}

// A journal area the header names over the active L1 table cannot be a
// journal (replaying it would write over the L1): repair discards it (the
// journal-valid and journal-dirty bits cleared), the image converges and
// opens with its data, and the journal policy then makes a new journal.
TEST(Repair, DiscardsAJournalOverlappingTheActiveL1) {
  JournalImage made = MakeRc1JournalImage();
  ASSERT_FALSE(made.bytes.empty());
  engine::Header header = made.header;
  for (engine::HeaderExtension& e : header.unknown_extensions) {
    if (e.type == engine::journal::kExtJournal) {
      e.data = engine::journal::EncodeLocation({header.l1_table_offset, 4096});
    }
  }
  header.incompatible_features |= f::kIncompatJournalDirty;
  auto cluster0 = engine::EncodeHeader(header);
  ASSERT_TRUE(cluster0.ok()) << cluster0.status().ToString();
  std::copy(cluster0->begin(), cluster0->end(), made.bytes.begin());
  MemoryDevice device(made.bytes);
  ASSERT_NE(FindKind(Check(device, RepairMode::kNone), FindingKind::kRefcountOverflow), nullptr);
  ExpectRepairConverges(device, "journal over the active L1");
  EXPECT_EQ(Load64(device.bytes(), f::kOffAutoclearFeatures) & f::kAutoclearJournalValid, 0u);
  EXPECT_EQ(Load64(device.bytes(), f::kOffIncompatibleFeatures) & f::kIncompatJournalDirty, 0u);
  engine::OpenOptions journal_policy;
  journal_policy.policy = engine::OrderingPolicy::kJournal;
  journal_policy.journal.size_bytes = 8192;
  auto image = engine::Image::Open(device, journal_policy);
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  std::vector<uint8_t> guest(16 << 10);
  ASSERT_TRUE((*image)->Read(0, guest).ok());
  EXPECT_EQ(guest, std::vector<uint8_t>(16 << 10, 0xab));
  ASSERT_TRUE((*image)->Close().ok());
  EXPECT_TRUE(Clean(Check(device, RepairMode::kNone)));
}

// With 1-bit refcounts a bitmap data cluster that is also an L2 table
// overflowed the count; repair discards the bitmaps before counting them.
TEST(Repair, DiscardsBitmapsWhoseDataClusterHasAnotherOwner) {
  TempDir dir;
  const std::string path = dir.File("bitmap.qcow2");
  ASSERT_TRUE(MakeImage(path, "-o cluster_size=512,refcount_bits=1", "1M", {}));
  ASSERT_EQ(RunCommand("qemu-img bitmap --add '" + path + "' b0").exit_code, 0);
  ASSERT_EQ(RunCommand("qemu-io -c 'write -P 0x11 0 64k' '" + path + "'").exit_code, 0);
  std::vector<uint8_t> image = ReadFileBytes(path);
  auto header = engine::DecodeHeader({image.data(), 512}, image.size());
  ASSERT_TRUE(header.ok() && header->bitmaps.has_value());
  const uint64_t table = Load64(image, header->bitmaps->directory_offset);
  ASSERT_NE(Load64(image, table), 0u) << "the bitmap has a data cluster";
  Store64(image, table, Load64(image, header->l1_table_offset) & f::kL1EntryOffsetMask);
  MemoryDevice device(image);
  ASSERT_NE(FindKind(Check(device, RepairMode::kNone), FindingKind::kRefcountOverflow), nullptr);
  ExpectRepairConverges(device, "bitmap data cluster on an L2 table");
  EXPECT_EQ(Load64(device.bytes(), f::kOffAutoclearFeatures) & f::kAutoclearBitmaps, 0u);
}

// Hostile bytes anywhere in the metadata give findings or errors, never a
// crash (the sanitizer build runs this too), and repair converges.
RC_GTEST_PROP(Check, HostileBytesNeverCrash, ()) {
  static const auto* base = new std::vector<uint8_t>(MakeBytes("-o cluster_size=4096", true));
  std::vector<uint8_t> image = *base;
  const size_t flips = *rc::gen::inRange<size_t>(1, 8);
  for (size_t i = 0; i < flips; ++i) {
    // Mostly metadata: the first 24 clusters hold header, tables and L2s.
    const size_t at = *rc::gen::inRange<size_t>(0, std::min<size_t>(image.size(), 24 * 4096));
    image[at] = *rc::gen::arbitrary<uint8_t>();
  }
  MemoryDevice device(image, {}, uint64_t{1} << 28);
  auto checked = CheckImage(device, {RepairMode::kNone});
  RC_ASSERT(device.bytes() == image);  // a check writes nothing
  auto repaired = CheckImage(device, {RepairMode::kAll});
  if (!checked.ok() || !repaired.ok()) return;  // refused (bad header, limits): fine
  if (repaired->check_errors == 0 && repaired->corruptions == 0) {
    auto again = CheckImage(device, {RepairMode::kNone});
    RC_ASSERT(again.ok());
    RC_ASSERT(again->corruptions == 0u);
  }
}

// The lock follows QEMU's protocol both ways: a repair refuses an image
// qemu-io holds for writing, and qemu-io cannot write an image we repair.
TEST(ImageLock, ConflictsWithQemuIoBothWays) {
  TempDir dir;
  const std::string path = dir.File("locked.qcow2");
  ASSERT_TRUE(MakeImage(path, "", "1M", {}));
  {
    auto lock = engine::ImageLock::Acquire(path, engine::ImageLock::Access::kWrite);
    ASSERT_TRUE(lock.ok()) << lock.status().ToString();
    EXPECT_NE(RunCommand("qemu-io -c 'write 0 512' '" + path + "'").exit_code, 0);
  }
  EXPECT_EQ(RunCommand("qemu-io -c 'write 0 512' '" + path + "'").exit_code, 0) << "released";

  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    execlp("qemu-io", "qemu-io", "-c", "sleep 5000", path.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  bool refused = false;
  for (int i = 0; i < 50 && !refused; ++i) {  // until qemu-io has opened the image
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto lock = engine::ImageLock::Acquire(path, engine::ImageLock::Access::kWrite);
    refused = !lock.ok() && lock.status().code() == StatusCode::kBusy;
    if (refused) {
      EXPECT_NE(lock.status().message().find("Failed to get"), std::string::npos);
    }
  }
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_TRUE(refused);
}

// `qcrash check --output=json` prints qemu-img's fields with qemu-img's values
// and exit code; -r all repairs.
TEST(CheckCommand, JsonMatchesQemuImg) {
  // ctest runs tests in the build root, where the qcrash binary lands. (The
  // QCRASH_BINARY_DIR variable does not reach discovered tests: only the
  // first element of QcrashTest.cmake's ENVIRONMENT list survives.)
  const char* binary_dir = std::getenv("QCRASH_BINARY_DIR");
  const std::string qcrash =
      (binary_dir ? std::string(binary_dir) : std::filesystem::current_path().string()) + "/qcrash";
  if (access(qcrash.c_str(), X_OK) != 0) GTEST_SKIP() << "no qcrash binary at " << qcrash;
  TempDir dir;
  for (Corruption c :
       {Corruption::kLeak, Corruption::kSharedCluster, Corruption::kCompressedCopied}) {
    std::vector<uint8_t> image = Base64k();
    ASSERT_TRUE(ApplyCorruption(image, c, 0).ok);
    const std::string path = dir.File("img.qcow2");
    WriteFileBytes(path, image);
    const CommandResult ours =
        RunCommand("cd '" + dir.File("") + "' && " + qcrash + " check --output=json img.qcow2");
    const CommandResult qemu =
        RunCommand("cd '" + dir.File("") + "' && qemu-img check --output=json img.qcow2");
    EXPECT_EQ(ours.exit_code, qemu.exit_code) << CorruptionName(c);
    auto ours_json = nlohmann::ordered_json::parse(ours.out);
    const auto qemu_json = nlohmann::ordered_json::parse(qemu.out);
    ASSERT_TRUE(ours_json.contains("findings"));
    ours_json.erase("findings");
    EXPECT_EQ(ours_json.dump(4), qemu_json.dump(4)) << CorruptionName(c);
    EXPECT_EQ(RunCommand(qcrash + " check -r all '" + path + "'").exit_code, 0);
    EXPECT_EQ(RunCommand("qemu-img check '" + path + "'").exit_code, 0);
  }
}

}  // namespace
}  // namespace qcrash::check_test
