// Internal snapshots written by the engine: create, delete and apply
// (QCOW2-NOTES "Snapshots"). All three are built from the rules the rest of
// the engine uses (engine/ordering.h); every step that a crash may cut
// leaves leaks at worst.
//
// Create:
//  1. write everything back (the snapshot shares the L2 tables as they are
//     on disk) and flush;
//  2. raise the refcount of every cluster the active L1 reaches (each L2
//     table and each data cluster) and clear COPIED in the active L1 and
//     L2 entries: they are shared now, so the next guest write copies;
//  3. the L1 copy in new clusters (COPIED clear);
//  4. R1 + R2: refcounts, COPIED clears and the L1 copy durable before any
//     table names the copy (a crash so far: leaks);
//  5. R6: the new snapshot table (old entries plus the new one) in new
//     clusters, durable; the header names it, durable; the old table freed.
// Delete:
//  1. R6 + R4: the table without the entry, durable; the header switch,
//     durable (the snapshot's clusters are unlinked);
//  2. lower the refcount of every cluster the snapshot's L1 reaches, free
//     the L1 copy; where an active L1 or L2 entry's cluster is back to
//     refcount 1, set COPIED again.
// Apply (qemu-img snapshot -a; the snapshot stays):
//  1. write everything back and flush (the old active tree as on disk);
//  2. raise the refcount of every cluster the snapshot's L1 reaches and
//     clear COPIED in its L2 tables: the active state shares them now;
//  3. the new active L1, a copy of the snapshot's (COPIED clear), in new
//     clusters;
//  4. R1 + R2 + R6: refcounts, COPIED clears and the new L1 durable before
//     the header names it (a crash so far: leaks);
//  5. R6: the header switch (l1_table_offset, l1_size and the snapshot's
//     disk size, one sector: atomic), durable;
//  6. R4: the old active tree unlinked by that switch, its references
//     dropped (lower refcounts, free the old L1); COPIED set again where a
//     count is back to 1.
#include <ctime>

#include "engine/endian.h"
#include "engine/image_impl.h"
#include "engine/snapshot_table.h"

