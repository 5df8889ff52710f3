// The repair planner: where check's walk hands over what it found and
// repair decides what to do about it. The walk (check_walk.cc) never edits
// a table on its own: for each broken L1 or L2 entry and each unusable
// snapshot table entry it builds a proposal (the finding, the table, the
// entry, what the entry would become and why) and asks the planner. In
// RepairMode::kAll the planner accepts: it records the finding as repaired
// ("Repairing: ..."), the guest range whose data goes (CheckReport::dropped)
// and the cut of the snapshot table, and returns the entry's new value,
// which the walk stores in its copy of the table (CheckContext::EditTable;
// repair.cc writes the edited tables in step 1). Otherwise it records the
// finding as check reports it ("ERROR ...", or nothing when a later step of
// the walk reports the problem) and the walk goes on with the entry as
// found. The same holds for whole structures (the bitmaps, the journal)
// that repair discards. Used by check_walk.cc, check_bitmaps.cc and
// journal_check.cc; internal to engine/check*.cc and repair*.cc.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "engine/check_internal.h"

namespace qcrash::engine::check_internal {

// One broken L1 or L2 entry and the edit the walk proposes for it.
struct EntryProposal {
  enum class Table : uint8_t { kL1, kL2 };
  enum class Edit : uint8_t {
    // Clear `bits` in the entry; the walk goes on with the rest of it. The
    // finding reads "Repairing<why>" when applied, "ERROR<why>" when not.
    kClearBits,
    // Drop the pointer: an L1 entry becomes 0, an L2 entry 0 (a plain zero
    // cluster when it was a preallocated zero cluster in a version 3 image).
    // The guest range it mapped loses its data, unless it stays zero.
    kDropPointer,
  };
  Table table = Table::kL2;
  Edit edit = Edit::kDropPointer;
  const L1Source* source = nullptr;  // the L1 table the entry is reached from
  uint32_t l1_index = 0;
  uint64_t l2_offset = 0;  // kL2: the L2 table holding the entry
  uint32_t l2_index = 0;   // kL2: the entry's index there
  uint64_t entry = 0;      // the entry as the walk holds it now
  uint64_t bits = 0;       // kClearBits: the bits that go
  FindingKind kind = FindingKind::kOverlap;
  uint64_t target = 0;  // host offset the finding names
  std::string why;      // what is wrong (kClearBits: the message after its prefix)
  // kDropPointer: the finding check reports when the edit is not applied;
  // none when a later step reports the problem (a range past the end of the
  // file is reported when it is counted).
  std::optional<Severity> unapplied_severity;
  std::string unapplied_message;
  // kDropPointer from an L1 entry: whether the dropped guest range is
  // recorded (QEMU-compatible output records it for some causes only).
  bool record_dropped = true;
};

// Decides a proposal: the entry's new value when repair applies the edit,
// nullopt when the walk keeps the entry as found.
std::optional<uint64_t> DecideEntryEdit(CheckContext& ctx, const EntryProposal& proposal);

// An unusable snapshot table entry: the table would keep only the entries
// before `index` (QEMU's check -r all discards a broken table's tail).
struct SnapshotCutProposal {
  uint32_t index = 0;
  uint64_t offset = 0;  // host offset the finding names
  std::string owner;
  std::string why;
};

// Decides a cut: true when repair cuts the table there (the walk then stops
// reading it), false when check reports the entry as an error and goes on.
bool DecideSnapshotCut(CheckContext& ctx, const SnapshotCutProposal& proposal);

// A whole structure the walk found broken, proposed for a discard: the
// bitmaps (a corrupt bitmap structure; they are only dirty tracking, so
// they go rather than guest data) or the journal (an area over other
// metadata cannot be ours; replaying it would write over that metadata).
struct DiscardProposal {
  enum class Structure : uint8_t { kBitmaps, kJournal };
  Structure structure = Structure::kBitmaps;
  FindingKind kind = FindingKind::kBitmap;
  uint64_t offset = 0;  // host offset the finding names
  std::string owner;
  std::string why;
  // The finding check reports when repair keeps the structure.
  Severity unapplied_severity = Severity::kCorruption;
  std::string unapplied_message;
};

// Decides a discard: true when repair discards the structure (recorded in
// the context: discard_bitmaps, or discard_journal with the header bits
// cleared), false when check reports the finding and the walk goes on.
bool DecideDiscard(CheckContext& ctx, const DiscardProposal& proposal);

// Whether repair acts on problems check alone does not look for (a snapshot
// table or snapshot L1 table over other metadata, a bitmap over anything,
// an invalid bitmap table entry before any bitmap counts): only then does
// the walk spend the reads to look for them.
bool PlansDiscards(const CheckContext& ctx);

// The owner names findings use for an entry of an L1 or an L2 table.
std::string L1Owner(const L1Source& source, uint32_t l1_index);
std::string L2Owner(const CheckContext& ctx, const L1Source& source, uint32_t l1_index,
                    uint64_t l2_offset, uint32_t l2_index);

}  // namespace qcrash::engine::check_internal
