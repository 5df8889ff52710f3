// The guest I/O paths: L2 lookup and allocation, reads (backing files, zero
// and compressed clusters), allocating writes with copy-on-write, zero
// writes, discards, and the block-status map.
#include <algorithm>
#include <cstring>

#include "engine/endian.h"
#include "engine/image_impl.h"

namespace qcrash::engine {

namespace f = format;

Result<ClusterType> Image::Impl::Classify(const L2Slot& slot) {
  const uint64_t entry = slot.entry;
  auto bad = [&](const std::string& what) {
    return MarkCorrupt(Status::Corruption("L2 table at " + HexOffset(slot.l2_table_offset) +
                                          " entry " + std::to_string(slot.index) + " (" +
                                          HexOffset(entry) + "): " + what));
  };
  const bool extended = header_.extended_l2();
  if (entry & f::kOflagCompressed) {
    if (entry & f::kOflagCopied) return bad("compressed entry with the COPIED flag");
    if (slot.bitmap != 0) return bad("compressed entry with a subcluster bitmap");
    if (io_.has_data_device()) return bad("compressed entry in an image with a data file");
    return ClusterType::kCompressed;
  }
  if (entry & f::kL2EntryReservedMask) return bad("reserved bits set");
  const uint64_t host = entry & f::kL2EntryOffsetMask;
  if (host & (cluster_bytes() - 1)) return bad("host offset not cluster-aligned");
  if (extended) {
    // Bit 0 means nothing with extended L2 (QEMU ignores it too).
    if ((slot.bitmap >> 32) & slot.bitmap) return bad("a subcluster both allocated and zero");
    // With a data file, COPIED and offset 0 map the data file's first cluster.
    const bool mapped = host != 0 || ((entry & f::kOflagCopied) && io_.has_data_device());
    if (!mapped) {
      if (entry & f::kOflagCopied) return bad("COPIED flag without a host offset");
      if (slot.bitmap & f::kL2BitmapAllocMask) return bad("allocated subclusters without a host");
      return ClusterType::kUnallocated;
    }
    return ClusterType::kNormal;
  }
  if (entry & f::kOflagZero) {
    if (header_.version < 3) return bad("zero flag on a v2 image");
    return host != 0 ? ClusterType::kZeroAlloc : ClusterType::kZeroPlain;
  }
  if (host == 0) {
    // With a data file, offset 0 is the data file's first cluster: COPIED
    // (refcount 1, which every data-file cluster has) tells it from none.
    if ((entry & f::kOflagCopied) && io_.has_data_device()) return ClusterType::kNormal;
    if (entry & f::kOflagCopied) return bad("COPIED flag without a host offset");
    return ClusterType::kUnallocated;
  }
  return ClusterType::kNormal;
}

Result<L2Slot> Image::Impl::LookupL2(uint64_t guest_cluster) {
  const uint64_t per_l2 = header_.l2_entries();
  const uint64_t l1_index = guest_cluster / per_l2;
  L2Slot slot;
  slot.index = static_cast<uint32_t>(guest_cluster % per_l2);
  if (l1_index >= l1_table_.size()) return slot;
  const uint64_t l1_entry = l1_table_[l1_index];
  if (l1_entry & f::kL1EntryReservedMask) {
    return MarkCorrupt(Status::Corruption("L1 entry " + std::to_string(l1_index) + " (" +
                                          HexOffset(l1_entry) + "): reserved bits set"));
  }
  slot.l2_table_offset = l1_entry & f::kL1EntryOffsetMask;
  if (slot.l2_table_offset == 0) return slot;
  const uint64_t end_bytes =
      std::max((device_.SizeBytes() + cluster_bytes() - 1) / cluster_bytes(), allocated_end()) *
      cluster_bytes();
  if ((slot.l2_table_offset & (cluster_bytes() - 1)) || slot.l2_table_offset >= end_bytes) {
    return MarkCorrupt(Status::Corruption("L1 entry " + std::to_string(l1_index) +
                                          ": L2 table offset " + HexOffset(slot.l2_table_offset) +
                                          " is unaligned or past the end of the file"));
  }
  QCRASH_ASSIGN_OR_RETURN(uint8_t * table, l2_cache_->Get(slot.l2_table_offset));
  const uint64_t at = uint64_t{slot.index} * header_.l2_entry_bytes();
  slot.entry = LoadBe64(table + at);
  if (header_.extended_l2()) slot.bitmap = LoadBe64(table + at + 8);
  return slot;
}

Result<L2Slot> Image::Impl::LookupL2ForWrite(uint64_t guest_cluster) {
  QCRASH_ASSIGN_OR_RETURN(L2Slot slot, LookupL2(guest_cluster));
  const uint64_t l1_index = guest_cluster / header_.l2_entries();
  if (l1_index >= l1_table_.size()) {
    return Status::InvalidArgument("guest cluster beyond the L1 table");
  }
  if (slot.l2_table_offset != 0 && (l1_table_[l1_index] & f::kOflagCopied)) return slot;
  QCRASH_ASSIGN_OR_RETURN(slot.l2_table_offset, AllocateL2Table(l1_index));
  QCRASH_ASSIGN_OR_RETURN(uint8_t * table, l2_cache_->Get(slot.l2_table_offset));
  const uint64_t at = uint64_t{slot.index} * header_.l2_entry_bytes();
  slot.entry = LoadBe64(table + at);
  if (header_.extended_l2()) slot.bitmap = LoadBe64(table + at + 8);
  return slot;
}

// L2 allocation steps:
//  1. allocate a cluster (refcount raised);
//  2. fill the new table: zeroes, or a copy of a shared old table (its COW);
//  3. flush the L2 cache (and, through its dependency, the refcounts):
//     the table must be on disk before the L1 entry points at it (R2);
//  4. write the L1 entry with COPIED set;
//  5. the L1 entry durable (R4), then drop our reference to a shared old table.
Result<uint64_t> Image::Impl::AllocateL2Table(uint64_t l1_index) {
  const uint64_t old_offset = l1_table_[l1_index] & f::kL1EntryOffsetMask;
  std::vector<uint8_t> old_table;
  if (old_offset != 0) {
    QCRASH_ASSIGN_OR_RETURN(uint8_t * old_bytes, l2_cache_->Get(old_offset));
    old_table.assign(old_bytes, old_bytes + cluster_bytes());
  }
  QCRASH_ASSIGN_OR_RETURN(const uint64_t new_offset, AllocateCluster());    // step 1
  QCRASH_ASSIGN_OR_RETURN(uint8_t * table, l2_cache_->GetNew(new_offset));  // step 2
  if (!old_table.empty()) std::memcpy(table, old_table.data(), cluster_bytes());
  QCRASH_RETURN_IF_ERROR(l2_cache_->MarkDirty(new_offset));
  // Step 3. Why: an L1 entry naming an unwritten L2 table exposes garbage
  // as mappings after a crash.
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kContentsBeforePointer, l2_cache_.get()));
  l1_table_[l1_index] = new_offset | f::kOflagCopied;  // step 4
  QCRASH_RETURN_IF_ERROR(WriteL1Entry(l1_index));
  if (old_offset != 0) {
    // Step 5. Why (R4): the L1 entry is written directly, outside the cache
    // dependencies that order a refcount decrease after its unlink; a crash
    // must not find the shared table still named here with its count
    // already lowered.
    if (MechanismOf(Rule::kUnlinkBeforeFree) == Mechanism::kDependency) {
      QCRASH_RETURN_IF_ERROR(io_.DeviceFlush(Rule::kUnlinkBeforeFree));
    } else {
      QCRASH_RETURN_IF_ERROR(Barrier(Rule::kUnlinkBeforeFree));
    }
    QCRASH_RETURN_IF_ERROR(FreeClusters(old_offset, 1));
  }
  return new_offset;
}

