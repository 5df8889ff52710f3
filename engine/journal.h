// Journal: the metadata journal of the `journal` ordering policy over one
// region of the image (engine/FORMAT.md "Journal", QCOW2-NOTES §12).
//
// The engine's metadata writes (L1, L2, refcount table and blocks, header)
// arrive through CountingIo as a MetadataSink: they are diffed per 512-byte
// sector against the current view and collected in the open transaction.
// Reads see the open transaction, then committed-but-unsynced sectors (the
// overlay), then the disk: read-your-writes. Guest data is written in place
// by the engine; Commit's flush makes it durable before the commit record.
//
// States (QCOW2-NOTES §12.6) and the functions that move between them:
//   open  --Commit-->  committed (overlay_, ring)  --Checkpoint-->  synced
//   crash: committed --Replay (on open)--> synced; open and incomplete are lost.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "engine/journal_format.h"
#include "engine/metadata_cache.h"
#include "engine/options.h"

namespace qcrash::engine {

// The sector granularity of the overlay and of journalled writes.
inline constexpr uint64_t kJournalSectorBytes = 512;

// What replay did, for invariant I6 (no stale-journal overwrite).
struct ReplayedWrite {
  uint32_t seq = 0;
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
};
struct ReplayReport {
  bool replayed = false;       // the journal was dirty and replay ran
  uint32_t transactions = 0;   // committed transactions applied (padding included)
  uint32_t dedup_records = 0;  // opaque dedup descriptors seen (no effect on the image)
  uint64_t revoked_bytes = 0;  // bytes of earlier writes skipped because a later txn revoked them
  std::vector<ReplayedWrite> writes;   // every range replay wrote (writes and copy targets)
  std::vector<ReplayedWrite> revokes;  // every revoke of the applied transactions, with its seq
};

// Called by the journal to set or clear the image's journal-dirty bit in
// place (one sector write, no flush: the journal orders it).
using SetImageDirty = std::function<Status(bool dirty)>;

class Journal final : public MetadataSink {
 public:
  // Writes a fresh journal into `location` (header, zeroed ring) and flushes.
  static Result<std::unique_ptr<Journal>> Format(CountingIo& io,
                                                 const journal::JournalLocation& location,
                                                 const JournalOptions& options,
                                                 SetImageDirty set_dirty);
  // Reads the journal header. Variant flags come from the disk, not options.
  static Result<std::unique_ptr<Journal>> Load(CountingIo& io,
                                               const journal::JournalLocation& location,
                                               const JournalOptions& options,
                                               SetImageDirty set_dirty);

  // Replays committed transactions. apply: write them in place, flush, then
  // reset the ring and clear the dirty bit. !apply (read-only open): load
  // them into the overlay only, so reads see the recovered state.
  Result<ReplayReport> Replay(bool apply);
  // Resets a clean journal for reuse: nothing in it may ever be replayed.
  Status Reinit();

  // MetadataSink.
  Status Write(uint64_t offset_bytes, std::span<const uint8_t> data) override;
  Status Read(uint64_t offset_bytes, std::span<uint8_t> out) override;

  // Commit protocol (one device flush): the open transaction goes to the ring.
  Status Commit();
  // Sync: committed changes written in place, flush, synced pointer advanced.
  // clear_dirty also clears the image's journal-dirty bit (close).
  Status Checkpoint(bool clear_dirty);
  // A cluster range was freed: forget its journalled bytes and, when
  // unsynced transactions write into it, revoke it (switch no-revoke: don't).
  void OnFree(uint64_t offset_bytes, uint64_t length_bytes, bool revoke);

  bool has_unsynced() const { return !overlay_.empty() || unsynced_; }
  // Bytes of metadata the open transaction holds (whole sectors).
  uint64_t open_bytes() const { return open_.size() * kJournalSectorBytes; }
  // Ring blocks a commit of the open transaction would take now (wrap
  // padding and terminator included), and the most the ring can hold.
  Result<uint32_t> BlocksToCommit();
  uint32_t capacity_blocks() const { return ring_end() - 1; }
  uint32_t free_blocks() const;
  const journal::JournalHeader& header() const { return header_; }

  struct Txn;  // one on-disk transaction, built or read (journal_internal.h)

 private:
  Journal(CountingIo& io, const journal::JournalLocation& location, const JournalOptions& options,
          SetImageDirty set_dirty);
  uint64_t BlockOffset(uint32_t index) const {
    return location_.offset_bytes + (uint64_t{index} << header_.block_order);
  }
  uint32_t ring_end() const { return header_.blocks(); }  // ring indices are 1 .. ring_end()-1
  Status WriteHeaderSector(bool fua);
  Status WriteBlocks(uint32_t index, std::span<const uint8_t> bytes);
  Status ReadBlocksRaw(uint32_t index, uint32_t count, std::vector<uint8_t>& out);
  Result<std::vector<Txn>> BuildGroup();
  Status WriteTxn(Txn& txn);
  Status EnsureSpace(uint32_t blocks);
  uint32_t BlocksFor(const std::vector<Txn>& group) const;
  Status WriteGroup(std::vector<Txn>& group);
  Status CommitRecord(std::vector<Txn>& group);
  Result<std::vector<Txn>> CollectChain();
  Result<std::vector<Txn>> CollectScan();
  Result<bool> ReadTxnAt(uint32_t index, uint32_t expect_seq, bool check_seq, Txn& out);
  Status ApplyTxns(const std::vector<Txn>& txns, bool apply, ReplayReport& report);
  Status WriteInPlace(uint64_t offset_bytes, std::span<const uint8_t> bytes, bool apply);
  bool checksums() const;

  CountingIo& io_;
  journal::JournalLocation location_;
  JournalOptions options_;
  SetImageDirty set_image_dirty_;
  journal::JournalHeader header_;
  // sector offset (512-aligned) -> 512 bytes
  std::map<uint64_t, std::vector<uint8_t>> open_;
  std::map<uint64_t, std::vector<uint8_t>> overlay_;
  std::vector<journal::RevokeRange> open_revokes_;
  std::vector<std::pair<uint64_t, uint64_t>> open_frees_;  // [from, to) freed with committed bytes
  uint32_t next_seq_ = 1;
  uint32_t head_ = 1;  // where the next descriptor goes
  uint32_t tail_ = 0;  // descriptor that must be kept (the last synced), 0 = none
  uint32_t last_committed_index_ = 0;
  bool unsynced_ = false;     // committed transactions not yet synced
  bool image_dirty_ = false;  // the journal-dirty bit is set in place
};

}  // namespace qcrash::engine
