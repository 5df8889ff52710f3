// Journal: open transaction, commit protocol, checkpoint (sync) and ring
// management. Replay lives in journal_replay.cc.
#include "engine/journal.h"

#include <algorithm>
#include <cstring>

#include "engine/endian.h"
#include "engine/journal_internal.h"

namespace qcrash::engine {

namespace j = journal;

Journal::Journal(CountingIo& io, const j::JournalLocation& location, const JournalOptions& options,
                 SetImageDirty set_dirty)
    : io_(io), location_(location), options_(options), set_image_dirty_(std::move(set_dirty)) {}

bool Journal::checksums() const { return (header_.variant & j::kVariantNoChecksum) == 0; }

Result<std::unique_ptr<Journal>> Journal::Format(CountingIo& io, const j::JournalLocation& location,
                                                 const JournalOptions& options,
                                                 SetImageDirty set_dirty) {
  std::unique_ptr<Journal> jn(new Journal(io, location, options, std::move(set_dirty)));
  jn->header_.size_bytes = static_cast<uint32_t>(location.size_bytes);
  jn->header_.block_order = options.block_order;
  jn->header_.variant = VariantFlags(options);
  if (jn->header_.blocks() < j::kMinJournalBlocks)
    return Status::InvalidArgument("journal too small");
  // A zeroed ring holds no descriptor: no stale block can ever chain.
  std::vector<uint8_t> zeroes(location.size_bytes, 0);
  QCRASH_RETURN_IF_ERROR(io.device().Write(location.offset_bytes, zeroes));
  QCRASH_RETURN_IF_ERROR(jn->WriteHeaderSector(false));
  // Why: the journal must be durable before the header extension names it.
  QCRASH_RETURN_IF_ERROR(io.DeviceFlush(Rule::kJournalProtocol));
  return jn;
}

Result<std::unique_ptr<Journal>> Journal::Load(CountingIo& io, const j::JournalLocation& location,
                                               const JournalOptions& options,
                                               SetImageDirty set_dirty) {
  std::unique_ptr<Journal> jn(new Journal(io, location, options, std::move(set_dirty)));
  std::vector<uint8_t> block(
      std::min<uint64_t>(location.size_bytes, uint64_t{1} << j::kMaxBlockOrder));
  QCRASH_RETURN_IF_ERROR(io.device().Read(location.offset_bytes, block));
  QCRASH_ASSIGN_OR_RETURN(jn->header_, j::DecodeJournalHeader(block, location.size_bytes));
  jn->next_seq_ = jn->header_.committed_seq + 1;
  return jn;
}

Status Journal::WriteHeaderSector(bool fua) {
  const std::vector<uint8_t> bytes = j::EncodeJournalHeader(header_);
  // All mutable fields and the checksum sit in the first sector: one atomic write.
  std::span<const uint8_t> sector(bytes.data(), kJournalSectorBytes);
  ++io_.stats().metadata_writes;
  if (fua) return io_.device().WriteFua(location_.offset_bytes, sector);
  return io_.device().Write(location_.offset_bytes, sector);
}

Status Journal::WriteBlocks(uint32_t index, std::span<const uint8_t> bytes) {
  ++io_.stats().metadata_writes;
  return io_.device().Write(BlockOffset(index), bytes);
}

// Resets the ring: synced = committed = a new base past every sequence
// number the ring may still hold, block 1 zeroed (scan-only: the whole ring,
// since scanning cannot tell stale transactions from live ones).
Status Journal::Reinit() {
  const uint32_t base = std::max(header_.committed_seq, next_seq_) + header_.blocks() + 1;
  header_.synced_index = 0;
  header_.synced_seq = header_.committed_seq = base;
  next_seq_ = base + 1;
  head_ = 1;
  tail_ = 0;
  last_committed_index_ = 0;
  QCRASH_RETURN_IF_ERROR(WriteHeaderSector(false));
  QCRASH_RETURN_IF_ERROR(set_image_dirty_(false));
  image_dirty_ = false;
  unsynced_ = false;
  overlay_.clear();
  // Why: the new base must be durable before any block of the old chain is
  // blanked; until then a crash replays the old chain, intact, again (I8).
  QCRASH_RETURN_IF_ERROR(io_.DeviceFlush(Rule::kJournalProtocol));
  const bool scan = (header_.variant & j::kVariantScanOnly) != 0;
  const uint32_t zero_blocks = scan ? ring_end() - 1 : 1;
  std::vector<uint8_t> zeroes(uint64_t{zero_blocks} << header_.block_order, 0);
  QCRASH_RETURN_IF_ERROR(WriteBlocks(1, zeroes));
  // Why (scan-only): stale transactions must be gone before new ones can
  // chain to them; with header bookkeeping the new base already hides them.
  return scan ? io_.DeviceFlush(Rule::kJournalProtocol) : Status::Ok();
}

// ---- MetadataSink ------------------------------------------------------------------

Status Journal::Read(uint64_t offset_bytes, std::span<uint8_t> out) {
  const uint64_t device_bytes = io_.device().SizeBytes();
  std::fill(out.begin(), out.end(), 0);
  if (offset_bytes < device_bytes) {
    const uint64_t n = std::min<uint64_t>(out.size(), device_bytes - offset_bytes);
    QCRASH_RETURN_IF_ERROR(io_.device().Read(offset_bytes, out.first(n)));
  }
  const uint64_t end = offset_bytes + out.size();
  for (const auto* layer : {&overlay_, &open_}) {  // later layers win
    auto it = layer->lower_bound(offset_bytes / kJournalSectorBytes * kJournalSectorBytes);
    for (; it != layer->end() && it->first < end; ++it) {
      const uint64_t from = std::max(offset_bytes, it->first);
      const uint64_t to = std::min(end, it->first + kJournalSectorBytes);
      std::memcpy(out.data() + (from - offset_bytes), it->second.data() + (from - it->first),
                  to - from);
    }
  }
  return Status::Ok();
}

Status Journal::Write(uint64_t offset_bytes, std::span<const uint8_t> data) {
  if (data.empty()) return Status::Ok();
  const uint64_t first = offset_bytes / kJournalSectorBytes * kJournalSectorBytes;
  const uint64_t end = (offset_bytes + data.size() + kJournalSectorBytes - 1) /
                       kJournalSectorBytes * kJournalSectorBytes;
  std::vector<uint8_t> view(end - first);
  QCRASH_RETURN_IF_ERROR(Read(first, view));
  const std::vector<uint8_t> before = view;
  std::memcpy(view.data() + (offset_bytes - first), data.data(), data.size());
  const uint64_t device_bytes = io_.device().SizeBytes();
  for (uint64_t s = first; s < end; s += kJournalSectorBytes) {
    const uint64_t i = s - first;
    // The last sector of a write past the end of the file is always
    // journalled, so applying the transaction grows the file over it.
    const bool extends = s + kJournalSectorBytes == end && end > device_bytes;
    if (!extends && std::memcmp(&view[i], &before[i], kJournalSectorBytes) == 0) continue;
    open_[s].assign(view.begin() + static_cast<std::ptrdiff_t>(i),
                    view.begin() + static_cast<std::ptrdiff_t>(i + kJournalSectorBytes));
  }
  return Status::Ok();
}

void Journal::OnFree(uint64_t offset_bytes, uint64_t length_bytes, bool revoke) {
  const uint64_t end = offset_bytes + length_bytes;
  // The open transaction's own bytes for the range are void. Committed
  // ones stay in the overlay until this free commits: a checkpoint before
  // that must still write them, since the committed state still uses them.
  for (auto it = open_.lower_bound(offset_bytes); it != open_.end() && it->first < end;)
    it = open_.erase(it);
  auto committed = overlay_.lower_bound(offset_bytes);
  const bool unsynced_writes = committed != overlay_.end() && committed->first < end;
  if (unsynced_writes) open_frees_.emplace_back(offset_bytes, end);
  // Committed transactions that are not synced yet still write here at
  // replay; a later reuse of the range (as guest data) must not be
  // overwritten by them (QCOW2-NOTES §12.9).
  if (unsynced_writes && revoke) {
    if (!open_revokes_.empty() &&
        open_revokes_.back().offset + open_revokes_.back().length_bytes == offset_bytes) {
      open_revokes_.back().length_bytes += static_cast<uint32_t>(length_bytes);
    } else {
      open_revokes_.push_back({static_cast<uint32_t>(length_bytes), offset_bytes});
    }
  }
}

uint32_t Journal::free_blocks() const {
  const uint32_t ring = ring_end() - 1;
  if (tail_ == 0) return ring - (head_ - 1);
  // Blocks from head_ up to (not including) tail_, in ring order.
  return head_ <= tail_ ? tail_ - head_ : ring - (head_ - tail_);
}

}  // namespace qcrash::engine