Status Image::Impl::SetL2Entry(const L2Slot& slot, uint64_t entry, uint64_t bitmap) {
  QCRASH_RETURN_IF_ERROR(BeforeMetadataChange());
  QCRASH_ASSIGN_OR_RETURN(uint8_t * table, l2_cache_->Get(slot.l2_table_offset));
  const uint64_t at = uint64_t{slot.index} * header_.l2_entry_bytes();
  StoreBe64(table + at, entry);
  if (header_.extended_l2()) StoreBe64(table + at + 8, bitmap);
  return l2_cache_->MarkDirty(slot.l2_table_offset);
}

Status Image::Impl::ReadFromBacking(uint64_t guest_offset, std::span<uint8_t> out) {
  std::fill(out.begin(), out.end(), 0);
  if (header_.backing_file.empty()) return Status::Ok();
  if (!backing_device_) {
    return Status::InvalidArgument("backing file '" + header_.backing_file + "' is not open");
  }
  if (guest_offset >= backing_size_bytes_) return Status::Ok();
  const uint64_t n = std::min<uint64_t>(out.size(), backing_size_bytes_ - guest_offset);
  if (backing_image_) return backing_image_->Read(guest_offset, out.first(n));
  return backing_device_->Read(guest_offset, out.first(n));
}

