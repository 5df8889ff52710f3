// qemu-img amend: compat upgrade and downgrade, refcount width, lazy
// refcounts and size, in the order QEMU's qcow2_amend_options takes them
// (upgrade first, downgrade last), each step crash-safe on its own:
//  - refcount_bits: new refcount table and blocks written past the end of
//    the image, durable, then one header write switches refcount_order,
//    refcount_table_offset and refcount_table_clusters, durable, then the
//    old structures are freed (R6 relocate-then-switch);
//  - compat=0.10: zero clusters expanded in every L2 table (active and
//    snapshots'), their zeroed data durable before the entries (R3) and the
//    entries durable before the header says version 2 (R6);
//  - lazy_refcounts=off: the caches durable and the dirty bit clear before
//    the compatible bit clears (R7).
// A crash between the steps leaves a consistent image of the old or the
// new format: every intermediate state is valid qcow2 of the old header.
#include <algorithm>
#include <cstdio>

#include "engine/endian.h"
#include "engine/image_impl.h"

namespace qcrash::engine {

namespace f = format;

namespace {

std::string Hex(uint64_t value) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%#llx", static_cast<unsigned long long>(value));
  return buf;
}

}  // namespace

Status Image::Amend(const AmendOptions& options) {
  QCRASH_RETURN_IF_ERROR(impl_->Amend(options));
  return impl_->AfterGuestOp();
}

Status Image::Impl::Amend(const AmendOptions& o) {
  if (read_only_) return WriteRefused();
  const uint32_t new_version = o.version.value_or(header_.version);
  // qemu-img's checks, in its order and words; nothing is written before them.
  if (o.refcount_bits) {
    const uint32_t bits = *o.refcount_bits;
    if (bits == 0 || bits > 64 || (bits & (bits - 1)) != 0) {
      return Status::InvalidArgument(
          "Refcount width must be a power of two and may not exceed 64 bits");
    }
    if (new_version < 3 && bits != 16) {
      return Status::InvalidArgument(
          "Refcount widths other than 16 bits require compatibility level 1.1 or above (use "
          "compat=1.1 or greater)");
    }
  }
  if (o.lazy_refcounts && *o.lazy_refcounts && new_version < 3) {
    return Status::InvalidArgument(
        "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 "
        "or greater)");
  }
  if (new_version < header_.version) {
    const uint32_t order_after = o.refcount_bits
                                     ? static_cast<uint32_t>(__builtin_ctz(*o.refcount_bits))
                                     : header_.refcount_order;
    if (order_after != f::kV2RefcountOrder) {
      return Status::InvalidArgument("compat=0.10 requires refcount_bits=16");
    }
    if (header_.has_data_file()) {
      return Status::InvalidArgument("Cannot downgrade an image with a data file");
    }
    const uint64_t incompatible = header_.incompatible_features & ~f::kIncompatDirty;
    if (incompatible != 0) {
      return Status::NotSupported("Cannot downgrade an image with incompatible features " +
                                  Hex(incompatible) + " set");
    }
    // QEMU 7.2 downgrades and leaves the bitmap directory behind (leaked
    // clusters, a warning on every open); qcrash refuses instead.
    if (header_.bitmaps || !bitmaps_.empty()) {
      return Status::NotSupported("Cannot downgrade an image with persistent bitmaps");
    }
  }
  // The engine's own limits: the journal keeps metadata in transactions
  // that a header rewrite would bypass, and the lazy policy needs v3 and
  // its compatible bit for as long as the image is open.
  if (journal_ != nullptr || rules_.journal()) {
    return Status::NotSupported("amend is not supported under the journal policy");
  }
  const bool lazy_policy = rules_.Of(Rule::kDirtyBitFirst) != Mechanism::kNone;
  if (lazy_policy && (new_version < 3 || (o.lazy_refcounts && !*o.lazy_refcounts))) {
    return Status::NotSupported("the lazy policy keeps lazy_refcounts=on and compat=1.1");
  }

  // Everything acknowledged durable first: each step below starts from a
  // consistent image on disk (and a crash inside it returns to that).
  QCRASH_RETURN_IF_ERROR(ReleaseExtent());
  QCRASH_RETURN_IF_ERROR(FlushAll());
  if (new_version > header_.version) QCRASH_RETURN_IF_ERROR(Upgrade());
  if (o.refcount_bits) {
    const auto order = static_cast<uint32_t>(__builtin_ctz(*o.refcount_bits));
    if (order != header_.refcount_order) QCRASH_RETURN_IF_ERROR(ChangeRefcountOrder(order));
  }
  if (o.lazy_refcounts) QCRASH_RETURN_IF_ERROR(SetLazyRefcounts(*o.lazy_refcounts));
  if (o.size_bytes && *o.size_bytes != header_.size_bytes) {
    QCRASH_RETURN_IF_ERROR(Truncate(*o.size_bytes, Preallocation::kOff));
  }
  if (new_version < header_.version) QCRASH_RETURN_IF_ERROR(Downgrade());
  return FlushAll();
}