namespace qcrash::engine {

uint32_t VariantFlags(const JournalOptions& o) {
  uint32_t v = 0;
  if (o.commit == JournalCommit::kDescriptorFlag) v |= j::kVariantCommitFlag;
  if (o.recovery == JournalRecovery::kScanOnly) v |= j::kVariantScanOnly;
  if (o.terminator == JournalTerminator::kEscapeFlag) v |= j::kVariantEscape;
  if (!o.checksums) v |= j::kVariantNoChecksum;
  if (o.byte_sum_checksum) v |= j::kVariantByteSum;
  return v;
}

// Packs the open transaction into on-disk transactions: revokes first (so
// they never cancel writes of their own group), then runs of consecutive
// sectors as write chunks, each starting at a data block boundary.
Result<std::vector<Journal::Txn>> Journal::BuildGroup() {
  const uint32_t bb = header_.block_bytes();
  const bool escape = (header_.variant & j::kVariantEscape) != 0;
  const uint32_t capacity = (bb - j::kDescriptorStart) / (escape ? 2 : 1) - 8;
  const uint32_t max_data = std::max<uint32_t>(1, (ring_end() - 1) / 4);
  std::vector<Txn> group(1);
  auto bytes_of = [](const Txn& t) {
    uint32_t n = 0;
    for (const j::Descriptor& d : t.block.descriptors) n += j::DescriptorBytes(d);
    return n;
  };
  auto room_for = [&](j::DescriptorType type, uint32_t record,
                      uint32_t data_blocks) -> j::Descriptor& {
    Txn* t = &group.back();
    const bool has = !t->block.descriptors.empty() && t->block.descriptors.back().type == type;
    const uint32_t need = record + (has ? 0 : 4);
    if (bytes_of(*t) + need > capacity || t->block.nb_data_blocks + data_blocks > max_data) {
      group.emplace_back();
      t = &group.back();
    }
    if (t->block.descriptors.empty() || t->block.descriptors.back().type != type) {
      j::Descriptor fresh;
      fresh.type = type;
      t->block.descriptors.push_back(std::move(fresh));
    }
    t->block.nb_data_blocks += data_blocks;
    return t->block.descriptors.back();
  };
  for (const j::RevokeRange& r : open_revokes_)
    room_for(j::DescriptorType::kRevoke, 12, 0).revokes.push_back(r);
  const uint64_t max_run = std::min<uint64_t>(uint64_t{max_data} * bb, 64 * kJournalSectorBytes);
  for (auto it = open_.begin(); it != open_.end();) {
    std::vector<uint8_t> run;
    const uint64_t start = it->first;
    while (it != open_.end() && it->first == start + run.size() && run.size() < max_run) {
      run.insert(run.end(), it->second.begin(), it->second.end());
      ++it;
    }
    const uint32_t blocks = static_cast<uint32_t>((run.size() + bb - 1) / bb);
    j::Descriptor& d = room_for(j::DescriptorType::kWrite, 16, blocks);
    Txn& t = group.back();
    // Relative to the descriptor until WriteTxn knows the absolute position.
    d.writes.push_back(
        {static_cast<uint32_t>(run.size()), start, static_cast<uint32_t>(t.data.size() / bb) + 1});
    run.resize(uint64_t{blocks} * bb, 0);
    t.data.insert(t.data.end(), run.begin(), run.end());
  }
  for (size_t i = 0; i + 1 < group.size(); ++i) group[i].block.flags |= j::kDescriptorFlagContinues;
  for (size_t i = 1; i < group.size(); ++i) group[i].block.flags |= j::kDescriptorFlagContinued;
  return group;
}

// Writes one transaction at head_: absolute data indices, escapes, checksum.
Status Journal::WriteTxn(Txn& txn) {
  const uint32_t bb = header_.block_bytes();
  txn.index = head_;
  txn.block.seq = next_seq_++;
  txn.block.nb_data_blocks = static_cast<uint32_t>(txn.data.size() / bb);
  for (j::Descriptor& d : txn.block.descriptors) {
    for (j::WriteChunk& w : d.writes) w.data_block_index += txn.index;
  }
  std::vector<uint8_t> data = txn.data;
  if (header_.variant & j::kVariantEscape) {
    j::Descriptor escapes;
    escapes.type = j::DescriptorType::kEscape;
    for (uint32_t b = 0; b < txn.block.nb_data_blocks; ++b) {
      std::span<uint8_t> block(&data[uint64_t{b} * bb], bb);
      if (!j::HasDescriptorMagic(block)) continue;
      std::fill(block.begin(), block.begin() + 4, 0);  // a data block never reads as a descriptor
      escapes.escapes.push_back(txn.index + 1 + b);
    }
    if (!escapes.escapes.empty()) txn.block.descriptors.push_back(std::move(escapes));
  }
  QCRASH_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, j::EncodeDescriptorBlock(txn.block, bb));
  if (checksums()) {
    j::Checksum sum((header_.variant & j::kVariantByteSum) != 0);
    sum.Update(bytes, j::kDescriptorChecksumOffset);
    sum.Update(data);
    txn.block.checksum = sum.Final();
    StoreBe32(&bytes[j::kDescriptorChecksumOffset], txn.block.checksum);
  }
  bytes.insert(bytes.end(), data.begin(), data.end());
  QCRASH_RETURN_IF_ERROR(WriteBlocks(head_, bytes));
  if (tail_ == 0) tail_ = head_;
  head_ += txn.blocks();
  if (head_ >= ring_end()) head_ = 1;
  return Status::Ok();
}