// A cluster allocated past the end of the file (metadata preallocation on a
// file that was shrunk) reads as zeroes, as a short pread does.
Status Image::Impl::ReadHost(uint64_t host, std::span<uint8_t> out) {
  const uint64_t file_size = io_.data_device().SizeBytes();
  std::fill(out.begin(), out.end(), 0);
  if (host >= file_size) return Status::Ok();
  const uint64_t n = std::min<uint64_t>(out.size(), file_size - host);
  return io_.ReadData(host, out.first(n));
}

Status Image::Impl::ReadCluster(uint64_t guest_cluster, uint64_t in_cluster,
                                std::span<uint8_t> out) {
  QCRASH_ASSIGN_OR_RETURN(const L2Slot slot, LookupL2(guest_cluster));
  QCRASH_ASSIGN_OR_RETURN(const ClusterType type, Classify(slot));
  if (header_.extended_l2() && type != ClusterType::kCompressed) {
    // Per subcluster: allocated (host data), zero, or neither (from below).
    const uint64_t scb = header_.subcluster_bytes();
    const uint64_t host = slot.entry & f::kL2EntryOffsetMask;
    if (type == ClusterType::kNormal) {
      QCRASH_RETURN_IF_ERROR(CheckDataFileMapping(guest_cluster, slot.entry));
    }
    for (uint64_t done = 0; done < out.size();) {
      const uint64_t at = in_cluster + done;
      const uint64_t sc = at / scb;
      const uint64_t n = std::min<uint64_t>(out.size() - done, (sc + 1) * scb - at);
      const std::span<uint8_t> part = out.subspan(done, n);
      if (slot.bitmap & (uint64_t{1} << sc)) {
        QCRASH_RETURN_IF_ERROR(ReadHost(host + at, part));
      } else if (slot.bitmap & (uint64_t{1} << (32 + sc))) {
        std::fill(part.begin(), part.end(), 0);
      } else {
        QCRASH_RETURN_IF_ERROR(ReadFromBacking(guest_cluster * cluster_bytes() + at, part));
      }
      done += n;
    }
    return Status::Ok();
  }
  switch (type) {
    case ClusterType::kUnallocated:
      return ReadFromBacking(guest_cluster * cluster_bytes() + in_cluster, out);
    case ClusterType::kZeroPlain:
    case ClusterType::kZeroAlloc:
      std::fill(out.begin(), out.end(), 0);
      return Status::Ok();
    case ClusterType::kCompressed:
      return ReadCompressed(slot.entry, in_cluster, out);
    case ClusterType::kNormal:
      QCRASH_RETURN_IF_ERROR(CheckDataFileMapping(guest_cluster, slot.entry));
      return ReadHost((slot.entry & f::kL2EntryOffsetMask) + in_cluster, out);
  }
  return Status::Ok();
}

Status Image::Impl::FreeEntryClusters(uint64_t entry, ClusterType type) {
  if (io_.has_data_device()) return Status::Ok();  // data-file clusters have no refcount
  if (type == ClusterType::kNormal || type == ClusterType::kZeroAlloc) {
    return FreeClusters(entry & f::kL2EntryOffsetMask, 1);
  }
  if (type == ClusterType::kCompressed) return FreeCompressedEntry(entry);
  return Status::Ok();
}

