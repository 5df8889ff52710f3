// Workload + crash harness: decodes the input into a crash-explorer case,
// runs it with properties::RunWorkload, picks one crash state from the input
// and recovers it with properties::RecoverState against the GuestOracle.
#include "fuzz/workload.h"

#include <algorithm>
#include <deque>
#include <iterator>
#include <utility>

#include "properties/oracle.h"
#include "properties/recovery.h"
#include "sim/crash_model.h"

namespace qcrash::fuzz {
namespace {

using properties::GuestOp;
using properties::kGuestSectorBytes;
using properties::OpKind;

constexpr size_t kMaxOps = 16;
constexpr uint64_t kMaxGuestBytes = uint64_t{2} << 20;   // at create
constexpr uint64_t kMaxResizeBytes = uint64_t{8} << 20;  // after resizes
constexpr size_t kMaxChosenSectors = 4096;

engine::JournalOptions DecodeJournal(uint8_t variant) {
  static constexpr uint64_t kRingBytes[] = {4 << 10, 8 << 10, 16 << 10, 64 << 10};
  engine::JournalOptions journal;
  journal.commit =
      (variant & 1) ? engine::JournalCommit::kDescriptorFlag : engine::JournalCommit::kHeader;
  journal.recovery = (variant & 2) ? engine::JournalRecovery::kScanOnly
                                   : engine::JournalRecovery::kHeaderBookkeeping;
  journal.terminator = (variant & 4) ? engine::JournalTerminator::kEscapeFlag
                                     : engine::JournalTerminator::kBlankBlock;
  const uint8_t checksum = (variant >> 3) & 3;
  journal.byte_sum_checksum = checksum == 1;
  // Scan-only recovery without checksums cannot tell a torn transaction
  // from a whole one (docs/journal-variants.md): known unsafe, not a find.
  journal.checksums = checksum != 2 || journal.recovery == engine::JournalRecovery::kScanOnly;
  journal.size_bytes = kRingBytes[(variant >> 5) & 3];
  return journal;
}

// The image format as the decoded amends leave it (so that each amend the
// decoder emits passes ValidateWorkload).
struct AmendState {
  uint32_t version = 3;
  uint32_t refcount_bits = 16;
  bool lazy = false;
  bool lazy_policy = false;  // the lazy policy: no downgrade, lazy_refcounts stays on
  bool downgraded = false;   // some amend asked for compat=0.10 (then no zstd)
};

// A flush record with bit 3, in a case without snapshots: an amend. The
// length byte picks a refcount width (1 << (byte % 7)), a compat toggle or
// a lazy_refcounts toggle.
GuestOp DecodeAmend(uint8_t length_field, AmendState& a) {
  GuestOp op{OpKind::kAmend, 0, 0, false};
  const uint8_t pick = length_field % 9;
  if (pick == 7 || a.version == 2) {
    if (a.version == 2) {
      op.amend.version = a.version = 3;
    } else if (!a.lazy_policy) {
      if (a.refcount_bits != 16) op.amend.refcount_bits = a.refcount_bits = 16;
      if (a.lazy) op.amend.lazy_refcounts = a.lazy = false;
      op.amend.version = a.version = 2;
      a.downgraded = true;
    } else {
      op.amend.refcount_bits = a.refcount_bits;
    }
  } else if (pick == 8 && !a.lazy_policy) {
    op.amend.lazy_refcounts = a.lazy = !a.lazy;
  } else {
    op.amend.refcount_bits = a.refcount_bits = 1u << (pick % 7);
  }
  return op;
}

// One 4-byte operation record on a disk of `size_bytes` (updated by a resize
// or a revert). `snapshot_sizes` (the live snapshots' disk sizes, oldest
// first) is null where the case writes no snapshot; `bitmaps` (the live
// bitmaps' numbers) null where it keeps no bitmap. `rebases`: the case has
// a backing file (and no snapshots): a flush with bit 3 is a safe rebase.
GuestOp DecodeOp(ByteReader& reader, uint64_t cluster_bytes, uint64_t& size_bytes,
                 std::deque<uint64_t>* snapshot_sizes, std::vector<uint64_t>* bitmaps,
                 bool compressed_allowed, AmendState* amend, bool rebases) {
  static constexpr OpKind kKinds[] = {OpKind::kWrite,   OpKind::kWriteZeroes, OpKind::kWriteZeroes,
                                      OpKind::kDiscard, OpKind::kFlush,       OpKind::kWrite,
                                      OpKind::kResize,  OpKind::kClose};
  const uint8_t kind_byte = reader.U8();
  const uint16_t sector_field = reader.U16();
  const uint8_t length_field = reader.U8();
  GuestOp op;
  op.kind = kKinds[kind_byte % std::size(kKinds)];
  op.may_unmap = kind_byte % std::size(kKinds) == 2;
  // Bit 3 of the kind byte: a resize shrinks, a flush is a snapshot
  // operation (where the case allows them), other requests get byte edges
  // (bits 4-7 pick how far inside a sector they start and end).
  const bool variant = (kind_byte & 0x08) != 0;
  if (op.kind == OpKind::kFlush && variant && snapshot_sizes == nullptr && amend != nullptr) {
    return DecodeAmend(length_field, *amend);
  }
  if (op.kind == OpKind::kFlush && variant && rebases) {
    // The length byte picks the target: none (a flatten), the first or
    // the second backing file.
    op.kind = OpKind::kRebase;
    op.offset_bytes = length_field % 3;
    return op;
  }
  if (op.kind == OpKind::kFlush && variant && snapshot_sizes != nullptr) {
    // The length byte picks create, delete (the oldest) or revert (to the
    // newest); without a live snapshot, a create.
    const uint8_t pick = snapshot_sizes->empty() ? 0 : length_field % 3;
    if (pick == 0) {
      op.kind = OpKind::kSnapshotCreate;
      snapshot_sizes->push_back(size_bytes);
    } else if (pick == 1) {
      op.kind = OpKind::kSnapshotDelete;
      snapshot_sizes->pop_front();
    } else {
      op.kind = OpKind::kSnapshotRevert;
      size_bytes = snapshot_sizes->back();
    }
    return op;
  }
  if (op.kind == OpKind::kFlush && variant) {
    // Where the case takes no snapshot, a flush with bit 3 is a commit
    // (bit 0 of the length byte: -d); the case then gets a backing file.
    op.kind = OpKind::kCommit;
    op.keep = (length_field & 1) != 0;
    return op;
  }
  if (op.kind == OpKind::kClose && variant && bitmaps != nullptr) {
    // A close with bit 3 is a bitmap operation: the length byte picks add
    // (the sector field its granularity), remove, clear, enable or
    // disable of a live bitmap the sector field picks; without a live
    // bitmap, an add.
    static constexpr uint64_t kGranularities[] = {0, 512, 4096, 65536, 1 << 20};
    static constexpr OpKind kBitmapKinds[] = {OpKind::kBitmapRemove, OpKind::kBitmapClear,
                                              OpKind::kBitmapEnable, OpKind::kBitmapDisable};
    const uint8_t pick = bitmaps->empty() ? 0 : length_field % 5;
    if (pick == 0) {
      op.kind = OpKind::kBitmapAdd;
      op.offset_bytes =
          bitmaps->empty() ? 0 : *std::max_element(bitmaps->begin(), bitmaps->end()) + 1;
      op.length_bytes = kGranularities[sector_field % std::size(kGranularities)];
      bitmaps->push_back(op.offset_bytes);
      return op;
    }
    const size_t which = sector_field % bitmaps->size();
    op.kind = kBitmapKinds[pick - 1];
    op.offset_bytes = (*bitmaps)[which];
    if (op.kind == OpKind::kBitmapRemove) bitmaps->erase(bitmaps->begin() + which);
    return op;
  }
  if (op.kind == OpKind::kFlush || op.kind == OpKind::kClose) return op;
  if (op.kind == OpKind::kResize) {
    const uint64_t step =
        (1 + sector_field % 256) * (variant ? 3 * kGuestSectorBytes : cluster_bytes);
    size_bytes = variant ? std::max(kGuestSectorBytes, size_bytes - std::min(size_bytes, step))
                         : std::min(kMaxResizeBytes, size_bytes + step);
    op.length_bytes = size_bytes;
    return op;
  }
  const uint64_t sectors = size_bytes / kGuestSectorBytes;
  const uint64_t cluster_sectors = cluster_bytes / kGuestSectorBytes;
  const uint64_t first = sector_field % sectors;
  const uint64_t count =
      std::min<uint64_t>(1 + length_field % (2 * cluster_sectors), sectors - first);
  op.offset_bytes = first * kGuestSectorBytes;
  op.length_bytes = count * kGuestSectorBytes;
  if (op.kind == OpKind::kWrite && variant && (kind_byte >> 4) == 0 && compressed_allowed) {
    // A write with bit 3 and no byte edges is a compressed write of the
    // clusters it touches (the disk's last one may be partial).
    const uint64_t end =
        std::min(size_bytes, (op.offset_bytes + op.length_bytes + cluster_bytes - 1) /
                                 cluster_bytes * cluster_bytes);
    op.kind = OpKind::kWriteCompressed;
    op.offset_bytes = op.offset_bytes / cluster_bytes * cluster_bytes;
    op.length_bytes = end - op.offset_bytes;
    return op;
  }
  if (variant) {
    const uint64_t edge = (kind_byte >> 4) * 31;  // 0..465 bytes
    const uint64_t head = std::min(edge, op.length_bytes - 1);
    op.offset_bytes += head;
    op.length_bytes -= head;
    op.length_bytes -= std::min(edge / 2, op.length_bytes - 1);
  }
  return op;
}

// The crash state the input chooses at `point`: one byte per pending sector
// picks its version; without input bytes a sector holds its latest version.
sim::CrashState ChooseState(const sim::CrashPoint& point, ByteReader& reader) {
  sim::CrashState state;
  state.point = point.point;
  for (size_t i = 0; i < point.pending.size() && i < kMaxChosenSectors && !reader.empty(); ++i) {
    const uint64_t index = reader.U8() % point.ChoiceCount(i);
    if (index == point.pending[i].count) continue;  // the latest version
    state.deviations.push_back(point.ChoiceAt(i, index));
  }
  return state;
}

// "I1 no dangling pointer": the property line of a failure report.
std::string PropertyName(const std::string& invariant) {
  static constexpr std::pair<const char*, const char*> kNames[] = {
      {"I1", "no dangling pointer"},       {"I2", "no over-reference"},
      {"I3", "no leak left after repair"}, {"I4", "flushed data intact"},
      {"I5", "old-or-new guest data"},     {"I6", "no stale journal replay"},
      {"I7", "recovery converges"},        {"I8", "a crash during recovery recovers"},
      {"I10", "reserved clusters kept"},   {"I11", "bitmap soundness"},
      {"I12", "snapshot immutability"}};
  for (const auto& [id, name] : kNames) {
    if (invariant == id) return invariant + " " + name;
  }
  return invariant;
}

// What a failure report says: every violation, the state and the case, so
// that it can be rebuilt as a workload file and a `qcrash replay` state id.
std::string Describe(const WorkloadCase& c, const properties::WorkloadRun& run,
                     const sim::CrashState& state, const properties::StateResult& result) {
  std::string out;
  for (const properties::Violation& v : result.violations)
    out += v.invariant + ": " + v.message + "\n";
  for (const std::string& finding : result.raw_findings) out += "  raw: " + finding + "\n";
  const engine::CreateOptions& image = c.workload.image;
  out += "==qcrash-fuzz== policy " + std::string(engine::PolicyName(c.run.open.policy)) +
         ", crash state " + sim::FormatCrashStateId(state) + " of " +
         std::to_string(run.timeline->PointCount()) + " points, image " +
         std::to_string(image.size_bytes) + " bytes, cluster_bits " +
         std::to_string(image.cluster_bits) + ", v" + std::to_string(image.version) +
         ", refcount_order " + std::to_string(image.refcount_order) + ", sector " +
         std::to_string(c.run.sector_bytes) + ", caches " +
         std::to_string(c.run.open.l2_cache_tables) + "/" +
         std::to_string(c.run.open.refcount_cache_blocks) + ", " +
         std::to_string(run.spans.size()) + " of " + std::to_string(c.workload.ops.size()) +
         " ops ran" + (run.workload_status.ok() ? "" : " (" + run.workload_status.ToString() + ")");
  for (size_t i = 0; i < c.workload.ops.size(); ++i) {
    out += "\n==qcrash-fuzz==   op " + std::to_string(i) + ": " +
           properties::DescribeOp(c.workload.ops[i]);
  }
  return out;
}

}  // namespace

WorkloadCase DecodeWorkload(ByteReader& reader) {
  static constexpr engine::OrderingPolicy kPolicies[] = {
      engine::OrderingPolicy::kWritethrough, engine::OrderingPolicy::kOrdered,
      engine::OrderingPolicy::kLazy, engine::OrderingPolicy::kExtent,
      engine::OrderingPolicy::kJournal};
  WorkloadCase c;
  c.workload.name = "fuzz";
  const uint8_t policy_byte = reader.U8();
  c.run.open = SmallOpenOptions(false);
  c.run.open.policy = kPolicies[(policy_byte & 7) % std::size(kPolicies)];
  c.run.open.l2_cache_tables = 1 + ((policy_byte >> 3) & 3);
  c.run.open.refcount_cache_blocks = 1 + ((policy_byte >> 5) & 3);
  c.run.sector_bytes = (policy_byte & 0x80) ? 4096 : 512;
  const bool lazy = c.run.open.policy == engine::OrderingPolicy::kLazy;
  const bool journal = c.run.open.policy == engine::OrderingPolicy::kJournal;
  const uint8_t format_byte = reader.U8();
  engine::CreateOptions& image = c.workload.image;
  image.cluster_bits = 9 + (format_byte & 7);
  image.version = (!lazy && !journal && (format_byte & 8)) ? 2 : 3;
  image.refcount_order = image.version == 2 ? 4 : ((format_byte >> 4) & 7) % 7;
  image.lazy_refcounts = lazy;
  const uint8_t journal_byte = reader.U8();
  if (journal) c.run.open.journal = DecodeJournal(journal_byte);
  const uint64_t cluster_bytes = uint64_t{1} << image.cluster_bits;
  image.size_bytes = std::min(kMaxGuestBytes, cluster_bytes * (4 + reader.U8() % 29));
  uint64_t size_bytes = image.size_bytes;
  // Snapshots as generate.cc allows them: v3 (the sharing change runs
  // under the dirty bit), refcounts of 16 bits or more (each snapshot adds
  // a reference), not under the journal policy (which writes none).
  // A raw backing file, with safe rebases between it, a second one and
  // none: bit 6 of the journal byte (unused without the journal), v3 (a
  // shrink over a backing file needs zero clusters), and no snapshots (a
  // rebase changes what they read through the backing file).
  const bool backing = !journal && image.version >= 3 && (journal_byte & 0x40) != 0;
  if (backing) properties::SetBacking(c.workload);
  std::deque<uint64_t> snapshot_sizes;
  const bool snapshots = image.version >= 3 && image.refcount_order >= 4 && !journal && !backing;
  // Bitmaps as generate.cc allows them: v3 (the autoclear bit), not under
  // the journal policy (which keeps none).
  std::vector<uint64_t> bitmaps;
  const bool bitmaps_allowed = image.version >= 3 && !journal;
  // Amends as generate.cc allows them: not under the journal policy
  // (which amends nothing), and only in cases without snapshots (whose
  // records keep their meaning).
  AmendState amend{image.version, image.version == 2 ? 16 : 1u << image.refcount_order, lazy, lazy,
                   false};
  const size_t op_count = reader.U8() % (kMaxOps + 1);
  for (size_t i = 0; i < op_count; ++i) {
    c.workload.ops.push_back(DecodeOp(
        reader, cluster_bytes, size_bytes, snapshots ? &snapshot_sizes : nullptr,
        bitmaps_allowed ? &bitmaps : nullptr, !journal, journal ? nullptr : &amend, backing));
  }
  // A commit writes into a backing file (recorded as the log's second
  // device, sim M12): the case gets one.
  if (std::any_of(c.workload.ops.begin(), c.workload.ops.end(),
                  [](const GuestOp& op) { return op.kind == OpKind::kCommit; })) {
    properties::SetBacking(c.workload);
  }
  // Compressed writes (not under the journal policy, which writes none):
  // the journal byte, unused without the journal, picks zstd on v3.
  const bool compressed =
      std::any_of(c.workload.ops.begin(), c.workload.ops.end(),
                  [](const GuestOp& op) { return properties::IsCompressedOp(op.kind); });
  if (compressed && image.version >= 3 && !amend.downgraded && (journal_byte & 1)) {
    image.compression_type = engine::CompressionType::kZstd;
  }
  return c;
}

Violation RunWorkloadCrashCase(const WorkloadCase& workload_case, ByteReader& crash_choices) {
  // The decoder's promise; a failure here is a harness bug, not an engine one.
  if (Status valid = properties::ValidateWorkload(workload_case.workload); !valid.ok())
    return {"the decoded workload is valid", valid.ToString()};
  auto run = properties::RunWorkload(workload_case.workload, workload_case.run);
  if (!run.ok()) return {};  // an option mix the engine refuses: nothing to check
  // A failed operation stops the run; the oracle counts it unacknowledged.
  const uint64_t point = crash_choices.Below(run->timeline->PointCount());
  const std::shared_ptr<const sim::CrashPoint> crash_point = run->timeline->Point(point);
  const sim::CrashState state = ChooseState(*crash_point, crash_choices);
  const properties::GuestOracle oracle(*run);
  const properties::StateResult result =
      properties::RecoverState(*run, oracle, crash_point, state, properties::RecoveryOptions{});
  if (result.violations.empty()) return {};
  return {PropertyName(result.violations.front().invariant),
          Describe(workload_case, *run, state, result)};
}

}  // namespace qcrash::fuzz
