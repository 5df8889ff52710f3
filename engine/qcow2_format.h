// qcow2 on-disk constants: every field with its byte range, every mask, and
// qcrash's limits against hostile images. The prose is in engine/FORMAT.md;
// the reference is QEMU's docs/interop/qcow2.txt. All integers are big-endian.
#pragma once

#include <cstdint>
#include <span>

namespace qcrash::engine::format {

// ---- Header (file offset 0) -------------------------------------------------
inline constexpr uint32_t kMagic = 0x514649FB;  // "QFI\xfb"
// byte range            field
inline constexpr uint32_t kOffMagic = 0;                   //   0..3   magic
inline constexpr uint32_t kOffVersion = 4;                 //   4..7   version (2 or 3)
inline constexpr uint32_t kOffBackingFileOffset = 8;       //   8..15  backing_file_offset
inline constexpr uint32_t kOffBackingFileSize = 16;        //  16..19  backing_file_size
inline constexpr uint32_t kOffClusterBits = 20;            //  20..23  cluster_bits
inline constexpr uint32_t kOffSize = 24;                   //  24..31  size (guest bytes)
inline constexpr uint32_t kOffCryptMethod = 32;            //  32..35  crypt_method
inline constexpr uint32_t kOffL1Size = 36;                 //  36..39  l1_size (entries)
inline constexpr uint32_t kOffL1TableOffset = 40;          //  40..47  l1_table_offset
inline constexpr uint32_t kOffRefcountTableOffset = 48;    //  48..55  refcount_table_offset
inline constexpr uint32_t kOffRefcountTableClusters = 56;  //  56..59  refcount_table_clusters
inline constexpr uint32_t kOffNbSnapshots = 60;            //  60..63  nb_snapshots
inline constexpr uint32_t kOffSnapshotsOffset = 64;        //  64..71  snapshots_offset
inline constexpr uint32_t kV2HeaderLength = 72;            //  v2 ends here
inline constexpr uint32_t kOffIncompatibleFeatures = 72;   //  72..79
inline constexpr uint32_t kOffCompatibleFeatures = 80;     //  80..87
inline constexpr uint32_t kOffAutoclearFeatures = 88;      //  88..95
inline constexpr uint32_t kOffRefcountOrder = 96;          //  96..99
inline constexpr uint32_t kOffHeaderLength = 100;          // 100..103
inline constexpr uint32_t kV3MinHeaderLength = 104;
inline constexpr uint32_t kOffCompressionType = 104;     // 104 (if header_length > 104)
inline constexpr uint32_t kV3HeaderLengthWritten = 112;  // 104 + compression_type + padding
static_assert(kOffSnapshotsOffset + 8 == kV2HeaderLength);
static_assert(kOffHeaderLength + 4 == kV3MinHeaderLength);
static_assert(kV3HeaderLengthWritten % 8 == 0);

// The first header fields QEMU rewrites with one write when switching tables
// (l1_table_offset ... snapshots) all sit inside the first sector.
static_assert(kOffSnapshotsOffset + 8 <= 512);

// ---- Feature bits -------------------------------------------------------------
inline constexpr uint64_t kIncompatDirty = uint64_t{1} << 0;
inline constexpr uint64_t kIncompatCorrupt = uint64_t{1} << 1;
inline constexpr uint64_t kIncompatDataFile = uint64_t{1} << 2;
inline constexpr uint64_t kIncompatCompressionType = uint64_t{1} << 3;
inline constexpr uint64_t kIncompatExtendedL2 = uint64_t{1} << 4;
// qcrash's journal bit, taken from the high end (see engine/FORMAT.md).
inline constexpr uint64_t kIncompatJournalDirty = uint64_t{1} << 63;
inline constexpr uint64_t kIncompatKnown = kIncompatDirty | kIncompatCorrupt |
                                           kIncompatCompressionType | kIncompatExtendedL2 |
                                           kIncompatJournalDirty;  // what we implement

inline constexpr uint64_t kCompatLazyRefcounts = uint64_t{1} << 0;

inline constexpr uint64_t kAutoclearBitmaps = uint64_t{1} << 0;
inline constexpr uint64_t kAutoclearDataFileRaw = uint64_t{1} << 1;
inline constexpr uint64_t kAutoclearJournalValid = uint64_t{1} << 63;
inline constexpr uint64_t kAutoclearKnown =
    kAutoclearJournalValid;  // bits we keep on a read-write open

// ---- Header extensions --------------------------------------------------------
inline constexpr uint32_t kExtEnd = 0x00000000;
inline constexpr uint32_t kExtBackingFormat = 0xE2792ACA;
inline constexpr uint32_t kExtFeatureNameTable = 0x6803F857;
inline constexpr uint32_t kExtBitmaps = 0x23852875;
inline constexpr uint32_t kExtCryptoHeader = 0x0537BE77;
inline constexpr uint32_t kExtDataFile = 0x44415441;
inline constexpr uint32_t kFeatureNameEntryBytes = 48;  // u8 type, u8 bit, char name[46]
inline constexpr uint32_t kFeatureNameBytes = 46;

// ---- L1 / L2 entries ----------------------------------------------------------
inline constexpr uint64_t kOflagCopied = uint64_t{1} << 63;              // refcount is exactly 1
inline constexpr uint64_t kOflagCompressed = uint64_t{1} << 62;          // L2 only
inline constexpr uint64_t kOflagZero = uint64_t{1} << 0;                 // L2 only, v3 only
inline constexpr uint64_t kL1EntryOffsetMask = 0x00FFFFFFFFFFFE00ULL;    // bits 9..55
inline constexpr uint64_t kL1EntryReservedMask = 0x7F000000000001FFULL;  // bits 0..8, 56..62
inline constexpr uint64_t kL2EntryOffsetMask = 0x00FFFFFFFFFFFE00ULL;    // bits 9..55
inline constexpr uint64_t kL2EntryReservedMask = 0x3F000000000001FEULL;  // bits 1..8, 56..61
inline constexpr uint64_t kRefcountTableOffsetMask = 0xFFFFFFFFFFFFFE00ULL;  // bits 9..63
inline constexpr uint64_t kRefcountTableReservedMask = 0x1FFULL;
static_assert((kL1EntryOffsetMask & kL1EntryReservedMask) == 0);
static_assert((kL1EntryOffsetMask | kL1EntryReservedMask | kOflagCopied) == ~uint64_t{0});
static_assert((kL2EntryOffsetMask | kL2EntryReservedMask | kOflagCopied | kOflagCompressed |
               kOflagZero) == ~uint64_t{0});
inline constexpr uint32_t kL1EntryBytes = 8;
inline constexpr uint32_t kL2EntryBytes = 8;           // a standard entry; with extended L2 ...
inline constexpr uint32_t kExtendedL2EntryBytes = 16;  // ... it is followed by a bitmap word
// Extended L2 (incompatible bit 4): 32 subclusters per cluster; bitmap bits
// 0..31 say "allocated", bits 32..63 "reads as zeroes"; never both.
inline constexpr uint32_t kSubclusters = 32;
inline constexpr uint64_t kL2BitmapAllocMask = 0xFFFFFFFFULL;
inline constexpr uint64_t kL2BitmapZeroMask = 0xFFFFFFFF00000000ULL;
inline constexpr uint32_t kMinExtendedL2ClusterBits = 14;  // QEMU: 16 KiB clusters at least
inline constexpr uint32_t kRefcountTableEntryBytes = 8;
inline constexpr uint32_t kCompressedSectorBytes = 512;
// compression_type values (header byte 104).
inline constexpr uint8_t kCompressionZlib = 0;
inline constexpr uint8_t kCompressionZstd = 1;

// ---- Ranges and qcrash's limits (in the spirit of QEMU's) -----------------------
inline constexpr uint32_t kMinClusterBits = 9;
inline constexpr uint32_t kMaxClusterBits = 21;
inline constexpr uint32_t kDefaultClusterBits = 16;
inline constexpr uint32_t kMaxRefcountOrder = 6;
inline constexpr uint32_t kV2RefcountOrder = 4;
inline constexpr uint64_t kMaxL1TableBytes = uint64_t{32} << 20;       // QEMU: 32 MiB
inline constexpr uint64_t kMaxRefcountTableBytes = uint64_t{8} << 20;  // QEMU: 8 MiB
inline constexpr uint32_t kMaxSnapshots = 65536;
inline constexpr uint32_t kMaxBackingFileNameBytes = 1023;
inline constexpr uint64_t kMaxImageSizeBytes = uint64_t{1} << 55;  // offsets are 56 bits
inline constexpr uint64_t kMaxGuestSizeBytes = uint64_t{1} << 55;

// Cluster 0 holds the header, the extensions and the backing file name.
inline constexpr uint64_t ClusterBytes(uint32_t cluster_bits) {
  return uint64_t{1} << cluster_bits;
}
inline constexpr uint32_t L2EntryBytes(bool extended_l2) {
  return extended_l2 ? kExtendedL2EntryBytes : kL2EntryBytes;
}
inline constexpr uint64_t L2Entries(uint32_t cluster_bits, bool extended_l2) {
  return ClusterBytes(cluster_bits) / L2EntryBytes(extended_l2);
}
inline constexpr uint64_t RefcountBlockEntries(uint32_t cluster_bits, uint32_t refcount_order) {
  return (ClusterBytes(cluster_bits) * 8) >> refcount_order;
}
inline constexpr uint64_t MaxRefcount(uint32_t refcount_order) {
  return refcount_order == 6 ? ~uint64_t{0} : (uint64_t{1} << (1u << refcount_order)) - 1;
}
// Guest bytes one L1 entry covers.
inline constexpr uint64_t L1EntryCoverBytes(uint32_t cluster_bits, bool extended_l2) {
  return L2Entries(cluster_bits, extended_l2) << cluster_bits;
}
// L1 entries a guest size needs.
inline constexpr uint64_t L1EntriesFor(uint64_t size_bytes, uint32_t cluster_bits,
                                       bool extended_l2) {
  const uint64_t cover = L1EntryCoverBytes(cluster_bits, extended_l2);
  return size_bytes / cover + (size_bytes % cover != 0 ? 1 : 0);
}

// ---- Compressed L2 entries -------------------------------------------------------
// x = 62 - (cluster_bits - 8): bits 0..x-1 host byte offset, bits x..61 extra sectors.
inline constexpr uint32_t CompressedOffsetBits(uint32_t cluster_bits) {
  return 62 - (cluster_bits - 8);
}
struct CompressedExtent {
  uint64_t host_offset;  // byte offset of the deflate stream
  uint64_t bytes;        // bytes to read from host_offset
};
inline constexpr CompressedExtent DecodeCompressed(uint64_t entry, uint32_t cluster_bits) {
  const uint32_t x = CompressedOffsetBits(cluster_bits);
  const uint64_t host_offset = entry & ((uint64_t{1} << x) - 1);
  const uint64_t sectors = ((entry >> x) & ((uint64_t{1} << (cluster_bits - 8)) - 1)) + 1;
  return {host_offset, sectors * kCompressedSectorBytes - (host_offset & 511)};
}
inline constexpr uint64_t EncodeCompressed(uint64_t host_offset, uint64_t bytes,
                                           uint32_t cluster_bits) {
  const uint32_t x = CompressedOffsetBits(cluster_bits);
  const uint64_t end = host_offset + bytes;
  const uint64_t sectors = (end + 511) / 512 - host_offset / 512;  // >= 1
  return kOflagCompressed | ((sectors - 1) << x) | host_offset;
}

// ---- Refcount blocks ----------------------------------------------------------------
// Widths >= 8 bits are big-endian integers; narrower ones pack from the least
// significant bit of each byte: entry k lives in byte k*bits/8 at shift (k*bits)%8.
uint64_t GetRefcount(std::span<const uint8_t> refcount_block, uint64_t index,
                     uint32_t refcount_order);
void SetRefcount(std::span<uint8_t> refcount_block, uint64_t index, uint32_t refcount_order,
                 uint64_t value);

// ---- Sizes (qemu-img measure) -------------------------------------------------------
// The refcount table and blocks that count `clusters` host clusters and
// themselves: the fixed point where adding them needs no further block or
// table cluster (bytes, whole clusters).
uint64_t RefcountMetadataBytes(uint64_t clusters, uint32_t cluster_bits, uint32_t refcount_order);
// The file size of an image of `size_bytes` with every cluster allocated:
// header cluster, every L2 table, the L1 table, the refcount structures,
// and the data (the disk rounded up to whole clusters). What QEMU reports
// as "fully allocated" and writes for preallocation=full.
uint64_t FullyAllocatedBytes(uint64_t size_bytes, uint32_t cluster_bits, uint32_t refcount_order,
                             bool extended_l2);
// Bytes a persistent bitmap of a `disk_bytes` disk with 2^granularity_bits
// byte granules takes in an image of 2^cluster_bits clusters, as measure
// counts it: its data clusters (all assumed allocated) and its bitmap table.
uint64_t BitmapBytes(uint64_t disk_bytes, uint32_t granularity_bits, uint32_t cluster_bits);
// A bitmap directory entry's bytes: 24 fixed, the name, padded to 8.
inline constexpr uint64_t BitmapDirectoryEntryBytes(uint64_t name_bytes) {
  return (24 + name_bytes + 7) / 8 * 8;
}

}  // namespace qcrash::engine::format
