// GuestOracle: per-sector write histories and the old-or-new rule.
#include "properties/oracle.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>

namespace qcrash::properties {

GuestOracle::GuestOracle(const WorkloadRun& run) : run_(run) {
  std::map<uint64_t, std::vector<Write>> by_sector;
  const auto& ops = run.workload.ops;
  const uint64_t cluster_bytes = uint64_t{1} << run.workload.image.cluster_bits;
  uint64_t size = run.workload.image.size_bytes;
  for (size_t i = 0; i < run.spans.size() && i < ops.size(); ++i) {
    const GuestOp& op = ops[i];
    if (op.kind == OpKind::kResize) {
      // A shrink: what lies past the new end reads zeroes if the disk
      // grows again, as if zeroes were written there.
      // Only sectors that held something else need the entry: those
      // written before, and a backing file's.
      const uint64_t backing_end =
          run.workload.backing ? std::min(size, run.workload.image.size_bytes) : 0;
      // QEMU's driver does not zero the last cluster past the new end on a
      // shrink: grown again without a backing file, the disk shows its old
      // bytes there. The whole clusters past it are dropped, and a growth
      // over a longer backing file zeroes what it adds, so those read
      // zeroes as with ours (docs/qemu-driver.md).
      const bool qemu = run.engine == "qemu";
      const uint64_t kept_end =
          (op.length_bytes + cluster_bytes - 1) / cluster_bytes * cluster_bytes;
      for (uint64_t s = op.length_bytes / kGuestSectorBytes; s < size / kGuestSectorBytes; ++s) {
        const bool kept = qemu && s * kGuestSectorBytes < kept_end;
        if (s * kGuestSectorBytes < backing_end || by_sector.count(s))
          by_sector[s].push_back({static_cast<uint32_t>(i), 0, kept, 0, kGuestSectorBytes, true});
      }
      if (op.length_bytes < backing_end) {
        const uint64_t begin = op.length_bytes / cluster_bytes * cluster_bytes;
        ranges_.push_back(
            {begin, (backing_end + cluster_bytes - 1) / cluster_bytes * cluster_bytes - begin});
      }
      size = op.length_bytes;
      continue;
    }
    if (op.kind == OpKind::kRebase) {
      // A safe rebase changes nothing the guest reads: every sector the
      // backing files cover is read back, so that a copy from the old file
      // that a crash loses (the new file's bytes showing) is seen.
      const uint64_t end = std::min(size, run.workload.image.size_bytes);
      if (end > 0)
        ranges_.push_back({0, (end + cluster_bytes - 1) / cluster_bytes * cluster_bytes});
      rebases_.push_back({i, end});
      continue;
    }
    if (op.kind == OpKind::kSnapshotRevert) {
      // Every sector written so far may change: each gets the value it
      // held at the snapshot's create (one never written holds its
      // initial content in both states). The disk takes the snapshot's size.
      auto target = run.snapshot_reverted_to.find(i);
      if (target == run.snapshot_reverted_to.end()) continue;  // no snapshot: it failed
      for (auto& [sector, writes] : by_sector) {
        Write w{static_cast<uint32_t>(i), 0, false, 0, kGuestSectorBytes, true};
        w.snapshot_op = static_cast<uint32_t>(target->second);
        writes.push_back(w);
      }
      size = SizeBefore(target->second);
      continue;
    }
    if (!WritesData(op.kind) && op.kind != OpKind::kWriteZeroes && op.kind != OpKind::kDiscard) {
      continue;
    }
    const uint64_t end_bytes = op.offset_bytes + op.length_bytes;
    for (uint64_t s = op.offset_bytes / kGuestSectorBytes; s * kGuestSectorBytes < end_bytes; ++s) {
      const uint64_t base = s * kGuestSectorBytes;
      const uint64_t tag = WritesData(op.kind) ? SectorTag(i + 1, s) : 0;
      by_sector[s].push_back(
          {static_cast<uint32_t>(i), tag, op.kind == OpKind::kDiscard,
           static_cast<uint16_t>(std::max(op.offset_bytes, base) - base),
           static_cast<uint16_t>(std::min(end_bytes, base + kGuestSectorBytes) - base)});
    }
    // Whole clusters are read back: the sectors of a touched cluster that
    // no operation wrote must still read zero, so a copy-on-write that
    // brings the wrong bytes along is seen too.
    const uint64_t begin = op.offset_bytes / cluster_bytes * cluster_bytes;
    const uint64_t end =
        (op.offset_bytes + op.length_bytes + cluster_bytes - 1) / cluster_bytes * cluster_bytes;
    if (end > begin) ranges_.push_back({begin, end - begin});
  }
  // Merge overlapping ranges after sorting (ops need not be in offset order).
  std::sort(ranges_.begin(), ranges_.end());
  std::vector<std::pair<uint64_t, uint64_t>> merged;
  for (const auto& r : ranges_) {
    if (!merged.empty() && merged.back().first + merged.back().second >= r.first) {
      const uint64_t end = std::max(merged.back().first + merged.back().second, r.first + r.second);
      merged.back().second = end - merged.back().first;
    } else {
      merged.push_back(r);
    }
  }
  ranges_ = std::move(merged);
  for (auto& [sector, writes] : by_sector) {
    sectors_.push_back(sector);
    partial_.push_back(std::any_of(writes.begin(), writes.end(), [](const Write& w) {
      return w.lo != 0 || w.hi != kGuestSectorBytes;
    }));
    history_.push_back(std::move(writes));
  }
}

bool GuestOracle::AcknowledgedAt(size_t op_index, uint64_t point) const {
  // The run stops at its first failed operation, whose span is the last: an
  // operation that returned an error acknowledged nothing (a flush that
  // failed made no promise), though its writes may have landed (old-or-new).
  const bool failed = !run_.workload_status.ok() && op_index + 1 == run_.spans.size();
  return !failed && run_.spans[op_index].end <= point;
}

bool GuestOracle::RebaseInFlight(uint64_t point, uint64_t sector) const {
  for (const auto& [op_index, end] : rebases_) {
    if (op_index < run_.spans.size() && run_.spans[op_index].start < point &&
        !AcknowledgedAt(op_index, point) && sector * kGuestSectorBytes < end)
      return true;
  }
  return false;
}

bool GuestOracle::DurableAt(const Write& w, int64_t flush_index, uint64_t point) const {
  return static_cast<int64_t>(w.op_index) < flush_index ||
         (w.durable_at_ack && AcknowledgedAt(w.op_index, point));
}

std::vector<uint64_t> GuestOracle::SizesAt(uint64_t point) const {
  std::vector<uint64_t> sizes = {run_.workload.image.size_bytes};
  for (size_t i = 0; i < run_.spans.size(); ++i) {
    uint64_t size = 0;
    if (run_.workload.ops[i].kind == OpKind::kResize) {
      size = run_.workload.ops[i].length_bytes;
    } else if (auto target = run_.snapshot_reverted_to.find(i);
               target != run_.snapshot_reverted_to.end()) {
      size = SizeBefore(target->second);
    } else {
      continue;
    }
    if (AcknowledgedAt(i, point)) {
      sizes = {size};
    } else if (run_.spans[i].start < point) {
      sizes.push_back(size);
    }
  }
  return sizes;
}

uint64_t GuestOracle::SizeBefore(size_t op_index) const {
  uint64_t size = run_.workload.image.size_bytes;
  for (size_t i = 0; i < op_index && i < run_.workload.ops.size(); ++i) {
    if (run_.workload.ops[i].kind == OpKind::kResize) size = run_.workload.ops[i].length_bytes;
    auto target = run_.snapshot_reverted_to.find(i);
    if (target != run_.snapshot_reverted_to.end()) size = SizeBefore(target->second);
  }
  return size;
}

GuestOracle::Value GuestOracle::ValueAt(const std::vector<Write>& writes, uint64_t sector,
                                        uint32_t create_op) const {
  Value value{InitialSectorTag(run_.workload, sector), false};
  for (const Write& w : writes) {
    if (w.op_index >= create_op) break;  // in operation order
    if (w.snapshot_op != kNoSnapshot) {
      value = ValueAt(writes, sector, w.snapshot_op);
    } else if (w.discard) {
      value.or_zero = value.or_zero || value.tag != 0;
    } else {
      value = {w.tag, false};
    }
  }
  return value;
}

GuestOracle::Value GuestOracle::ByteAt(const std::vector<Write>& writes, uint64_t sector,
                                       uint32_t create_op, uint64_t b) const {
  Value value{TagByte(InitialSectorTag(run_.workload, sector), b), false};
  for (const Write& w : writes) {
    if (w.op_index >= create_op) break;
    if (b < w.lo || b >= w.hi) continue;
    if (w.snapshot_op != kNoSnapshot) {
      value = ByteAt(writes, sector, w.snapshot_op, b);
    } else if (w.discard) {
      value.or_zero = value.or_zero || value.tag != 0;
    } else {
      value = {TagByte(w.tag, b), false};
    }
  }
  return value;
}

void GuestOracle::Check(uint64_t point, uint64_t guest_offset, std::span<const uint8_t> bytes,
                        std::vector<ContentViolation>& out, size_t max) const {
  // The last guest flush (or close, or commit: it flushes the image and
  // its base) acknowledged at the crash point.
  int64_t flush_index = -1;
  for (size_t i = 0; i < run_.spans.size(); ++i) {
    const OpKind kind = run_.workload.ops[i].kind;
    if ((kind == OpKind::kFlush || kind == OpKind::kClose || kind == OpKind::kCommit) &&
        AcknowledgedAt(i, point)) {
      flush_index = static_cast<int64_t>(i);
    }
  }
  const uint64_t first_sector = guest_offset / kGuestSectorBytes;
  // At most `max` violations of each invariant: the cap bounds the
  // messages, never which invariants a read breaks (the deduplicating
  // recovery judges sectors apart and must find the same set).
  size_t i4 = 0, i5 = 0;
  for (const ContentViolation& v : out) (v.invariant == "I4" ? i4 : i5) += 1;
  size_t mark = out.size();
  // Counts the violation the last sector appended (one at most), or drops
  // it past its invariant's cap.
  auto settle = [&] {
    if (out.size() > mark) {
      size_t& n = out.back().invariant == "I4" ? i4 : i5;
      if (n >= max) {
        out.pop_back();
      } else {
        ++n;
      }
    }
    mark = out.size();
  };
  for (uint64_t k = 0; k * kGuestSectorBytes < bytes.size() && (i4 < max || i5 < max); ++k) {
    settle();
    const uint64_t sector = first_sector + k;
    const uint64_t actual = SectorTagOf(bytes.data() + k * kGuestSectorBytes);
    auto it = std::lower_bound(sectors_.begin(), sectors_.end(), sector);
    // The values the sector may hold as of the flush: one, or after a
    // discard also zeroes. Before any write: its initial content.
    uint64_t durable = InitialSectorTag(run_.workload, sector);  // a backing file's, or zeroes
    bool durable_or_zero = false, later_writes = false, allowed = false;
    if (it != sectors_.end() && *it == sector &&
        partial_[static_cast<size_t>(it - sectors_.begin())]) {
      CheckBytes(point, flush_index, sector, history_[static_cast<size_t>(it - sectors_.begin())],
                 bytes.data() + k * kGuestSectorBytes, out);
      continue;
    }
    if (it != sectors_.end() && *it == sector) {
      const std::vector<Write>& writes = history_[static_cast<size_t>(it - sectors_.begin())];
      for (const Write& w : writes) {
        const Value reverted = w.snapshot_op != kNoSnapshot ? ValueAt(writes, sector, w.snapshot_op)
                                                            : Value{w.tag, false};
        if (DurableAt(w, flush_index, point)) {
          if (w.discard) {
            durable_or_zero = durable_or_zero || durable != 0;
          } else {
            durable = reverted.tag;
            durable_or_zero = reverted.or_zero;
          }
          allowed = later_writes = false;  // what came before it is gone
        } else if (run_.spans[w.op_index].start < point) {
          later_writes = true;  // issued after the flush, before the crash
          allowed |= actual == reverted.tag || (reverted.or_zero && actual == 0);
        }
      }
    }
    if (actual == durable || allowed || (durable_or_zero && actual == 0)) continue;
    later_writes = later_writes || RebaseInFlight(point, sector);
    ContentViolation v;
    v.guest_offset = sector * kGuestSectorBytes;
    v.invariant = later_writes ? "I5" : "I4";
    v.message = "guest sector at " + HexOffset(v.guest_offset) + " reads " +
                DescribeSectorTag(actual) +
                (later_writes ? "; allowed: its flushed value (" + DescribeSectorTag(durable) +
                                    ") or a later write's"
                              : "; expected its flushed value: " + DescribeSectorTag(durable));
    out.push_back(std::move(v));
  }
  settle();
}

void GuestOracle::CheckBytes(uint64_t point, int64_t flush_index, uint64_t sector,
                             const std::vector<Write>& writes, const uint8_t* bytes,
                             std::vector<ContentViolation>& out) const {
  // The rule of Check, byte by byte: each byte holds its byte of some tag.
  const uint64_t initial = InitialSectorTag(run_.workload, sector);
  for (uint64_t b = 0; b < kGuestSectorBytes; ++b) {
    uint8_t durable = TagByte(initial, b);
    bool durable_or_zero = false, later_writes = false, allowed = false;
    for (const Write& w : writes) {
      if (b < w.lo || b >= w.hi) continue;
      const Value reverted = w.snapshot_op != kNoSnapshot ? ByteAt(writes, sector, w.snapshot_op, b)
                                                          : Value{TagByte(w.tag, b), false};
      if (DurableAt(w, flush_index, point)) {
        if (w.discard) {
          durable_or_zero = durable_or_zero || durable != 0;
        } else {
          durable = static_cast<uint8_t>(reverted.tag);
          durable_or_zero = reverted.or_zero;
        }
        allowed = later_writes = false;
      } else if (run_.spans[w.op_index].start < point) {
        later_writes = true;
        allowed |= bytes[b] == reverted.tag || (reverted.or_zero && bytes[b] == 0);
      }
    }
    if (bytes[b] == durable || allowed || (durable_or_zero && bytes[b] == 0)) continue;
    later_writes = later_writes || RebaseInFlight(point, sector);
    ContentViolation v;
    v.guest_offset = sector * kGuestSectorBytes + b;
    v.invariant = later_writes ? "I5" : "I4";
    char text[96];
    std::snprintf(text, sizeof(text), "reads 0x%02x; %s 0x%02x", bytes[b],
                  later_writes ? "allowed: its flushed value" : "expected its flushed value",
                  durable);
    v.message = "guest byte at " + HexOffset(v.guest_offset) + " (in a sector written in part) " +
                text + (later_writes ? " or a later write's" : "") + "; the sector reads " +
                DescribeSectorTag(SectorTagOf(bytes));
    out.push_back(std::move(v));
    return;  // one violation per sector
  }
}

}  // namespace qcrash::properties