// v2 -> v3: one header write. Nothing in a v2 image means something else
// in v3 (no zero flag was ever set), so only the header changes.
Status Image::Impl::Upgrade() {
  header_.version = 3;
  header_.refcount_order = f::kV2RefcountOrder;
  header_.header_length = f::kV3HeaderLengthWritten;
  header_.incompatible_features = 0;
  header_.compatible_features = 0;
  header_.autoclear_features = 0;
  header_.compression_type = f::kCompressionZlib;
  header_.header_tail.clear();
  header_.feature_names = DefaultFeatureNames();
  QCRASH_RETURN_IF_ERROR(WriteHeader());
  return Barrier(Rule::kHeaderFeatures);
}

Status Image::Impl::SetLazyRefcounts(bool on) {
  const bool is_on = (header_.compatible_features & f::kCompatLazyRefcounts) != 0;
  if (on == is_on) return Status::Ok();
  if (!on) {
    // Why (R7): the refcounts FlushAll wrote are durable; only then may the
    // dirty bit clear, and only with it clear may the feature go.
    QCRASH_RETURN_IF_ERROR(FlushAll());
    QCRASH_RETURN_IF_ERROR(SetDirtyBit(false));
    header_.compatible_features &= ~f::kCompatLazyRefcounts;
  } else {
    header_.compatible_features |= f::kCompatLazyRefcounts;
  }
  QCRASH_RETURN_IF_ERROR(WriteHeader());
  return Barrier(Rule::kHeaderFeatures);
}