Status Journal::EnsureSpace(uint32_t blocks_needed) {
  if (blocks_needed <= free_blocks()) return Status::Ok();
  if (has_unsynced()) QCRASH_RETURN_IF_ERROR(Checkpoint(false));
  if (blocks_needed <= free_blocks()) return Status::Ok();
  // Only one cluster's own metadata can get here (AfterGuestOp and
  // AtClusterBoundary commit early): the ring is too small for it.
  return Status::NoSpace("journal transaction of " + std::to_string(blocks_needed) +
                         " blocks does not fit in the ring (" + std::to_string(free_blocks()) +
                         " of " + std::to_string(ring_end() - 1) +
                         " blocks free); use a larger journal");
}

uint32_t Journal::BlocksFor(const std::vector<Txn>& group) const {
  const bool blank = (header_.variant & j::kVariantEscape) == 0;
  uint32_t need = blank ? 1 : 0, pos = head_;
  for (const Txn& t : group) {
    const uint32_t s = 1 + static_cast<uint32_t>(t.data.size() >> header_.block_order);
    if (pos + s > ring_end()) need += ring_end() - pos, pos = 1;
    need += s, pos += s;
    if (pos >= ring_end()) pos = 1;
  }
  return need;
}

Result<uint32_t> Journal::BlocksToCommit() {
  if (open_.empty() && open_revokes_.empty()) return 0u;
  QCRASH_ASSIGN_OR_RETURN(const std::vector<Txn> group, BuildGroup());
  return BlocksFor(group);
}

