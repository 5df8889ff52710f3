// Journal replay (QCOW2-NOTES §12.8): find the committed transactions, by
// chaining from the synced descriptor (header bookkeeping) or by scanning
// the ring (the scan-only variant), build the revoke set, apply the
// operations skipping revoked ranges, flush, then reset the ring.
#include <algorithm>
#include <cstring>

#include "engine/endian.h"
#include "engine/journal_internal.h"
#include "engine/qcow2_format.h"

namespace qcrash::engine {

namespace j = journal;

// Reads the transaction whose descriptor is at `index`. false (not an
// error): no valid transaction there, which ends a chain.
Result<bool> Journal::ReadTxnAt(uint32_t index, uint32_t expect_seq, bool check_seq, Txn& out) {
  if (index == 0 || index >= ring_end()) return false;
  const uint32_t bb = header_.block_bytes();
  std::vector<uint8_t> block(bb);
  QCRASH_RETURN_IF_ERROR(io_.device().Read(BlockOffset(index), block));
  if (!j::HasDescriptorMagic(block)) return false;
  auto decoded = j::DecodeDescriptorBlock(block, index, BlockOffset(index));
  if (!decoded.ok()) return false;  // torn or stale: the chain ends here
  if (check_seq && decoded->seq != expect_seq) return false;
  if (uint64_t{index} + decoded->nb_data_blocks >= ring_end()) return false;
  Txn t;
  t.index = index;
  t.block = std::move(decoded).value();
  QCRASH_RETURN_IF_ERROR(ReadBlocksRaw(index + 1, t.block.nb_data_blocks, t.data));
  if (checksums()) {
    j::Checksum sum((header_.variant & j::kVariantByteSum) != 0);
    sum.Update(block, j::kDescriptorChecksumOffset);
    sum.Update(t.data);
    if (sum.Final() != t.block.checksum) return false;
  }
  for (const j::Descriptor& d : t.block.descriptors) {
    for (uint32_t e : d.escapes) {
      StoreBe32(&t.data[uint64_t{e - index - 1} * bb], j::kDescriptorMagic);
    }
  }
  out = std::move(t);
  return true;
}

namespace {

void DropIncompleteGroup(std::vector<Journal::Txn>& txns) {
  while (!txns.empty() && (txns.back().block.flags & j::kDescriptorFlagContinues)) txns.pop_back();
}

}  // namespace

// Header bookkeeping: start after the synced descriptor and chain while each
// next block is a valid successor, up to committed_seq (or, with the commit
// flag variant, while the descriptors carry the flag).
Result<std::vector<Journal::Txn>> Journal::CollectChain() {
  std::vector<Txn> txns;
  uint32_t pos = 1;
  uint32_t expect = header_.synced_seq + 1;
  if (header_.synced_index != 0) {
    Txn synced;
    QCRASH_ASSIGN_OR_RETURN(const bool ok,
                            ReadTxnAt(header_.synced_index, header_.synced_seq, true, synced));
    if (!ok) {
      return Status::Corruption("journal at " + HexOffset(location_.offset_bytes) +
                                ": synced descriptor " + std::to_string(header_.synced_index) +
                                " does not carry synced_seq " + std::to_string(header_.synced_seq));
    }
    pos = header_.synced_index + synced.blocks();
    if (pos >= ring_end()) pos = 1;
  }
  const bool flag = (header_.variant & j::kVariantCommitFlag) != 0;
  for (uint32_t n = 0; n < ring_end(); ++n) {
    if (!flag && SeqAfter(expect, header_.committed_seq)) break;
    Txn t;
    QCRASH_ASSIGN_OR_RETURN(const bool ok, ReadTxnAt(pos, expect, true, t));
    if (!ok || (flag && !(t.block.flags & j::kDescriptorFlagCommitted))) break;
    pos += t.blocks();
    if (pos >= ring_end()) pos = 1;
    ++expect;
    txns.push_back(std::move(t));
  }
  if (!flag && SeqAfter(header_.committed_seq, expect - 1)) {
    return Status::Corruption("journal at " + HexOffset(location_.offset_bytes) +
                              ": the transaction chain ends at seq " + std::to_string(expect - 1) +
                              " before committed_seq " + std::to_string(header_.committed_seq));
  }
  DropIncompleteGroup(txns);
  return txns;
}

// Scan-only (Stefan's proposal): every block that decodes with a valid
// checksum is a candidate; candidates chained block to block with
// consecutive sequence numbers form runs. A run is trimmed to whole groups
// (no member whose group began before the run, none whose group goes on
// after it), and the newest run with anything left is replayed: a group
// that was still being written when the power failed (one of its blocks
// dropped or torn) was never acknowledged, and the groups before it were.
Result<std::vector<Journal::Txn>> Journal::CollectScan() {
  std::map<uint32_t, Txn> by_seq;
  for (uint32_t index = 1; index < ring_end(); ++index) {
    Txn t;
    QCRASH_ASSIGN_OR_RETURN(const bool ok, ReadTxnAt(index, 0, false, t));
    if (!ok) continue;
    if ((header_.variant & j::kVariantCommitFlag) && !(t.block.flags & j::kDescriptorFlagCommitted))
      continue;
    by_seq.emplace(t.block.seq, std::move(t));
  }
  std::vector<Txn> txns;
  if (by_seq.empty()) return txns;
  next_seq_ = std::max(next_seq_, std::prev(by_seq.end())->first + 1);
  auto end = by_seq.end();  // runs are taken newest first: [first, end)
  while (end != by_seq.begin()) {
    auto it = std::prev(end);
    std::vector<Txn> run{it->second};
    while (it != by_seq.begin()) {
      auto prev = std::prev(it);
      uint32_t next = prev->second.index + prev->second.blocks();
      if (next >= ring_end()) next = 1;
      if (prev->first + 1 != it->first || next != it->second.index) break;
      run.insert(run.begin(), prev->second);
      it = prev;
    }
    end = it;
    DropIncompleteGroup(run);
    size_t first = 0;
    while (first < run.size() && (run[first].block.flags & j::kDescriptorFlagContinued)) ++first;
    run.erase(run.begin(), run.begin() + static_cast<std::ptrdiff_t>(first));
    if (!run.empty()) return run;
  }
  return txns;
}

Status Journal::WriteInPlace(uint64_t offset_bytes, std::span<const uint8_t> bytes, bool apply) {
  if (apply) {
    ++io_.stats().metadata_writes;
    // A journalled image header carries the incompatible bits of its time,
    // which may lack "journal dirty": written as is, a crash before replay
    // ends would leave a half-replayed image that no longer asks for replay
    // (found by I8). The bit stays set until Reinit() clears it.
    constexpr uint64_t kBitsAt = format::kOffIncompatibleFeatures;
    if (offset_bytes <= kBitsAt && offset_bytes + bytes.size() >= kBitsAt + 8) {
      std::vector<uint8_t> patched(bytes.begin(), bytes.end());
      uint8_t* bits = &patched[kBitsAt - offset_bytes];
      StoreBe64(bits, LoadBe64(bits) | format::kIncompatJournalDirty);
      return io_.device().Write(offset_bytes, patched);
    }
    return io_.device().Write(offset_bytes, bytes);
  }
  // Read-only recovery: the replayed bytes live in the overlay only.
  QCRASH_RETURN_IF_ERROR(Write(offset_bytes, bytes));
  for (auto& [sector, sector_bytes] : open_) overlay_[sector] = std::move(sector_bytes);
  open_.clear();
  return Status::Ok();
}

namespace {

struct Revoke {
  uint32_t seq;
  uint64_t offset;
  uint64_t end;
};

// The parts of [offset, offset + length) that no revoke after `seq` covers.
std::vector<std::pair<uint64_t, uint64_t>> Unrevoked(const std::vector<Revoke>& revokes,
                                                     uint32_t seq, uint64_t offset,
                                                     uint64_t length) {
  std::vector<std::pair<uint64_t, uint64_t>> cuts;
  for (const Revoke& r : revokes) {
    if (SeqAfter(r.seq, seq) && r.offset < offset + length && offset < r.end)
      cuts.emplace_back(r.offset, r.end);
  }
  std::sort(cuts.begin(), cuts.end());
  std::vector<std::pair<uint64_t, uint64_t>> pieces;
  uint64_t at = offset;
  for (const auto& [from, to] : cuts) {
    if (from > at) pieces.emplace_back(at, std::min(from, offset + length));
    at = std::max(at, to);
  }
  if (at < offset + length) pieces.emplace_back(at, offset + length);
  return pieces;
}

}  // namespace

Status Journal::ApplyTxns(const std::vector<Txn>& txns, bool apply, ReplayReport& report) {
  std::vector<Revoke> revokes;
  for (const Txn& t : txns) {
    for (const j::Descriptor& d : t.block.descriptors) {
      for (const j::RevokeRange& r : d.revokes) {
        revokes.push_back({t.block.seq, r.offset, r.offset + r.length_bytes});
        report.revokes.push_back({t.block.seq, r.offset, r.length_bytes});
      }
    }
  }
  const uint64_t bb = header_.block_bytes();
  for (const Txn& t : txns) {
    ++report.transactions;
    for (const j::Descriptor& d : t.block.descriptors) {
      if (d.type == j::DescriptorType::kDedupInsert || d.type == j::DescriptorType::kDedupDelete) {
        ++report.dedup_records;
      }
      for (const j::WriteChunk& w : d.writes) {
        const uint64_t data_at = uint64_t{w.data_block_index - t.index - 1} * bb;
        uint64_t kept = 0;
        for (const auto& [from, to] :
             Unrevoked(revokes, t.block.seq, w.target_offset, w.length_bytes)) {
          std::span<const uint8_t> bytes(&t.data[data_at + (from - w.target_offset)], to - from);
          QCRASH_RETURN_IF_ERROR(WriteInPlace(from, bytes, apply));
          report.writes.push_back({t.block.seq, from, to - from});
          kept += to - from;
        }
        report.revoked_bytes += w.length_bytes - kept;
      }
      for (const j::CopyChunk& c : d.copies) {
        std::vector<uint8_t> source(c.length_bytes);
        QCRASH_RETURN_IF_ERROR(Read(c.source_offset, source));
        for (const auto& [from, to] :
             Unrevoked(revokes, t.block.seq, c.target_offset, c.length_bytes)) {
          QCRASH_RETURN_IF_ERROR(WriteInPlace(
              from, std::span(source).subspan(from - c.target_offset, to - from), apply));
          report.writes.push_back({t.block.seq, from, to - from});
        }
      }
    }
  }
  return Status::Ok();
}

Result<ReplayReport> Journal::Replay(bool apply) {
  ReplayReport report;
  report.replayed = true;
  QCRASH_ASSIGN_OR_RETURN(std::vector<Txn> txns,
                          (header_.variant & j::kVariantScanOnly) ? CollectScan() : CollectChain());
  QCRASH_RETURN_IF_ERROR(ApplyTxns(txns, apply, report));
  if (!txns.empty()) next_seq_ = std::max(next_seq_, txns.back().block.seq + 1);
  if (!apply) return report;
  // Why: the replayed changes must be durable before the ring is reset; a
  // crash before that point replays the same transactions again (I8).
  QCRASH_RETURN_IF_ERROR(io_.DeviceFlush(Rule::kJournalProtocol));
  QCRASH_RETURN_IF_ERROR(Reinit());
  return report;
}

}  // namespace qcrash::engine