// Write steps for one guest cluster:
//  1. a normal cluster we own alone (COPIED): write in place, done;
//  2. an allocated zero cluster we own: reuse its host cluster (the 2017
//     reservation thread), writing zeroes around the data;
//  3. otherwise allocate a new host cluster and write the whole cluster:
//     the data merged with the old contents (copy-on-write);
//  4. data before pointer: strict ordering makes the L2 cache wait for a
//     flush after any allocating write; qemu ordering only after a COW;
//  5. point the L2 entry at the cluster, then free what it replaced (R4).
// With extended L2, WriteSubclusters does it per subcluster.
Status Image::Impl::WriteCluster(uint64_t guest_cluster, uint64_t in_cluster,
                                 std::span<const uint8_t> data) {
  QCRASH_ASSIGN_OR_RETURN(const L2Slot slot, LookupL2ForWrite(guest_cluster));
  QCRASH_ASSIGN_OR_RETURN(const ClusterType type, Classify(slot));
  if (header_.extended_l2() && type != ClusterType::kCompressed) {
    return WriteSubclusters(slot, type, guest_cluster, in_cluster, data);
  }
  const uint64_t old_host = slot.entry & f::kL2EntryOffsetMask;
  const bool owned = (slot.entry & f::kOflagCopied) != 0;
  if (old_host != 0) QCRASH_RETURN_IF_ERROR(CheckDataFileMapping(guest_cluster, slot.entry));
  if (type == ClusterType::kNormal && owned) {  // step 1
    return io_.WriteData(old_host + in_cluster, data);
  }
  const bool full = in_cluster == 0 && data.size() == cluster_bytes();
  const bool reuse = type == ClusterType::kZeroAlloc && owned && rules_.reuse_zero_allocation;
  std::vector<uint8_t> cluster;
  if (!full) {  // build the copy-on-write image of the cluster
    cluster.resize(cluster_bytes());
    if (!reuse) {
      QCRASH_RETURN_IF_ERROR(ReadCluster(guest_cluster, 0, cluster));
    }
    std::memcpy(cluster.data() + in_cluster, data.data(), data.size());
  }
  uint64_t host = old_host;
  if (!reuse) {  // step 3
    QCRASH_ASSIGN_OR_RETURN(host, AllocateDataCluster(guest_cluster));
  }
  QCRASH_RETURN_IF_ERROR(io_.WriteData(host, full ? data : std::span<const uint8_t>(cluster)));
  if (options_.data_ordering == DataOrdering::kStrict || !full || reuse) {
    l2_cache_->DependOnFlush();  // step 4
  }
  // A compressed cluster rewritten under extended L2: all 32 subclusters.
  const uint64_t bitmap = header_.extended_l2() ? f::kL2BitmapAllocMask : 0;
  QCRASH_RETURN_IF_ERROR(SetL2Entry(slot, host | f::kOflagCopied, bitmap));  // step 5
  if (!reuse) QCRASH_RETURN_IF_ERROR(FreeEntryClusters(slot.entry, type));
  return Status::Ok();
}

// Extended L2 write steps for one guest cluster: no copy-on-write of the
// subclusters the write does not touch (the point of the 2017 thread).
//  1. the write covers subclusters [first, last]; one only partly covered
//     and not allocated yet gets its old contents (zeroes, or the backing
//     file's) around the data;
//  2. all of them allocated in a host cluster we own alone: write in place;
//  3. a host cluster we own: write the covered subclusters into it; none:
//     allocate one and write only those; one a snapshot shares: allocate
//     one and copy the whole cluster (its old allocated subclusters);
//  4. data before the allocation bits (R3): strict ordering makes the L2
//     cache wait for a flush; qemu ordering only when old contents were
//     copied (switch subcluster-bit-before-data: never, in step 3's first case);
//  5. the covered subclusters allocated (their zero bits cleared); a
//     replaced shared cluster loses our reference after (R4).
Status Image::Impl::WriteSubclusters(const L2Slot& slot, ClusterType type, uint64_t guest_cluster,
                                     uint64_t in_cluster, std::span<const uint8_t> data) {
  const uint64_t scb = header_.subcluster_bytes();
  const uint64_t first = in_cluster / scb;
  const uint64_t last = (in_cluster + data.size() - 1) / scb;
  const uint64_t covered = ((uint64_t{1} << (last + 1)) - 1) & ~((uint64_t{1} << first) - 1);
  const uint64_t old_host = slot.entry & f::kL2EntryOffsetMask;
  const bool owned = type == ClusterType::kNormal && (slot.entry & f::kOflagCopied) != 0;
  const uint64_t newly_allocated = covered & ~slot.bitmap;
  if (owned && newly_allocated == 0) {  // step 2
    return io_.WriteData(old_host + in_cluster, data);
  }
  const uint64_t bitmap = (slot.bitmap | covered) & ~(covered << 32);  // step 5's bits
  if (owned || type == ClusterType::kUnallocated) {
    const uint64_t start = first * scb;
    const uint64_t end = (last + 1) * scb;
    const uint64_t data_end = in_cluster + data.size();
    std::vector<uint8_t> region(end - start);
    const bool copied = in_cluster > start || data_end < end;
    if (in_cluster > start) {  // step 1
      QCRASH_RETURN_IF_ERROR(
          ReadCluster(guest_cluster, start, std::span(region).first(in_cluster - start)));
    }
    if (data_end < end) {
      QCRASH_RETURN_IF_ERROR(
          ReadCluster(guest_cluster, data_end, std::span(region).subspan(data_end - start)));
    }
    std::memcpy(region.data() + (in_cluster - start), data.data(), data.size());
    uint64_t host = old_host;
    if (owned) {
      QCRASH_RETURN_IF_ERROR(CheckDataFileMapping(guest_cluster, slot.entry));
    } else {
      QCRASH_ASSIGN_OR_RETURN(host, AllocateDataCluster(guest_cluster));  // step 3
    }
    QCRASH_RETURN_IF_ERROR(io_.WriteData(host + start, region));
    const bool ordered = !owned || rules_.order_subcluster_data;
    if (ordered && (options_.data_ordering == DataOrdering::kStrict || copied)) {
      l2_cache_->DependOnFlush();  // step 4
    }
    return SetL2Entry(slot, host | f::kOflagCopied, bitmap);
  }
  // Step 3, shared: copy the whole cluster (its unallocated subclusters
  // stay unallocated: their bytes in the copy are never read).
  std::vector<uint8_t> cluster(cluster_bytes());
  QCRASH_RETURN_IF_ERROR(ReadCluster(guest_cluster, 0, cluster));
  std::memcpy(cluster.data() + in_cluster, data.data(), data.size());
  QCRASH_ASSIGN_OR_RETURN(const uint64_t host, AllocateDataCluster(guest_cluster));
  QCRASH_RETURN_IF_ERROR(io_.WriteData(host, cluster));
  l2_cache_->DependOnFlush();  // step 4
  QCRASH_RETURN_IF_ERROR(SetL2Entry(slot, host | f::kOflagCopied, bitmap));
  return FreeEntryClusters(slot.entry, type);
}

