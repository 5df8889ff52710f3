// The writes of repair, each one step with its flush (QCOW2-NOTES §9, §11).
//
// Why this order is crash-safe: repair never writes anything a second
// repair could not recompute from the pointers it trusts.
//   Step 1 (WriteTableEdits): header edits in one sector (the snapshot
//     table cut before its first broken entry; bitmaps discarded when one
//     is corrupt; a journal over other metadata discarded),
//     dropped pointers, cleared reserved bits, and
//     OFLAG_COPIED cleared where the repaired refcount will be 2 or more
//     (R9: COPIED is never on disk with a refcount >= 2).
//     Removing a pointer only ever turns its cluster into a leak (R4), so it
//     goes first: every later refcount decrease then applies to a cluster no
//     durable pointer uses.
//   Step 2 (RebuildRefcountStructure), only when the refcount structure is
//     broken: new blocks in space nothing uses (past the end of the file,
//     clear of every table that lies past it), flush; new table, flush; header switch in one
//     sector, flush (R6). A crash before the switch leaves the old structure plus unreferenced
//     clusters past its end; after it, the new structure is complete.
//   Step 3 (WriteRefcountFixes): raised and lowered refcounts, flush. A raise
//     (shared cluster) must be durable before OFLAG_COPIED is recomputed
//     from it; a lowering is safe because step 1 is durable.
//   Step 4 (WriteTableEdits again): OFLAG_COPIED from the durable refcounts.
//   Step 5 (ClearHeaderBits): the dirty and corrupt bits are cleared last,
//     once everything they warn about is durable (R7, R11).
// Before each metadata write the target is checked against the metadata map
// (QEMU's overlap check): repair writes only to clusters it knows the use of.
#include <algorithm>
#include <set>

#include "engine/check_internal.h"
#include "engine/endian.h"