namespace qcrash::engine {
namespace f = format;

namespace {

uint64_t Align8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

Status NotFound(const std::string& name_or_id) {
  return Status::InvalidArgument("snapshot '" + name_or_id + "' not found");
}

}  // namespace

std::vector<uint8_t> EncodeSnapshotTable(const std::vector<SnapshotEntry>& entries) {
  std::vector<uint8_t> out;
  for (const SnapshotEntry& s : entries) {
    const uint32_t extra = s.icount ? 24 : s.disk_size ? 16 : 8;
    const uint64_t used = 40 + extra + s.id.size() + s.name.size();
    const size_t at = out.size();
    out.resize(at + Align8(used), 0);
    uint8_t* e = out.data() + at;
    StoreBe64(e, s.l1_table_offset);
    StoreBe32(e + 8, s.l1_size);
    StoreBe16(e + 12, static_cast<uint16_t>(s.id.size()));
    StoreBe16(e + 14, static_cast<uint16_t>(s.name.size()));
    StoreBe32(e + 16, s.date_sec);
    StoreBe32(e + 20, s.date_nsec);
    StoreBe64(e + 24, s.vm_clock_nsec);
    StoreBe32(e + 32, static_cast<uint32_t>(std::min<uint64_t>(s.vm_state_size, UINT32_MAX)));
    StoreBe32(e + 36, extra);
    StoreBe64(e + 40, s.vm_state_size);
    if (extra >= 16) StoreBe64(e + 48, s.disk_size.value_or(0));
    if (extra >= 24) StoreBe64(e + 56, *s.icount);
    std::copy(s.id.begin(), s.id.end(), e + 40 + extra);
    std::copy(s.name.begin(), s.name.end(), e + 40 + extra + s.id.size());
  }
  return out;
}

// Adds `delta` to the refcount of every cluster an L2 entry names.
Status Image::Impl::ShareEntryClusters(uint64_t entry, int64_t delta) {
  if (entry & f::kOflagCompressed) {
    const f::CompressedExtent extent = f::DecodeCompressed(entry, header_.cluster_bits);
    const uint64_t first = extent.host_offset / cluster_bytes();
    const uint64_t last = (extent.host_offset + extent.bytes - 1) / cluster_bytes();
    for (uint64_t c = first; c <= last; ++c) QCRASH_RETURN_IF_ERROR(UpdateRefcount(c, delta));
    return Status::Ok();
  }
  const uint64_t host = entry & f::kL2EntryOffsetMask;
  if (host == 0) return Status::Ok();
  if (delta < 0) return FreeClusters(host, 1);
  return UpdateRefcount(host / cluster_bytes(), delta);
}

// Refuses a create or apply that would overflow a refcount, before anything
// is written (a refcount width of 1 bit cannot share a cluster at all):
// every cluster `l1` reaches gains one reference.
Status Image::Impl::CheckSharingFits(const std::vector<uint64_t>& l1) {
  const uint64_t max = f::MaxRefcount(header_.refcount_order);
  const uint64_t per_l2 = header_.l2_entries();
  const uint64_t eb = header_.l2_entry_bytes();
  auto fits = [&](uint64_t host) -> Status {
    QCRASH_ASSIGN_OR_RETURN(const uint64_t count, GetRefcount(host / cluster_bytes()));
    if (count >= max)
      return Status::Limit(
          "snapshot: the refcount of host cluster " + HexOffset(host) +
          " would overflow refcount_bits=" + std::to_string(1u << header_.refcount_order));
    return Status::Ok();
  };
  for (const uint64_t l1_entry : l1) {
    const uint64_t l2 = l1_entry & f::kL1EntryOffsetMask;
    if (l2 == 0) continue;
    QCRASH_RETURN_IF_ERROR(fits(l2));
    QCRASH_ASSIGN_OR_RETURN(const uint8_t* cached, l2_cache_->Get(l2));
    std::vector<uint64_t> entries(per_l2);
    for (uint64_t k = 0; k < per_l2; ++k) entries[k] = LoadBe64(cached + k * eb);
    for (const uint64_t entry : entries) {
      if (entry & f::kOflagCompressed) continue;  // compressed: several users per host cluster
      const uint64_t host = entry & f::kL2EntryOffsetMask;
      if (host != 0) QCRASH_RETURN_IF_ERROR(fits(host));
    }
  }
  return Status::Ok();
}

// Replaces the snapshot table with `entries` (R6: the new table durable,
// the header switch durable, the old table freed).
Status Image::Impl::WriteSnapshotTable(const std::vector<SnapshotEntry>& entries) {
  const std::vector<uint8_t> bytes = EncodeSnapshotTable(entries);
  uint64_t new_offset = 0;
  const uint64_t clusters = (bytes.size() + cluster_bytes() - 1) / cluster_bytes();
  if (!bytes.empty()) {
    QCRASH_ASSIGN_OR_RETURN(new_offset, AllocateClusters(clusters));
    std::vector<uint8_t> padded(clusters * cluster_bytes(), 0);
    std::copy(bytes.begin(), bytes.end(), padded.begin());
    QCRASH_RETURN_IF_ERROR(io_.WriteMetadata(new_offset, padded));
  }
  // Why: a header naming an unwritten or unreferenced table is corrupt.
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch, refcount_cache()));
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));
  QCRASH_ASSIGN_OR_RETURN(const std::vector<SnapshotEntry> old,
                          ReadSnapshotTable(device_, header_));
  const uint64_t old_offset = header_.snapshots_offset;
  uint64_t old_bytes = 0;
  for (const SnapshotEntry& s : old) {
    old_bytes =
        Align8(s.offset - old_offset + 40 + s.extra_data_size + s.id.size() + s.name.size());
  }
  QCRASH_RETURN_IF_ERROR(BeforeMetadataChange());
  header_.nb_snapshots = static_cast<uint32_t>(entries.size());
  header_.snapshots_offset = new_offset;
  QCRASH_RETURN_IF_ERROR(WriteHeader());
  // Why: the old table is freed next and may be reused at once.
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));
  if (old_offset != 0 && old_bytes != 0)
    return FreeClusters(old_offset, (old_bytes + cluster_bytes() - 1) / cluster_bytes());
  return Status::Ok();
}