// Commit steps 3-5 for `group` (see Commit).
Status Journal::WriteGroup(std::vector<Txn>& group) {
  const bool blank = (header_.variant & j::kVariantEscape) == 0;
  if (header_.variant & j::kVariantScanOnly) {
    // Why (scan-only): a transaction is found by its checksum alone, so the
    // guest data it exposes must be durable before any of its blocks.
    QCRASH_RETURN_IF_ERROR(io_.DeviceFlush(Rule::kGuestFlush));
  }
  // The group as written, padding included: the padding transaction is a
  // member of the chain (it carries a sequence number and "continues"), so
  // the commit record must cover it like any other member.
  std::vector<Txn> written;
  for (Txn& t : group) {  // step 3
    if (head_ + t.blocks() > ring_end()) {
      Txn padding;
      padding.block.flags = j::kDescriptorFlagPadding | j::kDescriptorFlagContinues;
      if (!written.empty()) padding.block.flags |= j::kDescriptorFlagContinued;
      padding.data.assign(uint64_t{ring_end() - head_ - 1} << header_.block_order, 0);
      QCRASH_RETURN_IF_ERROR(WriteTxn(padding));
      written.push_back(std::move(padding));
    }
    QCRASH_RETURN_IF_ERROR(WriteTxn(t));
    written.push_back(std::move(t));
  }
  if (blank)
    QCRASH_RETURN_IF_ERROR(WriteBlocks(head_, std::vector<uint8_t>(header_.block_bytes(), 0)));
  if (!image_dirty_) QCRASH_RETURN_IF_ERROR(set_image_dirty_(true));
  image_dirty_ = true;
  // Step 4. Why: the transaction blocks, the terminator, the dirty bit and
  // the guest data written since the last flush must all be durable before
  // the commit record can name them.
  QCRASH_RETURN_IF_ERROR(io_.DeviceFlush(Rule::kGuestFlush));
  return CommitRecord(written);  // step 5
}