// Zero writes and discards of one whole guest cluster (v3). The new entry:
//  - keep allocation: an owned host cluster stays, with the zero flag
//    (extended L2: every subcluster zero);
//  - unmap / discard: the host cluster is freed; the entry reads as zero
//    (a discard without a backing file may simply unallocate).
Status Image::Impl::ZeroCluster(uint64_t guest_cluster, ZeroMode mode) {
  if (header_.data_file_raw()) return ZeroRawDataCluster(guest_cluster);
  QCRASH_ASSIGN_OR_RETURN(L2Slot slot, LookupL2(guest_cluster));
  QCRASH_ASSIGN_OR_RETURN(const ClusterType type, Classify(slot));
  const bool has_backing = !header_.backing_file.empty();
  if (slot.l2_table_offset == 0 && !has_backing) return Status::Ok();  // reads as zero already
  const bool extended = header_.extended_l2();
  const bool allocated = type == ClusterType::kNormal || type == ClusterType::kZeroAlloc ||
                         type == ClusterType::kCompressed;
  const bool owned = (slot.entry & f::kOflagCopied) != 0;
  uint64_t new_entry = extended ? 0 : f::kOflagZero;
  const uint64_t new_bitmap = extended ? f::kL2BitmapZeroMask : 0;
  bool free_old = allocated;
  if (mode == ZeroMode::kKeepAllocation && owned &&
      (type == ClusterType::kNormal || type == ClusterType::kZeroAlloc)) {
    new_entry =
        (slot.entry & (f::kL2EntryOffsetMask | f::kOflagCopied)) | (extended ? 0 : f::kOflagZero);
    free_old = false;
  }
  if (header_.version < 3) {
    // v2 has no zero flag: unallocating would expose the backing file's
    // old data, so (as QEMU) a v2 image with a backing file keeps it.
    if (has_backing) return Status::Ok();
    new_entry = 0;
  }
  if (mode == ZeroMode::kDiscard && !has_backing && !allocated) return Status::Ok();
  if (new_entry == slot.entry && new_bitmap == slot.bitmap) return Status::Ok();
  QCRASH_ASSIGN_OR_RETURN(slot, LookupL2ForWrite(guest_cluster));
  QCRASH_RETURN_IF_ERROR(SetL2Entry(slot, new_entry, new_bitmap));
  if (free_old) QCRASH_RETURN_IF_ERROR(FreeEntryClusters(slot.entry, type));
  return Status::Ok();
}

