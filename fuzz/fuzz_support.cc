// Shared fuzz helpers: input decoding, bounded devices, bounded guest reads
// and failure reporting.
#include "fuzz/fuzz_support.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "engine/endian.h"
#include "engine/header.h"
#include "engine/image.h"
#include "engine/qcow2_format.h"
#include "engine/snapshot_table.h"

namespace qcrash::fuzz {

namespace f = engine::format;

uint8_t ByteReader::U8() { return pos_ < size_ ? data_[pos_++] : 0; }
uint16_t ByteReader::U16() { return static_cast<uint16_t>((U8() << 8) | U8()); }
uint32_t ByteReader::U32() { return (uint32_t{U16()} << 16) | U16(); }
uint64_t ByteReader::U64() { return (uint64_t{U32()} << 32) | U32(); }

ImageAndTrailer SplitTrailer(const uint8_t* data, size_t size) {
  if (size == 0) return {};
  const size_t records = data[size - 1] % kMaxTrailerRecords;
  const size_t trailer_bytes = std::min(size - 1, records * kTrailerRecordBytes);
  const size_t image_bytes = size - 1 - trailer_bytes;
  return {{data, image_bytes}, {data + image_bytes, trailer_bytes}};
}

std::unique_ptr<MemoryDevice> MakeDevice(std::span<const uint8_t> image) {
  return std::make_unique<MemoryDevice>(std::vector<uint8_t>(image.begin(), image.end()),
                                        DeviceGeometry{}, kMaxDeviceBytes);
}

engine::OpenOptions SmallOpenOptions(bool read_only) {
  engine::OpenOptions options;
  options.read_only = read_only;
  options.l2_cache_tables = 2;
  options.refcount_cache_blocks = 2;
  options.extent_clusters = 4;
  return options;
}

namespace {

// Reads guest cluster `guest_cluster` (errors are expected on hostile input).
void ReadCluster(engine::Image& image, uint64_t guest_cluster, std::vector<uint8_t>& buffer) {
  const uint64_t cluster_bytes = image.header().cluster_bytes();
  const uint64_t offset = guest_cluster * cluster_bytes;
  if (offset >= image.size_bytes()) return;
  const uint64_t length = std::min(cluster_bytes, image.size_bytes() - offset);
  buffer.resize(length);
  (void)image.Read(offset, buffer);
}

// Reads the clusters the image's own L2 tables map, within a budget of
// clusters: the allocated part of the guest view, wherever it lies.
void ReadMappedClusters(BlockDevice& device, engine::Image& image, std::vector<uint8_t>& buffer) {
  const engine::Header& h = image.header();
  const uint64_t cluster_bytes = h.cluster_bytes();
  const uint64_t l2_entries = h.l2_entries();
  const uint64_t entry_bytes = h.l2_entry_bytes();
  uint64_t budget = kMaxMappedVisits;
  // Open() read the whole L1 table, so it lies inside the (bounded) device.
  std::vector<uint8_t> l1_table(uint64_t{h.l1_size} * 8);
  if (!device.Read(h.l1_table_offset, l1_table).ok()) return;
  std::vector<uint8_t> l2_table(cluster_bytes);
  for (uint64_t l1_index = 0; l1_index < h.l1_size && budget > 0; ++l1_index) {
    const uint64_t l2_offset = LoadBe64(&l1_table[l1_index * 8]) & f::kL1EntryOffsetMask;
    if (l2_offset == 0) continue;
    --budget;
    if (!device.Read(l2_offset, l2_table).ok()) continue;
    for (uint64_t i = 0; i < l2_entries && budget > 0; ++i) {
      if (LoadBe64(&l2_table[i * entry_bytes]) == 0 &&
          (entry_bytes == 8 || LoadBe64(&l2_table[i * entry_bytes + 8]) == 0)) {
        continue;
      }
      --budget;
      ReadCluster(image, l1_index * l2_entries + i, buffer);
    }
  }
}

}  // namespace

void ReadGuestView(BlockDevice& device, engine::OpenOptions options) {
  options.read_only = true;
  auto opened = engine::Image::Open(device, options);
  if (!opened.ok()) return;
  engine::Image& image = **opened;
  const uint64_t cluster_bytes = image.header().cluster_bytes();
  std::vector<uint8_t> buffer;
  for (uint64_t cluster = 0; cluster < kMaxHeadClusters; ++cluster) {
    ReadCluster(image, cluster, buffer);
  }
  if (image.size_bytes() > 0) ReadCluster(image, (image.size_bytes() - 1) / cluster_bytes, buffer);
  ReadMappedClusters(device, image, buffer);
  // An unaligned read that spans a cluster boundary takes the split path.
  if (image.size_bytes() > cluster_bytes + 512) {
    buffer.resize(1024);
    (void)image.Read(cluster_bytes - 512, buffer);
  }
  if (image.size_bytes() / cluster_bytes <= kMaxMapClusters) (void)image.Map();
}

void Fail(const std::string& property, const std::string& detail) {
  std::fprintf(stderr, "\n==qcrash-fuzz== PROPERTY FAILED: %s\n==qcrash-fuzz== %s\n",
               property.c_str(), detail.c_str());
  std::fflush(stderr);
  std::abort();
}

#if QCRASH_FUZZ_HAS_CHECK
std::string DescribeReport(const engine::CheckReport& report) {
  std::string out = "check_errors=" + std::to_string(report.check_errors) +
                    " leaks=" + std::to_string(report.leaks) +
                    " corruptions=" + std::to_string(report.corruptions) +
                    " leaks_fixed=" + std::to_string(report.leaks_fixed) +
                    " corruptions_fixed=" + std::to_string(report.corruptions_fixed);
  size_t shown = 0;
  for (const engine::Finding& finding : report.findings) {
    if (finding.severity == engine::Severity::kInfo) continue;
    if (shown++ == 8) break;
    out += "\n  " + std::string(engine::FindingKindName(finding.kind)) + " " +
           HexOffset(finding.host_offset) + " " + finding.owner + ": " + finding.message;
  }
  return out;
}

bool IsClean(const engine::CheckReport& report) {
  return report.check_errors == 0 && report.leaks == 0 && report.corruptions == 0;
}

void TablesListInsideTheFile(std::span<const uint8_t> image) {
  auto header =
      engine::DecodeHeader(image.first(std::min<size_t>(image.size(), 2u << 20)), image.size());
  if (!header.ok()) return;
  MemoryDevice device;
  if (!device.Write(0, image).ok()) return;
  if (auto snapshots = engine::ReadSnapshotTable(device, *header); snapshots.ok()) {
    for (const engine::SnapshotEntry& s : *snapshots)
      if (s.offset >= image.size()) Fail("a snapshot entry starts inside the file", s.name);
  }
  if (auto bitmaps = engine::ReadBitmapDirectory(device, *header); bitmaps.ok()) {
    for (const engine::BitmapEntry& b : *bitmaps)
      if (b.offset >= image.size()) Fail("a bitmap entry starts inside the file", b.name);
  }
}

void CheckWritesNothing(std::span<const uint8_t> image) {
  auto device = MakeDevice(image);
  // A few findings kept are enough to exercise their formatting; the rest
  // are only counted (hostile images have thousands).
  auto report =
      engine::CheckImage(*device, {.repair = engine::RepairMode::kNone, .max_findings = 32});
  const std::span<const uint8_t> after = device->bytes();
  if (after.size() != image.size() || !std::equal(after.begin(), after.end(), image.begin())) {
    Fail("check without repair writes nothing", "the image bytes changed");
  }
  if (report.ok() && report->bytes_written != 0) {
    Fail("check without repair writes nothing", "bytes_written is not zero");
  }
}

void RepairLeavesCleanImage(std::span<const uint8_t> image) {
  auto device = MakeDevice(image);
  auto repair = engine::CheckImage(*device, {engine::RepairMode::kAll});
  if (!repair.ok()) return;  // the header is unusable: nothing to repair
  auto after = engine::CheckImage(*device, {engine::RepairMode::kNone});
  if (!after.ok()) Fail("a repaired image can be checked", after.status().ToString());
  // More references than the refcount width can count cannot be repaired
  // (QCOW2-NOTES §11, and QEMU agrees): the finding names the remedy, a
  // wider refcount_order. Such an image is out of this property's reach when
  // guest mappings are cross-linked (the overflowing reference is an L1 or
  // L2 entry, whose owner names an L1). An overflow charged to any other
  // owner (the journal, a bitmap, the refcount structure), or an overlap
  // left behind, means repair kept a pointer into metadata, which it must
  // drop before counting (issue 17).
  bool only_overflow = after->corruptions != 0 && after->check_errors == 0;
  for (const engine::Finding& finding : after->findings) {
    const bool problem = finding.severity == engine::Severity::kCorruption ||
                         finding.severity == engine::Severity::kCheckError;
    const bool overflow = finding.kind == engine::FindingKind::kRefcountOverflow;
    if (problem && !overflow) only_overflow = false;
    if (overflow && finding.owner.find(" L1[") == std::string::npos) only_overflow = false;
    if (finding.kind == engine::FindingKind::kOverlap) only_overflow = false;
  }
  if (only_overflow) return;
  if (!IsClean(*after)) {
    Fail("check is clean after check -r all",
         "after repair: " + DescribeReport(*after) + "\nrepair: " + DescribeReport(*repair));
  }
  auto again = engine::CheckImage(*device, {engine::RepairMode::kAll});
  if (!again.ok() || again->bytes_written != 0) {
    Fail("a second repair changes no byte",
         again.ok() ? std::to_string(again->bytes_written) + " bytes written"
                    : again.status().ToString());
  }
  ReadGuestView(*device, SmallOpenOptions(true));
}

namespace {

// Opens read-write, writes one sector at 0 (a change every enabled bitmap
// marks), closes. The first error ends it.
Status WriteSession(BlockDevice& device) {
  QCRASH_ASSIGN_OR_RETURN(auto image, engine::Image::Open(device, SmallOpenOptions(false)));
  if (image->size_bytes() >= 512) {
    const std::vector<uint8_t> sector(512, 0x5a);
    QCRASH_RETURN_IF_ERROR(image->Write(0, sector));
  }
  return image->Close();
}

}  // namespace

void BitmapsSurviveAWriteSession(std::span<const uint8_t> image) {
  {
    auto hostile = MakeDevice(image);
    (void)WriteSession(*hostile);
  }
  auto device = MakeDevice(image);
  auto repair = engine::CheckImage(*device, {engine::RepairMode::kAll});
  if (!repair.ok()) return;
  auto before = engine::CheckImage(*device, {engine::RepairMode::kNone});
  if (!before.ok() || !IsClean(*before)) return;  // RepairLeavesCleanImage's business
  const uint64_t end_before = device->SizeBytes();
  // The bitmaps that read before (a bitmap the engine cannot load, it
  // keeps as it found it).
  std::set<std::string> readable;
  {
    auto opened = engine::Image::Open(*device, SmallOpenOptions(true));
    if (!opened.ok()) return;
    auto bitmaps = (*opened)->Bitmaps();
    if (!bitmaps.ok()) return;
    for (const engine::BitmapEntry& entry : *bitmaps) {
      if ((*opened)->ReadBitmap(entry.name).ok()) readable.insert(entry.name);
    }
  }
  if (!WriteSession(*device).ok()) return;  // e.g. a limit, or a read-only image
  auto after = engine::CheckImage(*device, {engine::RepairMode::kNone});
  if (!after.ok())
    Fail("a write session on a clean image leaves it checkable", after.status().ToString());
  // Two exceptions, both QEMU's too, both found by this target: a table
  // or cluster the active tree refers to twice (a cross-link repair
  // counts) loses one reference to the write's copy-on-write, and the
  // other referrer is not given COPIED back (copied-mismatch); and
  // refcounts past the end of the file, which check does not look at,
  // become leaks once the write grows the file over them.
  bool clean = after->check_errors == 0;
  for (const engine::Finding& finding : after->findings) {
    if (finding.severity == engine::Severity::kCorruption &&
        finding.kind != engine::FindingKind::kCopiedMismatch)
      clean = false;
    if (finding.severity == engine::Severity::kLeak && finding.host_offset < end_before)
      clean = false;
  }
  if (!clean)
    Fail("a write session on a clean image with bitmaps leaves it clean", DescribeReport(*after));
  auto opened = engine::Image::Open(*device, SmallOpenOptions(true));
  if (!opened.ok()) Fail("the image opens after a write session", opened.status().ToString());
  auto bitmaps = (*opened)->Bitmaps();
  if (!bitmaps.ok())
    Fail("the bitmap directory reads after a write session", bitmaps.status().ToString());
  for (const engine::BitmapEntry& entry : *bitmaps) {
    if ((entry.flags & engine::kBitmapInUse) || !readable.count(entry.name)) continue;
    auto content = (*opened)->ReadBitmap(entry.name);
    if (!content.ok())
      Fail("a stored bitmap reads back", entry.name + ": " + content.status().ToString());
  }
}
#endif

}  // namespace qcrash::fuzz
