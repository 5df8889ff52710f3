// The walk of check: header fields, snapshot table, the metadata map
// (phase 1) and the reference count of every owner (phase 2, QEMU's
// calculate_refcounts). The walk decides nothing about repair: each broken
// entry it finds goes to the repair planner (engine/repair_plan.h) as a
// proposal, and the walk goes on with the entry the planner returns (in
// RepairMode::kAll, the edited one, kept in the walk's copy of the table;
// repair.cc writes those edits before any refcount changes).
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <optional>
#include <utility>

#include "engine/check_internal.h"
#include "engine/endian.h"
#include "engine/repair_plan.h"

namespace qcrash::engine::check_internal {
namespace {

namespace f = format;

uint64_t Align8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

// The first metadata use found in [offset, offset+size), or kNone.
ClusterUse MetadataIn(const ClusterLedger& ledger, uint32_t cluster_bits, uint64_t offset,
                      uint64_t size) {
  const uint64_t first = offset >> cluster_bits;
  const uint64_t last = (offset + size - 1) >> cluster_bits;
  for (uint64_t k = first; k <= last; ++k) {
    if (ledger.UseOf(k) != ClusterUse::kNone) return ledger.UseOf(k);
  }
  return ClusterUse::kNone;
}

// An L1 entry's proposal, with the fields every L1 proposal shares.
EntryProposal L1Proposal(const L1Source& source, uint32_t l1_index, uint64_t entry,
                         EntryProposal::Edit edit, FindingKind kind, uint64_t target,
                         std::string why) {
  EntryProposal p;
  p.table = EntryProposal::Table::kL1;
  p.edit = edit;
  p.source = &source;
  p.l1_index = l1_index;
  p.entry = entry;
  p.kind = kind;
  p.target = target;
  p.why = std::move(why);
  return p;
}

// An L2 entry's proposal: an L1 entry's, located further in its L2 table.
EntryProposal L2Proposal(const L1Source& source, uint32_t l1_index, uint64_t l2_offset,
                         uint32_t l2_index, uint64_t entry, EntryProposal::Edit edit,
                         FindingKind kind, uint64_t target, std::string why) {
  EntryProposal p = L1Proposal(source, l1_index, entry, edit, kind, target, std::move(why));
  p.table = EntryProposal::Table::kL2;
  p.l2_offset = l2_offset;
  p.l2_index = l2_index;
  return p;
}

// Proposes dropping an L2 entry; returns true (with `entry` replaced) when
// repair dropped it. `unapplied` is the finding check reports otherwise.
bool ProposeL2Drop(CheckContext& ctx, const L1Source& source, uint32_t l1_index, uint64_t l2_offset,
                   uint32_t l2_index, uint64_t& entry, FindingKind kind, uint64_t target,
                   std::string why, std::optional<Severity> unapplied = {},
                   std::string unapplied_message = {}) {
  EntryProposal p = L2Proposal(source, l1_index, l2_offset, l2_index, entry,
                               EntryProposal::Edit::kDropPointer, kind, target, std::move(why));
  p.unapplied_severity = unapplied;
  p.unapplied_message = std::move(unapplied_message);
  const std::optional<uint64_t> replacement = DecideEntryEdit(ctx, p);
  if (!replacement) return false;
  entry = *replacement;
  return true;
}

// Proposes clearing `bits` of an L2 entry; `entry` loses them when repair agrees.
void ProposeL2ClearBits(CheckContext& ctx, const L1Source& source, uint32_t l1_index,
                        uint64_t l2_offset, uint32_t l2_index, uint64_t& entry, uint64_t bits,
                        FindingKind kind, uint64_t target, std::string why) {
  EntryProposal p = L2Proposal(source, l1_index, l2_offset, l2_index, entry,
                               EntryProposal::Edit::kClearBits, kind, target, std::move(why));
  p.bits = bits;
  if (const std::optional<uint64_t> replacement = DecideEntryEdit(ctx, p)) entry = *replacement;
}

// Counts a compressed entry; returns false when repair dropped it.
bool CountCompressed(CheckContext& ctx, const L1Source& source, uint32_t l1_index,
                     uint64_t l2_offset, uint32_t l2_index, uint64_t& entry, bool frag_info) {
  auto owner_of = [&] { return L2Owner(ctx, source, l1_index, l2_offset, l2_index); };
  if (entry & f::kOflagCopied) {
    ProposeL2ClearBits(ctx, source, l1_index, l2_offset, l2_index, entry, f::kOflagCopied,
                       FindingKind::kCompressedInvalid,
                       entry & ~(f::kOflagCopied | f::kOflagCompressed),
                       ": copied flag must never be set for compressed clusters");
  }
  const f::CompressedExtent extent = f::DecodeCompressed(entry, ctx.header.cluster_bits);
  // Past the end: check reports it when the range is counted.
  if (ctx.PastEnd(extent.host_offset, extent.bytes) &&
      ProposeL2Drop(ctx, source, l1_index, l2_offset, l2_index, entry, FindingKind::kPastEnd,
                    extent.host_offset, "compressed range ends past the end of the file")) {
    return false;
  }
  const ClusterUse meta =
      ctx.PastEnd(extent.host_offset, extent.bytes)
          ? ClusterUse::kNone
          : MetadataIn(ctx, ctx.header.cluster_bits, extent.host_offset, extent.bytes);
  if (meta != ClusterUse::kNone) {
    const std::string why = std::string("compressed range overlaps the ") + ClusterUseName(meta);
    if (ProposeL2Drop(ctx, source, l1_index, l2_offset, l2_index, entry, FindingKind::kOverlap,
                      extent.host_offset, why, Severity::kInfo, why)) {
      return false;
    }
  }
  if (!ctx.TryAddReference(extent.host_offset, extent.bytes)) {
    ctx.AddReference(extent.host_offset, extent.bytes, owner_of);
  }
  if (frag_info) {
    ++ctx.report.allocated_clusters;
    ++ctx.report.compressed_clusters;
    ++ctx.report.fragmented_clusters;  // QEMU: compressed clusters are fragmented by nature
  }
  return true;
}

// Checks a standard entry with a host offset before it is counted: a
// misaligned offset, a cluster past the end of the file or over metadata is
// proposed for a drop. Returns false when repair dropped it.
bool CheckStandardTarget(CheckContext& ctx, const L1Source& source, uint32_t l1_index,
                         uint64_t l2_offset, uint32_t l2_index, uint64_t& entry) {
  const uint64_t offset = entry & f::kL2EntryOffsetMask;
  const bool zero = (entry & f::kOflagZero) != 0;
  if ((offset & (ctx.cluster_bytes - 1)) != 0) {
    const std::string what = zero ? "Preallocated cluster is not properly aligned"
                                  : "Data cluster is not properly aligned";
    if (ProposeL2Drop(
            ctx, source, l1_index, l2_offset, l2_index, entry, FindingKind::kMisaligned, offset,
            "offset=" + HexOffset(offset) + ": " + what, Severity::kCorruption,
            "ERROR offset=" + HexOffset(offset) + ": " + what + "; L2 entry corrupted.")) {
      return false;
    }
  }
  // Past the end: check reports it when the cluster is counted.
  if (ctx.PastEnd(offset, ctx.cluster_bytes)) {
    return !ProposeL2Drop(ctx, source, l1_index, l2_offset, l2_index, entry, FindingKind::kPastEnd,
                          offset,
                          "data cluster " + HexOffset(offset) + " lies past the end of the file");
  }
  const ClusterUse meta = MetadataIn(ctx, ctx.header.cluster_bits, offset, ctx.cluster_bytes);
  if (meta != ClusterUse::kNone) {
    return !ProposeL2Drop(
        ctx, source, l1_index, l2_offset, l2_index, entry, FindingKind::kOverlap, offset,
        "data cluster " + HexOffset(offset) + " overlaps the " + ClusterUseName(meta),
        Severity::kInfo, std::string("data cluster overlaps the ") + ClusterUseName(meta));
  }
  return true;
}

// Extended L2 (QEMU's classes): an allocated cluster whose bitmap marks a
// subcluster both allocated and zero, and an unallocated one with
// allocation bits. Check prints QEMU's lines. QEMU (7.2) repairs neither;
// qcrash's repair does, so that a crash image converges (I7): both-set
// subclusters read as zeroes (never possibly stale host data), and
// allocation bits without a host cluster are dropped.
void CheckSubclusterBitmap(CheckContext& ctx, const L1Source& source, uint32_t l1_index,
                           uint64_t l2_offset, uint32_t l2_index, uint64_t entry,
                           uint64_t& bitmap) {
  const uint64_t offset = entry & f::kL2EntryOffsetMask;
  const uint64_t target = l2_offset + uint64_t{l2_index} * f::kExtendedL2EntryBytes + 8;
  auto owner = [&] { return L2Owner(ctx, source, l1_index, l2_offset, l2_index); };
  const bool fix = ctx.repair() == RepairMode::kAll;
  // With a data file, COPIED and offset 0 map the data file's first cluster.
  const bool mapped = offset != 0 || ((entry & f::kOflagCopied) && ctx.header.has_data_file());
  if (mapped) {
    const uint64_t both = (bitmap >> 32) & bitmap;
    if (both == 0) return;
    ctx.Report(FindingKind::kSubclusterBitmap, Severity::kCorruption, fix, target, owner, [&] {
      char hex[24];
      std::snprintf(hex, sizeof(hex), "%" PRIx64, offset);  // QEMU prints no 0x here
      return std::string(fix ? "Repairing" : "ERROR") + " offset=" + hex +
             ": Allocated cluster has corrupted subcluster allocation bitmap";
    });
    if (fix) bitmap &= ~both;
    return;
  }
  if ((bitmap & f::kL2BitmapAllocMask) == 0) return;
  ctx.Report(FindingKind::kSubclusterBitmap, Severity::kCorruption, fix, target, owner,
             std::string(fix ? "Repairing" : "ERROR") +
                 ": Unallocated cluster has non-zero subcluster allocation map");
  if (fix) bitmap &= ~f::kL2BitmapAllocMask;
}

// check_refcounts_l2: one reference per data cluster or compressed range.
Status CountL2(CheckContext& ctx, const L1Source& source, uint32_t l1_index, uint64_t l2_offset,
               bool frag_info) {
  if (++ctx.l2_visits > kMaxL2Visits) {
    return Status::Limit("more than " + std::to_string(kMaxL2Visits) + " L2 tables to visit");
  }
  const std::span<uint8_t> table = ctx.L2Scratch();
  QCRASH_RETURN_IF_ERROR(ctx.ReadTable(l2_offset, table));
  bool edited = false;
  uint64_t next_contiguous = 0;
  const uint32_t eb = ctx.header.l2_entry_bytes();
  const bool extended = ctx.header.extended_l2();
  const uint32_t entries = static_cast<uint32_t>(ctx.header.l2_entries());
  for (uint32_t j = static_cast<uint32_t>(NextNonZeroL2Entry(table, 0, eb)); j < entries;
       j = static_cast<uint32_t>(NextNonZeroL2Entry(table, j + 1, eb))) {
    uint64_t entry = LoadBe64(&table[j * eb]);
    const uint64_t original = entry;
    uint64_t bitmap = extended ? LoadBe64(&table[j * eb + 8]) : 0;
    const uint64_t original_bitmap = bitmap;
    if (entry & f::kOflagCompressed) {
      const bool fix = ctx.repair() == RepairMode::kAll;
      if (bitmap != 0) {
        // QEMU counts no reference for such an entry (and does not repair
        // it); qcrash's repair drops it.
        ctx.Report(
            FindingKind::kCompressedInvalid, Severity::kCorruption, fix, l2_offset + j * eb,
            [&] { return L2Owner(ctx, source, l1_index, l2_offset, j); },
            [&] {
              return std::string(fix ? "Repairing" : "ERROR") + " compressed cluster " +
                     std::to_string(j) +
                     " with non-zero subcluster allocation bitmap, entry=" + HexOffset(entry);
            });
        if (fix) {
          entry = 0;  // dropped: which of the two words is wrong is unknowable
          bitmap = 0;
        }
      } else {
        CountCompressed(ctx, source, l1_index, l2_offset, j, entry, frag_info);
      }
    } else {
      if (entry & f::kL2EntryReservedMask) {
        ProposeL2ClearBits(ctx, source, l1_index, l2_offset, j, entry, f::kL2EntryReservedMask,
                           FindingKind::kReservedBits, l2_offset + j * eb,
                           " found l2 entry with reserved bits set: " + HexOffset(entry));
      }
      if (extended) CheckSubclusterBitmap(ctx, source, l1_index, l2_offset, j, entry, bitmap);
      if ((entry & f::kOflagZero) && ctx.header.version == 2) {
        ctx.Report(
            FindingKind::kZeroFlagOnV2, Severity::kInfo, false, l2_offset + j * eb,
            [&] { return L2Owner(ctx, source, l1_index, l2_offset, j); },
            "zero flag set in a version 2 image (reads as zeroes in QEMU)");
      }
      const uint64_t offset = entry & f::kL2EntryOffsetMask;
      const bool data_file_cluster =
          ctx.header.has_data_file() &&
          (offset != 0 || ((entry & f::kOflagCopied) && !(entry & f::kOflagZero)));
      const uint64_t guest_offset = (uint64_t{l1_index} * entries + j) << ctx.header.cluster_bits;
      if (data_file_cluster && offset != guest_offset) {
        // QEMU maps a data-file cluster only at its guest offset and treats
        // any other mapping (a misaligned one included) as corruption.
        ProposeL2Drop(ctx, source, l1_index, l2_offset, j, entry, FindingKind::kMisaligned, offset,
                      "external data file host cluster offset " + HexOffset(offset) +
                          " does not match guest cluster offset " + HexOffset(guest_offset));
      } else if (data_file_cluster) {
        // Data clusters live in the external data file: QEMU's check counts
        // them as allocated but gives them no reference in this file.
        if (frag_info) {
          ++ctx.report.allocated_clusters;
          if (next_contiguous != 0 && offset != next_contiguous) ++ctx.report.fragmented_clusters;
          next_contiguous = offset + ctx.cluster_bytes;
        }
      } else if (offset != 0 && CheckStandardTarget(ctx, source, l1_index, l2_offset, j, entry)) {
        if (frag_info) {
          ++ctx.report.allocated_clusters;
          if (next_contiguous != 0 && offset != next_contiguous) ++ctx.report.fragmented_clusters;
          next_contiguous = offset + ctx.cluster_bytes;
        }
        if (!ctx.TryAddReference(offset, ctx.cluster_bytes)) {
          ctx.AddReference(offset, ctx.cluster_bytes,
                           [&] { return L2Owner(ctx, source, l1_index, l2_offset, j); });
        }
      }
    }
    if (extended && (original & f::kL2EntryOffsetMask) != 0 &&
        (entry & f::kL2EntryOffsetMask) == 0 && !(entry & f::kOflagCompressed)) {
      // A dropped data cluster: its allocated subclusters now read as zeroes.
      bitmap = (bitmap & f::kL2BitmapZeroMask) | ((bitmap & f::kL2BitmapAllocMask) << 32);
    }
    if (entry != original || bitmap != original_bitmap) {
      StoreBe64(&table[j * eb], entry);
      if (extended) StoreBe64(&table[j * eb + 8], bitmap);
      edited = true;
    }
  }
  if (edited) ctx.EditTable(l2_offset, table);
  return Status::Ok();
}

// check_refcounts_l1: the table itself, then every L2 table it points to.
Status CountL1(CheckContext& ctx, const L1Source& source) {
  if (source.entries == 0) return Status::Ok();
  ctx.AddReference(source.offset, uint64_t{source.entries} * 8, source.table + " L1 table");
  L1Buffer buffer(ctx);
  std::vector<uint8_t>& table = buffer.bytes();
  QCRASH_RETURN_IF_ERROR(ctx.ReadL1(source.offset, source.entries, table));
  bool edited = false;
  for (uint32_t i = static_cast<uint32_t>(NextNonZeroEntry(table, 0)); i < table.size() / 8;
       i = static_cast<uint32_t>(NextNonZeroEntry(table, i + 1))) {
    // The active table's walk is most of a large image's check: 0-80%.
    if (source.active) ctx.Progress(80.0 * i / (table.size() / 8));
    uint64_t entry = LoadBe64(&table[i * 8]);
    const uint64_t original = entry;
    if (entry & f::kL1EntryReservedMask) {
      EntryProposal p = L1Proposal(source, i, entry, EntryProposal::Edit::kClearBits,
                                   FindingKind::kReservedBits, source.offset + i * 8,
                                   " found L1 entry with reserved bits set: " + HexOffset(entry));
      p.bits = f::kL1EntryReservedMask;
      if (const std::optional<uint64_t> replacement = DecideEntryEdit(ctx, p)) entry = *replacement;
    }
    const uint64_t l2_offset = entry & f::kL1EntryOffsetMask;
    const bool misaligned = (l2_offset & (ctx.cluster_bytes - 1)) != 0;
    const bool past_end = ctx.PastEnd(l2_offset, ctx.cluster_bytes);
    std::optional<uint64_t> replacement;
    if (l2_offset != 0 && (misaligned || past_end)) {
      // When repair keeps the entry, check reports the table below, after counting it.
      EntryProposal p = L1Proposal(
          source, i, entry, EntryProposal::Edit::kDropPointer,
          misaligned ? FindingKind::kMisaligned : FindingKind::kPastEnd, l2_offset,
          misaligned ? "L2 table " + HexOffset(l2_offset) + " is not cluster aligned"
                     : "L2 table " + HexOffset(l2_offset) + " lies past the end of the file");
      p.record_dropped = misaligned;
      replacement = DecideEntryEdit(ctx, p);
    }
    if (replacement) {
      entry = *replacement;
    } else if (l2_offset != 0) {
      if (!ctx.TryAddReference(l2_offset, ctx.cluster_bytes)) {
        ctx.AddReference(l2_offset, ctx.cluster_bytes,
                         [&] { return L1Owner(source, i) + " L2 table"; });
      }
      if (misaligned) {
        ctx.Report(
            FindingKind::kMisaligned, Severity::kCorruption, false, l2_offset,
            [&] { return L1Owner(source, i); },
            [&] {
              return "ERROR l2_offset=" + HexOffset(l2_offset) +
                     ": Table is not cluster aligned; L1 entry corrupted";
            });
      }
      QCRASH_RETURN_IF_ERROR(CountL2(ctx, source, i, l2_offset, source.active));
    }
    if (entry != original) {
      StoreBe64(&table[i * 8], entry);
      edited = true;
    }
  }
  if (edited) ctx.EditTable(source.offset, table);
  return Status::Ok();
}

// check_refblocks: every refcount block counts itself once; a broken table
// entry or a block with another owner means the structure must be rebuilt.
// An empty entry costs one comparison: a hostile header may name an 8 MiB
// table (1 Mi entries) of zeroes, and names are built only for findings.
void CountRefcountBlocks(CheckContext& ctx) {
  const std::vector<uint64_t>& table = ctx.refcounts.table();
  for (uint64_t i = 0; i < table.size(); ++i) {
    if (table[i] == 0) continue;
    const uint64_t offset = table[i] & f::kRefcountTableOffsetMask;
    const uint64_t cluster = offset >> ctx.header.cluster_bits;
    const uint64_t entry_offset = ctx.header.refcount_table_offset + i * 8;
    auto owner = [i] { return "refcount table[" + std::to_string(i) + "]"; };
    if (table[i] & f::kRefcountTableReservedMask) {
      ctx.Report(FindingKind::kInvalidRefcountEntry, Severity::kCorruption, false, entry_offset,
                 owner(),
                 "ERROR refcount table entry " + std::to_string(i) + " has reserved bits set");
      ctx.rebuild = true;
      continue;
    }
    if (offset & (ctx.cluster_bytes - 1)) {
      ctx.Report(FindingKind::kInvalidRefcountEntry, Severity::kCorruption, false, entry_offset,
                 owner(),
                 "ERROR refcount block " + std::to_string(i) +
                     " is not cluster aligned; refcount table entry corrupted");
      ctx.rebuild = true;
      continue;
    }
    if (offset == 0) continue;
    if (cluster >= ctx.nb_clusters) {
      ctx.Report(FindingKind::kInvalidRefcountEntry, Severity::kCorruption, false, offset, owner(),
                 "ERROR refcount block " + std::to_string(i) + " is outside image");
      ctx.rebuild = true;
      continue;
    }
    const uint64_t before = ctx.Imrt(cluster);
    if (!ctx.TryAddReference(offset, ctx.cluster_bytes)) {
      ctx.AddReference(offset, ctx.cluster_bytes, owner() + " refcount block");
    }
    // A reference the IMRT could not count (an overflow: the count was at
    // the refcount width's maximum) still means the block overlaps another
    // owner, so the structure is rebuilt.
    const bool counted = ctx.Imrt(cluster) != before;
    ctx.old_refcount_clusters.push_back(cluster);
    if (!counted || ctx.Imrt(cluster) != 1) {
      const ClusterUse other = ctx.UseOf(cluster);
      ctx.Report(FindingKind::kInvalidRefcountEntry, Severity::kCorruption, false, offset, owner(),
                 "ERROR refcount block " + std::to_string(i) +
                     " refcount=" + std::to_string(before + 1) +
                     (other != ClusterUse::kRefcountBlock
                          ? std::string(" (overlaps the ") + ClusterUseName(other) + ")"
                          : std::string()));
      ctx.rebuild = true;
    }
  }
}

}  // namespace

std::vector<L1Source> L1Sources(const CheckContext& ctx) {
  std::vector<L1Source> sources;
  sources.push_back({"active", ctx.header.l1_table_offset, ctx.header.l1_size, true});
  for (size_t i = 0; i < ctx.snapshots.size(); ++i) {
    const SnapshotInfo& s = ctx.snapshots[i];
    if (!s.usable) continue;
    sources.push_back(
        {"snapshot " + s.id + " (" + s.name + ")", s.l1_table_offset, s.l1_size, false});
  }
  return sources;
}

void CheckHeaderFields(CheckContext& ctx) {
  const Header& h = ctx.header;
  if (h.incompatible_features & f::kIncompatDirty) {
    ctx.Report(FindingKind::kHeader, Severity::kInfo, false, f::kOffIncompatibleFeatures, "header",
               "the dirty bit is set: refcounts may be stale (lazy refcounts)");
  }
  if (h.incompatible_features & f::kIncompatCorrupt) {
    ctx.Report(FindingKind::kHeader, Severity::kInfo, false, f::kOffIncompatibleFeatures, "header",
               "the image is marked corrupt");
  }
  if ((h.autoclear_features & f::kAutoclearBitmaps) && !h.bitmaps) {
    ctx.Report(FindingKind::kHeader, Severity::kInfo, false, f::kOffAutoclearFeatures, "header",
               "autoclear bit 0 (bitmaps) is set but there is no bitmaps extension");
  }
  if (h.bitmaps && !(h.autoclear_features & f::kAutoclearBitmaps)) {
    ctx.Report(FindingKind::kBitmap, Severity::kInfo, false, f::kOffAutoclearFeatures, "header",
               "bitmaps extension present but autoclear bit 0 is clear: bitmaps are stale and "
               "their clusters are not counted");
  }
}

namespace {

// A snapshot table entry that cannot be used, proposed as the place where
// repair cuts the table (DecideSnapshotCut). Returns true when the walk must
// stop reading the table there.
bool BrokenSnapshotEntry(CheckContext& ctx, uint32_t index, uint64_t offset,
                         const std::string& owner, const std::string& what) {
  return DecideSnapshotCut(ctx, {index, offset, owner, what});
}

}  // namespace

Status ReadSnapshotTable(CheckContext& ctx) {
  uint64_t offset = ctx.header.snapshots_offset;
  uint64_t snapshot_l1_bytes = 0;
  for (uint32_t i = 0; i < ctx.header.nb_snapshots; ++i) {
    const std::string owner = "snapshot table entry " + std::to_string(i);
    uint8_t fixed[40];
    if (offset + sizeof(fixed) > ctx.file_bytes ||
        offset + sizeof(fixed) - ctx.header.snapshots_offset > kMaxSnapshotTableBytes) {
      BrokenSnapshotEntry(ctx, i, offset, owner,
                          "snapshot table runs past the end of the file or its size limit");
      break;
    }
    QCRASH_RETURN_IF_ERROR(ctx.device.Read(offset, fixed));
    SnapshotInfo s;
    s.l1_table_offset = LoadBe64(fixed);
    s.l1_size = LoadBe32(fixed + 8);
    const uint16_t id_bytes = LoadBe16(fixed + 12);
    const uint16_t name_bytes = LoadBe16(fixed + 14);
    const uint32_t extra_bytes = LoadBe32(fixed + 36);
    // The padding to 8 bytes after the last entry may lie past the end of
    // the file: QEMU writes the table unpadded when it is the last thing in
    // the file (an image whose snapshot table ends at an odd byte).
    const uint64_t used_bytes = 40 + uint64_t{extra_bytes} + id_bytes + name_bytes;
    const uint64_t entry_bytes = Align8(used_bytes);
    if (extra_bytes > kMaxSnapshotExtraBytes || offset + used_bytes > ctx.file_bytes ||
        offset + entry_bytes - ctx.header.snapshots_offset > kMaxSnapshotTableBytes) {
      BrokenSnapshotEntry(ctx, i, offset, owner,
                          "snapshot table entry is too large or runs past the end of the file");
      break;
    }
    std::vector<uint8_t> strings(uint64_t{id_bytes} + name_bytes);
    QCRASH_RETURN_IF_ERROR(ctx.device.Read(offset + 40 + extra_bytes, strings));
    s.id.assign(strings.begin(), strings.begin() + id_bytes);
    s.name.assign(strings.begin() + id_bytes, strings.end());
    const std::string label = "snapshot " + s.id + " (" + s.name + ")";
    s.usable = true;
    std::string broken;
    if (s.l1_table_offset & (ctx.cluster_bytes - 1)) {
      broken = label + " l1_offset=" + HexOffset(s.l1_table_offset) +
               ": L1 table is not cluster aligned; snapshot table entry corrupted";
    } else if (uint64_t{s.l1_size} * 8 > f::kMaxL1TableBytes) {
      broken = label + " l1_size=" + std::to_string(s.l1_size) +
               ": L1 table is too large; snapshot table entry corrupted";
    }
    if (!broken.empty()) {
      if (BrokenSnapshotEntry(ctx, i, offset, label, broken)) break;
      s.usable = false;
    }
    if (s.usable) {
      snapshot_l1_bytes += uint64_t{s.l1_size} * 8;
      if (snapshot_l1_bytes > kMaxTotalSnapshotL1Bytes) {
        ctx.Report(FindingKind::kLimit, Severity::kCheckError, false, offset, label,
                   "snapshot L1 tables exceed check's limit of " +
                       std::to_string(kMaxTotalSnapshotL1Bytes) + " bytes in all: not walked");
        s.usable = false;
      }
    }
    offset += entry_bytes;
    s.entry_end = offset - ctx.header.snapshots_offset;
    ctx.snapshots.push_back(std::move(s));
  }
  ctx.snapshot_table_bytes = offset - ctx.header.snapshots_offset;
  return Status::Ok();
}

namespace {

bool ClustersIntersect(const CheckContext& ctx, uint64_t a_offset, uint64_t a_bytes,
                       uint64_t b_offset, uint64_t b_bytes) {
  if (a_bytes == 0 || b_bytes == 0) return false;
  const uint32_t bits = ctx.header.cluster_bits;
  return (a_offset >> bits) <= ((b_offset + b_bytes - 1) >> bits) &&
         (b_offset >> bits) <= ((a_offset + a_bytes - 1) >> bits);
}

// kAll: a snapshot table sharing a cluster with the header, the refcount
// table or an L1 table is discarded whole: repair's edits to the other
// structure would rewrite the snapshot entries under it (found by
// repair_fuzzer: the L1 edits changed a snapshot, whose clusters then leaked).
void DiscardOverlappingSnapshotTable(CheckContext& ctx) {
  const Header& h = ctx.header;
  const uint64_t table_offset = h.snapshots_offset;
  const uint64_t table_bytes = ctx.snapshot_table_bytes;
  const char* other = nullptr;
  if (ClustersIntersect(ctx, table_offset, table_bytes, 0, ctx.cluster_bytes)) {
    other = "qcow2 header";
  } else if (ClustersIntersect(ctx, table_offset, table_bytes, h.refcount_table_offset,
                               uint64_t{h.refcount_table_clusters} << h.cluster_bits)) {
    other = "refcount table";
  } else {
    for (const L1Source& s : L1Sources(ctx)) {
      if (ClustersIntersect(ctx, table_offset, table_bytes, s.offset, uint64_t{s.entries} * 8)) {
        other = s.active ? "active L1 table" : "snapshot L1 table";
        break;
      }
    }
  }
  if (other == nullptr) return;
  const std::string what = std::string("the snapshot table overlaps the ") + other;
  if (!DecideSnapshotCut(ctx, {0, table_offset, "snapshot table", what})) return;
  ctx.snapshots.clear();
  ctx.snapshot_table_bytes = 0;
}

// kAll: a snapshot whose L1 table shares a cluster with the header, the
// refcount table, the snapshot table, the active L1 table, an L2 table of
// the active L1 or an earlier snapshot's L1 table ends the snapshot table
// there (BrokenSnapshotEntry): repair's edits to either structure would
// rewrite the other (found by snapshot_fuzzer: a snapshot L1 spanning the
// active L1 and its L2 tables, whose reserved-bit fixes then overwrote them).
Status DiscardOverlappingSnapshots(CheckContext& ctx) {
  if (ctx.snapshots.empty()) return Status::Ok();
  const Header& h = ctx.header;
  const uint32_t bits = h.cluster_bits;
  std::vector<uint64_t> active_l2;  // cluster indices, sorted
  {
    L1Buffer buffer(ctx);
    std::vector<uint8_t>& l1 = buffer.bytes();
    QCRASH_RETURN_IF_ERROR(ctx.ReadL1(h.l1_table_offset, h.l1_size, l1));
    for (uint32_t i = static_cast<uint32_t>(NextNonZeroEntry(l1, 0)); i < l1.size() / 8;
         i = static_cast<uint32_t>(NextNonZeroEntry(l1, i + 1))) {
      const uint64_t l2 = LoadBe64(&l1[i * 8]) & f::kL1EntryOffsetMask;
      if (l2 != 0) active_l2.push_back(l2 >> bits);
    }
    std::sort(active_l2.begin(), active_l2.end());
  }
  for (size_t i = 0; i < ctx.snapshots.size(); ++i) {
    const SnapshotInfo& s = ctx.snapshots[i];
    if (!s.usable) continue;
    const uint64_t bytes = uint64_t{s.l1_size} * 8;
    auto hits = [&](uint64_t offset, uint64_t size) {
      return ClustersIntersect(ctx, s.l1_table_offset, bytes, offset, size);
    };
    std::string other;
    if (hits(0, ctx.cluster_bytes)) {
      other = "qcow2 header";
    } else if (hits(h.refcount_table_offset, uint64_t{h.refcount_table_clusters} << bits)) {
      other = "refcount table";
    } else if (hits(h.snapshots_offset, ctx.snapshot_table_bytes)) {
      other = "snapshot table";
    } else if (hits(h.l1_table_offset, uint64_t{h.l1_size} * 8)) {
      other = "active L1 table";
    } else if (bytes != 0) {
      const uint64_t first = s.l1_table_offset >> bits;
      const uint64_t last = (s.l1_table_offset + bytes - 1) >> bits;
      auto l2 = std::lower_bound(active_l2.begin(), active_l2.end(), first);
      if (l2 != active_l2.end() && *l2 <= last) other = "active L2 table " + HexOffset(*l2 << bits);
      for (size_t j = 0; j < i && other.empty(); ++j) {
        const SnapshotInfo& earlier = ctx.snapshots[j];
        if (earlier.usable && hits(earlier.l1_table_offset, uint64_t{earlier.l1_size} * 8)) {
          other = "L1 table of snapshot " + earlier.id;
        }
      }
    }
    if (other.empty()) continue;
    const uint64_t start = i == 0 ? 0 : ctx.snapshots[i - 1].entry_end;
    if (!BrokenSnapshotEntry(ctx, static_cast<uint32_t>(i), h.snapshots_offset + start,
                             "snapshot " + s.id + " (" + s.name + ")",
                             "snapshot " + s.id + " L1 table " + HexOffset(s.l1_table_offset) +
                                 " overlaps the " + other)) {
      continue;
    }
    ctx.snapshots.resize(i);
    ctx.snapshot_table_bytes = start;
    break;
  }
  return Status::Ok();
}

}  // namespace

Status MarkAllMetadata(CheckContext& ctx) {
  const Header& h = ctx.header;
  // Check reports no overlapping snapshot structures: the walk looks for
  // them only when repair would act on them.
  if (PlansDiscards(ctx)) {
    DiscardOverlappingSnapshotTable(ctx);
    QCRASH_RETURN_IF_ERROR(DiscardOverlappingSnapshots(ctx));
  }
  // A table running past the end of the file is marked as far as the file
  // holds it (MarkMetadata clips): repair grows the file over the rest, and
  // nothing else may use its clusters in the file (found by repair_fuzzer:
  // an L1 entry naming the L1 itself as its L2 table).
  auto mark = [&](uint64_t offset, uint64_t size, ClusterUse use, const std::string& what) {
    if (size == 0) return;
    const ClusterUse other = ctx.MarkMetadata(offset, size, use);
    if (other != ClusterUse::kNone) {
      ctx.Report(FindingKind::kOverlap, Severity::kInfo, false, offset, what,
                 what + " overlaps the " + ClusterUseName(other));
    }
  };
  mark(0, ctx.cluster_bytes, ClusterUse::kHeader, "qcow2 header");
  const std::vector<L1Source> sources = L1Sources(ctx);
  for (const L1Source& s : sources) {
    mark(s.offset, uint64_t{s.entries} * 8,
         s.active ? ClusterUse::kActiveL1 : ClusterUse::kSnapshotL1, s.table + " L1 table");
  }
  mark(h.refcount_table_offset, uint64_t{h.refcount_table_clusters} << h.cluster_bits,
       ClusterUse::kRefcountTable, "refcount table");
  mark(h.snapshots_offset, ctx.snapshot_table_bytes, ClusterUse::kSnapshotTable, "snapshot table");
  // The journal area, which the header names too: in repair, one over the
  // structures above is discarded (journal_check.cc).
  MarkJournal(ctx);
  // L2 tables next: a pointer into the header-positioned metadata above
  // cannot be an L2 table, so repair drops it. Bitmaps after them: in
  // repair, a bitmap overlapping anything is discarded (check_bitmaps.cc),
  // never an L2 table, which holds guest data. Refcount blocks come last:
  // they are rebuilt, while L2 tables hold data that cannot be rebuilt.
  for (const L1Source& s : sources) {
    L1Buffer buffer(ctx);
    std::vector<uint8_t>& table = buffer.bytes();
    QCRASH_RETURN_IF_ERROR(ctx.ReadL1(s.offset, s.entries, table));
    bool edited = false;
    for (uint32_t i = static_cast<uint32_t>(NextNonZeroEntry(table, 0)); i < table.size() / 8;
         i = static_cast<uint32_t>(NextNonZeroEntry(table, i + 1))) {
      const uint64_t l2_offset = LoadBe64(&table[i * 8]) & f::kL1EntryOffsetMask;
      if (l2_offset == 0 || (l2_offset & (ctx.cluster_bytes - 1)) ||
          ctx.PastEnd(l2_offset, ctx.cluster_bytes)) {
        continue;
      }
      const ClusterUse other = ctx.MarkMetadata(l2_offset, ctx.cluster_bytes, ClusterUse::kL2);
      if (other == ClusterUse::kNone) continue;
      EntryProposal p = L1Proposal(
          s, i, LoadBe64(&table[i * 8]), EntryProposal::Edit::kDropPointer, FindingKind::kOverlap,
          l2_offset, "L2 table " + HexOffset(l2_offset) + " overlaps the " + ClusterUseName(other));
      p.unapplied_severity = Severity::kInfo;
      p.unapplied_message = p.why;
      if (const std::optional<uint64_t> replacement = DecideEntryEdit(ctx, p)) {
        StoreBe64(&table[i * 8], *replacement);
        edited = true;
      }
    }
    if (edited) ctx.EditTable(s.offset, table);
  }
  MarkBitmaps(ctx);
  for (uint64_t i = 0; i < ctx.refcounts.table().size(); ++i) {
    const uint64_t raw = ctx.refcounts.table()[i];
    const uint64_t offset = raw & f::kRefcountTableOffsetMask;
    if (offset == 0 || (raw & f::kRefcountTableReservedMask) ||
        (offset & (ctx.cluster_bytes - 1)) || (offset >> h.cluster_bits) >= ctx.nb_clusters) {
      continue;
    }
    mark(offset, ctx.cluster_bytes, ClusterUse::kRefcountBlock,
         "refcount block " + std::to_string(i));
  }
  return Status::Ok();
}

Status CountAllReferences(CheckContext& ctx) {
  const Header& h = ctx.header;
  ctx.AddReference(0, ctx.cluster_bytes, "qcow2 header");
  for (const L1Source& source : L1Sources(ctx)) {
    QCRASH_RETURN_IF_ERROR(CountL1(ctx, source));
  }
  ctx.AddReference(h.snapshots_offset, ctx.snapshot_table_bytes, "snapshot table");
  const uint64_t table_bytes = uint64_t{h.refcount_table_clusters} << h.cluster_bits;
  if (ctx.AddReference(h.refcount_table_offset, table_bytes, "refcount table")) {
    for (uint64_t c = 0; c < h.refcount_table_clusters; ++c) {
      ctx.old_refcount_clusters.push_back((h.refcount_table_offset >> h.cluster_bits) + c);
    }
  } else if (!ctx.past_end_ranges.empty()) {
    // A rebuild must not write over it (the header names it until the
    // switch) but replaces it, so it is not counted in the new structure.
    ctx.past_end_ranges.back().survives_rebuild = false;
  }
  QCRASH_RETURN_IF_ERROR(CountBitmaps(ctx));
  CountJournal(ctx);
  CountRefcountBlocks(ctx);
  return Status::Ok();
}

Status ForEachL2Entry(CheckContext& ctx, bool active_only, const L2Visitor& visit) {
  uint64_t visits = 0;
  std::vector<uint8_t> l2(ctx.cluster_bytes);
  for (const L1Source& source : L1Sources(ctx)) {
    if (active_only && !source.active) continue;
    L1Buffer buffer(ctx);
    std::vector<uint8_t>& l1 = buffer.bytes();
    QCRASH_RETURN_IF_ERROR(ctx.ReadL1(source.offset, source.entries, l1));
    for (uint32_t i = static_cast<uint32_t>(NextNonZeroEntry(l1, 0)); i < l1.size() / 8;
         i = static_cast<uint32_t>(NextNonZeroEntry(l1, i + 1))) {
      const uint64_t l2_offset = LoadBe64(&l1[i * 8]) & f::kL1EntryOffsetMask;
      if (l2_offset == 0) continue;
      if (++visits > kMaxL2Visits) return Status::Limit("too many L2 tables to visit");
      QCRASH_RETURN_IF_ERROR(ctx.ReadTable(l2_offset, l2));
      const uint32_t eb = ctx.header.l2_entry_bytes();
      for (uint32_t j = static_cast<uint32_t>(NextNonZeroL2Entry(l2, 0, eb)); j < l2.size() / eb;
           j = static_cast<uint32_t>(NextNonZeroL2Entry(l2, j + 1, eb))) {
        const uint64_t entry = LoadBe64(&l2[j * eb]);
        QCRASH_RETURN_IF_ERROR(visit(source, i, l2_offset, j, entry));
      }
    }
  }
  return Status::Ok();
}

}  // namespace qcrash::engine::check_internal