// Extended L2: subclusters [first, first + count) of one cluster read as
// zeroes from now on: their zero bits set, their allocation bits cleared.
// The host cluster stays (other subclusters may use it; its bytes there are
// never read until a write allocates the subcluster again, R3).
Result<bool> Image::Impl::ZeroSubclusters(uint64_t guest_cluster, uint32_t first, uint32_t count,
                                          ZeroMode mode) {
  QCRASH_ASSIGN_OR_RETURN(L2Slot slot, LookupL2(guest_cluster));
  QCRASH_ASSIGN_OR_RETURN(const ClusterType type, Classify(slot));
  const bool owned = (slot.entry & f::kOflagCopied) != 0;
  if (type == ClusterType::kCompressed || (type == ClusterType::kNormal && !owned)) return false;
  // A raw data file must read as the disk: explicit zeroes there.
  if (header_.data_file_raw()) return false;
  const bool has_backing = !header_.backing_file.empty();
  if (slot.l2_table_offset == 0 && !has_backing) return true;  // reads as zero already
  const uint64_t mask = ((uint64_t{1} << (first + count)) - 1) & ~((uint64_t{1} << first) - 1);
  if (mode == ZeroMode::kDiscard && !has_backing && (slot.bitmap & mask) == 0) return true;
  const uint64_t bitmap = (slot.bitmap & ~mask) | (mask << 32);
  if (bitmap == slot.bitmap) return true;
  QCRASH_ASSIGN_OR_RETURN(slot, LookupL2ForWrite(guest_cluster));
  QCRASH_RETURN_IF_ERROR(SetL2Entry(slot, slot.entry, bitmap));
  return true;
}

// ---- block status for `map` -------------------------------------------------

namespace {

void Push(std::vector<MapExtent>& out, MapExtent e) {
  if (!out.empty()) {
    MapExtent& last = out.back();
    const bool same = last.depth == e.depth && last.present == e.present && last.zero == e.zero &&
                      last.data == e.data && last.compressed == e.compressed &&
                      last.has_offset == e.has_offset &&
                      (!e.has_offset || last.offset + last.length == e.offset);
    if (same && last.start + last.length == e.start) {
      last.length += e.length;
      return;
    }
  }
  out.push_back(e);
}

}  // namespace

Status Image::Impl::AppendMap(uint64_t start, uint64_t length, uint32_t depth,
                              std::vector<MapExtent>& out) {
  const uint64_t cb = cluster_bytes();
  const uint64_t cover = f::L1EntryCoverBytes(header_.cluster_bits, header_.extended_l2());
  for (uint64_t at = start; at < start + length;) {
    const uint64_t gc = at / cb;
    const uint64_t l1_index = at / cover;
    if (!backing_device_ &&
        (l1_index >= l1_table_.size() || (l1_table_[l1_index] & f::kL1EntryOffsetMask) == 0)) {
      // No L2 table and no backing file: the whole range it would map is
      // unallocated (one step, so a huge empty disk maps in O(L1 entries)).
      const uint64_t n = std::min(start + length - at, (l1_index + 1) * cover - at);
      Push(out, {at, n, depth, false, true, false, false, false, 0});
      at += n;
      continue;
    }
    const uint64_t n = std::min(start + length - at, cb - at % cb);
    QCRASH_ASSIGN_OR_RETURN(const L2Slot slot, LookupL2(gc));
    QCRASH_ASSIGN_OR_RETURN(const ClusterType type, Classify(slot));
    MapExtent e{at, n, depth, true, false, false, false, false, 0};
    const uint64_t host = (slot.entry & f::kL2EntryOffsetMask) + at % cb;
    // What lies below an unallocated range: the backing file, or nothing.
    auto below = [&](uint64_t from, uint64_t count) -> Status {
      if (backing_image_ && from < backing_size_bytes_) {
        const uint64_t m = std::min(count, backing_size_bytes_ - from);
        std::vector<MapExtent> sub;
        QCRASH_RETURN_IF_ERROR(backing_image_->impl_->AppendMap(from, m, depth + 1, sub));
        for (const MapExtent& s : sub) Push(out, s);
        if (m < count) Push(out, {from + m, count - m, depth, false, true, false, false, false, 0});
      } else if (backing_device_ && from < backing_size_bytes_) {
        const uint64_t m = std::min(count, backing_size_bytes_ - from);
        Push(out, {from, m, depth + 1, true, false, true, false, true, from});
        if (m < count) Push(out, {from + m, count - m, depth, false, true, false, false, false, 0});
      } else {
        Push(out, {from, count, depth, false, true, false, false, false, 0});
      }
      return Status::Ok();
    };
    if (header_.extended_l2() && type != ClusterType::kCompressed) {
      // Per subcluster, as QEMU's block status reports them.
      const uint64_t scb = header_.subcluster_bytes();
      const uint64_t cluster_host = slot.entry & f::kL2EntryOffsetMask;
      const bool mapped = type == ClusterType::kNormal;  // offset 0 too, in a data file
      for (uint64_t pos = at; pos < at + n;) {
        const uint64_t sc = (pos % cb) / scb;
        const uint64_t m = std::min(at + n - pos, scb - pos % scb);
        if (slot.bitmap & (uint64_t{1} << sc)) {
          Push(out, {pos, m, depth, true, false, true, false, true, cluster_host + pos % cb});
        } else if (slot.bitmap & (uint64_t{1} << (32 + sc))) {
          Push(out, {pos, m, depth, true, true, false, false, mapped,
                     mapped ? cluster_host + pos % cb : 0});
        } else if (mapped && !(backing_device_ && pos < backing_size_bytes_)) {
          // Nothing below: QEMU still reports where the subcluster would lie.
          Push(out, {pos, m, depth, false, true, false, false, true, cluster_host + pos % cb});
        } else {
          QCRASH_RETURN_IF_ERROR(below(pos, m));
        }
        pos += m;
      }
      at += n;
      continue;
    }
    switch (type) {
      case ClusterType::kUnallocated:
        QCRASH_RETURN_IF_ERROR(below(at, n));
        break;
      case ClusterType::kZeroPlain:
        e.zero = true;
        Push(out, e);
        break;
      case ClusterType::kZeroAlloc:
        e.zero = true;
        e.has_offset = true;
        e.offset = host;
        Push(out, e);
        break;
      case ClusterType::kCompressed:
        e.data = true;
        e.compressed = true;
        Push(out, e);
        break;
      case ClusterType::kNormal:
        e.data = true;
        e.has_offset = true;
        e.offset = host;
        Push(out, e);
        break;
    }
    at += n;
  }
  return Status::Ok();
}

