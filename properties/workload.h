// Guest workloads for the crash explorer: image options plus a list of guest
// operations, the built-in workloads from the seed threads, and the content
// every guest sector carries so that a read names the write it came from.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/options.h"
#include "engine/status.h"

namespace qcrash::properties {

inline constexpr uint64_t kGuestSectorBytes = 512;

enum class OpKind : uint8_t {
  kWrite,
  kWriteZeroes,
  kDiscard,
  kFlush,
  kResize,
  kClose,
  kRead,            // checked as it runs: it must return what the last writes left (GuestModel)
  kSnapshotCreate,  // an internal snapshot "s<op number>" of the active state
  kSnapshotDelete,  // deletes the oldest internal snapshot
  kSnapshotRevert,  // applies the newest internal snapshot (qemu-img snapshot -a): the guest
                    // content and disk size become the snapshot's, which stays
  // Persistent dirty bitmaps "b<offset_bytes>" (qemu-img bitmap): add takes
  // length_bytes as the granularity (0: the default) and adds it enabled.
  kBitmapAdd,
  kBitmapRemove,
  kBitmapClear,
  kBitmapEnable,
  kBitmapDisable,
  // A write stored compressed (qemu-io's write -c): whole clusters, the
  // disk's last cluster may be partial. Its content is a write's.
  kWriteCompressed,
  // qemu-img amend -o (GuestOp::amend): compat, refcount_bits and
  // lazy_refcounts; the guest content stays as it is.
  kAmend,
  // A safe rebase (qemu-img rebase -b NAME -F raw) onto the backing file
  // offset_bytes names: 0 none (the image is flattened), 1 the first
  // (kBackingFileName), 2 the second (kBacking2FileName). The guest reads
  // the same before and after. Only for a workload with a backing file.
  kRebase,
  // qemu-img commit (engine/commit.cc): the image's data written into its
  // backing file, which is then flushed, and the image emptied (keep: -d,
  // not emptied). The guest reads the same before and after.
  kCommit,
};
// Operations that write guest data (op content, SectorTag).
inline bool WritesData(OpKind kind) {
  return kind == OpKind::kWrite || kind == OpKind::kWriteCompressed;
}
// Compressed writes: the engine writes none under the journal policy.
inline bool IsCompressedOp(OpKind kind) { return kind == OpKind::kWriteCompressed; }
// Create, delete and revert: the engine writes none under the journal policy.
inline bool IsSnapshotOp(OpKind kind) {
  return kind == OpKind::kSnapshotCreate || kind == OpKind::kSnapshotDelete ||
         kind == OpKind::kSnapshotRevert;
}
// Amends: the engine refuses them under the journal policy.
inline bool IsAmendOp(OpKind kind) { return kind == OpKind::kAmend; }
// The bitmap operations carry no guest range.
inline bool IsBitmapOp(OpKind kind) {
  return kind == OpKind::kBitmapAdd || kind == OpKind::kBitmapRemove ||
         kind == OpKind::kBitmapClear || kind == OpKind::kBitmapEnable ||
         kind == OpKind::kBitmapDisable;
}

// What an amend changes (qemu-img amend -o); 0 or unset: unchanged.
struct AmendChange {
  uint32_t refcount_bits = 0;  // 1, 2, 4, ..., 64
  uint32_t version = 0;        // 2 (compat=0.10) or 3 (compat=1.1)
  std::optional<bool> lazy_refcounts;
  bool operator==(const AmendChange&) const = default;
};

// One guest operation. Writes, zero writes, discards and reads take any
// byte offset and length (QEMU's qcow2 driver does too); a resize is a
// multiple of 512 bytes.
struct GuestOp {
  OpKind kind = OpKind::kWrite;
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;  // kResize: the new size
  bool may_unmap = false;     // kWriteZeroes only
  AmendChange amend{};        // kAmend only
  bool keep = false;          // kCommit only: qemu-img commit -d (the image is not emptied)
  bool operator==(const GuestOp&) const = default;
};

struct Workload {
  std::string name;
  engine::CreateOptions image;
  std::vector<GuestOp> ops;
  // Tests the 2017 reservation rule: every guest cluster allocated at create
  // time (preallocation) must keep its host cluster (invariant I10).
  bool check_reservations = false;
  // The image has a raw backing file (`kBackingFileName`) as large as the
  // image, every sector of it holding the backing tag: unallocated clusters
  // read it, and a partial write copies the rest of its cluster from it.
  bool backing = false;
};

inline constexpr const char* kBackingFileName = "backing.raw";
// The second raw backing file a rebase may switch to: as large as the
// first, the same in some 8 KiB runs and its own data (kBacking2OpNumber)
// in the others, so that a rebase both keeps and copies.
inline constexpr const char* kBacking2FileName = "backing2.raw";
// The external data file of a workload with one (Workload::image.data_file).
inline constexpr const char* kDataFileName = "image.data";
// The "operation number" of the backing file's content (its sectors hold
// SectorTag(kBackingOpNumber, sector)).
inline constexpr uint64_t kBackingOpNumber = (uint64_t{1} << 24) - 1;
inline constexpr uint64_t kBacking2OpNumber = kBackingOpNumber - 1;
// The backing file name a rebase op switches to ("" for none).
std::string RebaseTarget(const GuestOp& op);
// The workload rebases onto the second backing file somewhere.
bool UsesSecondBacking(const Workload& workload);

// A workload that commits into its backing file: the backing file is
// written, so the run records it as the log's second device (sim/
// crash_model.h M12) and recovery reads the crash state's backing file.
bool RecordsBacking(const Workload& workload);

const char* OpKindName(OpKind kind);
Result<OpKind> ParseOpKind(const std::string& name);
std::string DescribeOp(const GuestOp& op);

// Structural validation: alignment, ranges within the disk as it is sized
// at that point, at most `ops_max` operations.
Status ValidateWorkload(const Workload& workload, size_t ops_max = 10000);

// The built-in workloads by name ("default", "2010-dangling-l2", ...).
Result<Workload> BuiltinWorkload(const std::string& name);
std::vector<std::string> BuiltinWorkloadNames();

// The 8-byte tag op `op_number` (1-based) writes into guest sector `sector`;
// the sector holds the tag repeated. Tag 0 is the all-zero sector.
inline uint64_t SectorTag(uint64_t op_number, uint64_t sector) {
  return (op_number << 40) | (sector & ((uint64_t{1} << 40) - 1));
}
// Fills `out` (a multiple of 512 bytes starting at guest sector `sector`)
// with op `op_number`'s content.
void FillOpContent(uint64_t op_number, uint64_t sector, std::vector<uint8_t>& out);
// Op `op_number`'s content for the bytes at guest offset `offset_bytes` (any
// alignment): each byte is the one its sector would hold, so a write that
// covers part of a sector leaves that part of the sector's tag.
void FillOpBytes(uint64_t op_number, uint64_t offset_bytes, std::vector<uint8_t>& out);
// Byte `byte_in_sector` of a sector holding `tag` (the tag repeated).
inline uint8_t TagByte(uint64_t tag, uint64_t byte_in_sector) {
  uint8_t bytes[8];
  static_assert(sizeof(bytes) == sizeof(tag));
  __builtin_memcpy(bytes, &tag, 8);
  return bytes[byte_in_sector % 8];
}

// What guest sector `sector` holds before any operation: the backing
// file's tag within its size, zeroes elsewhere.
uint64_t InitialSectorTag(const Workload& workload, uint64_t sector);
// The backing file's bytes (empty without one).
std::vector<uint8_t> BackingFileBytes(const Workload& workload);
// The bytes of backing file `name` (kBackingFileName or kBacking2FileName);
// an error for any other name.
Result<std::vector<uint8_t>> BackingFileBytes(const Workload& workload, const std::string& name);
// Turns the backing file on: the flag and the image's backing file name.
void SetBacking(Workload& workload);
// Gives the image an external data file (kDataFileName), raw or not.
void SetDataFile(Workload& workload, bool raw);

// The tag a 512-byte sector holds: 0 for zeroes, the repeated 8-byte tag,
// or ~0 for anything else (garbage, or bytes of mixed origin).
uint64_t SectorTagOf(const uint8_t* sector);
// "zeroes", "garbage" or "op N's data for guest sector S".
std::string DescribeSectorTag(uint64_t tag);

}  // namespace qcrash::properties