namespace qcrash::engine::check_internal {
namespace {

namespace f = format;

Status WriteChecked(CheckContext& ctx, uint64_t offset, std::span<const uint8_t> bytes,
                    std::initializer_list<ClusterUse> allowed) {
  const uint64_t first = offset >> ctx.header.cluster_bits;
  const uint64_t last = (offset + bytes.size() - 1) >> ctx.header.cluster_bits;
  for (uint64_t k = first; k <= last; ++k) {
    const ClusterUse use = ctx.UseOf(k);
    if (std::find(allowed.begin(), allowed.end(), use) == allowed.end()) {
      return Status::Corruption("repair refused to write " + std::to_string(bytes.size()) +
                                " bytes at " + HexOffset(offset) + ": cluster " +
                                std::to_string(k) + " is the " + ClusterUseName(use));
    }
  }
  QCRASH_RETURN_IF_ERROR(ctx.device.Write(offset, bytes));
  ctx.report.bytes_written += bytes.size();
  return Status::Ok();
}

// Rebuild layout: which refcount blocks exist and where the new clusters go.
struct RebuildLayout {
  uint64_t start = 0;                   // first new cluster
  std::vector<uint64_t> block_indices;  // table indices that get a block, ascending
  uint64_t table_clusters = 1;
  uint64_t end() const { return start + block_indices.size() + table_clusters; }
  uint64_t length() const { return block_indices.size() + table_clusters; }
};

// The first cluster at or after `start` from which `length` clusters touch
// no table lying past the end of the file: writing there would change what
// the header or a table still names (the active L1 would read refcounts).
// `ranges` are sorted by first cluster.
uint64_t FirstFreeRun(const std::vector<PastEndRange>& ranges, uint64_t start, uint64_t length) {
  for (const PastEndRange& range : ranges) {
    if (range.first_cluster >= start + length) break;
    if (range.last_cluster >= start) start = range.last_cluster + 1;
  }
  return start;
}

// Whether a past-end table lies wholly below the rebuilt structure, so that
// the rebuild's writes grow the file over it: it is then counted. PlanRebuild
// starts after every table that survives, so each of them is.
bool CoveredByRebuild(const PastEndRange& range, uint64_t start) {
  return range.survives_rebuild && range.last_cluster < start;
}

// Grows the layout until the new blocks and table cover themselves and the
// past-end tables the grown file will hold. Cluster indices stay below 2^47
// (offsets are 56-bit fields), so no sum here overflows.
Result<RebuildLayout> PlanRebuild(CheckContext& ctx, const std::vector<uint64_t>& counts) {
  const uint64_t per_block =
      f::RefcountBlockEntries(ctx.header.cluster_bits, ctx.header.refcount_order);
  std::sort(ctx.past_end_ranges.begin(), ctx.past_end_ranges.end(),
            [](const PastEndRange& a, const PastEndRange& b) {
              return a.first_cluster < b.first_cluster;
            });
  RebuildLayout layout;
  uint64_t base = std::max<uint64_t>(ctx.nb_clusters, counts.size());
  while (base > ctx.nb_clusters && counts[base - 1] == 0) --base;
  // Past every table that survives the rebuild, so the grown file holds them
  // all (a table far out makes the rebuild fail with Limit or NoSpace rather
  // than leave it past the end).
  for (const PastEndRange& range : ctx.past_end_ranges) {
    if (range.survives_rebuild) base = std::max(base, range.last_cluster + 1);
  }
  QCRASH_RETURN_IF_ERROR(CheckRebuildReach(ctx));
  layout.start = FirstFreeRun(ctx.past_end_ranges, base, layout.length());
  std::set<uint64_t> used;
  for (uint64_t c = 0; c < counts.size(); ++c) {
    if (counts[c] != 0) used.insert(c / per_block);
  }
  for (int round = 0; round < 64; ++round) {
    std::set<uint64_t> needed = used;
    for (uint64_t c = layout.start; c < layout.end(); ++c) needed.insert(c / per_block);
    for (const PastEndRange& range : ctx.past_end_ranges) {
      if (!CoveredByRebuild(range, layout.start)) continue;
      for (uint64_t c = range.first_cluster; c <= range.last_cluster; ++c)
        needed.insert(c / per_block);
    }
    const uint64_t table_entries = needed.empty() ? 1 : *needed.rbegin() + 1;
    const uint64_t table_clusters =
        (table_entries * 8 + ctx.cluster_bytes - 1) >> ctx.header.cluster_bits;
    if ((std::max(table_clusters, layout.table_clusters) << ctx.header.cluster_bits) >
        f::kMaxRefcountTableBytes) {
      return Status::Limit("rebuilt refcount table would exceed 8 MiB");
    }
    if (needed.size() == layout.block_indices.size() && table_clusters <= layout.table_clusters) {
      return layout;
    }
    layout.block_indices.assign(needed.begin(), needed.end());
    layout.table_clusters = std::max(layout.table_clusters, table_clusters);
    layout.start = FirstFreeRun(ctx.past_end_ranges, base, layout.length());
  }
  return Status::Limit("rebuilt refcount layout does not converge");
}

// Marks the past-end finding of the table starting at `first_cluster` fixed
// (counted only, when the report did not keep it).
void MarkPastEndFixed(CheckContext& ctx, uint64_t first_cluster, const char* how) {
  for (Finding& finding : ctx.report.findings) {
    if (finding.kind != FindingKind::kPastEnd || finding.repaired ||
        finding.severity != Severity::kCorruption || finding.cluster_index != first_cluster) {
      continue;
    }
    finding.repaired = true;
    finding.message += std::string("; repaired: ") + how;
    --ctx.report.corruptions;
    ++ctx.report.corruptions_fixed;
    return;
  }
  auto omitted = ctx.omitted_open.find({FindingKind::kPastEnd, Severity::kCorruption});
  if (omitted == ctx.omitted_open.end()) return;
  --ctx.report.corruptions;
  ++ctx.report.corruptions_fixed;
  if (--omitted->second == 0) ctx.omitted_open.erase(omitted);
}

// The past-end tables the rebuild grows the file over get their reference;
// the old refcount table past the end is replaced. Their past-end findings
// count as fixed (else the dirty and corrupt bits would stay set and a
// second repair would clear them: I7).
void SettlePastEndTables(CheckContext& ctx, uint64_t start) {
  for (const PastEndRange& range : ctx.past_end_ranges) {
    if (!range.survives_rebuild) {
      MarkPastEndFixed(ctx, range.first_cluster, "the refcount structure is rebuilt elsewhere");
      continue;
    }
    if (!CoveredByRebuild(range, start)) continue;
    for (uint64_t c = range.first_cluster; c <= range.last_cluster; ++c) {
      ctx.SetImrt(c, ctx.Imrt(c) + 1);
    }
    MarkPastEndFixed(ctx, range.first_cluster,
                     "the rebuilt refcount structure extends the file over it");
  }
}

// Marks every refcount finding so far as fixed: the rebuilt structure holds
// exactly the counted references. An overflow is fixed only when the
// references it could not count belonged to the old refcount structure.
bool RebuildFixes(FindingKind kind, Severity severity) {
  if (severity == Severity::kLeak) return true;
  return severity == Severity::kCorruption &&
         (kind == FindingKind::kLeak || kind == FindingKind::kRefcountTooLow ||
          kind == FindingKind::kUnreferencedInUse || kind == FindingKind::kInvalidRefcountEntry);
}

void MarkRebuildFixes(CheckContext& ctx) {
  CheckReport& r = ctx.report;
  // The findings the report did not keep: counts only (overflows among
  // them stay open: which clusters they name is not known).
  for (auto it = ctx.omitted_open.begin(); it != ctx.omitted_open.end();) {
    const auto [kind, severity] = it->first;
    const bool unreadable =
        kind == FindingKind::kRefcountUnreadable && severity == Severity::kCheckError;
    if (!unreadable && !RebuildFixes(kind, severity)) {
      ++it;
      continue;
    }
    if (unreadable) {
      r.check_errors -= it->second;
    } else if (severity == Severity::kLeak) {
      r.leaks -= it->second;
      r.leaks_fixed += it->second;
    } else {
      r.corruptions -= it->second;
      r.corruptions_fixed += it->second;
    }
    it = ctx.omitted_open.erase(it);
  }
  for (Finding& finding : r.findings) {
    if (finding.repaired) continue;
    if (finding.kind == FindingKind::kRefcountOverflow) {
      if (ctx.Uncounted(finding.cluster_index) == 0) {
        finding.repaired = true;
        --r.corruptions;
        ++r.corruptions_fixed;
      }
      continue;
    }
    if (finding.kind == FindingKind::kRefcountUnreadable &&
        finding.severity == Severity::kCheckError) {
      finding.repaired = true;  // the block it could not read is gone
      --r.check_errors;
    } else if (finding.severity == Severity::kLeak) {
      finding.repaired = true;
      --r.leaks;
      ++r.leaks_fixed;
    } else if (RebuildFixes(finding.kind, finding.severity)) {
      finding.repaired = true;
      --r.corruptions;
      ++r.corruptions_fixed;
    }
  }
  r.refcounts_rebuilt = true;
}

// Writes the header fields refcount_table_offset and refcount_table_clusters
// (bytes 48..59, inside the first sector) with one sector write.
Status SwitchRefcountTable(CheckContext& ctx, uint64_t table_offset, uint32_t table_clusters) {
  std::vector<uint8_t> sector(512);
  QCRASH_RETURN_IF_ERROR(ctx.device.Read(0, sector));
  StoreBe64(&sector[f::kOffRefcountTableOffset], table_offset);
  StoreBe32(&sector[f::kOffRefcountTableClusters], table_clusters);
  QCRASH_RETURN_IF_ERROR(WriteChecked(ctx, 0, sector, {ClusterUse::kHeader}));
  ctx.header.refcount_table_offset = table_offset;
  ctx.header.refcount_table_clusters = table_clusters;
  return Status::Ok();
}

// The header edits of repair step 1, in one write of the first sector (all
// fields lie in bytes 60..95), so a crash leaves the old header or the new:
//   - the snapshot table cut before its first broken entry (nb_snapshots,
//     and snapshots_offset 0 when no entry is kept);
//   - autoclear bit 0 cleared when a bitmap structure is corrupt, which
//     discards every bitmap;
//   - autoclear bit 63 (journal valid) and incompatible bit 63 (journal
//     dirty) cleared when the journal area overlaps other metadata.
// What they stop referencing becomes leaks, lowered only after the flush in
// WriteTableEdits (R4).
Status WriteHeaderEdits(CheckContext& ctx) {
  static_assert(f::kOffAutoclearFeatures + 8 <= 512);
  std::vector<uint8_t> sector(512);
  QCRASH_RETURN_IF_ERROR(ctx.device.Read(0, sector));
  if (ctx.snapshots_kept) {
    const uint32_t kept = *ctx.snapshots_kept;
    const uint64_t table_offset = kept == 0 ? 0 : ctx.header.snapshots_offset;
    StoreBe32(&sector[f::kOffNbSnapshots], kept);
    StoreBe64(&sector[f::kOffSnapshotsOffset], table_offset);
    ctx.header.nb_snapshots = kept;
    ctx.header.snapshots_offset = table_offset;
  }
  if (ctx.discard_bitmaps) {
    const uint64_t autoclear = LoadBe64(&sector[f::kOffAutoclearFeatures]);
    StoreBe64(&sector[f::kOffAutoclearFeatures], autoclear & ~f::kAutoclearBitmaps);
  }
  if (ctx.discard_journal) {
    const uint64_t autoclear = LoadBe64(&sector[f::kOffAutoclearFeatures]);
    StoreBe64(&sector[f::kOffAutoclearFeatures], autoclear & ~f::kAutoclearJournalValid);
    const uint64_t incompatible = LoadBe64(&sector[f::kOffIncompatibleFeatures]);
    StoreBe64(&sector[f::kOffIncompatibleFeatures], incompatible & ~f::kIncompatJournalDirty);
  }
  QCRASH_RETURN_IF_ERROR(WriteChecked(ctx, 0, sector, {ClusterUse::kHeader}));
  ctx.snapshots_kept.reset();
  ctx.discard_bitmaps = false;
  ctx.discard_journal = false;
  return Status::Ok();
}

}  // namespace

Status WriteTableEdits(CheckContext& ctx) {
  const bool header_edits = ctx.snapshots_kept || ctx.discard_bitmaps || ctx.discard_journal;
  if (ctx.edited_tables.empty() && !header_edits) return Status::Ok();
  if (header_edits) QCRASH_RETURN_IF_ERROR(WriteHeaderEdits(ctx));
  for (const auto& [offset, bytes] : ctx.edited_tables) {
    QCRASH_RETURN_IF_ERROR(WriteChecked(
        ctx, offset, bytes, {ClusterUse::kActiveL1, ClusterUse::kSnapshotL1, ClusterUse::kL2}));
  }
  // Pointer removals (snapshot entries included) durable before any refcount
  // decrease (R4), and OFLAG_COPIED
  // changes durable before the dirty/corrupt bits are cleared.
  QCRASH_RETURN_IF_ERROR(ctx.device.Flush());
  ctx.edited_tables.clear();
  return Status::Ok();
}

void ExcludeOldRefcountStructure(CheckContext& ctx) {
  for (uint64_t cluster : ctx.old_refcount_clusters) ctx.SubtractReference(cluster);
  ctx.old_refcount_clusters.clear();
}

Status CheckRebuildReach(const CheckContext& ctx) {
  uint64_t start = 0;  // bytes: past every table that survives the rebuild
  for (const PastEndRange& range : ctx.past_end_ranges) {
    if (range.survives_rebuild)
      start = std::max(start, (range.last_cluster + 1) << ctx.header.cluster_bits);
  }
  if (start <= ctx.file_bytes || start - ctx.file_bytes <= kMaxRebuildGrowthBytes)
    return Status::Ok();
  return Status::Limit("repair: the rebuilt refcount structure would start at " + HexOffset(start) +
                       ", after a table the header names past the end of the file (" +
                       HexOffset(ctx.file_bytes) +
                       " bytes); limit: 1 GiB of growth; nothing written");
}

Status RebuildRefcountStructure(CheckContext& ctx) {
  // The new counts: every owner except the old refcount structure itself.
  ExcludeOldRefcountStructure(ctx);
  std::vector<uint64_t> counts(ctx.imrt_clusters());
  for (uint64_t c = 0; c < counts.size(); ++c) counts[c] = ctx.Imrt(c);
  QCRASH_ASSIGN_OR_RETURN(RebuildLayout layout, PlanRebuild(ctx, counts));
  SettlePastEndTables(ctx, layout.start);
  const uint32_t bits = ctx.header.cluster_bits;
  const uint64_t per_block = f::RefcountBlockEntries(bits, ctx.header.refcount_order);
  for (uint64_t c = layout.start; c < layout.end(); ++c) ctx.SetImrt(c, 1);
  for (uint64_t c = layout.start; c < layout.end(); ++c) {
    ctx.MarkMetadata(c << bits, ctx.cluster_bytes,
                     c < layout.start + layout.block_indices.size() ? ClusterUse::kRefcountBlock
                                                                    : ClusterUse::kRefcountTable);
  }
  std::map<uint64_t, std::vector<uint8_t>> blocks;
  std::vector<uint64_t> table((layout.table_clusters << bits) / 8, 0);
  for (size_t k = 0; k < layout.block_indices.size(); ++k) {
    const uint64_t t = layout.block_indices[k];
    std::vector<uint8_t> block(ctx.cluster_bytes, 0);
    for (uint64_t i = 0; i < per_block; ++i) {
      const uint64_t count = ctx.Imrt(t * per_block + i);
      if (count != 0) f::SetRefcount(block, i, ctx.header.refcount_order, count);
    }
    table[t] = (layout.start + k) << bits;
    // Step 2a: blocks go to clusters nothing references yet.
    QCRASH_RETURN_IF_ERROR(WriteChecked(ctx, table[t], block, {ClusterUse::kRefcountBlock}));
    blocks.emplace(t, std::move(block));
  }
  // The blocks must be durable before a table points at them (R2).
  QCRASH_RETURN_IF_ERROR(ctx.device.Flush());
  std::vector<uint8_t> table_bytes(table.size() * 8);
  for (size_t i = 0; i < table.size(); ++i) StoreBe64(&table_bytes[i * 8], table[i]);
  const uint64_t table_offset = (layout.start + layout.block_indices.size()) << bits;
  QCRASH_RETURN_IF_ERROR(
      WriteChecked(ctx, table_offset, table_bytes, {ClusterUse::kRefcountTable}));
  // The table must be durable before the header switches to it (R6).
  QCRASH_RETURN_IF_ERROR(ctx.device.Flush());
  QCRASH_RETURN_IF_ERROR(
      SwitchRefcountTable(ctx, table_offset, static_cast<uint32_t>(layout.table_clusters)));
  // The switch is durable before anything relies on the new counts.
  QCRASH_RETURN_IF_ERROR(ctx.device.Flush());
  ctx.refcounts.Replace(table_offset, std::move(table), std::move(blocks));
  ctx.rebuild = false;
  MarkRebuildFixes(ctx);
  return Status::Ok();
}

Status WriteRefcountFixes(CheckContext& ctx) {
  const auto dirty = ctx.refcounts.DirtyBlocks();
  if (dirty.empty()) return Status::Ok();
  for (const auto& [offset, block] : dirty) {
    QCRASH_RETURN_IF_ERROR(WriteChecked(ctx, offset, *block, {ClusterUse::kRefcountBlock}));
  }
  // Raised refcounts durable before OFLAG_COPIED is recomputed from them (R9).
  QCRASH_RETURN_IF_ERROR(ctx.device.Flush());
  ctx.refcounts.ClearDirty();
  return Status::Ok();
}

Status ClearHeaderBits(CheckContext& ctx) {
  const uint64_t bits = f::kIncompatDirty | f::kIncompatCorrupt;
  if (ctx.header.version < 3 || (ctx.header.incompatible_features & bits) == 0) return Status::Ok();
  uint8_t field[8];
  StoreBe64(field, ctx.header.incompatible_features & ~bits);
  QCRASH_RETURN_IF_ERROR(
      WriteChecked(ctx, f::kOffIncompatibleFeatures, field, {ClusterUse::kHeader}));
  // Everything the bits warned about is durable (earlier flushes); this makes
  // the clean state itself durable.
  QCRASH_RETURN_IF_ERROR(ctx.device.Flush());
  ctx.header.incompatible_features &= ~bits;
  ctx.report.header_bits_cleared = true;
  return Status::Ok();
}

}  // namespace qcrash::engine::check_internal
