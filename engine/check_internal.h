// Shared state of one check/repair run (CheckContext), reached through three
// narrow interfaces: FindingLog (report a finding), TableReader (read a
// table, keep repair's table edits) and ClusterLedger (record a reference
// in the in-memory refcount table, IMRT; the per-cluster metadata map used
// for overlap detection); plus the on-disk refcount view. Internal to
// engine/check*.cc, engine/journal_check.cc and engine/repair*.cc.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "engine/block_device.h"
#include "engine/check.h"
#include "engine/header.h"
#include "engine/qcow2_format.h"
#include "engine/status.h"

namespace qcrash::engine::check_internal {

// Limits against hostile images (every walk and allocation is bounded).
inline constexpr uint64_t kMaxClustersChecked = uint64_t{1} << 27;  // 5 bytes of memory each
// L2 tables read by one walk: 2^21 covers 1 PiB of guest disk per snapshot at
// 64 KiB clusters, and bounds a hostile image whose L1 entries all point at
// one table to 2^21 table reads.
inline constexpr uint64_t kMaxL2Visits = uint64_t{1} << 21;
// L1 bytes over all snapshots: a hostile table of 65536 snapshots with 32 MiB
// L1s each would otherwise mean 2 TiB of (zero-filled) reads.
inline constexpr uint64_t kMaxTotalSnapshotL1Bytes = uint64_t{256} << 20;
inline constexpr uint64_t kMaxSnapshotTableBytes = uint64_t{64} << 20;
// How far past the end of the file a refcount rebuild may place its new
// structure (it goes after every table the header names past the end, so
// that the grown file holds them): further, repair fails with Limit instead
// of sizing its per-cluster arrays by a hostile offset.
inline constexpr uint64_t kMaxRebuildGrowthBytes = uint64_t{1} << 30;
inline constexpr uint64_t kMaxBitmapDirectoryBytes = uint64_t{64} << 20;
inline constexpr uint32_t kMaxBitmaps = 65535;
inline constexpr uint64_t kMaxBitmapTableBytes = uint64_t{64} << 20;
inline constexpr uint32_t kMaxSnapshotExtraBytes = 1024;
inline constexpr size_t kMaxOwnerLookups = 1000;  // clusters whose referrers a finding names

// First metadata use of a host cluster, for overlap detection. Data is not
// recorded here: a data reference is checked against this map.
enum class ClusterUse : uint8_t {
  kNone,
  kHeader,
  kActiveL1,
  kSnapshotL1,
  kL2,
  kRefcountTable,
  kRefcountBlock,
  kSnapshotTable,
  kBitmapDirectory,
  kBitmapTable,
  kJournal,
};
const char* ClusterUseName(ClusterUse use);

struct SnapshotInfo {
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
  std::string id;
  std::string name;
  bool usable = false;     // aligned and within the L1 size limit
  uint64_t entry_end = 0;  // where the entry ends, from the table's start (padded to 8)
};

struct BitmapInfo {
  uint64_t table_offset = 0;
  uint32_t table_entries = 0;
  std::string name;
};

// Clusters a structure the header or a table names occupies although it lies
// one cluster or more past the end of the file (so the IMRT could not count
// it). A refcount rebuild allocates none of them; one that ends up below the
// rebuilt structure is inside the grown file and is counted there.
struct PastEndRange {
  uint64_t first_cluster = 0;
  uint64_t last_cluster = 0;
  bool survives_rebuild = true;  // false: the old refcount table, replaced by the rebuild
};

// An L1 table as the walk sees it: the active one or a snapshot's.
struct L1Source {
  std::string table;  // "active" or "snapshot 1 (name)"
  uint64_t offset = 0;
  uint32_t entries = 0;
  bool active = false;
};

// The refcounts stored on disk, read lazily block by block, and the changes
// repair makes to them (written by repair.cc in one ordered step).
class RefcountView {
 public:
  RefcountView() = default;
  // Reads the refcount table (bytes past the end of the file read as zeroes,
  // as QEMU reads them).
  Status Load(BlockDevice& device, const Header& header);
  // Replaces the table after a rebuild; blocks are given in full.
  void Replace(uint64_t table_offset, std::vector<uint64_t> table,
               std::map<uint64_t, std::vector<uint8_t>> blocks);