// The commit protocol (QCOW2-NOTES §12.7, one flush per commit):
//  1. pack the open transaction into on-disk transactions (an atomic group);
//  2. make room in the ring (a checkpoint when it is full);
//  3. write them at the ring head, wrapping with a padding transaction, then
//     a zeroed terminator block, and set the journal-dirty bit in place;
//  4. flush;
//  5. write the commit record: the journal header's committed_seq with FUA
//     (variant: a FUA rewrite of each descriptor with its commit flag, the
//     padding's too, since recovery stops at the first descriptor without
//     it; scan-only: nothing, a valid checksum is the commit).
Status Journal::Commit() {
  if (open_.empty() && open_revokes_.empty() && open_frees_.empty()) {
    // Why: a guest flush makes acknowledged guest data durable even when no
    // metadata changed.
    return io_.DeviceFlush(Rule::kGuestFlush);
  }
  QCRASH_ASSIGN_OR_RETURN(std::vector<Txn> group, BuildGroup());  // step 1
  QCRASH_RETURN_IF_ERROR(EnsureSpace(BlocksFor(group)));          // step 2
  // A failure in steps 3-5 leaves the ring as it was: what was written is
  // not committed, and the next commit writes over it with the same
  // sequence numbers. (Without this, a checkpoint after a failed flush
  // named an uncommitted sequence number as synced, and the image did not
  // open again: explore --workload random:215 --policy journal --enumerator
  // eio, I13.)
  const auto saved_head = head_, saved_tail = tail_, saved_seq = next_seq_;
  const auto saved_committed_index = last_committed_index_;
  const auto saved_committed_seq = header_.committed_seq;
  const Status written = WriteGroup(group);
  if (!written.ok()) {
    head_ = saved_head;
    tail_ = saved_tail;
    next_seq_ = saved_seq;
    last_committed_index_ = saved_committed_index;
    header_.committed_seq = saved_committed_seq;
    return written;
  }
  for (const auto& [from, to] : open_frees_) {  // the frees are committed: forget those bytes
    for (auto it = overlay_.lower_bound(from); it != overlay_.end() && it->first < to;)
      it = overlay_.erase(it);
  }
  for (auto& [sector, bytes] : open_) overlay_[sector] = std::move(bytes);
  open_.clear();
  open_frees_.clear();
  open_revokes_.clear();
  unsynced_ = true;
  return Status::Ok();
}