// ---- Image: guest I/O ------------------------------------------------------------

namespace {

Status CheckRange(uint64_t offset, uint64_t length, uint64_t size) {
  if (offset > size || length > size - offset) {
    return Status::InvalidArgument(
        "request at " + HexOffset(offset) + " for " + std::to_string(length) +
        " bytes goes past the end of the disk (" + std::to_string(size) + " bytes)");
  }
  return Status::Ok();
}

}  // namespace

Status Image::Read(uint64_t guest_offset, std::span<uint8_t> out) {
  QCRASH_RETURN_IF_ERROR(CheckRange(guest_offset, out.size(), size_bytes()));
  const uint64_t cb = impl_->cluster_bytes();
  for (uint64_t done = 0; done < out.size();) {
    const uint64_t at = guest_offset + done;
    const uint64_t n = std::min<uint64_t>(out.size() - done, cb - at % cb);
    QCRASH_RETURN_IF_ERROR(impl_->ReadCluster(at / cb, at % cb, out.subspan(done, n)));
    done += n;
  }
  return Status::Ok();
}

Status Image::Write(uint64_t guest_offset, std::span<const uint8_t> data) {
  if (impl_->read_only_) return impl_->WriteRefused();
  QCRASH_RETURN_IF_ERROR(CheckRange(guest_offset, data.size(), size_bytes()));
  QCRASH_RETURN_IF_ERROR(impl_->BeforeGuestChange(guest_offset, data.size()));
  ++impl_->stats_.guest_writes;
  const uint64_t cb = impl_->cluster_bytes();
  for (uint64_t done = 0; done < data.size();) {
    const uint64_t at = guest_offset + done;
    const uint64_t n = std::min<uint64_t>(data.size() - done, cb - at % cb);
    QCRASH_RETURN_IF_ERROR(impl_->WriteCluster(at / cb, at % cb, data.subspan(done, n)));
    done += n;
    if (done < data.size()) QCRASH_RETURN_IF_ERROR(impl_->AtClusterBoundary());
  }
  return impl_->AfterGuestOp();
}

namespace {

// The whole subclusters of [in_cluster, in_cluster + n) in one cluster (the
// disk's last subcluster counts as whole when the range reaches the end).
struct SubclusterSpan {
  uint64_t first = 0;  // first whole subcluster
  uint64_t count = 0;  // how many
};
SubclusterSpan WholeSubclusters(uint64_t in_cluster, uint64_t n, uint64_t scb, bool to_disk_end) {
  const uint64_t first = (in_cluster + scb - 1) / scb;
  const uint64_t end = to_disk_end ? (in_cluster + n + scb - 1) / scb : (in_cluster + n) / scb;
  return end > first ? SubclusterSpan{first, end - first} : SubclusterSpan{first, 0};
}

}  // namespace