// R6 relocate, then switch, for the whole refcount structure at once:
//  1. read every cluster's refcount; refuse when one does not fit the new
//     width (qemu-img's words);
//  2. lay out the new blocks and table past the image's end, covering
//     every cluster including their own;
//  3. write them, and make them durable (the barrier the switch
//     amend-header-before-refcounts skips);
//  4. switch the header (refcount_order and the table in one sector), durable;
//  5. free the old blocks and table through the new structures.
Status Image::Impl::ChangeRefcountOrder(uint32_t new_order) {
  const uint64_t cb = cluster_bytes();
  const uint64_t start = std::max(allocated_end_, (device_.SizeBytes() + cb - 1) / cb);
  std::vector<uint64_t> counts(start, 0);  // step 1
  const uint64_t max_count = f::MaxRefcount(new_order);
  for (uint64_t c = 0; c < start; ++c) {
    QCRASH_ASSIGN_OR_RETURN(counts[c], GetRefcount(c));
    if (counts[c] > max_count) {
      return Status::InvalidArgument("Cannot decrease refcount entry width to " +
                                     std::to_string(1u << new_order) + " bits: Cluster at offset " +
                                     Hex(c * cb) + " has a refcount of " +
                                     std::to_string(counts[c]));
    }
  }
  const uint64_t per = f::RefcountBlockEntries(header_.cluster_bits, new_order);  // step 2
  uint64_t blocks = 0, table_clusters = 0;
  for (;;) {
    const uint64_t area_end = start + blocks + table_clusters;
    const uint64_t need_blocks = std::max<uint64_t>((area_end + per - 1) / per, 1);
    const uint64_t need_table = (need_blocks * 8 + cb - 1) / cb;
    if (need_blocks == blocks && need_table == table_clusters) break;
    blocks = need_blocks;
    table_clusters = need_table;
  }
  if (table_clusters * cb > f::kMaxRefcountTableBytes) {
    return Status::Limit("the new refcount table would exceed 8 MiB");
  }
  const uint64_t area_end = start + blocks + table_clusters;
  std::vector<uint8_t> block_bytes(blocks * cb, 0);
  for (uint64_t c = 0; c < area_end; ++c) {
    const uint64_t count = c < start ? counts[c] : 1;  // the new structures count themselves
    if (count == 0) continue;
    f::SetRefcount({block_bytes.data() + (c / per) * cb, cb}, c % per, new_order, count);
  }
  std::vector<uint64_t> table(table_clusters * cb / 8, 0);
  std::vector<uint8_t> table_bytes(table.size() * 8, 0);
  for (uint64_t i = 0; i < blocks; ++i) {
    table[i] = (start + i) * cb;
    StoreBe64(&table_bytes[i * 8], table[i]);
  }
  QCRASH_RETURN_IF_ERROR(io_.WriteMetadata(start * cb, block_bytes));  // step 3
  QCRASH_RETURN_IF_ERROR(io_.WriteMetadata((start + blocks) * cb, table_bytes));
  stats_.clusters_allocated += blocks + table_clusters;
  // Why: the header must never name a table, or a width, whose blocks are
  // not on disk: a crash would leave every refcount garbage.
  if (rules_.order_refcount_switch) QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));

  std::vector<uint64_t> old_blocks;  // step 4
  for (const uint64_t entry : refcount_table_) {
    const uint64_t block = entry & f::kRefcountTableOffsetMask;
    if (block != 0) old_blocks.push_back(block);
  }
  const uint64_t old_table = header_.refcount_table_offset;
  const uint64_t old_table_clusters = header_.refcount_table_clusters;
  header_.refcount_order = new_order;
  header_.refcount_table_offset = (start + blocks) * cb;
  header_.refcount_table_clusters = static_cast<uint32_t>(table_clusters);
  QCRASH_RETURN_IF_ERROR(WriteHeader());
  // Why: the old blocks are freed next and may be reused; the switch must
  // be durable before anything overwrites them.
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));

  // The old blocks are clean (FlushAll ran); the cache forgets them so
  // that nothing reads them with the new width.
  for (const uint64_t block : old_blocks) refcount_cache_->Drop(block);
  refcount_table_ = std::move(table);
  allocated_end_ = std::max(allocated_end_, area_end);
  free_cluster_hint_ = 0;
  for (const uint64_t block : old_blocks) QCRASH_RETURN_IF_ERROR(FreeClusters(block, 1));  // step 5
  return FreeClusters(old_table, old_table_clusters);
}