Status Journal::CommitRecord(std::vector<Txn>& group) {
  last_committed_index_ = group.back().index;
  const uint32_t last_seq = group.back().block.seq;
  if ((header_.variant & j::kVariantCommitFlag) == 0) {
    // Scan-only: a transaction with a valid checksum is committed; there is
    // no record to write.
    if (header_.variant & j::kVariantScanOnly) return Status::Ok();
    header_.committed_seq = last_seq;
    // FUA: durable when it returns, so the commit costs no second flush.
    return WriteHeaderSector(true);
  }
  // Commit flag (with either recovery): recovery, chaining or scanning,
  // takes only flagged descriptors, so every member of the group needs it.
  for (Txn& t : group) {
    t.block.flags |= j::kDescriptorFlagCommitted;
    QCRASH_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                            j::EncodeDescriptorBlock(t.block, header_.block_bytes()));
    if (checksums()) {
      j::Checksum sum((header_.variant & j::kVariantByteSum) != 0);
      sum.Update(bytes, j::kDescriptorChecksumOffset);
      std::vector<uint8_t> data;
      QCRASH_RETURN_IF_ERROR(ReadBlocksRaw(t.index + 1, t.block.nb_data_blocks, data));
      sum.Update(data);
      StoreBe32(&bytes[j::kDescriptorChecksumOffset], sum.Final());
    }
    ++io_.stats().metadata_writes;
    // The flag and the checksum share the first sector: one atomic FUA write.
    QCRASH_RETURN_IF_ERROR(
        io_.device().WriteFua(BlockOffset(t.index), std::span(bytes).first(kJournalSectorBytes)));
  }
  return Status::Ok();
}

Status Journal::ReadBlocksRaw(uint32_t index, uint32_t count, std::vector<uint8_t>& out) {
  out.assign(uint64_t{count} << header_.block_order, 0);
  if (count == 0) return Status::Ok();
  return io_.device().Read(BlockOffset(index), out);
}

// Sync (checkpoint), QCOW2-NOTES §12.7 steps 4-7:
//  1. write every committed sector in place (the image header's copy keeps
//     the journal-dirty bit set: it is still needed until step 3 is durable);
//  2. flush;
//  3. advance synced_index / synced_seq to the last committed transaction
//     (and, at close, clear the journal-dirty bit);
//  4. flush; the ring before the last synced descriptor is free again.
Status Journal::Checkpoint(bool clear_dirty) {
  if (!has_unsynced()) {
    if (!clear_dirty || !image_dirty_) return Status::Ok();
    QCRASH_RETURN_IF_ERROR(set_image_dirty_(false));
    image_dirty_ = false;
    // Why: a clean close must leave the bit clear durably.
    return io_.DeviceFlush(Rule::kJournalProtocol);
  }
  for (auto it = overlay_.begin(); it != overlay_.end();) {  // step 1
    std::vector<uint8_t> run;
    const uint64_t start = it->first;
    while (it != overlay_.end() && it->first == start + run.size()) {
      run.insert(run.end(), it->second.begin(), it->second.end());
      ++it;
    }
    if (start == 0 && run.size() >= 80 && LoadBe32(&run[4]) >= 3) {
      StoreBe64(&run[72], LoadBe64(&run[72]) | (uint64_t{1} << 63));
    }
    ++io_.stats().metadata_writes;
    QCRASH_RETURN_IF_ERROR(io_.device().Write(start, run));
  }
  // Step 2. Why: every committed change must be durable in place before
  // the synced pointer moves past the transactions that describe it.
  QCRASH_RETURN_IF_ERROR(io_.DeviceFlush(Rule::kJournalProtocol));
  header_.synced_index = last_committed_index_;  // step 3
  header_.synced_seq = header_.committed_seq = next_seq_ - 1;
  if ((header_.variant & j::kVariantScanOnly) == 0)
    QCRASH_RETURN_IF_ERROR(WriteHeaderSector(false));
  if (clear_dirty) QCRASH_RETURN_IF_ERROR(set_image_dirty_(false));
  image_dirty_ = image_dirty_ && !clear_dirty;
  // Step 4. Why: the ring space is reused (and a closed image is clean)
  // only once the synced pointer is durable.
  QCRASH_RETURN_IF_ERROR(io_.DeviceFlush(Rule::kJournalProtocol));
  overlay_.clear();
  unsynced_ = false;
  tail_ = last_committed_index_;
  return Status::Ok();
}

}  // namespace qcrash::engine