  // The refcount of `cluster`; nullopt when its block is misaligned.
  Result<std::optional<uint64_t>> Get(uint64_t cluster);
  // Sets a refcount whose block exists (callers only raise or lower counts
  // that Get returned as non-zero, so the block is always present).
  Status Set(uint64_t cluster, uint64_t value);

  const std::vector<uint64_t>& table() const { return table_; }
  uint64_t entries_per_block() const { return entries_per_block_; }
  // Blocks changed by Set, by table index, with their host offsets.
  std::vector<std::pair<uint64_t, const std::vector<uint8_t>*>> DirtyBlocks() const;
  void ClearDirty() { dirty_.clear(); }

 private:
  Result<std::vector<uint8_t>*> BlockFor(uint64_t table_index, bool* unreadable);

  BlockDevice* device_ = nullptr;
  uint32_t cluster_bits_ = 16;
  uint32_t refcount_order_ = 4;
  uint64_t entries_per_block_ = 0;
  std::vector<uint64_t> table_;
  std::map<uint64_t, std::vector<uint8_t>> blocks_;  // by table index
  std::map<uint64_t, bool> dirty_;                   // table indices written by Set
  uint64_t last_index_ = 0;                          // one-block cache for sequential Get
  std::vector<uint8_t>* last_block_ = nullptr;
};

// ---- The narrow interfaces of a check run ---------------------------------------
// CheckContext (below) is made of three parts, each a small interface with
// its own state, so that a module that needs one reaches only that one:
//   FindingLog    report a finding (every check module, the repair planner);
//   TableReader   read a table, and keep repair's edits to tables (the walk,
//                 the COPIED pass, repair step 1);
//   ClusterLedger record a reference (the IMRT) and the metadata use of a
//                 cluster (the walk, the bitmap and journal checks, the
//                 refcount comparison and the rebuild).
// What repair decides about a broken entry is not here: the walk proposes
// and engine/repair_plan.h decides.

// FindingLog: the findings of one run and their counts (CheckReport).
class FindingLog {
 public:
  // Records a finding and counts it. A repaired finding counts as fixed.
  // Counts a finding and keeps it while fewer than the limit are kept.
  // `owner` and `message` are strings, or callables returning one: those
  // run only for a finding that is kept, so a walk over thousands of broken
  // entries does not format thousands of messages nobody sees.
  template <class Owner, class Message>
  void Report(FindingKind kind, Severity severity, bool repaired, uint64_t host_offset,
              Owner&& owner, Message&& message) {
    ListCorruptCluster(kind, severity, host_offset);
    if (!CountFinding(kind, severity, repaired)) return;
    Keep(kind, severity, repaired, host_offset, Materialize(std::forward<Owner>(owner)),
         Materialize(std::forward<Message>(message)));
  }
  // Whether the next finding would be kept (callers that build a finding
  // in several steps can skip the work).
  bool KeepsFindings() const { return report.findings.size() < max_findings_; }

  CheckReport report;
  // Findings counted but not kept, still unrepaired, by kind and severity:
  // a rebuild fixes them too and moves their counts (repair.cc).
  std::map<std::pair<FindingKind, Severity>, uint64_t> omitted_open;

 protected:
  FindingLog(size_t max_findings, uint32_t cluster_bits, bool list_corrupt_clusters)
      : max_findings_(max_findings),
        cluster_bits_(cluster_bits),
        list_corrupt_clusters_(list_corrupt_clusters) {}