Status Image::Impl::CreateSnapshot(const std::string& name) {
  if (read_only_) return WriteRefused();
  if (rules_.journal()) return Status::NotSupported("snapshots under the journal policy");
  if (io_.has_data_device()) {
    return Status::NotSupported("internal snapshots of an image with an external data file");
  }
  if (name.empty() || name.size() > 65535) return Status::InvalidArgument("bad snapshot name");
  QCRASH_ASSIGN_OR_RETURN(std::vector<SnapshotEntry> table, ReadSnapshotTable(device_, header_));
  uint64_t next_id = 1;
  for (const SnapshotEntry& s : table) {
    if (s.name == name) return Status::InvalidArgument("snapshot '" + name + "' exists");
    next_id = std::max<uint64_t>(next_id, std::strtoull(s.id.c_str(), nullptr, 10) + 1);
  }
  if (table.size() >= f::kMaxSnapshots) return Status::Limit("too many snapshots");
  QCRASH_RETURN_IF_ERROR(FlushAll());  // step 1
  QCRASH_RETURN_IF_ERROR(CheckSharingFits(l1_table_));
  QCRASH_RETURN_IF_ERROR(BeginSharingChange());
  // Step 2: share every cluster the active L1 reaches.
  QCRASH_RETURN_IF_ERROR(BeforeMetadataChange());
  QCRASH_RETURN_IF_ERROR(ShareL2Tables(l1_table_));
  for (uint64_t i = 0; i < l1_table_.size(); ++i) {
    if ((l1_table_[i] & f::kL1EntryOffsetMask) == 0 || !(l1_table_[i] & f::kOflagCopied)) continue;
    l1_table_[i] &= ~f::kOflagCopied;
    QCRASH_RETURN_IF_ERROR(WriteL1Entry(i));
  }
  // Step 3: the L1 copy.
  QCRASH_ASSIGN_OR_RETURN(const uint64_t copy, WriteL1Copy(l1_table_));
  // Step 4. Why: the table must not name a copy whose clusters are not
  // counted, nor leave COPIED set on a cluster it shares (a writer would
  // then write into the snapshot in place).
  QCRASH_RETURN_IF_ERROR(l2_cache_->WriteBack());
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRefcountBeforePointer, refcount_cache()));
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kContentsBeforePointer, l2_cache_.get()));
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kContentsBeforePointer));
  // Step 5.
  SnapshotEntry entry;
  entry.l1_table_offset = copy;
  entry.l1_size = static_cast<uint32_t>(l1_table_.size());
  entry.id = std::to_string(next_id);
  entry.name = name;
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  entry.date_sec = static_cast<uint32_t>(now.tv_sec);
  entry.date_nsec = static_cast<uint32_t>(now.tv_nsec / 1000 * 1000);
  entry.disk_size = header_.size_bytes;
  entry.icount = ~uint64_t{0};
  table.push_back(entry);
  QCRASH_RETURN_IF_ERROR(WriteSnapshotTable(table));
  return EndSharingChange();
}

// One more reference to every L2 table `l1` names and every cluster those
// tables name, and COPIED cleared in the tables (they are shared now). The
// tables stay dirty in the L2 cache: the caller orders their write-back.
Status Image::Impl::ShareL2Tables(const std::vector<uint64_t>& l1) {
  const uint64_t per_l2 = header_.l2_entries();
  const uint64_t eb = header_.l2_entry_bytes();
  std::vector<uint8_t> l2_bytes(cluster_bytes());
  for (const uint64_t l1_entry : l1) {
    const uint64_t l2 = l1_entry & f::kL1EntryOffsetMask;
    if (l2 == 0) continue;
    QCRASH_RETURN_IF_ERROR(UpdateRefcount(l2 / cluster_bytes(), +1));
    // A copy: the refcount updates below may evict the table from the cache.
    QCRASH_ASSIGN_OR_RETURN(const uint8_t* cached, l2_cache_->Get(l2));
    std::copy(cached, cached + cluster_bytes(), l2_bytes.begin());
    bool changed = false;
    for (uint64_t k = 0; k < per_l2; ++k) {
      const uint64_t entry = LoadBe64(&l2_bytes[k * eb]);
      QCRASH_RETURN_IF_ERROR(ShareEntryClusters(entry, +1));
      if (entry & f::kOflagCopied) {
        StoreBe64(&l2_bytes[k * eb], entry & ~f::kOflagCopied);
        changed = true;
      }
    }
    if (!changed) continue;
    QCRASH_ASSIGN_OR_RETURN(uint8_t * table_bytes, l2_cache_->Get(l2));
    std::copy(l2_bytes.begin(), l2_bytes.end(), table_bytes);
    QCRASH_RETURN_IF_ERROR(l2_cache_->MarkDirty(l2));
  }
  return Status::Ok();
}

