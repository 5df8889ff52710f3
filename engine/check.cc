// CheckImage: the check/repair sequence, the refcount comparison and the
// OFLAG_COPIED pass. The walk is in check_walk.cc, the writes in repair.cc.
//
// Sequence (each repair step is one function of repair.cc; see its header
// comment for why each flush is where it is):
//   1. decode the header; load the refcount table; read snapshot table and
//      bitmap directory
//   2. phase 1: the metadata map (overlap detection)
//   3. phase 2: count every reference into the IMRT; in kAll, decide which
//      pointers to drop (edits kept in memory)
//   4. compare on-disk refcounts with the IMRT (dry run: learns whether the
//      refcount structure must be rebuilt)
//   5. repair: write pointer edits, flush; rebuild or fix refcounts, flush
//   6. OFLAG_COPIED against the (now fixed) refcounts; write, flush
//   7. clear the dirty and corrupt bits if nothing is left broken
#include "engine/check.h"

#include <algorithm>
#include <map>
#include <memory>

#include "engine/check_internal.h"
#include "engine/endian.h"
#include "engine/header.h"

namespace qcrash::engine {
namespace check_internal {
namespace {

namespace f = format;

bool IsRefcountFinding(FindingKind kind) {
  return kind == FindingKind::kLeak || kind == FindingKind::kRefcountTooLow ||
         kind == FindingKind::kUnreferencedInUse;
}

// Fills the owner of refcount findings: metadata from the map, data clusters
// from one more walk of the L2 tables (only when such findings exist).
Status ResolveOwners(CheckContext& ctx) {
  std::map<uint64_t, std::vector<size_t>> wanted;  // cluster -> finding indices
  for (size_t i = 0; i < ctx.report.findings.size() && wanted.size() < kMaxOwnerLookups; ++i) {
    Finding& finding = ctx.report.findings[i];
    if (!IsRefcountFinding(finding.kind) || !finding.owner.empty()) continue;
    const ClusterUse use = ctx.UseOf(finding.cluster_index);
    if (use != ClusterUse::kNone) finding.owner = ClusterUseName(use);
    wanted[finding.cluster_index].push_back(i);
  }
  if (wanted.empty()) return Status::Ok();
  const uint32_t bits = ctx.header.cluster_bits;
  // The owner's name is built only for an entry that maps a wanted cluster:
  // most entries do not, and the walk visits every one of them.
  auto note = [&](uint64_t offset, uint64_t size, const auto& who) {
    for (uint64_t k = offset >> bits; k <= (offset + size - 1) >> bits; ++k) {
      auto it = wanted.find(k);
      if (it == wanted.end()) continue;
      const std::string name = who();
      for (size_t index : it->second) {
        std::string& owner = ctx.report.findings[index].owner;
        if (owner.size() > 512) continue;  // enough to name the culprits
        owner += owner.empty() ? name : "; " + name;
      }
    }
  };
  return ForEachL2Entry(
      ctx, false,
      [&](const L1Source& source, uint32_t l1_index, uint64_t l2_offset, uint32_t l2_index,
          uint64_t entry) -> Status {
        auto who = [&] {
          const uint64_t guest = (uint64_t{l1_index} * ctx.header.l2_entries() + l2_index) << bits;
          return source.table + " L1[" + std::to_string(l1_index) + "] -> L2 " +
                 HexOffset(l2_offset) + "[" + std::to_string(l2_index) + "] (" + GuestRange(guest) +
                 ")";
        };
        if (entry & f::kOflagCompressed) {
          const f::CompressedExtent extent = f::DecodeCompressed(entry, bits);
          note(extent.host_offset, extent.bytes, [&] { return who() + " compressed"; });
        } else if ((entry & f::kL2EntryOffsetMask) != 0) {
          note(entry & f::kL2EntryOffsetMask, ctx.cluster_bytes, who);
        }
        return Status::Ok();
      });
}

// Flips OFLAG_COPIED in `entry` when it disagrees with the refcount; returns
// true when it disagreed.
// `owner` is only called for a mismatch: building names per entry is costly.
template <typename OwnerFn>
bool CopiedMismatch(CheckContext& ctx, uint64_t& entry, uint64_t refcount, bool repair,
                    uint64_t target, const OwnerFn& owner, const char* what) {
  const bool copied = (entry & f::kOflagCopied) != 0;
  if ((refcount == 1) == copied) return false;
  ctx.Report(FindingKind::kCopiedMismatch, Severity::kCorruption, repair, target, owner(),
             std::string(repair ? "Repairing" : "ERROR") + " OFLAG_COPIED " + what + " " +
                 HexOffset(entry) + " refcount=" + std::to_string(refcount));
  if (repair) entry = refcount == 1 ? entry | f::kOflagCopied : entry & ~f::kOflagCopied;
  return true;
}

// The refcount a COPIED pass compares with (nullopt: unknown, skip).
Result<std::optional<uint64_t>> CopiedTarget(CheckContext& ctx, CopiedPass pass, uint64_t cluster) {
  if (pass == CopiedPass::kClearAheadFromImrt) return std::optional<uint64_t>(ctx.Imrt(cluster));
  return ctx.refcounts.Get(cluster);
}

// Whether this pass handles an entry: clear-ahead passes only clear COPIED
// where the target refcount is 2 or more.
bool CopiedPassWants(CopiedPass pass, uint64_t entry, uint64_t refcount) {
  return pass == CopiedPass::kAll || ((entry & f::kOflagCopied) && refcount >= 2);
}

Status CheckCopiedInL2(CheckContext& ctx, uint32_t l1_index, uint64_t l2_offset, bool repair,
                       CopiedPass pass) {
  const std::span<uint8_t> table = ctx.L2Scratch();
  QCRASH_RETURN_IF_ERROR(ctx.ReadTable(l2_offset, table));
  bool edited = false;
  const uint32_t eb = ctx.header.l2_entry_bytes();
  for (uint32_t j = static_cast<uint32_t>(NextNonZeroL2Entry(table, 0, eb)); j < table.size() / eb;
       j = static_cast<uint32_t>(NextNonZeroL2Entry(table, j + 1, eb))) {
    uint64_t entry = LoadBe64(&table[j * eb]);
    const uint64_t offset = entry & f::kL2EntryOffsetMask;
    if ((entry & f::kOflagCompressed) || offset == 0) continue;
    std::optional<uint64_t> refcount = 1;  // a data-file cluster has one owner (QEMU's check)
    if (!ctx.header.has_data_file()) {
      QCRASH_ASSIGN_OR_RETURN(refcount, CopiedTarget(ctx, pass, offset >> ctx.header.cluster_bits));
    }
    if (!refcount || !CopiedPassWants(pass, entry, *refcount)) continue;
    auto owner = [&] {
      return "active L1[" + std::to_string(l1_index) + "] -> L2 " + HexOffset(l2_offset) + "[" +
             std::to_string(j) + "]";
    };
    if (CopiedMismatch(ctx, entry, *refcount, repair, offset, owner, "data cluster: l2_entry=") &&
        repair) {
      StoreBe64(&table[j * eb], entry);
      edited = true;
    }
  }
  if (edited) ctx.EditTable(l2_offset, table);
  return Status::Ok();
}

// Reads the header from cluster 0 of `device`.
Result<Header> ReadCheckHeader(BlockDevice& device) {
  const uint64_t size = device.SizeBytes();
  std::vector<uint8_t> probe(std::min<uint64_t>(size, kHeaderProbeBytes));
  QCRASH_RETURN_IF_ERROR(device.Read(0, probe));
  if (probe.size() < f::kOffClusterBits + 4) {
    return Status::Corruption("header: file too short for a qcow2 header");
  }
  const uint32_t cluster_bits = std::clamp<uint32_t>(LoadBe32(&probe[f::kOffClusterBits]),
                                                     f::kMinClusterBits, f::kMaxClusterBits);
  // Not zero-initialised: the read fills every byte.
  const uint64_t cluster0_bytes = std::min<uint64_t>(size, f::ClusterBytes(cluster_bits));
  const auto cluster0 = std::make_unique_for_overwrite<uint8_t[]>(cluster0_bytes);
  QCRASH_RETURN_IF_ERROR(device.Read(0, std::span<uint8_t>(cluster0.get(), cluster0_bytes)));
  return DecodeHeader(std::span<const uint8_t>(cluster0.get(), cluster0_bytes), size);
}

// Steps 1-3: everything up to the in-memory refcount table.
Status Walk(CheckContext& ctx) {
  CheckHeaderFields(ctx);
  QCRASH_RETURN_IF_ERROR(ctx.refcounts.Load(ctx.device, ctx.header));
  QCRASH_RETURN_IF_ERROR(ReadSnapshotTable(ctx));
  QCRASH_RETURN_IF_ERROR(ReadBitmapDirectory(ctx));
  QCRASH_RETURN_IF_ERROR(MarkAllMetadata(ctx));
  return CountAllReferences(ctx);
}

// Steps 4-5: compare, then (in repair modes) write edits and fix refcounts.
// Returns false in `may_fix_copied` when repair had to stop.
Status CompareAndRepair(CheckContext& ctx, uint64_t* highest, bool* may_fix_copied) {
  const CheckReport before_compare = ctx.report;
  const auto omitted_before_compare = ctx.omitted_open;
  QCRASH_RETURN_IF_ERROR(CompareRefcounts(ctx, false, highest));
  *may_fix_copied = ctx.repair() != RepairMode::kNone;
  if (ctx.repair() == RepairMode::kNone) return Status::Ok();
  if (ctx.rebuild && !ctx.fix_all()) {
    ctx.Report(FindingKind::kInvalidRefcountEntry, Severity::kCheckError, false,
               ctx.header.refcount_table_offset, "refcount table",
               "ERROR need to rebuild refcount structures (use -r all)");
    *may_fix_copied = false;
    return Status::Ok();
  }
  // A table the header names past the end of the file (the active L1, a
  // snapshot L1, a bitmap table) cannot be counted where it is. Repair grows
  // the file over it, which the refcount rebuild does: its new structure
  // goes after every such table and counts it (repair.cc PlanRebuild).
  if (ctx.fix_all() && std::any_of(ctx.past_end_ranges.begin(), ctx.past_end_ranges.end(),
                                   [](const PastEndRange& r) { return r.survives_rebuild; })) {
    ctx.rebuild = true;
  }
  if (ctx.rebuild) {
    QCRASH_RETURN_IF_ERROR(CheckRebuildReach(ctx));
    // Step 1: pointer edits, and OFLAG_COPIED cleared where the rebuilt
    // refcount will be >= 2, durable before the new refcounts (R4, R9).
    ExcludeOldRefcountStructure(ctx);
    QCRASH_RETURN_IF_ERROR(CheckCopiedFlags(ctx, true, CopiedPass::kClearAheadFromImrt));
    QCRASH_RETURN_IF_ERROR(WriteTableEdits(ctx));
    // Step 2.
    QCRASH_RETURN_IF_ERROR(RebuildRefcountStructure(ctx));
    QCRASH_RETURN_IF_ERROR(CompareRefcounts(ctx, true, highest));
  } else {
    ctx.report = before_compare;  // the dry run's findings are replaced by the fixing pass
    ctx.omitted_open = omitted_before_compare;
    QCRASH_RETURN_IF_ERROR(CompareRefcounts(ctx, true, highest));  // in memory only
    if (ctx.fix_all()) {
      QCRASH_RETURN_IF_ERROR(CheckCopiedFlags(ctx, true, CopiedPass::kClearAheadFromView));
    }
    // Step 1 (as above, with the fixed counts as targets).
    QCRASH_RETURN_IF_ERROR(WriteTableEdits(ctx));
  }
  // Step 3.
  return WriteRefcountFixes(ctx);
}

}  // namespace

Status CompareRefcounts(CheckContext& ctx, bool fix, uint64_t* highest_cluster) {
  *highest_cluster = 0;
  uint64_t limit = ctx.imrt_clusters();
  while (limit > ctx.nb_clusters && ctx.Imrt(limit - 1) == 0) --limit;
  for (uint64_t i = 0; i < limit; ++i) {
    QCRASH_ASSIGN_OR_RETURN(std::optional<uint64_t> on_disk, ctx.refcounts.Get(i));
    const uint64_t offset = i << ctx.header.cluster_bits;
    if (!on_disk) {
      ctx.Report(FindingKind::kRefcountUnreadable, Severity::kCheckError, false, offset, "",
                 "Can't get refcount for cluster " + std::to_string(i) +
                     ": its refcount block is misaligned");
      continue;
    }
    const uint64_t refcount = *on_disk;
    const uint64_t references = ctx.Imrt(i);
    if (refcount > 0 || references > 0) *highest_cluster = i;
    if (refcount == references) continue;
    if (refcount == 0) ctx.rebuild = true;
    const bool leak = refcount > references;
    const bool fixable =
        fix && ((leak && ctx.fix_leaks()) || (!leak && refcount != 0 && ctx.fix_all()));
    if (fixable) QCRASH_RETURN_IF_ERROR(ctx.refcounts.Set(i, references));
    const FindingKind kind = leak            ? FindingKind::kLeak
                             : refcount == 0 ? FindingKind::kUnreferencedInUse
                                             : FindingKind::kRefcountTooLow;
    ctx.Report(kind, leak ? Severity::kLeak : Severity::kCorruption, fixable, offset,
               leak && references == 0 ? "no owner" : "", [&] {
                 return std::string(fixable ? "Repairing"
                                    : leak  ? "Leaked"
                                            : "ERROR") +
                        " cluster " + std::to_string(i) + " refcount=" + std::to_string(refcount) +
                        " reference=" + std::to_string(references);
               });
  }
  return Status::Ok();
}

Status CheckCopiedFlags(CheckContext& ctx, bool fix, CopiedPass pass) {
  const CheckReport& r = ctx.report;
  const bool repair =
      fix && (ctx.fix_all() || (r.check_errors == 0 && r.corruptions == 0 && r.leaks == 0));
  const Header& h = ctx.header;
  L1Buffer buffer(ctx);
  std::vector<uint8_t>& l1 = buffer.bytes();
  QCRASH_RETURN_IF_ERROR(ctx.ReadL1(h.l1_table_offset, h.l1_size, l1));
  bool edited = false;
  for (uint32_t i = static_cast<uint32_t>(NextNonZeroEntry(l1, 0)); i < l1.size() / 8;
       i = static_cast<uint32_t>(NextNonZeroEntry(l1, i + 1))) {
    uint64_t entry = LoadBe64(&l1[i * 8]);
    const uint64_t l2_offset = entry & f::kL1EntryOffsetMask;
    if (l2_offset == 0) continue;
    QCRASH_ASSIGN_OR_RETURN(std::optional<uint64_t> refcount,
                            CopiedTarget(ctx, pass, l2_offset >> h.cluster_bits));
    if (!refcount) continue;
    if (!CopiedPassWants(pass, entry, *refcount)) {
      QCRASH_RETURN_IF_ERROR(CheckCopiedInL2(ctx, i, l2_offset, repair, pass));
      continue;
    }
    if (CopiedMismatch(
            ctx, entry, *refcount, repair, l2_offset,
            [&] { return "active L1[" + std::to_string(i) + "]"; },
            ("L2 cluster: l1_index=" + std::to_string(i) + " l1_entry=").c_str()) &&
        repair) {
      StoreBe64(&l1[i * 8], entry);
      edited = true;
    }
    QCRASH_RETURN_IF_ERROR(CheckCopiedInL2(ctx, i, l2_offset, repair, pass));
  }
  if (edited) ctx.EditTable(h.l1_table_offset, l1);
  return Status::Ok();
}

}  // namespace check_internal

Result<CheckReport> CheckImage(BlockDevice& device, const CheckOptions& options) {
  using namespace check_internal;  // NOLINT: the implementation's own namespace
  QCRASH_ASSIGN_OR_RETURN(Header header, ReadCheckHeader(device));
  CheckContext ctx(device, header, options);
  QCRASH_RETURN_IF_ERROR(ctx.Init());
  ctx.Progress(0);
  if (Status walk = Walk(ctx); !walk.ok()) {
    // Nothing is repaired after an incomplete walk: its counts are partial.
    ctx.Report(walk.code() == StatusCode::kLimit ? FindingKind::kLimit : FindingKind::kIoError,
               Severity::kCheckError, false, 0, "", "check could not complete: " + walk.ToString());
    return std::move(ctx.report);
  }
  uint64_t highest = 0;
  bool may_fix_copied = false;
  ctx.Progress(80);
  QCRASH_RETURN_IF_ERROR(CompareAndRepair(ctx, &highest, &may_fix_copied));
  ctx.Progress(90);
  QCRASH_RETURN_IF_ERROR(CheckCopiedFlags(ctx, may_fix_copied));
  if (may_fix_copied) QCRASH_RETURN_IF_ERROR(WriteTableEdits(ctx));
  ctx.report.image_end_offset = (highest + 1) << header.cluster_bits;
  if (options.repair != RepairMode::kNone && ctx.report.corruptions == 0 &&
      ctx.report.check_errors == 0) {
    QCRASH_RETURN_IF_ERROR(ClearHeaderBits(ctx));
  }
  QCRASH_RETURN_IF_ERROR(ResolveOwners(ctx));
  ctx.Progress(100);
  return std::move(ctx.report);
}

const char* FindingKindName(FindingKind kind) {
  switch (kind) {
    case FindingKind::kLeak:
      return "leak";
    case FindingKind::kRefcountTooLow:
      return "refcount-too-low";
    case FindingKind::kUnreferencedInUse:
      return "refcount-zero-in-use";
    case FindingKind::kRefcountOverflow:
      return "refcount-overflow";
    case FindingKind::kRefcountUnreadable:
      return "refcount-unreadable";
    case FindingKind::kCopiedMismatch:
      return "copied-mismatch";
    case FindingKind::kPastEnd:
      return "past-end";
    case FindingKind::kMisaligned:
      return "misaligned";
    case FindingKind::kReservedBits:
      return "reserved-bits";
    case FindingKind::kOverlap:
      return "overlap";
    case FindingKind::kInvalidRefcountEntry:
      return "invalid-refcount-entry";
    case FindingKind::kZeroFlagOnV2:
      return "zero-flag-on-v2";
    case FindingKind::kCompressedInvalid:
      return "compressed-invalid";
    case FindingKind::kSubclusterBitmap:
      return "subcluster-bitmap";
    case FindingKind::kHeader:
      return "header";
    case FindingKind::kSnapshotTable:
      return "snapshot-table";
    case FindingKind::kBitmap:
      return "bitmap";
    case FindingKind::kIoError:
      return "io-error";
    case FindingKind::kLimit:
      return "limit";
  }
  return "?";
}

const char* SeverityName(Severity severity) {
  switch (severity) {
    case Severity::kInfo:
      return "info";
    case Severity::kLeak:
      return "leak";
    case Severity::kCorruption:
      return "corruption";
    case Severity::kCheckError:
      return "check-error";
  }
  return "?";
}

}  // namespace qcrash::engine