 private:
  // CheckOptions::list_corrupt_clusters: every corruption, past the limit too.
  void ListCorruptCluster(FindingKind kind, Severity severity, uint64_t host_offset) {
    if (list_corrupt_clusters_ &&
        (severity == Severity::kCorruption || severity == Severity::kCheckError)) {
      report.corrupt_clusters.emplace(host_offset >> cluster_bits_, kind);
    }
  }
  // Counts a finding; returns whether it is kept.
  bool CountFinding(FindingKind kind, Severity severity, bool repaired);
  void Keep(FindingKind kind, Severity severity, bool repaired, uint64_t host_offset,
            std::string owner, std::string message);
  template <class T>
  static std::string Materialize(T&& value) {
    if constexpr (std::is_invocable_v<T&>) {
      return value();
    } else {
      return std::string(std::forward<T>(value));
    }
  }

  size_t max_findings_ = kMaxFindings;
  uint32_t cluster_bits_ = 16;
  bool list_corrupt_clusters_ = false;
};

// TableReader: bounded reads of the image's tables, as repair will leave
// them: an L1 or L2 table repair edited in this run reads as edited.
class TableReader {
 public:
  // Reads [offset, offset + out.size()); bytes past the end of the file read
  // as zeroes, as QEMU's block layer returns them.
  Status ReadZeroFilled(uint64_t offset, std::span<uint8_t> out);
  // An L1 or L2 table, from the edits repair made earlier in this run if any.
  Status ReadTable(uint64_t offset, std::span<uint8_t> out);
  // An L1 table of `entries` entries at `offset`, as far as it lies in the
  // file: the entries past the end read as zeroes and are empty, so a
  // hostile l1_size (up to 32 MiB of table) costs what the file holds.
  // Every walk reads L1 tables this way, so repair's edits keep one size.
  Status ReadL1(uint64_t offset, uint64_t entries, std::vector<uint8_t>& out);
  // Marks a table (already read into `bytes`) as edited by repair.
  void EditTable(uint64_t offset, std::span<const uint8_t> bytes);
  // One cluster of scratch space for the L2 table being visited, allocated
  // once per run. Its users (CountL2, CheckCopiedInL2) read one table into
  // it and finish with it before any other table is read.
  std::span<uint8_t> L2Scratch();

  // The storage L1Buffer lends (below).
  std::vector<uint8_t> l1_pool;
  // Edited L1/L2 tables by host offset, written by repair step 1.
  std::map<uint64_t, std::vector<uint8_t>> edited_tables;

 protected:
  explicit TableReader(BlockDevice& device) : table_device_(device) {}
  void SetTableGeometry(uint64_t file_bytes, uint64_t cluster_bytes) {
    table_file_bytes_ = file_bytes;
    table_cluster_bytes_ = cluster_bytes;
  }