// `l1` in new clusters (at least one, as QEMU allocates for an empty
// table), not yet durable; returns their host offset.
Result<uint64_t> Image::Impl::WriteL1Copy(const std::vector<uint64_t>& l1) {
  const uint64_t l1_clusters =
      std::max<uint64_t>(1, (l1.size() * 8 + cluster_bytes() - 1) / cluster_bytes());
  QCRASH_ASSIGN_OR_RETURN(const uint64_t copy, AllocateClusters(l1_clusters));
  std::vector<uint8_t> bytes(l1_clusters * cluster_bytes(), 0);
  for (size_t i = 0; i < l1.size(); ++i) StoreBe64(&bytes[i * 8], l1[i]);
  QCRASH_RETURN_IF_ERROR(io_.WriteMetadata(copy, bytes));
  return copy;
}

// R8: refcounts and COPIED flags live in different structures, so no write
// order keeps them in step across a crash (a crash between the two leaves
// COPIED set on a shared cluster, or clear on an owned one; QEMU's check
// calls both corrupt). On v3 the change runs under the dirty bit, durable
// first: a crash inside it leaves an image whose open rebuilds refcounts
// and COPIED. The bit is cleared once everything is durable (the lazy
// policy keeps it until close, as always).
Status Image::Impl::BeginSharingChange() {
  if (header_.version < 3 || MechanismOf(Rule::kSharingChange) != Mechanism::kDirtyBit)
    return Status::Ok();
  QCRASH_RETURN_IF_ERROR(SetDirtyBit(true));
  sharing_change_open_ = true;
  return Status::Ok();
}

Status Image::Impl::EndSharingChange() {
  if (!sharing_change_open_) return Status::Ok();
  QCRASH_RETURN_IF_ERROR(FlushAll());
  sharing_change_open_ = false;
  if (rules_.Of(Rule::kDirtyBitFirst) != Mechanism::kNone) return Status::Ok();  // lazy: at close
  return SetDirtyBit(false);
}

Status Image::Impl::DeleteSnapshot(const std::string& name) {
  if (read_only_) return WriteRefused();
  if (rules_.journal()) return Status::NotSupported("snapshots under the journal policy");
  if (io_.has_data_device()) {
    return Status::NotSupported("internal snapshots of an image with an external data file");
  }
  QCRASH_ASSIGN_OR_RETURN(std::vector<SnapshotEntry> table, ReadSnapshotTable(device_, header_));
  auto found = FindSnapshot(table, name);
  if (found == table.end()) return NotFound(name);
  const SnapshotEntry gone = *found;
  table.erase(found);
  QCRASH_RETURN_IF_ERROR(FlushAll());
  QCRASH_RETURN_IF_ERROR(BeginSharingChange());
  QCRASH_RETURN_IF_ERROR(WriteSnapshotTable(table));  // step 1 (ends with a barrier)
  // Step 2: the snapshot's L1 and what it reaches lose one reference.
  QCRASH_ASSIGN_OR_RETURN(std::vector<uint64_t> l1,
                          ReadTableEntries(io_, gone.l1_table_offset, gone.l1_size, cluster_bytes(),
                                           "snapshot L1 table"));
  const uint64_t l1_clusters =
      std::max<uint64_t>(1, (uint64_t{gone.l1_size} * 8 + cluster_bytes() - 1) / cluster_bytes());
  QCRASH_RETURN_IF_ERROR(ReleaseTree(l1, gone.l1_table_offset, l1_clusters));
  QCRASH_RETURN_IF_ERROR(RestoreCopied());
  return EndSharingChange();
}

