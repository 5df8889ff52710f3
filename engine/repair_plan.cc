// The repair planner (engine/repair_plan.h): decides the edits check's walk
// proposes. Only RepairMode::kAll edits tables; the other modes report the
// findings as check does.
#include "engine/repair_plan.h"

#include <utility>

namespace qcrash::engine::check_internal {
namespace {

namespace f = format;

void AddDropped(CheckContext& ctx, std::string table, uint64_t guest_offset, uint64_t length_bytes,
                std::string reason) {
  if (ctx.report.dropped.size() >= kMaxFindings) return;
  ctx.report.dropped.push_back({std::move(table), guest_offset, length_bytes, std::move(reason)});
}

std::string OwnerOf(const CheckContext& ctx, const EntryProposal& p) {
  return p.table == EntryProposal::Table::kL1
             ? L1Owner(*p.source, p.l1_index)
             : L2Owner(ctx, *p.source, p.l1_index, p.l2_offset, p.l2_index);
}

// Applies a pointer drop: the finding, the guest range, the new entry.
uint64_t ApplyDrop(CheckContext& ctx, const EntryProposal& p) {
  if (p.table == EntryProposal::Table::kL1) {
    ctx.Report(p.kind, Severity::kCorruption, true, p.target, OwnerOf(ctx, p),
               "Repairing: " + p.why + "; L1 entry dropped");
    if (p.record_dropped) {
      const uint64_t cover =
          f::L1EntryCoverBytes(ctx.header.cluster_bits, ctx.header.extended_l2());
      AddDropped(ctx, p.source->table, uint64_t{p.l1_index} * cover, cover, p.why);
    }
    return 0;
  }
  const bool zero = (p.entry & f::kOflagZero) != 0 && (p.entry & f::kOflagCompressed) == 0;
  const uint64_t guest = (uint64_t{p.l1_index} * ctx.header.l2_entries() + p.l2_index)
                         << ctx.header.cluster_bits;
  ctx.Report(
      p.kind, Severity::kCorruption, true, p.target, [&] { return OwnerOf(ctx, p); },
      [&] {
        return "Repairing: " + p.why + "; L2 entry " + HexOffset(p.entry) +
               (zero ? " made a plain zero cluster" : " dropped");
      });
  if (!zero) AddDropped(ctx, p.source->table, guest, ctx.cluster_bytes, p.why);
  // A zero cluster stays zero without its preallocated host cluster (with
  // extended L2 the bitmap says so: CountL2 turns allocated subclusters of
  // a dropped entry into zero ones).
  return zero && ctx.header.version == 3 && !ctx.header.extended_l2() ? f::kOflagZero : 0;
}

}  // namespace

std::string L1Owner(const L1Source& source, uint32_t l1_index) {
  return source.table + " L1[" + std::to_string(l1_index) + "]";
}

std::string L2Owner(const CheckContext& ctx, const L1Source& source, uint32_t l1_index,
                    uint64_t l2_offset, uint32_t l2_index) {
  const uint64_t guest = (uint64_t{l1_index} * ctx.header.l2_entries() + l2_index)
                         << ctx.header.cluster_bits;
  return L1Owner(source, l1_index) + " -> L2 " + HexOffset(l2_offset) + "[" +
         std::to_string(l2_index) + "] (" + GuestRange(guest) + ")";
}

std::optional<uint64_t> DecideEntryEdit(CheckContext& ctx, const EntryProposal& p) {
  const bool apply = ctx.repair() == RepairMode::kAll;
  if (p.edit == EntryProposal::Edit::kClearBits) {
    ctx.Report(
        p.kind, Severity::kCorruption, apply, p.target, [&] { return OwnerOf(ctx, p); },
        [&] { return (apply ? "Repairing" : "ERROR") + p.why; });
    if (!apply) return std::nullopt;
    return p.entry & ~p.bits;
  }
  if (apply) return ApplyDrop(ctx, p);
  if (p.unapplied_severity) {
    ctx.Report(
        p.kind, *p.unapplied_severity, false, p.target, [&] { return OwnerOf(ctx, p); },
        p.unapplied_message);
  }
  return std::nullopt;
}

bool DecideSnapshotCut(CheckContext& ctx, const SnapshotCutProposal& p) {
  if (ctx.repair() != RepairMode::kAll) {
    ctx.Report(FindingKind::kSnapshotTable, Severity::kCorruption, false, p.offset, p.owner,
               "ERROR " + p.why);
    return false;
  }
  const uint32_t total = ctx.header.nb_snapshots;
  const std::string entries = std::to_string(p.index) + ".." + std::to_string(total - 1);
  ctx.Report(FindingKind::kSnapshotTable, Severity::kCorruption, true, p.offset, p.owner,
             "Repairing: " + p.why + "; discarding snapshot table entries " + entries);
  AddDropped(ctx, "snapshot table entries " + entries, 0, ctx.header.size_bytes, p.why);
  ctx.snapshots_kept = p.index;
  return true;
}

bool DecideDiscard(CheckContext& ctx, const DiscardProposal& p) {
  if (ctx.repair() != RepairMode::kAll) {
    ctx.Report(p.kind, p.unapplied_severity, false, p.offset, p.owner, p.unapplied_message);
    return false;
  }
  if (p.structure == DiscardProposal::Structure::kBitmaps) {
    ctx.Report(p.kind, Severity::kCorruption, true, p.offset, p.owner,
               "Repairing: " + p.why + "; discarding all bitmaps (autoclear bit 0 cleared)");
    ctx.discard_bitmaps = true;
    return true;
  }
  // The engine allocates the journal area for itself (refcount 1), so an
  // area over header-positioned metadata is not a journal: replaying it
  // would write over that metadata. Clearing the journal-valid bit
  // releases the area (an old tool's meaning: never used again), and the
  // journal-dirty bit goes with it, since the engine refuses an image that
  // is dirty without a valid journal.
  const bool dirty = (ctx.header.incompatible_features & f::kIncompatJournalDirty) != 0;
  ctx.Report(p.kind, Severity::kCorruption, true, p.offset, p.owner,
             "Repairing: " + p.why + "; discarding the journal (journal-valid bit cleared" +
                 (dirty ? ", journal-dirty bit cleared: its transactions are not replayed)" : ")"));
  ctx.discard_journal = true;
  ctx.header.autoclear_features &= ~f::kAutoclearJournalValid;
  ctx.header.incompatible_features &= ~f::kIncompatJournalDirty;
  return true;
}

bool PlansDiscards(const CheckContext& ctx) { return ctx.repair() == RepairMode::kAll; }

}  // namespace qcrash::engine::check_internal
