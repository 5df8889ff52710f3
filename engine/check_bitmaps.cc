// Check of persistent dirty bitmaps (QCOW2-NOTES §7): the directory, the
// bitmap tables and their data clusters are owners like any other metadata.
// As in QEMU, bitmaps count only while autoclear bit 0 says they are valid.
#include "engine/check_internal.h"
#include "engine/endian.h"
#include "engine/repair_plan.h"

namespace qcrash::engine::check_internal {
namespace {

namespace f = format;

constexpr uint64_t kBitmapEntryOffsetMask = 0x00FFFFFFFFFFFE00ULL;
constexpr uint64_t kBitmapEntryReservedMask = 0xFF000000000001FEULL;
constexpr uint32_t kDirectoryEntryFixedBytes = 24;

bool BitmapsValid(const CheckContext& ctx) {
  return ctx.header.bitmaps && (ctx.header.autoclear_features & f::kAutoclearBitmaps) &&
         ctx.header.bitmaps->nb_bitmaps > 0;
}

bool InvalidTableEntry(const CheckContext& ctx, uint64_t entry) {
  const uint64_t offset = entry & kBitmapEntryOffsetMask;
  return (entry & kBitmapEntryReservedMask) || (offset & (ctx.cluster_bytes - 1)) ||
         (offset != 0 && (entry & 1));
}

// A corrupt bitmap structure, proposed for a discard of every bitmap
// (autoclear bit 0 cleared, as a writer that does not know bitmaps would):
// they are only dirty-tracking metadata, no guest data, and their clusters
// become leaks. QEMU's check -r all leaves them; qcrash must leave a clean
// image. Returns true when repair discards them (DecideDiscard).
bool BitmapCorruption(CheckContext& ctx, FindingKind kind, uint64_t offset, std::string owner,
                      const std::string& what) {
  return DecideDiscard(ctx, {DiscardProposal::Structure::kBitmaps, kind, offset, std::move(owner),
                             what, Severity::kCorruption, "ERROR " + what});
}

// Repair only (PlansDiscards): every bitmap table entry is valid before any
// bitmap counts, since one invalid entry discards them all.
Status ValidateBitmapTables(CheckContext& ctx) {
  for (const BitmapInfo& bitmap : ctx.bitmaps) {
    std::vector<uint8_t> table(uint64_t{bitmap.table_entries} * 8);
    QCRASH_RETURN_IF_ERROR(ctx.ReadZeroFilled(bitmap.table_offset, table));
    for (uint32_t i = 0; i < bitmap.table_entries; ++i) {
      const uint64_t entry = LoadBe64(&table[i * 8]);
      if (!InvalidTableEntry(ctx, entry)) continue;
      BitmapCorruption(ctx, FindingKind::kReservedBits, bitmap.table_offset + i * 8,
                       "bitmap '" + bitmap.name + "' table[" + std::to_string(i) + "]",
                       "bitmap table entry " + HexOffset(entry) + " is invalid");
      return Status::Ok();
    }
  }
  return Status::Ok();
}

}  // namespace

// Parses the directory into ctx.bitmaps.
Status ReadBitmapEntries(CheckContext& ctx) {
  const BitmapsExtension& ext = *ctx.header.bitmaps;
  const std::string owner = "bitmap directory";
  if (ext.directory_size > kMaxBitmapDirectoryBytes || ext.nb_bitmaps > kMaxBitmaps ||
      (ext.directory_offset & (ctx.cluster_bytes - 1)) != 0 ||
      ext.directory_offset + ext.directory_size > ctx.file_bytes) {
    BitmapCorruption(ctx, FindingKind::kBitmap, ext.directory_offset, owner,
                     "bitmap directory at " + HexOffset(ext.directory_offset) + " (" +
                         std::to_string(ext.directory_size) + " bytes, " +
                         std::to_string(ext.nb_bitmaps) + " bitmaps) is invalid");
    return Status::Ok();
  }
  std::vector<uint8_t> directory(ext.directory_size);
  QCRASH_RETURN_IF_ERROR(ctx.device.Read(ext.directory_offset, directory));
  uint64_t at = 0;
  for (uint32_t i = 0; i < ext.nb_bitmaps; ++i) {
    if (at + kDirectoryEntryFixedBytes > directory.size()) {
      BitmapCorruption(
          ctx, FindingKind::kBitmap, ext.directory_offset + at, owner,
          "bitmap directory entry " + std::to_string(i) + " runs past the directory size");
      return Status::Ok();
    }
    const uint8_t* e = &directory[at];
    BitmapInfo bitmap;
    bitmap.table_offset = LoadBe64(e);
    bitmap.table_entries = LoadBe32(e + 8);
    const uint16_t name_bytes = LoadBe16(e + 18);
    const uint32_t extra_bytes = LoadBe32(e + 20);
    const uint64_t entry_bytes =
        (kDirectoryEntryFixedBytes + uint64_t{extra_bytes} + name_bytes + 7) & ~uint64_t{7};
    if (at + entry_bytes > directory.size()) {
      BitmapCorruption(
          ctx, FindingKind::kBitmap, ext.directory_offset + at, owner,
          "bitmap directory entry " + std::to_string(i) + " runs past the directory size");
      return Status::Ok();
    }
    const uint8_t* name = e + kDirectoryEntryFixedBytes + extra_bytes;
    bitmap.name.assign(name, name + name_bytes);
    if (uint64_t{bitmap.table_entries} * 8 > kMaxBitmapTableBytes ||
        (bitmap.table_offset & (ctx.cluster_bytes - 1)) != 0) {
      BitmapCorruption(ctx, FindingKind::kBitmap, bitmap.table_offset,
                       "bitmap '" + bitmap.name + "'", "bitmap table is misaligned or too large");
    } else {
      ctx.bitmaps.push_back(std::move(bitmap));
    }
    at += entry_bytes;
  }
  return Status::Ok();
}

Status ReadBitmapDirectory(CheckContext& ctx) {
  if (!BitmapsValid(ctx)) return Status::Ok();
  QCRASH_RETURN_IF_ERROR(ReadBitmapEntries(ctx));
  if (PlansDiscards(ctx) && !ctx.discard_bitmaps) QCRASH_RETURN_IF_ERROR(ValidateBitmapTables(ctx));
  if (ctx.discard_bitmaps) {
    // From here on the walk sees the image as it will be: no valid bitmaps.
    ctx.bitmaps.clear();
    ctx.header.autoclear_features &= ~f::kAutoclearBitmaps;
  }
  return Status::Ok();
}

namespace {

// Whether a bitmap structure (the directory or a bitmap table) shares a
// cluster with metadata marked so far or with another bitmap structure.
// Work is bounded by the file's clusters: the first cluster seen twice ends it.
bool BitmapsOverlap(const CheckContext& ctx) {
  std::vector<bool> seen(ctx.nb_clusters + 2, false);
  auto clash = [&](uint64_t offset, uint64_t bytes) {
    if (bytes == 0 || ctx.PastEnd(offset, bytes)) return false;
    const uint64_t last = (offset + bytes - 1) >> ctx.header.cluster_bits;
    for (uint64_t k = offset >> ctx.header.cluster_bits; k <= last && k < seen.size(); ++k) {
      if (seen[k] || ctx.UseOf(k) != ClusterUse::kNone) return true;
      seen[k] = true;
    }
    return false;
  };
  const BitmapsExtension& ext = *ctx.header.bitmaps;
  if (clash(ext.directory_offset, ext.directory_size)) return true;
  for (const BitmapInfo& bitmap : ctx.bitmaps) {
    if (clash(bitmap.table_offset, uint64_t{bitmap.table_entries} * 8)) return true;
  }
  return false;
}

// kAll, in phase 2 once every L1 and L2 table is counted and all metadata
// is marked: whether a bitmap data cluster is also metadata, a guest data
// cluster or another bitmap's data. Counting it would make a cluster shared
// (with 1-bit refcounts an overflow no repair can fix), so the bitmaps go
// before any of their references count. Sets `offset` to the cluster.
Result<bool> BitmapDataOverlaps(CheckContext& ctx, uint64_t* offset) {
  std::vector<bool> seen(ctx.nb_clusters + 2, false);
  for (const BitmapInfo& bitmap : ctx.bitmaps) {
    std::vector<uint8_t> table(uint64_t{bitmap.table_entries} * 8);
    QCRASH_RETURN_IF_ERROR(ctx.ReadZeroFilled(bitmap.table_offset, table));
    for (uint32_t i = 0; i < bitmap.table_entries; ++i) {
      *offset = LoadBe64(&table[i * 8]) & kBitmapEntryOffsetMask;
      if (*offset == 0 || ctx.PastEnd(*offset, ctx.cluster_bytes)) continue;
      const uint64_t k = *offset >> ctx.header.cluster_bits;
      if (k >= seen.size() || seen[k] || ctx.UseOf(k) != ClusterUse::kNone || ctx.Imrt(k) != 0) {
        return true;
      }
      seen[k] = true;
    }
  }
  return false;
}

}  // namespace

void MarkBitmaps(CheckContext& ctx) {
  if (!BitmapsValid(ctx)) return;
  // kAll: repair writes the other structure (or drops pointers into it), so
  // a bitmap sharing its clusters would change under it; bitmaps are only
  // dirty tracking, so they go rather than guest data or snapshots.
  if (PlansDiscards(ctx) && BitmapsOverlap(ctx) &&
      BitmapCorruption(ctx, FindingKind::kOverlap, ctx.header.bitmaps->directory_offset,
                       "bitmap directory", "a bitmap structure overlaps other metadata")) {
    ctx.bitmaps.clear();
    ctx.header.autoclear_features &= ~f::kAutoclearBitmaps;
    return;
  }
  const BitmapsExtension& ext = *ctx.header.bitmaps;
  if (!ctx.PastEnd(ext.directory_offset, ext.directory_size)) {
    ctx.MarkMetadata(ext.directory_offset, ext.directory_size, ClusterUse::kBitmapDirectory);
  }
  for (const BitmapInfo& bitmap : ctx.bitmaps) {
    const uint64_t bytes = uint64_t{bitmap.table_entries} * 8;
    if (!ctx.PastEnd(bitmap.table_offset, bytes)) {
      ctx.MarkMetadata(bitmap.table_offset, bytes, ClusterUse::kBitmapTable);
    }
  }
}

Status CountBitmaps(CheckContext& ctx) {
  if (!BitmapsValid(ctx)) return Status::Ok();
  uint64_t shared = 0;
  if (PlansDiscards(ctx)) {
    QCRASH_ASSIGN_OR_RETURN(const bool overlaps, BitmapDataOverlaps(ctx, &shared));
    if (overlaps &&
        BitmapCorruption(ctx, FindingKind::kOverlap, shared, "bitmap data",
                         "bitmap data cluster " + HexOffset(shared) + " has another owner")) {
      ctx.bitmaps.clear();
      ctx.header.autoclear_features &= ~f::kAutoclearBitmaps;
      return Status::Ok();
    }
  }
  const BitmapsExtension& ext = *ctx.header.bitmaps;
  ctx.AddReference(ext.directory_offset, ext.directory_size, "bitmap directory");
  for (const BitmapInfo& bitmap : ctx.bitmaps) {
    const std::string owner = "bitmap '" + bitmap.name + "'";
    const uint64_t bytes = uint64_t{bitmap.table_entries} * 8;
    ctx.AddReference(bitmap.table_offset, bytes, owner + " table");
    std::vector<uint8_t> table(bytes);
    QCRASH_RETURN_IF_ERROR(ctx.ReadZeroFilled(bitmap.table_offset, table));
    for (uint32_t i = 0; i < bitmap.table_entries; ++i) {
      const uint64_t entry = LoadBe64(&table[i * 8]);
      const uint64_t offset = entry & kBitmapEntryOffsetMask;
      if (InvalidTableEntry(ctx, entry)) {
        ctx.Report(FindingKind::kReservedBits, Severity::kCorruption, false,
                   bitmap.table_offset + i * 8, owner + " table[" + std::to_string(i) + "]",
                   "ERROR bitmap table entry " + HexOffset(entry) + " is invalid");
        continue;
      }
      if (offset != 0) {
        ctx.AddReference(offset, ctx.cluster_bytes, owner + " data[" + std::to_string(i) + "]");
      }
    }
  }
  return Status::Ok();
}

}  // namespace qcrash::engine::check_internal