// Drops the references of an unlinked tree (R4: the caller made the unlink
// durable): every L2 table `l1` names and every cluster they name lose one,
// and the L1's own `l1_clusters` clusters at `l1_offset` are freed.
Status Image::Impl::ReleaseTree(const std::vector<uint64_t>& l1, uint64_t l1_offset,
                                uint64_t l1_clusters) {
  const uint64_t per_l2 = header_.l2_entries();
  const uint64_t eb = header_.l2_entry_bytes();
  std::vector<uint8_t> l2_bytes(cluster_bytes());
  for (const uint64_t l1_entry : l1) {
    const uint64_t l2 = l1_entry & f::kL1EntryOffsetMask;
    if (l2 == 0) continue;
    QCRASH_ASSIGN_OR_RETURN(const uint8_t* cached, l2_cache_->Get(l2));
    std::copy(cached, cached + cluster_bytes(), l2_bytes.begin());
    for (uint64_t k = 0; k < per_l2; ++k)
      QCRASH_RETURN_IF_ERROR(ShareEntryClusters(LoadBe64(&l2_bytes[k * eb]), -1));
    QCRASH_RETURN_IF_ERROR(FreeClusters(l2, 1));
  }
  if (l1_offset == 0 || l1_clusters == 0) return Status::Ok();
  return FreeClusters(l1_offset, l1_clusters);
}

// COPIED again where the active tree owns a cluster alone (refcount 1).
Status Image::Impl::RestoreCopied() {
  const uint64_t per_l2 = header_.l2_entries();
  const uint64_t eb = header_.l2_entry_bytes();
  for (uint64_t i = 0; i < l1_table_.size(); ++i) {
    const uint64_t l2 = l1_table_[i] & f::kL1EntryOffsetMask;
    if (l2 == 0) continue;
    QCRASH_ASSIGN_OR_RETURN(const uint64_t l2_refs, GetRefcount(l2 / cluster_bytes()));
    if (l2_refs != 1) continue;
    QCRASH_ASSIGN_OR_RETURN(uint8_t * table_bytes, l2_cache_->Get(l2));
    std::vector<uint8_t> copy_bytes(table_bytes, table_bytes + cluster_bytes());
    bool changed = false;
    for (uint64_t k = 0; k < per_l2; ++k) {
      const uint64_t entry = LoadBe64(&copy_bytes[k * eb]);
      const uint64_t host = entry & f::kL2EntryOffsetMask;
      if (host == 0 || (entry & (f::kOflagCopied | f::kOflagCompressed))) continue;
      QCRASH_ASSIGN_OR_RETURN(const uint64_t refs, GetRefcount(host / cluster_bytes()));
      if (refs == 1) {
        StoreBe64(&copy_bytes[k * eb], entry | f::kOflagCopied);
        changed = true;
      }
    }
    if (changed) {
      QCRASH_ASSIGN_OR_RETURN(table_bytes, l2_cache_->Get(l2));
      std::copy(copy_bytes.begin(), copy_bytes.end(), table_bytes);
      QCRASH_RETURN_IF_ERROR(l2_cache_->MarkDirty(l2));
    }
    if (!(l1_table_[i] & f::kOflagCopied)) {
      l1_table_[i] |= f::kOflagCopied;
      QCRASH_RETURN_IF_ERROR(WriteL1Entry(i));
    }
  }
  return Status::Ok();
}