Status Image::WriteZeroes(uint64_t guest_offset, uint64_t length_bytes, bool may_unmap) {
  if (impl_->read_only_) return impl_->WriteRefused();
  QCRASH_RETURN_IF_ERROR(CheckRange(guest_offset, length_bytes, size_bytes()));
  QCRASH_RETURN_IF_ERROR(impl_->BeforeGuestChange(guest_offset, length_bytes));
  ++impl_->stats_.guest_writes;
  const uint64_t cb = impl_->cluster_bytes();
  const uint64_t scb = impl_->header_.subcluster_bytes();
  const bool v3 = impl_->header_.version >= 3;
  const Impl::ZeroMode mode = may_unmap ? Impl::ZeroMode::kUnmap : Impl::ZeroMode::kKeepAllocation;
  auto explicit_zeroes = [&](uint64_t at, uint64_t n) -> Status {
    if (n == 0) return Status::Ok();
    const std::vector<uint8_t> zeroes(n, 0);
    return impl_->WriteCluster(at / cb, at % cb, zeroes);
  };
  for (uint64_t at = guest_offset; at < guest_offset + length_bytes;) {
    const uint64_t n = std::min(guest_offset + length_bytes - at, cb - at % cb);
    // A whole cluster (or the tail cluster of the disk) becomes a zero
    // cluster; with extended L2 whole subclusters become zero subclusters;
    // the rest gets explicit zeroes, as QEMU falls back to.
    const bool to_end = at + n == size_bytes();
    const bool whole = at % cb == 0 && (n == cb || to_end);
    if (whole && v3) {
      QCRASH_RETURN_IF_ERROR(impl_->ZeroCluster(at / cb, mode));
    } else if (impl_->header_.extended_l2()) {
      const SubclusterSpan span = WholeSubclusters(at % cb, n, scb, to_end);
      const uint64_t zero_from = at - at % cb + span.first * scb;
      const uint64_t zero_to = std::min(at + n, zero_from + span.count * scb);
      bool done = span.count == 0;
      if (!done) {
        QCRASH_ASSIGN_OR_RETURN(done,
                                impl_->ZeroSubclusters(at / cb, static_cast<uint32_t>(span.first),
                                                       static_cast<uint32_t>(span.count), mode));
      }
      if (done && span.count != 0) {
        QCRASH_RETURN_IF_ERROR(explicit_zeroes(at, zero_from - at));
        QCRASH_RETURN_IF_ERROR(explicit_zeroes(zero_to, at + n - zero_to));
      } else {
        QCRASH_RETURN_IF_ERROR(explicit_zeroes(at, n));
      }
    } else {
      QCRASH_RETURN_IF_ERROR(explicit_zeroes(at, n));
    }
    at += n;
    if (at < guest_offset + length_bytes) QCRASH_RETURN_IF_ERROR(impl_->AtClusterBoundary());
  }
  return impl_->AfterGuestOp();
}

Status Image::Discard(uint64_t guest_offset, uint64_t length_bytes) {
  if (impl_->read_only_) return impl_->WriteRefused();
  QCRASH_RETURN_IF_ERROR(CheckRange(guest_offset, length_bytes, size_bytes()));
  QCRASH_RETURN_IF_ERROR(impl_->BeforeGuestChange(guest_offset, length_bytes));
  ++impl_->stats_.guest_writes;
  const uint64_t cb = impl_->cluster_bytes();
  // Only whole clusters are discarded (the tail cluster counts as whole);
  // with extended L2, whole subclusters.
  const uint64_t unit = impl_->header_.subcluster_bytes();
  const uint64_t end_bytes = guest_offset + length_bytes;
  const uint64_t from = (guest_offset + unit - 1) / unit * unit;
  const uint64_t to =
      end_bytes == size_bytes() ? (end_bytes + unit - 1) / unit * unit : end_bytes / unit * unit;
  for (uint64_t at = from; at < to;) {
    const uint64_t n = std::min(to - at, cb - at % cb);
    if (n == cb) {
      QCRASH_RETURN_IF_ERROR(impl_->ZeroCluster(at / cb, Impl::ZeroMode::kDiscard));
    } else {
      // Compressed or shared: left as it is (a discard is a hint).
      QCRASH_RETURN_IF_ERROR(impl_
                                 ->ZeroSubclusters(at / cb, static_cast<uint32_t>(at % cb / unit),
                                                   static_cast<uint32_t>(n / unit),
                                                   Impl::ZeroMode::kDiscard)
                                 .status());
    }
    at += n;
    if (at < to) QCRASH_RETURN_IF_ERROR(impl_->AtClusterBoundary());
  }
  return impl_->AfterGuestOp();
}

Result<std::vector<MapExtent>> Image::Map() {
  std::vector<MapExtent> out;
  QCRASH_RETURN_IF_ERROR(impl_->AppendMap(0, size_bytes(), 0, out));
  return out;
}

}  // namespace qcrash::engine
