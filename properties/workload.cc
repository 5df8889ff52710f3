// Workload validation, op names, sector content and the built-in workloads.
#include "properties/workload.h"

#include <cstring>
#include <deque>

namespace qcrash::properties {

const char* OpKindName(OpKind kind) {
  switch (kind) {
    case OpKind::kWrite:
      return "write";
    case OpKind::kWriteZeroes:
      return "write-zeroes";
    case OpKind::kDiscard:
      return "discard";
    case OpKind::kFlush:
      return "flush";
    case OpKind::kResize:
      return "resize";
    case OpKind::kClose:
      return "close";
    case OpKind::kRead:
      return "read";
    case OpKind::kSnapshotCreate:
      return "snapshot-create";
    case OpKind::kSnapshotDelete:
      return "snapshot-delete";
    case OpKind::kSnapshotRevert:
      return "snapshot-revert";
    case OpKind::kBitmapAdd:
      return "bitmap-add";
    case OpKind::kBitmapRemove:
      return "bitmap-remove";
    case OpKind::kBitmapClear:
      return "bitmap-clear";
    case OpKind::kBitmapEnable:
      return "bitmap-enable";
    case OpKind::kBitmapDisable:
      return "bitmap-disable";
    case OpKind::kWriteCompressed:
      return "write-compressed";
    case OpKind::kAmend:
      return "amend";
    case OpKind::kRebase:
      return "rebase";
    case OpKind::kCommit:
      return "commit";
  }
  return "?";
}

Result<OpKind> ParseOpKind(const std::string& name) {
  for (OpKind k :
       {OpKind::kWrite, OpKind::kWriteZeroes, OpKind::kDiscard, OpKind::kFlush, OpKind::kResize,
        OpKind::kClose, OpKind::kRead, OpKind::kSnapshotCreate, OpKind::kSnapshotDelete,
        OpKind::kSnapshotRevert, OpKind::kBitmapAdd, OpKind::kBitmapRemove, OpKind::kBitmapClear,
        OpKind::kBitmapEnable, OpKind::kBitmapDisable, OpKind::kWriteCompressed, OpKind::kAmend,
        OpKind::kRebase, OpKind::kCommit}) {
    if (name == OpKindName(k)) return k;
  }
  return Status::InvalidArgument("unknown operation '" + name +
                                 "' (write, write-zeroes, discard, flush, resize, close, read, "
                                 "snapshot-create, snapshot-delete, snapshot-revert, bitmap-add, "
                                 "bitmap-remove, bitmap-clear, bitmap-enable, bitmap-disable, "
                                 "write-compressed, amend, rebase, commit)");
}

std::string DescribeOp(const GuestOp& op) {
  std::string out = OpKindName(op.kind);
  switch (op.kind) {
    case OpKind::kWrite:
    case OpKind::kWriteCompressed:
    case OpKind::kDiscard:
    case OpKind::kRead:
      return out + " " + HexOffset(op.offset_bytes) + "+" + std::to_string(op.length_bytes);
    case OpKind::kWriteZeroes:
      return out + (op.may_unmap ? " -u " : " ") + HexOffset(op.offset_bytes) + "+" +
             std::to_string(op.length_bytes);
    case OpKind::kResize:
      return out + " " + std::to_string(op.length_bytes);
    case OpKind::kRebase:
      return out + " -b '" + RebaseTarget(op) + "'";
    case OpKind::kBitmapAdd:
      return out + " b" + std::to_string(op.offset_bytes) +
             (op.length_bytes ? " -g " + std::to_string(op.length_bytes) : "");
    case OpKind::kBitmapRemove:
    case OpKind::kBitmapClear:
    case OpKind::kBitmapEnable:
    case OpKind::kBitmapDisable:
      return out + " b" + std::to_string(op.offset_bytes);
    case OpKind::kAmend: {
      std::string list;
      const auto add = [&list](const std::string& item) {
        list += (list.empty() ? "" : ",") + item;
      };
      if (op.amend.version != 0) add(op.amend.version == 2 ? "compat=0.10" : "compat=1.1");
      if (op.amend.refcount_bits != 0)
        add("refcount_bits=" + std::to_string(op.amend.refcount_bits));
      if (op.amend.lazy_refcounts)
        add(*op.amend.lazy_refcounts ? "lazy_refcounts=on" : "lazy_refcounts=off");
      return out + " -o " + list;
    }
    case OpKind::kCommit:
      return out + (op.keep ? " -d" : "");
    default:
      return out;
  }
}

namespace {

// An amend the engine performs (qemu-img's own refusals are the CLI's and
// the interop tests' business): something changes, the values exist, and
// the result is a format qcow2 allows. Refcount overflow on a narrower
// width depends on the run (snapshots, packed compressed clusters) and is
// the engine's refusal.
Status ValidateAmend(const Workload& workload, const GuestOp& op, const std::string& where,
                     uint32_t& version, uint32_t& refcount_bits, bool& lazy) {
  const AmendChange& a = op.amend;
  if (op.offset_bytes != 0 || op.length_bytes != 0 || op.may_unmap) {
    return Status::InvalidArgument(where + ": an amend takes no guest range");
  }
  if (a.version == 0 && a.refcount_bits == 0 && !a.lazy_refcounts) {
    return Status::InvalidArgument(where +
                                   ": an amend changes compat, refcount_bits or lazy_refcounts");
  }
  if (a.version != 0 && a.version != 2 && a.version != 3) {
    return Status::InvalidArgument(where + ": compat is \"0.10\" or \"1.1\"");
  }
  if (a.refcount_bits != 0 &&
      (a.refcount_bits > 64 || (a.refcount_bits & (a.refcount_bits - 1)) != 0)) {
    return Status::InvalidArgument(where + ": refcount_bits is a power of two up to 64");
  }
  const uint32_t new_version = a.version != 0 ? a.version : version;
  const uint32_t new_bits = a.refcount_bits != 0 ? a.refcount_bits : refcount_bits;
  const bool new_lazy = a.lazy_refcounts.value_or(lazy);
  if (new_version == 2) {
    if (new_bits != 16)
      return Status::InvalidArgument(where + ": compat=0.10 requires refcount_bits=16");
    if (new_lazy) return Status::InvalidArgument(where + ": lazy refcounts need compat=1.1");
    if (version == 3 && (!workload.image.data_file.empty() || workload.image.extended_l2 ||
                         workload.image.compression_type != engine::CompressionType::kZlib)) {
      return Status::InvalidArgument(
          where + ": a data file, extended L2 or zstd compression cannot be downgraded");
    }
  }
  version = new_version;
  refcount_bits = new_bits;
  lazy = new_lazy;
  return Status::Ok();
}

}  // namespace

bool RecordsBacking(const Workload& workload) {
  if (!workload.backing) return false;
  for (const GuestOp& op : workload.ops) {
    if (op.kind == OpKind::kCommit) return true;
  }
  return false;
}

Status ValidateWorkload(const Workload& workload, size_t ops_max) {
  if (workload.ops.size() > ops_max) {
    return Status::Limit("workload has " + std::to_string(workload.ops.size()) +
                         " operations; the limit is " + std::to_string(ops_max));
  }
  if (workload.image.size_bytes == 0 || workload.image.size_bytes % kGuestSectorBytes != 0 ||
      workload.image.size_bytes > (uint64_t{1} << 40)) {
    return Status::InvalidArgument("image size must be a non-zero multiple of 512 up to 1 TiB");
  }
  if (!workload.image.data_file.empty()) {
    if (workload.backing) {
      return Status::InvalidArgument("a workload with a data file cannot have a backing file");
    }
    if (workload.image.version < 3) {
      return Status::InvalidArgument("a data file needs a compat=1.1 (v3) image");
    }
    for (const GuestOp& op : workload.ops) {
      if (IsSnapshotOp(op.kind)) {
        return Status::InvalidArgument(
            "internal snapshots are not supported with an external data file");
      }
    }
  }
  uint64_t size = workload.image.size_bytes;
  std::deque<uint64_t> snapshot_sizes;
  // The image's format as the amends leave it (they are checked in order).
  uint32_t version = workload.image.version;
  uint32_t refcount_bits = workload.image.version == 2 ? 16 : 1u << workload.image.refcount_order;
  bool lazy = workload.image.lazy_refcounts;
  for (size_t i = 0; i < workload.ops.size(); ++i) {
    const GuestOp& op = workload.ops[i];
    const std::string where = "operation " + std::to_string(i) + " (" + DescribeOp(op) + ")";
    if (op.kind == OpKind::kResize) {
      if (op.length_bytes == 0 || op.length_bytes % kGuestSectorBytes != 0 ||
          op.length_bytes > (uint64_t{1} << 40)) {
        return Status::InvalidArgument(
            where + ": resize must be to a non-zero multiple of 512 up to 1 TiB");
      }
      if (op.length_bytes < size && workload.backing && workload.image.version < 3) {
        return Status::InvalidArgument(
            where + ": a version 2 image with a backing file cannot shrink (no zero clusters)");
      }
      size = op.length_bytes;
      continue;
    }
    // The disk sizes of the live snapshots, oldest first: a revert takes
    // the newest one's (a delete removes the oldest).
    if (op.kind == OpKind::kSnapshotCreate) snapshot_sizes.push_back(size);
    if (op.kind == OpKind::kSnapshotDelete && !snapshot_sizes.empty()) snapshot_sizes.pop_front();
    if (op.kind == OpKind::kSnapshotRevert && !snapshot_sizes.empty()) size = snapshot_sizes.back();
    if (op.kind == OpKind::kAmend) {
      QCRASH_RETURN_IF_ERROR(ValidateAmend(workload, op, where, version, refcount_bits, lazy));
      continue;
    }
    if (op.kind == OpKind::kRebase) {
      if (!workload.backing)
        return Status::InvalidArgument(where + ": rebase needs a workload with a backing file");
      if (op.offset_bytes > 2) {
        return Status::InvalidArgument(where +
                                       ": rebase target must be 0 (none), 1 or 2 (backing files)");
      }
      continue;
    }
    if (op.kind == OpKind::kCommit && !workload.backing) {
      return Status::InvalidArgument(where + ": a commit needs a backing file (\"backing\": true)");
    }
    if (op.kind != OpKind::kCommit && op.keep) {
      return Status::InvalidArgument(where + ": only a commit takes \"keep\"");
    }
    if (op.kind == OpKind::kCommit) {
      if (op.offset_bytes != 0 || op.length_bytes != 0 || op.may_unmap)
        return Status::InvalidArgument(where + ": a commit takes no range");
      continue;
    }
    if (op.kind == OpKind::kFlush || op.kind == OpKind::kClose || IsSnapshotOp(op.kind)) continue;
    if (IsBitmapOp(op.kind)) {
      if (op.offset_bytes > 65535 ||
          (op.kind == OpKind::kBitmapAdd && op.length_bytes != 0 &&
           (op.length_bytes < 512 || op.length_bytes > (uint64_t{1} << 31) ||
            (op.length_bytes & (op.length_bytes - 1)) != 0)))
        return Status::InvalidArgument(
            where + ": a bitmap number is 0-65535, a granularity a power of two 512 B-2 GiB");
      if (op.kind != OpKind::kBitmapAdd && op.length_bytes != 0)
        return Status::InvalidArgument(where + ": takes no length");
      continue;
    }
    if (op.length_bytes == 0) return Status::InvalidArgument(where + ": length must not be 0");
    if (op.offset_bytes > size || op.length_bytes > size - op.offset_bytes) {
      return Status::InvalidArgument(where + ": goes past the end of the disk (" +
                                     std::to_string(size) + " bytes)");
    }
    if (op.length_bytes > (uint64_t{16} << 20)) {
      return Status::Limit(where + ": operations are limited to 16 MiB");
    }
    const uint64_t cluster_bytes = uint64_t{1} << workload.image.cluster_bits;
    if (IsCompressedOp(op.kind) &&
        (op.offset_bytes % cluster_bytes != 0 ||
         (op.length_bytes % cluster_bytes != 0 && op.offset_bytes + op.length_bytes != size))) {
      return Status::InvalidArgument(where +
                                     ": a compressed write covers whole clusters (the disk's "
                                     "last one may be partial)");
    }
  }
  return Status::Ok();
}

void FillOpContent(uint64_t op_number, uint64_t sector, std::vector<uint8_t>& out) {
  for (uint64_t at = 0; at < out.size(); at += 8) {
    const uint64_t tag = SectorTag(op_number, sector + at / kGuestSectorBytes);
    std::memcpy(&out[at], &tag, 8);
  }
}

void FillOpBytes(uint64_t op_number, uint64_t offset_bytes, std::vector<uint8_t>& out) {
  const uint64_t head = offset_bytes % kGuestSectorBytes;
  if (head == 0 && out.size() % 8 == 0) {
    FillOpContent(op_number, offset_bytes / kGuestSectorBytes, out);
    return;
  }
  // The whole sectors it covers, then the part it writes.
  std::vector<uint8_t> sectors((head + out.size() + kGuestSectorBytes - 1) / kGuestSectorBytes *
                               kGuestSectorBytes);
  FillOpContent(op_number, offset_bytes / kGuestSectorBytes, sectors);
  std::memcpy(out.data(), sectors.data() + head, out.size());
}

uint64_t SectorTagOf(const uint8_t* sector) {
  uint64_t first;
  std::memcpy(&first, sector, 8);
  for (uint64_t at = 8; at < kGuestSectorBytes; at += 8) {
    uint64_t word;
    std::memcpy(&word, sector + at, 8);
    if (word != first) return ~uint64_t{0};
  }
  return first;
}

uint64_t InitialSectorTag(const Workload& workload, uint64_t sector) {
  const bool in_backing = sector < workload.image.size_bytes / kGuestSectorBytes;
  return workload.backing && in_backing ? SectorTag(kBackingOpNumber, sector) : 0;
}

std::vector<uint8_t> BackingFileBytes(const Workload& workload) {
  std::vector<uint8_t> bytes(workload.backing ? workload.image.size_bytes : 0);
  FillOpContent(kBackingOpNumber, 0, bytes);
  return bytes;
}

Result<std::vector<uint8_t>> BackingFileBytes(const Workload& workload, const std::string& name) {
  if (name == kBackingFileName) return BackingFileBytes(workload);
  if (name != kBacking2FileName) return Status::IoError("no backing file '" + name + "'");
  std::vector<uint8_t> bytes = BackingFileBytes(workload);
  std::vector<uint8_t> own(16 * kGuestSectorBytes);
  for (uint64_t at = 16 * kGuestSectorBytes; at < bytes.size(); at += 32 * kGuestSectorBytes) {
    FillOpContent(kBacking2OpNumber, at / kGuestSectorBytes, own);
    std::copy_n(own.begin(), std::min<uint64_t>(own.size(), bytes.size() - at), bytes.begin() + at);
  }
  return bytes;
}

std::string RebaseTarget(const GuestOp& op) {
  return op.offset_bytes == 1 ? kBackingFileName : op.offset_bytes == 2 ? kBacking2FileName : "";
}

bool UsesSecondBacking(const Workload& workload) {
  for (const GuestOp& op : workload.ops)
    if (op.kind == OpKind::kRebase && op.offset_bytes == 2) return true;
  return false;
}

void SetBacking(Workload& workload) {
  workload.backing = true;
  workload.image.backing_file = kBackingFileName;
  workload.image.backing_format = "raw";
}

void SetDataFile(Workload& workload, bool raw) {
  workload.image.data_file = kDataFileName;
  workload.image.data_file_raw = raw;
}

std::string DescribeSectorTag(uint64_t tag) {
  if (tag == 0) return "zeroes";
  if (tag == ~uint64_t{0}) return "garbage";
  if ((tag >> 40) == kBackingOpNumber)
    return "the backing file's data for guest sector " +
           std::to_string(tag & ((uint64_t{1} << 40) - 1));
  if ((tag >> 40) == kBacking2OpNumber)
    return "the second backing file's data for guest sector " +
           std::to_string(tag & ((uint64_t{1} << 40) - 1));
  return "op " + std::to_string((tag >> 40) - 1) + "'s data for guest sector " +
         std::to_string(tag & ((uint64_t{1} << 40) - 1));
}

namespace {

GuestOp W(uint64_t offset, uint64_t length) { return {OpKind::kWrite, offset, length, false}; }
GuestOp Z(uint64_t offset, uint64_t length, bool unmap) {
  return {OpKind::kWriteZeroes, offset, length, unmap};
}
GuestOp D(uint64_t offset, uint64_t length) { return {OpKind::kDiscard, offset, length, false}; }
GuestOp F() { return {OpKind::kFlush, 0, 0, false}; }
GuestOp R(uint64_t size) { return {OpKind::kResize, 0, size, false}; }
GuestOp C() { return {OpKind::kClose, 0, 0, false}; }
GuestOp Rebase(uint64_t target) { return {OpKind::kRebase, target, 0, false}; }
GuestOp Snap() { return {OpKind::kSnapshotCreate, 0, 0, false}; }
GuestOp Unsnap() { return {OpKind::kSnapshotDelete, 0, 0, false}; }
GuestOp Revert() { return {OpKind::kSnapshotRevert, 0, 0, false}; }
GuestOp Rd(uint64_t offset, uint64_t length) { return {OpKind::kRead, offset, length, false}; }
GuestOp Wc(uint64_t offset, uint64_t length) {
  return {OpKind::kWriteCompressed, offset, length, false};
}
GuestOp Amend(uint32_t refcount_bits, uint32_t version, std::optional<bool> lazy = {}) {
  GuestOp op{OpKind::kAmend, 0, 0, false};
  op.amend = {refcount_bits, version, lazy};
  return op;
}
GuestOp Commit(bool keep = false) {
  GuestOp op{OpKind::kCommit, 0, 0, false};
  op.keep = keep;
  return op;
}
GuestOp Bitmap(OpKind kind, uint64_t number, uint64_t granularity = 0) {
  return {kind, number, granularity, false};
}

constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024;

}  // namespace

Result<Workload> BuiltinWorkload(const std::string& name) {
  Workload w;
  w.name = name;
  w.image.size_bytes = 8 * kMiB;
  w.image.cluster_bits = 12;  // 4 KiB clusters: each L2 table maps 2 MiB
  if (name == "default") {
    // Allocating writes across L2 tables, a partial-cluster COW, a rewrite in
    // place, zero writes both ways, a discard, flushes between.
    w.ops = {W(0, 8 * kKiB),        W(2 * kMiB + 512, 1024),     F(), W(4 * kKiB, 4 * kKiB),
             Z(0, 4 * kKiB, false), W(6 * kMiB, 12 * kKiB),      F(), D(6 * kMiB, 4 * kKiB),
             W(3 * kMiB, 4 * kKiB), Z(2 * kMiB, 4 * kKiB, true), F(), C()};
  } else if (name == "2010-dangling-l2") {
    // The revert thread: allocating writes need refcount before L2 entry.
    w.ops = {W(0, 4 * kKiB),
             W(2 * kMiB, 4 * kKiB),
             W(4 * kMiB, 4 * kKiB),
             F(),
             W(6 * kMiB, 8 * kKiB),
             W(64 * kKiB, 4 * kKiB),
             F()};
  } else if (name == "free-reuse") {
    // A discarded cluster is reused by the next allocation: its unlink must
    // be durable before the new owner's data lands in it.
    w.ops = {W(0, 4 * kKiB),         W(8 * kKiB, 4 * kKiB),  F(), D(0, 4 * kKiB),
             W(16 * kKiB, 4 * kKiB), W(24 * kKiB, 4 * kKiB), F(), C()};
  } else if (name == "stale-reuse") {
    // A freed cluster, its free durable, reused by a full-cluster write: with
    // QEMU's data ordering the new L2 entry may land before the data, and
    // the guest sees the cluster's old contents (I5's stale-data verdict).
    w.ops = {W(0, 4 * kKiB), F(), D(0, 4 * kKiB), F(), W(16 * kKiB, 4 * kKiB), F(), C()};
  } else if (name == "2013-journal-revoke") {
    // The journal thread's revoke example: an L2 allocation is journalled,
    // the disk grows past the L1 so the L1 moves and the old one is freed,
    // the freed clusters are reused for guest data, and the crash comes
    // before the journal is synced: replay must not write the stale L1.
    w.image.size_bytes = 1 * kMiB;
    w.ops = {W(0, 4 * kKiB),        F(), R(8 * kMiB), W(4 * kKiB, 4 * kKiB), F(),
             W(8 * kKiB, 4 * kKiB), F()};
  } else if (name == "journal-wrap") {
    // Rounds of allocations, frees and rewrites with a flush each: with a
    // small journal ring (--journal size=16k) the ring wraps and stale blocks
    // of an earlier lap sit behind the head, where a torn transaction can
    // pick them up unless checksums reject it.
    w.image.size_bytes = 6 * kMiB;
    for (uint64_t round = 0; round < 3; ++round) {
      for (uint64_t cluster : {0, 1, 600, 1100, 5})
        w.ops.push_back(W((cluster + round) * 4 * kKiB, 4 * kKiB));
      w.ops.push_back(F());
      w.ops.push_back(D((1 + round) * 4 * kKiB, 4 * kKiB));
      w.ops.push_back(W(600 * 4 * kKiB, 4 * kKiB));
      w.ops.push_back(F());
    }
    w.ops.push_back(R(12 * kMiB));
    w.ops.push_back(W(2000 * 4 * kKiB, 4 * kKiB));
    w.ops.push_back(W(4 * kKiB, 4 * kKiB));
    w.ops.push_back(F());
  } else if (name == "2017-zero-realloc") {
    // The reservation thread: a preallocated image keeps its mapping through
    // zero writes, discard-as-zero and rewrites.
    w.image.size_bytes = 256 * kKiB;
    w.image.preallocation = engine::Preallocation::kMetadata;
    w.check_reservations = true;
    w.ops = {W(0, 8 * kKiB),
             F(),
             Z(0, 8 * kKiB, false),
             F(),
             W(512, 1024),
             W(4 * kKiB, 4 * kKiB),
             F(),
             C()};
  } else if (name == "l1-growth") {
    // Growing the disk past the L1 table relocates it (R6).
    w.image.size_bytes = 1 * kMiB;
    w.image.cluster_bits = 9;
    w.ops = {W(0, 4 * kKiB), F(), R(8 * kMiB), W(7 * kMiB, 4 * kKiB), W(512, 512), F(), C()};
  } else if (name == "refcount-growth") {
    // 512-byte clusters and 64-bit refcounts: a refcount block covers 64
    // clusters, so allocation creates new refcount blocks.
    w.image.cluster_bits = 9;
    w.image.refcount_order = 6;
    w.image.size_bytes = 4 * kMiB;
    w.ops = {W(0, 24 * kKiB), F(), W(1 * kMiB, 16 * kKiB), W(3 * kMiB, 8 * kKiB), F(), C()};
  } else if (name == "refcount-table-growth") {
    // The same geometry, far enough: the first one-cluster refcount table
    // names 64 blocks (2 MiB of host clusters), so 2.5 MiB of writes really
    // grow the table (relocate, switch, free the old one). Costly (a 2.5 MiB
    // image of 512-byte clusters per state): not in `explore --quick`.
    w.image.cluster_bits = 9;
    w.image.refcount_order = 6;
    w.image.size_bytes = 4 * kMiB;
    w.ops = {W(0, 1 * kMiB), F(), W(1 * kMiB, 1 * kMiB), W(3 * kMiB, 512 * kKiB), F(), C()};
  } else if (name == "unaligned") {
    // Discards and zero writes that are not cluster-aligned (only whole
    // clusters may lose their allocation; the partial edges keep their
    // bytes or get explicit zeroes), partial writes into discarded clusters
    // (copy-on-write from zero), and a close with writes still unflushed:
    // the close itself must make them durable, the lazy dirty bit cleared
    // last. Reads across cluster boundaries check the read path as it runs.
    w.image.size_bytes = 1 * kMiB;
    w.ops = {W(0, 24 * kKiB),
             F(),
             D(2 * kKiB, 9 * kKiB),
             Rd(1 * kKiB, 6 * kKiB),
             Z(13 * kKiB, 7 * kKiB, true),
             W(5 * kKiB, 1 * kKiB),
             F(),
             Z(4 * kKiB, 4 * kKiB + 512, false),
             W(17 * kKiB + 512, 2 * kKiB),
             Rd(3 * kKiB + 512, 20 * kKiB),
             W(64 * kKiB, 8 * kKiB),
             Rd(60 * kKiB, 16 * kKiB),
             C()};
  } else if (name == "bytes") {
    // Requests that start or end inside a sector, over a backing file: a
    // write into an allocated cluster rewrites part of a sector in place,
    // one into an unallocated cluster copies the rest of the cluster (the
    // sector's other bytes included) from the backing file, a zero write
    // and a discard with byte edges, and reads with byte edges check every
    // byte as they run.
    w.image.size_bytes = 1 * kMiB;
    SetBacking(w);
    w.ops = {W(0, 8 * kKiB),
             F(),
             W(100, 1000),
             W(4 * kKiB + 7, 3),
             W(20 * kKiB + 300, 5000),
             Rd(90, 6000),
             Z(300, 77, false),
             F(),
             D(10, 9000),
             W(40 * kKiB + 511, 2),
             W(64 * kKiB + 1, 4 * kKiB - 2),
             Rd(0, 48 * kKiB + 5),
             F(),
             W(2 * kKiB + 13, 100),
             R(10 * kKiB + 512),  // a shrink over the backing file: zero clusters hide it
             R(1 * kMiB),
             Rd(8 * kKiB, 8 * kKiB),
             C()};
  } else if (name == "shrink") {
    // Shrinks: what lies past the new end is dropped (host clusters freed,
    // the part of the last cluster past the end zeroed) and durable before
    // the header names the smaller size; grown again, the disk reads
    // zeroes there. Once to a size inside a cluster, once to a small disk.
    w.image.size_bytes = 2 * kMiB;
    w.ops = {W(0, 20 * kKiB),
             W(1 * kMiB, 64 * kKiB),
             F(),
             R(1 * kMiB + 1536),
             W(1 * kMiB - 8 * kKiB, 9 * kKiB),
             R(2 * kMiB),
             Rd(1 * kMiB - 8 * kKiB, 96 * kKiB),
             W(1 * kMiB + 48 * kKiB, 4 * kKiB),
             F(),
             R(8 * kKiB),
             R(64 * kKiB),
             Rd(0, 64 * kKiB),
             W(16 * kKiB, 8 * kKiB),
             C()};
  } else if (name == "backing") {
    // A raw backing file under the image: partial writes into unallocated
    // clusters copy the rest of the cluster from it (copy-on-write), whole
    // clusters are written without reading it, a discard and a zero write
    // must hide it (zero clusters), and reads cross allocated and
    // unallocated clusters.
    w.image.size_bytes = 1 * kMiB;
    SetBacking(w);
    w.ops = {W(2 * kKiB, 1 * kKiB),
             Rd(0, 12 * kKiB),
             F(),
             W(8 * kKiB + 512, 512),
             W(12 * kKiB, 4 * kKiB),
             D(16 * kKiB, 4 * kKiB),
             Z(20 * kKiB, 4 * kKiB, false),
             Z(24 * kKiB + 1 * kKiB, 1 * kKiB, true),
             F(),
             W(3 * kKiB, 2 * kKiB),
             Rd(0, 32 * kKiB),
             W(64 * kKiB + 3 * kKiB, 3 * kKiB),
             C()};
  } else if (name == "reopen") {
    // Two sessions: the second opens an image with data, L2 tables and
    // freed clusters, so its allocator starts from what open read back
    // (free-cluster search, the end of the file), and its first change sets
    // the lazy dirty bit again. No flush before the first close.
    w.image.size_bytes = 4 * kMiB;
    w.ops = {W(0, 12 * kKiB),
             W(2 * kMiB, 8 * kKiB),
             D(4 * kKiB, 4 * kKiB),
             C(),
             W(16 * kKiB, 8 * kKiB),
             D(0, 4 * kKiB),
             F(),
             W(2 * kMiB + 4 * kKiB + 512, 2 * kKiB),
             W(3 * kMiB, 4 * kKiB),
             Z(8 * kKiB, 4 * kKiB, true),
             C()};
  } else if (name == "snapshots") {
    // Internal snapshots (issue 15): two snapshots sharing clusters with
    // the active state, writes that copy shared L2 tables and clusters, a
    // revert over an unflushed write and one over a flushed L2 table that
    // only the active state held (freed), then both deleted (COPIED
    // restored where a count is back to 1). I12: each snapshot reads what
    // the guest saw at its create; a revert reads old or the snapshot's
    // content while it runs, the snapshot's once it returned.
    w.image.size_bytes = 4 * kMiB;
    w.image.cluster_bits = 12;
    w.ops = {W(0, 16 * kKiB),
             F(),
             Snap(),
             W(4 * kKiB, 8 * kKiB),
             F(),
             Snap(),
             W(0, 4 * kKiB),
             Revert(),
             W(12 * kKiB, 4 * kKiB),
             Unsnap(),
             W(2 * kMiB, 4 * kKiB),
             F(),
             Revert(),
             Unsnap(),
             W(0, 4 * kKiB),
             C()};
  } else if (name == "bitmaps") {
    // Persistent dirty bitmaps (the 2015 spec thread): an incremental
    // backup's bitmap tracks writes across flushes and closes; a second one
    // at the default granularity is disabled, enabled again and removed;
    // the first is cleared (a backup taken). The first write after a reopen
    // rewrites a cluster in place, so only R10 (in_use durable first) keeps
    // it from landing under a bitmap that looks consistent. I11: a bitmap
    // the recovered image has without in_use marks every granule that
    // shows data written since it was added or cleared.
    w.image.size_bytes = 4 * kMiB;
    w.ops = {W(0, 8 * kKiB), Bitmap(OpKind::kBitmapAdd, 0, 4 * kKiB), C(),
             W(4 * kKiB, 4 * kKiB),  // in place: no metadata write orders it
             W(16 * kKiB, 4 * kKiB), W(1 * kMiB, 8 * kKiB), F(), Bitmap(OpKind::kBitmapAdd, 1),
             W(0, 4 * kKiB), C(), Bitmap(OpKind::kBitmapDisable, 1), W(2 * kMiB, 4 * kKiB),
             Bitmap(OpKind::kBitmapClear, 0), W(24 * kKiB, 4 * kKiB), F(),
             Bitmap(OpKind::kBitmapEnable, 1), D(16 * kKiB, 4 * kKiB), Z(1 * kMiB, 4 * kKiB, true),
             C(), Bitmap(OpKind::kBitmapRemove, 1), W(3 * kMiB, 4 * kKiB), R(6 * kMiB),
             W(5 * kMiB, 4 * kKiB), F(), C(),
             // The last bitmap removed: on disk until the close, so the
             // rewrite in place after it still needs its in_use.
             Bitmap(OpKind::kBitmapRemove, 0), W(0, 4 * kKiB), F(), C()};
  } else if (name == "subclusters") {
    // Extended L2 entries (issue 16, the 2017 reservation thread): 64 KiB
    // clusters (QEMU's default) of 32 subclusters of 2 KiB over a raw
    // backing file. Writes
    // allocate only the subclusters they touch (a partial one gets the rest
    // from the backing file), zero writes and discards clear subclusters,
    // and writes allocate them again in the host cluster that already holds
    // their old data: only R3 (data before the allocation bits) keeps a
    // crash from exposing it (I5). A snapshot makes a cluster shared, so
    // the next write into it copies the whole cluster.
    w.image.size_bytes = 2 * kMiB;
    w.image.cluster_bits = 16;
    w.image.extended_l2 = true;
    SetBacking(w);
    w.ops = {W(0, 6 * kKiB),
             W(64 * kKiB + 1536, 3 * kKiB),  // starts and ends inside subclusters
             F(),
             Z(2 * kKiB, 2 * kKiB, false),
             D(4 * kKiB, 2 * kKiB),
             F(),
             W(2 * kKiB, 4 * kKiB),  // subclusters 1 and 2 again, in place
             W(8 * kKiB, 2 * kKiB),
             F(),
             Snap(),
             W(4 * kKiB + 512, 1 * kKiB),  // allocated, but shared now: a copy
             Z(128 * kKiB, 64 * kKiB, true),
             W(128 * kKiB + 2 * kKiB, 2 * kKiB),
             F(),
             Z(64 * kKiB, 64 * kKiB, false),  // the host cluster stays, all subclusters zero
             W(64 * kKiB + 4 * kKiB, 2 * kKiB),
             D(70 * kKiB, 10 * kKiB),
             Unsnap(),
             W(2 * kKiB, 2 * kKiB),
             C()};
  } else if (name == "compressed" || name == "compressed-zstd") {
    // Compressed clusters packed several to a host cluster (its refcount
    // counts them; 512-byte clusters: a cluster of this data compresses to
    // about 13 bytes, so some 35 share a host cluster): one is overwritten
    // whole, one in part (copy-on-write from the compressed data), one
    // discarded, one zero-written, and both compressed again (a compressed
    // write fills only clusters without a host cluster, as QEMU's); each
    // free drops only its share of the host cluster, the others must still
    // read back. Then, in a new session, a run that fills a host cluster
    // and straddles into the next one (inside one existing L2 table, so
    // nothing else is allocated between them), part of it discarded and
    // compressed again. "compressed-zstd" does the same on an image with
    // compression_type=zstd.
    w.image.size_bytes = 256 * kKiB;
    w.image.cluster_bits = 9;
    if (name == "compressed-zstd") w.image.compression_type = engine::CompressionType::kZstd;
    w.ops = {Wc(0, 8 * kKiB),
             F(),
             W(1 * kKiB, 512),
             W(1536 + 128, 256),
             D(2 * kKiB, 512),
             Z(2 * kKiB + 512, 512, false),
             F(),
             Wc(2 * kKiB, 1 * kKiB),
             Rd(0, 8 * kKiB),
             C(),
             Wc(8 * kKiB, 24 * kKiB),
             F(),
             D(12 * kKiB, 8 * kKiB),
             Wc(14 * kKiB, 2 * kKiB),
             F(),
             C(),
             Wc(256 * kKiB - 1 * kKiB, 1 * kKiB),
             Rd(0, 256 * kKiB),
             C()};
  } else if (name == "data-file" || name == "data-file-raw") {
    // An external data file (qcow2 incompatible bit 2): guest data lives in
    // a second file at host offset = guest offset, the image holds only
    // metadata. Allocating writes into an L2 table that exists raise no
    // refcount, so only the data file's flush (R12) orders their data
    // before the L2 entry; the data file's free space holds junk from an
    // earlier life, which a mapping that lands first would expose. The raw
    // variant maps every cluster at create: zero writes and discards write
    // zeroes into the data file.
    w.image.size_bytes = 4 * kMiB;
    SetDataFile(w, name == "data-file-raw");
    w.ops = {W(0, 8 * kKiB),
             W(64 * kKiB + 512, 1 * kKiB),
             F(),
             W(4 * kKiB, 4 * kKiB),
             W(16 * kKiB, 4 * kKiB),
             W(20 * kKiB + 1024, 2 * kKiB),
             F(),
             D(0, 4 * kKiB),
             Z(64 * kKiB, 4 * kKiB, false),
             W(2 * kMiB, 4 * kKiB),
             F(),
             C(),
             W(24 * kKiB, 4 * kKiB),
             W(0, 4 * kKiB),
             Z(16 * kKiB, 4 * kKiB, true),
             Rd(0, 32 * kKiB),
             F(),
             C()};
  } else if (name == "resize") {
    // qemu-img resize's paths in one run: a growth past the L1 table's end
    // (the L1 relocated, R6), a shrink over allocated data to a size inside
    // a cluster (the cluster's rest zeroed, the clusters past it unmapped
    // and freed, all durable before the smaller size), a growth right after
    // it with no flush between (the regrown disk must read zeroes, never the
    // dropped tail), writes and reads in the regrown part, and a second
    // shrink and growth over data written before a flush.
    w.image.size_bytes = 1 * kMiB;
    w.ops = {W(0, 8 * kKiB),
             W(768 * kKiB, 12 * kKiB),
             F(),
             R(6 * kMiB),
             W(5 * kMiB, 8 * kKiB),
             W(3 * kMiB + 2 * kKiB, 4 * kKiB),
             F(),
             R(3 * kMiB + 1536),
             R(6 * kMiB),
             Rd(3 * kMiB, 8 * kKiB),
             W(5 * kMiB + 4 * kKiB, 4 * kKiB),
             F(),
             R(512 * kKiB + 1 * kKiB),
             R(1 * kMiB),
             Rd(512 * kKiB, 512 * kKiB),
             W(768 * kKiB + 512, 1 * kKiB),
             C()};
  } else if (name == "rebase") {
    // qemu-img rebase in safe mode, over a raw backing file: onto a second
    // backing file that differs from the first in every other 8 KiB (the
    // clusters the image does not allocate there get the first file's
    // bytes, durable before the header names the second), a partial write
    // that copies the rest of its cluster from the new file, a flatten
    // (-b "": everything the image does not allocate copied in) and a
    // rebase back onto the first file, which copies nothing. The guest
    // must read the same throughout, after a crash at any point.
    w.image.size_bytes = 128 * kKiB;
    SetBacking(w);
    w.ops = {W(0, 8 * kKiB),
             W(20 * kKiB + 512, 1 * kKiB),
             F(),
             Rebase(2),
             W(40 * kKiB + 1 * kKiB, 2 * kKiB),
             Rd(0, 64 * kKiB),
             F(),
             W(64 * kKiB, 4 * kKiB),
             Rebase(0),
             W(100 * kKiB, 4 * kKiB),
             Rd(64 * kKiB, 64 * kKiB),
             Rebase(1),
             C()};
  } else if (name == "commit") {
    // qemu-img commit into a raw backing file, which the run records (M12):
    // whole and partial clusters (copy-on-write from the backing file), a
    // zero write and a discard over backing data (zero clusters the commit
    // writes as zeroes), a flush, then a commit: until the backing file's
    // copies are durable (R13) no cluster of the image may go. Writes after
    // it allocate again over the emptied image; a commit with -d keeps them,
    // a last commit empties the image again. Extended L2 (16 KiB clusters
    // of 512-byte subclusters): a partial write allocates only its
    // subclusters, so a cluster is partly the image's and partly the
    // backing file's, and the commit must copy only the image's part.
    w.image.size_bytes = 1 * kMiB;
    w.image.cluster_bits = 14;
    w.image.extended_l2 = true;
    SetBacking(w);
    w.ops = {W(0, 16 * kKiB),
             W(16 * kKiB + 512, 1 * kKiB),
             W(36 * kKiB + 100, 3 * kKiB),
             Z(48 * kKiB, 16 * kKiB, false),
             D(64 * kKiB, 16 * kKiB),
             W(512 * kKiB, 16 * kKiB),
             F(),
             Commit(),
             W(4 * kKiB, 4 * kKiB),
             W(80 * kKiB + 1 * kKiB, 2 * kKiB),
             F(),
             Commit(true),
             W(0, 2 * kKiB),
             F(),
             Commit(),
             Rd(0, 96 * kKiB),
             Rd(512 * kKiB, 16 * kKiB),
             C()};
  } else if (name == "v2") {
    w.image.version = 2;
    w.ops = {W(0, 8 * kKiB),
             F(),
             Z(0, 4 * kKiB, false),
             D(4 * kKiB, 4 * kKiB),
             W(2 * kMiB, 4 * kKiB),
             F(),
             C()};
  } else if (name == "amend") {
    // qemu-img amend between guest writes (issue 20). Over a backing file,
    // so that plain zero clusters need a zeroed host cluster when the
    // downgrade expands them: data, a partial write (COW from the backing
    // file), zero writes both ways, a snapshot that shares the first L2
    // table, then refcount_bits 16 -> 64 -> 2 (the snapshot's clusters have
    // refcount 2, which fits) -> 16, compat 0.10 (zero clusters expanded in
    // the active and the snapshot's L2 tables) and back to 1.1, lazy
    // refcounts on and off; writes (some into zero clusters, some partial)
    // and flushes between, so each amend's crash points are checked
    // against flushed data. The v2 phase writes no zeroes (v2 with a
    // backing file has no zero clusters).
    SetBacking(w);
    w.ops = {W(0, 8 * kKiB),
             W(64 * kKiB + 512, 1 * kKiB),
             Z(16 * kKiB, 8 * kKiB, false),
             Z(0, 4 * kKiB, false),
             F(),
             Snap(),
             W(2 * kMiB, 4 * kKiB),
             Z(2 * kMiB + 8 * kKiB, 4 * kKiB, true),
             Z(32 * kKiB, 4 * kKiB, false),
             F(),
             Amend(64, 0),
             W(4 * kKiB, 4 * kKiB),
             W(16 * kKiB + 1024, 2 * kKiB),
             F(),
             Amend(2, 0),
             W(3 * kMiB, 4 * kKiB),
             F(),
             Amend(16, 0),
             Z(5 * kMiB, 4 * kKiB, false),
             W(40 * kKiB, 4 * kKiB),
             F(),
             Amend(0, 2),
             W(6 * kMiB, 4 * kKiB),
             W(20 * kKiB + 512, 512),
             F(),
             Amend(0, 3),
             Z(6 * kMiB, 4 * kKiB, false),
             F(),
             Amend(0, 0, true),
             W(7 * kMiB, 4 * kKiB),
             F(),
             Amend(0, 0, false),
             Rd(0, 96 * kKiB),
             C()};
  } else {
    return Status::InvalidArgument("unknown built-in workload '" + name + "'");
  }
  return w;
}

std::vector<std::string> BuiltinWorkloadNames() {
  return {"default",
          "2010-dangling-l2",
          "free-reuse",
          "stale-reuse",
          "2013-journal-revoke",
          "journal-wrap",
          "2017-zero-realloc",
          "l1-growth",
          "refcount-growth",
          "refcount-table-growth",
          "unaligned",
          "bytes",
          "shrink",
          "backing",
          "reopen",
          "v2",
          "snapshots",
          "bitmaps",
          "subclusters",
          "compressed",
          "compressed-zstd",
          "data-file",
          "data-file-raw",
          "amend",
          "resize",
          "rebase",
          "commit"};
}

}  // namespace qcrash::properties