Status Image::Impl::ApplySnapshot(const std::string& name_or_id) {
  if (read_only_) return WriteRefused();
  if (rules_.journal()) return Status::NotSupported("snapshots under the journal policy");
  if (io_.has_data_device()) {
    return Status::NotSupported("internal snapshots of an image with an external data file");
  }
  QCRASH_ASSIGN_OR_RETURN(const std::vector<SnapshotEntry> table,
                          ReadSnapshotTable(device_, header_));
  auto found = FindSnapshot(table, name_or_id);
  if (found == table.end()) return NotFound(name_or_id);
  const uint64_t size_bytes = found->disk_size.value_or(header_.size_bytes);
  if (size_bytes > f::kMaxGuestSizeBytes)
    return Status::Corruption("snapshot '" + found->name + "': disk_size " +
                              std::to_string(size_bytes) + " is too large");
  QCRASH_ASSIGN_OR_RETURN(std::vector<uint64_t> l1,
                          ReadTableEntries(io_, found->l1_table_offset, found->l1_size,
                                           cluster_bytes(), "snapshot L1 table"));
  // The active L1 must cover the snapshot's disk size even if its L1 is short.
  l1.resize(std::max<uint64_t>(l1.size(), f::L1EntriesFor(size_bytes, header_.cluster_bits,
                                                          header_.extended_l2())),
            0);
  if (l1.size() * 8 > f::kMaxL1TableBytes) return Status::Limit("L1 table would exceed 32 MiB");
  for (uint64_t& entry : l1) entry &= ~f::kOflagCopied;  // shared with the snapshot
  QCRASH_RETURN_IF_ERROR(FlushAll());                    // step 1
  QCRASH_RETURN_IF_ERROR(CheckSharingFits(l1));
  // The guest content changes everywhere: every enabled bitmap marks the
  // whole disk (after in_use is durable, R10), at both sizes.
  if (size_bytes != header_.size_bytes)
    QCRASH_RETURN_IF_ERROR(ResizeBitmaps(header_.size_bytes, size_bytes));
  QCRASH_RETURN_IF_ERROR(BeforeGuestChange(0, size_bytes));
  QCRASH_RETURN_IF_ERROR(BeginSharingChange());
  QCRASH_RETURN_IF_ERROR(BeforeMetadataChange());
  QCRASH_RETURN_IF_ERROR(ShareL2Tables(l1));                        // step 2
  QCRASH_ASSIGN_OR_RETURN(const uint64_t new_l1, WriteL1Copy(l1));  // step 3
  // Step 4. Why: a header naming an L1 whose contents, or the refcounts of
  // what it reaches, are not durable is corrupt; so is COPIED still set on
  // a cluster the new active state shares (a write would go in place, into
  // the snapshot).
  QCRASH_RETURN_IF_ERROR(l2_cache_->WriteBack());
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRefcountBeforePointer, refcount_cache()));
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kContentsBeforePointer, l2_cache_.get()));
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch, refcount_cache()));
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));
  // Step 5: the switch.
  const uint64_t old_offset = header_.l1_table_offset;
  const uint64_t old_clusters =
      (uint64_t{header_.l1_size} * 8 + cluster_bytes() - 1) / cluster_bytes();
  QCRASH_RETURN_IF_ERROR(BeforeMetadataChange());
  std::vector<uint64_t> old_l1 = std::move(l1_table_);
  header_.l1_table_offset = new_l1;
  header_.l1_size = static_cast<uint32_t>(l1.size());
  header_.size_bytes = size_bytes;
  l1_table_ = std::move(l1);
  QCRASH_RETURN_IF_ERROR(WriteHeader());
  // Why: the old tree's clusters are freed next and may be reused at once;
  // the header must no longer name them on disk (R4).
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));
  QCRASH_RETURN_IF_ERROR(ReleaseTree(old_l1, old_offset, old_clusters));  // step 6
  QCRASH_RETURN_IF_ERROR(RestoreCopied());
  return EndSharingChange();
}

Status Image::ReadSnapshot(const std::string& name_or_id, uint64_t guest_offset,
                           std::span<uint8_t> out) {
  QCRASH_ASSIGN_OR_RETURN(const std::vector<SnapshotEntry> table,
                          ReadSnapshotTable(impl_->device_, impl_->header_));
  auto found = FindSnapshot(table, name_or_id);
  if (found == table.end()) return NotFound(name_or_id);
  QCRASH_ASSIGN_OR_RETURN(std::vector<uint64_t> l1,
                          ReadTableEntries(impl_->io_, found->l1_table_offset, found->l1_size,
                                           impl_->cluster_bytes(), "snapshot L1 table"));
  // The read path walks l1_table_ and checks the range against the disk
  // size: lend it the snapshot's L1 and size for this read (a snapshot of
  // a disk resized since reads as large as the disk was).
  uint64_t size_bytes = found->disk_size.value_or(impl_->header_.size_bytes);
  std::swap(impl_->l1_table_, l1);
  std::swap(impl_->header_.size_bytes, size_bytes);
  const Status read = Read(guest_offset, out);
  std::swap(impl_->header_.size_bytes, size_bytes);
  std::swap(impl_->l1_table_, l1);
  return read;
}

Status Image::CreateSnapshot(const std::string& name) { return impl_->CreateSnapshot(name); }
Status Image::DeleteSnapshot(const std::string& name) { return impl_->DeleteSnapshot(name); }
Status Image::ApplySnapshot(const std::string& name_or_id) {
  return impl_->ApplySnapshot(name_or_id);
}
Result<std::vector<SnapshotEntry>> Image::Snapshots() {
  return ReadSnapshotTable(impl_->device_, impl_->header_);
}

}  // namespace qcrash::engine