 private:
  BlockDevice& table_device_;
  uint64_t table_file_bytes_ = 0;
  uint64_t table_cluster_bytes_ = 0;
  std::unique_ptr<uint8_t[]> l2_scratch_;  // cluster_bytes, see L2Scratch
};

// ClusterLedger: per host cluster, the references counted (the in-memory
// refcount table, IMRT) and the first metadata use (for overlap detection).
// A reference it cannot count is reported through the FindingLog.
class ClusterLedger {
 public:
  // qcow2_inc_refcounts_imrt: one reference for every cluster [offset, offset+size)
  // touches. A range ending one cluster or more past the end of the file is
  // a corruption and is not counted. Returns false when it was not counted.
  // `owner` as in FindingLog::Report: a string or a callable, run only when a finding is kept.
  template <class Owner>
  bool AddReference(uint64_t offset, uint64_t size, Owner&& owner) {
    if (size == 0) return true;
    if (PastEnd(offset, size)) {
      NotePastEnd(offset, size);
      log_.Report(FindingKind::kPastEnd, Severity::kCorruption, false, offset, owner, [&] {
        return "ERROR: counting reference for region exceeding the end of the file by one cluster "
               "or more: offset " +
               HexOffset(offset) + " size " + HexOffset(size);
      });
      return false;
    }
    const uint64_t first = offset >> ledger_cluster_bits_;
    const uint64_t last = (offset + size - 1) >> ledger_cluster_bits_;
    for (uint64_t k = first; k <= last && k < imrt_.size(); ++k) {
      if (imrt_[k] < ledger_refcount_max_) {
        ++imrt_[k];
        continue;
      }
      ++uncounted_[k];
      log_.Report(
          FindingKind::kRefcountOverflow, Severity::kCorruption, false, k << ledger_cluster_bits_,
          owner, [&] {
            return "ERROR: overflow cluster offset=" + HexOffset(k << ledger_cluster_bits_) +
                   ": use a wider refcount_order (qemu-img amend) or convert to a clean "
                   "copy";
          });
    }
    return true;
  }
  // The hot path of AddReference: counts and returns true when the range lies
  // inside the file and no count overflows; otherwise changes nothing and
  // returns false (the caller then calls AddReference with the owner's name).
  bool TryAddReference(uint64_t offset, uint64_t size) {
    if (size == 0 || PastEnd(offset, size)) return size == 0;
    const uint64_t first = offset >> ledger_cluster_bits_;
    const uint64_t last = (offset + size - 1) >> ledger_cluster_bits_;
    if (last >= imrt_.size()) return false;
    for (uint64_t k = first; k <= last; ++k) {
      if (imrt_[k] >= ledger_refcount_max_) return false;
    }
    for (uint64_t k = first; k <= last; ++k) ++imrt_[k];
    return true;
  }
  uint64_t Imrt(uint64_t cluster) const { return cluster < imrt_.size() ? imrt_[cluster] : 0; }
  // Takes one reference away. References the IMRT could not count (the
  // count was at the refcount width's maximum: an overflow) go first, so
  // excluding an over-counted owner never takes another owner's count down.
  void SubtractReference(uint64_t cluster) {
    if (auto it = uncounted_.find(cluster); it != uncounted_.end()) {
      if (--it->second == 0) uncounted_.erase(it);
      return;
    }
    if (cluster < imrt_.size() && imrt_[cluster] > 0) --imrt_[cluster];
  }
  // References to `cluster` beyond what its refcount width can hold.
  uint64_t Uncounted(uint64_t cluster) const {
    auto it = uncounted_.find(cluster);
    return it == uncounted_.end() ? 0 : it->second;
  }
  uint64_t imrt_clusters() const { return imrt_.size(); }
  // Sets a count directly (rebuild: the new structure's own clusters), growing the IMRT.
  void SetImrt(uint64_t cluster, uint64_t count);
  bool PastEnd(uint64_t offset, uint64_t size) const;

  // Records the first metadata use of every cluster of [offset, offset+size)
  // inside the file; returns the use already recorded for a different kind,
  // or kNone. Same-kind reuse (a shared L2 table) is not an overlap.
  ClusterUse MarkMetadata(uint64_t offset, uint64_t size, ClusterUse use);
  ClusterUse UseOf(uint64_t cluster) const {
    return cluster < use_.size() ? use_[cluster] : ClusterUse::kNone;
  }

  // kAll: references AddReference could not count because they lie past the end.
  std::vector<PastEndRange> past_end_ranges;

 protected:
  ClusterLedger(FindingLog& log, bool keeps_past_end_ranges)
      : log_(log), keeps_past_end_ranges_(keeps_past_end_ranges) {}
  // Sizes the ledger for `nb_clusters` clusters of the file (one more: a
  // reference may end less than a cluster past the end of the file).
  void InitLedger(uint64_t file_bytes, uint32_t cluster_bits, uint64_t nb_clusters,
                  uint64_t refcount_max);

 private:
  // AddReference's past-end bookkeeping (the ranges a rebuild must cover).
  void NotePastEnd(uint64_t offset, uint64_t size);

  FindingLog& log_;
  bool keeps_past_end_ranges_ = false;
  uint64_t ledger_file_bytes_ = 0;
  uint32_t ledger_cluster_bits_ = 16;
  uint64_t ledger_refcount_max_ = 0;
  std::vector<uint32_t> imrt_;
  std::map<uint64_t, uint64_t> uncounted_;  // overflowed references per cluster
  std::vector<ClusterUse> use_;
};

// The state of one check/repair run: the three parts above, the image's
// geometry, the on-disk refcounts and the structures the walk found, and
// what repair will write besides edited tables.
class CheckContext : public FindingLog, public TableReader, public ClusterLedger {
 public:
  CheckContext(BlockDevice& device, const Header& header, const CheckOptions& options);