// QEMU's expand_zero_clusters_in_l1, per L2 table (each once, shared or not):
// a plain zero cluster becomes unallocated when no backing file shows
// through, else a new zeroed cluster; an allocated zero cluster keeps its
// host cluster, zeroed, unless another table names it too. A new cluster
// in a table that n L1 tables share takes refcount n, as the snapshot that
// shared the table raised every cluster it names; COPIED only at refcount 1.
Status Image::Impl::ExpandZeroClustersInL1(const std::vector<uint64_t>& l1,
                                           std::set<uint64_t>& done) {
  const uint64_t cb = cluster_bytes();
  const std::vector<uint8_t> zeroes(cb, 0);
  for (const uint64_t l1_entry : l1) {
    const uint64_t l2_offset = l1_entry & f::kL1EntryOffsetMask;
    if (l2_offset == 0 || !done.insert(l2_offset).second) continue;
    QCRASH_ASSIGN_OR_RETURN(const uint64_t l2_refcount, GetRefcount(l2_offset / cb));
    if (l2_refcount == 0) {
      return MarkCorrupt(Status::Corruption("L2 table at " + HexOffset(l2_offset) +
                                            " has refcount 0 (downgrade)"));
    }
    for (uint32_t i = 0; i < header_.l2_entries(); ++i) {
      QCRASH_ASSIGN_OR_RETURN(uint8_t * table, l2_cache_->Get(l2_offset));
      const uint64_t entry = LoadBe64(table + uint64_t{i} * 8);
      const L2Slot slot{l2_offset, i, entry, 0};
      QCRASH_ASSIGN_OR_RETURN(const ClusterType type, Classify(slot));
      if (type != ClusterType::kZeroPlain && type != ClusterType::kZeroAlloc) continue;
      const uint64_t old_host = entry & f::kL2EntryOffsetMask;
      if (type == ClusterType::kZeroPlain && header_.backing_file.empty()) {
        QCRASH_RETURN_IF_ERROR(SetL2Entry(slot, 0, 0));
        continue;
      }
      // An allocated zero cluster that other L2 tables still name (a
      // snapshot's data, zeroed in the active disk only) must not be
      // zeroed in place: it gets a cluster of its own, as a plain one does.
      // (QEMU 7.2 zeroes it in place, and the snapshot reads zeroes.)
      uint64_t old_refcount = 0;
      if (type == ClusterType::kZeroAlloc) {
        QCRASH_ASSIGN_OR_RETURN(old_refcount, GetRefcount(old_host / cb));
      }
      const bool in_place = type == ClusterType::kZeroAlloc && old_refcount <= l2_refcount;
      uint64_t host = old_host;
      if (!in_place) {
        QCRASH_ASSIGN_OR_RETURN(host, AllocateCluster());
        if (l2_refcount > 1) {
          QCRASH_RETURN_IF_ERROR(UpdateRefcount(host / cb, static_cast<int64_t>(l2_refcount) - 1));
        }
      }
      const uint64_t copied = (in_place ? old_refcount : l2_refcount) == 1 ? f::kOflagCopied : 0;
      QCRASH_RETURN_IF_ERROR(io_.WriteData(host, zeroes));
      // Why (R3): the entry that stops saying "zero" must not reach the
      // disk before the zeroes do, or the guest reads the cluster's old bytes.
      l2_cache_->DependOnFlush();
      QCRASH_RETURN_IF_ERROR(SetL2Entry(slot, host | copied, 0));
      if (type == ClusterType::kZeroAlloc && !in_place) {
        // This table's references move to the new cluster (the decrease
        // waits for the unlink, R4, as every free does).
        QCRASH_RETURN_IF_ERROR(UpdateRefcount(old_host / cb, -static_cast<int64_t>(l2_refcount)));
      }
    }
  }
  return Status::Ok();
}

Status Image::Impl::ExpandZeroClusters() {
  std::set<uint64_t> done;
  QCRASH_RETURN_IF_ERROR(ExpandZeroClustersInL1(l1_table_, done));
  QCRASH_ASSIGN_OR_RETURN(std::vector<SnapshotEntry> snapshots,
                          ReadSnapshotTable(device_, header_));
  for (const SnapshotEntry& s : snapshots) {
    QCRASH_ASSIGN_OR_RETURN(
        std::vector<uint64_t> l1,
        ReadTableEntries(io_, s.l1_table_offset, s.l1_size, cluster_bytes(), "snapshot L1 table"));
    QCRASH_RETURN_IF_ERROR(ExpandZeroClustersInL1(l1, done));
  }
  return Status::Ok();
}

// v3 -> v2: the dirty bit cleared (refcounts durable first, R7), zero
// clusters expanded, everything durable, then one header write: version 2,
// its 72-byte header, no feature bits or feature name table.
Status Image::Impl::Downgrade() {
  QCRASH_RETURN_IF_ERROR(SetDirtyBit(false));
  QCRASH_RETURN_IF_ERROR(ExpandZeroClusters());
  // Why: a version 2 header makes bit 0 of an L2 entry meaningless; every
  // expanded entry (and the zeroes it names) must be durable first.
  if (rules_.order_downgrade_switch) {
    QCRASH_RETURN_IF_ERROR(FlushAll());
    QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));
  }
  header_.version = 2;
  header_.refcount_order = f::kV2RefcountOrder;
  header_.header_length = f::kV2HeaderLength;
  header_.incompatible_features = 0;
  header_.compatible_features = 0;
  header_.autoclear_features = 0;
  header_.compression_type = f::kCompressionZlib;
  header_.header_tail.clear();
  header_.feature_names.clear();
  header_.bitmaps.reset();
  header_.unknown_extensions.clear();
  QCRASH_RETURN_IF_ERROR(WriteHeader());
  return Barrier(Rule::kRelocateThenSwitch);
}

}  // namespace qcrash::engine