  // Setup: sizes the IMRT from the file size (bounded by kMaxClustersChecked).
  Status Init();

  bool fix_leaks() const { return options_.repair != RepairMode::kNone; }
  bool fix_all() const { return options_.repair == RepairMode::kAll; }
  RepairMode repair() const { return options_.repair; }
  // CheckOptions::progress, when the caller asked for it.
  void Progress(double percent) const {
    if (options_.progress) options_.progress(percent);
  }

  BlockDevice& device;
  Header header;
  uint64_t file_bytes = 0;
  uint64_t cluster_bytes = 0;
  uint64_t nb_clusters = 0;  // clusters of the file, rounded up
  uint64_t refcount_max = 0;
  RefcountView refcounts;
  std::vector<SnapshotInfo> snapshots;
  uint64_t snapshot_table_bytes = 0;
  std::vector<BitmapInfo> bitmaps;  // only while autoclear bit 0 says they are valid
  bool rebuild = false;             // the refcount structure must be rebuilt
  uint64_t l2_visits = 0;
  // Clusters the old refcount structure counted for itself (table and
  // blocks), so a rebuild can leave them out of the new counts.
  std::vector<uint64_t> old_refcount_clusters;
  // kAll: the snapshot table keeps only its first entries, up to the first
  // broken one (QEMU discards the broken tail); written by repair step 1.
  std::optional<uint32_t> snapshots_kept;
  // kAll: a bitmap structure is corrupt, so every bitmap is discarded by
  // clearing autoclear bit 0 (what a writer that does not know bitmaps does);
  // written by repair step 1.
  bool discard_bitmaps = false;
  // kAll: the journal area overlaps the header, an L1 table, the refcount
  // table or the snapshot table, so it cannot be ours: it is discarded by
  // clearing the journal-valid and journal-dirty bits; written by repair step 1.
  bool discard_journal = false;

 private:
  CheckOptions options_;
};

// ---- the walk (check_walk.cc) ---------------------------------------------------
// Header-level findings (dirty and corrupt bits, tables past the end, ...).
void CheckHeaderFields(CheckContext& ctx);
// One L1 table's bytes, lent by the context for the length of a walk: the
// walks read L1 tables several times per check, and a fresh allocation of a
// (hostile, up to 32 MiB) table pays its page faults each time (3.5 s for a
// check -r all of one fuzz input before, with glibc's mmap'd allocations).
// Contents are stale until ReadL1 fills them.
class L1Buffer {
 public:
  explicit L1Buffer(TableReader& tables) : tables_(tables), bytes_(std::move(tables.l1_pool)) {}
  ~L1Buffer() { tables_.l1_pool = std::move(bytes_); }
  L1Buffer(const L1Buffer&) = delete;
  L1Buffer& operator=(const L1Buffer&) = delete;
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  TableReader& tables_;
  std::vector<uint8_t> bytes_;
};

// Reads the snapshot table into ctx.snapshots (findings for unusable entries).
Status ReadSnapshotTable(CheckContext& ctx);
// Bitmaps (check_bitmaps.cc): directory parse, metadata map, references.
Status ReadBitmapDirectory(CheckContext& ctx);
void MarkBitmaps(CheckContext& ctx);
Status CountBitmaps(CheckContext& ctx);
// The journal area (engine/journal_check.cc), while the journal-valid bit is
// set: phase 1 marks it as metadata (in kAll, a journal overlapping the
// metadata marked before it is discarded); phase 2 counts one reference.
void MarkJournal(CheckContext& ctx);
void CountJournal(CheckContext& ctx);
// Phase 1: records the metadata clusters of every structure in the map.
Status MarkAllMetadata(CheckContext& ctx);
// Phase 2: counts every reference (calculate_refcounts).
Status CountAllReferences(CheckContext& ctx);
// The L1 sources the walk visits: the active table and usable snapshots.
std::vector<L1Source> L1Sources(const CheckContext& ctx);
// Calls visit(l1 source, l1 index, l2 offset, l2 index, entry) for every
// non-zero L2 entry reachable from usable L1 entries (for owner lookups and
// OFLAG_COPIED). Honours table edits.
using L2Visitor = std::function<Status(const L1Source& source, uint32_t l1_index,
                                       uint64_t l2_offset, uint32_t l2_index, uint64_t entry)>;
Status ForEachL2Entry(CheckContext& ctx, bool active_only, const L2Visitor& visit);

// ---- compare and COPIED (check.cc) --------------------------------------------
Status CompareRefcounts(CheckContext& ctx, bool fix, uint64_t* highest_cluster);
// kAll: the pass that checks and fixes OFLAG_COPIED against the refcounts.
// kClearAhead*: repair's pass before refcounts change on disk; it only clears
// OFLAG_COPIED where the repaired refcount will be 2 or more (R9: never
// COPIED on disk with a refcount >= 2), reading the target refcount from the
// fixed view or from the IMRT (before a rebuild).
enum class CopiedPass : uint8_t { kAll, kClearAheadFromView, kClearAheadFromImrt };
Status CheckCopiedFlags(CheckContext& ctx, bool fix, CopiedPass pass = CopiedPass::kAll);

// ---- repair (repair.cc) ----------------------------------------------------------
// Step 1: writes the header edits (snapshot table truncation, bitmaps
// discarded) and edited L1/L2 tables (pointer drops, cleared bits). Flushes.
Status WriteTableEdits(CheckContext& ctx);
// Before a rebuild: the old table and blocks stop counting as owners.
void ExcludeOldRefcountStructure(CheckContext& ctx);
// Step 2: new refcount blocks, flush, new table, flush, header switch, flush.
Status RebuildRefcountStructure(CheckContext& ctx);
// Limit when a rebuild would have to start more than kMaxRebuildGrowthBytes
// past the end of the file; checked before repair writes anything.
Status CheckRebuildReach(const CheckContext& ctx);
// Step 3: writes refcount blocks changed by CompareRefcounts. Flushes.
Status WriteRefcountFixes(CheckContext& ctx);
// Last step: clears the dirty and corrupt bits when nothing is left broken.
Status ClearHeaderBits(CheckContext& ctx);

// ---- small helpers ---------------------------------------------------------------
std::string GuestRange(uint64_t guest_offset);
inline uint64_t L2Index(uint64_t entry_offset_in_table) { return entry_offset_in_table / 8; }
// The index of the first non-zero 8-byte entry of `table` at or after
// `index`, or table.size() / 8 when there is none. Empty runs are skipped 8
// entries (64 bytes) at a time: a small image's L2 tables are mostly empty,
// and the walks visit every table up to four times per check.
inline size_t NextNonZeroEntry(std::span<const uint8_t> table, size_t index) {
  const size_t entries = table.size() / 8;
  // One load per word into a register (a memcpy into a local array went
  // through the stack).
  const auto word = [&table](size_t i) {
    uint64_t w;
    std::memcpy(&w, &table[i * 8], sizeof(w));
    return w;
  };
  while (index + 8 <= entries) {
    if ((word(index) | word(index + 1) | word(index + 2) | word(index + 3) | word(index + 4) |
         word(index + 5) | word(index + 6) | word(index + 7)) != 0) {
      break;
    }
    index += 8;
  }
  while (index < entries && word(index) == 0) ++index;
  return index;
}

// The same for L2 tables of `entry_bytes` entries (16 with extended L2): the
// index of the first entry at or after `index` whose descriptor or bitmap
// word is non-zero, or the number of entries when there is none.
inline size_t NextNonZeroL2Entry(std::span<const uint8_t> table, size_t index,
                                 uint32_t entry_bytes) {
  const size_t words = entry_bytes / 8;
  return NextNonZeroEntry(table, index * words) / words;
}

}  // namespace qcrash::engine::check_internal
