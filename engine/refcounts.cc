// Refcounts and the cluster allocator: reading and updating refcounts,
// creating refcount blocks (self-describing when they can be), growing the
// refcount table, and first-fit allocation that never reuses a cluster whose
// free is not yet durable.
#include <algorithm>

#include "engine/endian.h"
#include "engine/image_impl.h"

namespace qcrash::engine {

namespace f = format;

Status Image::Impl::LoadRefcounts(uint64_t file_size_bytes, bool writethrough) {
  QCRASH_ASSIGN_OR_RETURN(
      refcount_table_,
      ReadTableEntries(io_, header_.refcount_table_offset,
                       (uint64_t{header_.refcount_table_clusters} << header_.cluster_bits) / 8,
                       cluster_bytes(), "refcount table"));
  refcount_cache_ =
      std::make_unique<MetadataCache>("refcount", io_, options_.refcount_cache_blocks,
                                      static_cast<uint32_t>(cluster_bytes()), writethrough);
  refcount_cache_->set_keep_dirty_on_failed_write(rules_.keep_dirty_on_failed_write);
  if (!rules_.cache_dependencies()) refcount_cache_->set_ignore_dependencies(true);
  allocated_end_ = (file_size_bytes + cluster_bytes() - 1) / cluster_bytes();
  return Status::Ok();
}

Status Image::Impl::WriteBackRefcounts() { return refcount_cache_->WriteBack(); }

Status Image::Impl::FlushRefcounts(Rule rule) { return refcount_cache_->Flush(rule); }

void Image::Impl::IgnoreRefcountDependencies() { refcount_cache_->set_ignore_dependencies(true); }

uint64_t Image::Impl::dirty_refcount_blocks() const { return refcount_cache_->dirty_count(); }

void Image::Impl::ReleaseQuarantine() { quarantine_.clear(); }

Result<uint64_t> Image::Impl::GetRefcount(uint64_t cluster_index) {
  const uint64_t per = refcount_block_entries();
  const uint64_t table_index = cluster_index / per;
  if (table_index >= refcount_table_.size()) return uint64_t{0};
  const uint64_t block = refcount_table_[table_index] & f::kRefcountTableOffsetMask;
  if (block == 0) return uint64_t{0};
  if ((block & (cluster_bytes() - 1)) != 0 ||
      (refcount_table_[table_index] & f::kRefcountTableReservedMask) != 0) {
    return MarkCorrupt(
        Status::Corruption("refcount table entry " + std::to_string(table_index) + " at " +
                           HexOffset(header_.refcount_table_offset + table_index * 8) +
                           ": invalid refcount block offset " + HexOffset(block)));
  }
  QCRASH_ASSIGN_OR_RETURN(uint8_t * bytes, refcount_cache_->Get(block));
  return f::GetRefcount({bytes, cluster_bytes()}, cluster_index % per, header_.refcount_order);
}

bool Image::Impl::quarantine_frees() const {
  // Writethrough makes the unlink and the decrease durable as they happen;
  // unsafe (and early-free-reuse) orders nothing on purpose.
  return rules_.Of(Rule::kFreeBeforeReuse) == Mechanism::kQuarantine;
}

Status Image::Impl::UpdateRefcount(uint64_t cluster_index, int64_t delta) {
  QCRASH_RETURN_IF_ERROR(BeforeMetadataChange());
  const uint64_t per = refcount_block_entries();
  const uint64_t table_index = cluster_index / per;
  if (delta < 0 && (table_index >= refcount_table_.size() || refcount_table_[table_index] == 0)) {
    // No block: the refcount is 0 already, and a decrease is an inconsistency
    // (never a reason to create blocks or grow the table).
    return MarkCorrupt(Status::Corruption("refcount of cluster " + std::to_string(cluster_index) +
                                          " (host " + HexOffset(cluster_index * cluster_bytes()) +
                                          ") would drop below zero"));
  }
  QCRASH_ASSIGN_OR_RETURN(const uint64_t block, EnsureRefcountBlock(table_index));
  if (delta < 0 && rules_.Of(Rule::kUnlinkBeforeFree) == Mechanism::kDependency) {
    // R4: the pointer's removal must be durable before the decrease, or a
    // crash could leave a live pointer to a free cluster.
    QCRASH_RETURN_IF_ERROR(
        refcount_cache_->SetDependency(l2_cache_.get(), Rule::kUnlinkBeforeFree));
  }
  QCRASH_ASSIGN_OR_RETURN(uint8_t * bytes, refcount_cache_->Get(block));
  std::span<uint8_t> span(bytes, cluster_bytes());
  const uint64_t old_count = f::GetRefcount(span, cluster_index % per, header_.refcount_order);
  const uint64_t max_count = f::MaxRefcount(header_.refcount_order);
  if (delta < 0 && old_count < static_cast<uint64_t>(-delta)) {
    return MarkCorrupt(Status::Corruption("refcount of cluster " + std::to_string(cluster_index) +
                                          " (host " + HexOffset(cluster_index * cluster_bytes()) +
                                          ") would drop below zero"));
  }
  if (delta > 0 && max_count - old_count < static_cast<uint64_t>(delta)) {
    return Status::Limit(
        "refcount of cluster " + std::to_string(cluster_index) +
        " would overflow refcount_bits=" + std::to_string(1u << header_.refcount_order));
  }
  const uint64_t new_count = old_count + static_cast<uint64_t>(delta);
  f::SetRefcount(span, cluster_index % per, header_.refcount_order, new_count);
  QCRASH_RETURN_IF_ERROR(refcount_cache_->MarkDirty(block));
  if (new_count == 0) {
    ForgetCompressedCursor(cluster_index);
    if (quarantine_frees()) quarantine_.insert(cluster_index);
    free_cluster_hint_ = std::min(free_cluster_hint_, cluster_index);
  }
  if (delta > 0) allocated_end_ = std::max(allocated_end_, cluster_index + 1);
  return Status::Ok();
}

// Returns the host offset of refcount block `table_index`, creating it (and
// growing the table) when it does not exist yet. Steps:
//  1. grow the table if it has no entry for the block;
//  2. find a free cluster for the block: a cluster the new block itself
//     covers holds its own refcount (self-describing); any other cluster must
//     already be covered by an existing block, so first create that one;
//  3. write the block's contents, flush, then write the table entry (R2).
Result<uint64_t> Image::Impl::EnsureRefcountBlock(uint64_t table_index) {
  if (table_index >= refcount_table_.size()) QCRASH_RETURN_IF_ERROR(GrowRefcountTable(table_index));
  if (table_index < refcount_table_.size() && refcount_table_[table_index] != 0) {
    return refcount_table_[table_index] & f::kRefcountTableOffsetMask;
  }
  const uint64_t per = refcount_block_entries();
  uint64_t block_cluster = 0;
  bool self_describing = false;
  for (int attempt = 0;; ++attempt) {
    if (attempt > 64) return Status::Corruption("cannot place a new refcount block");
    QCRASH_ASSIGN_OR_RETURN(block_cluster, FindFreeClusters(1));
    const uint64_t covering = block_cluster / per;
    if (covering == table_index) {
      self_describing = true;
      break;
    }
    if (covering < refcount_table_.size() && refcount_table_[covering] != 0) {
      QCRASH_RETURN_IF_ERROR(UpdateRefcount(block_cluster, +1));
      break;
    }
    QCRASH_RETURN_IF_ERROR(EnsureRefcountBlock(covering).status());
    if (table_index < refcount_table_.size() && refcount_table_[table_index] != 0) {
      return refcount_table_[table_index] & f::kRefcountTableOffsetMask;  // made on the way
    }
  }
  const uint64_t block_offset = block_cluster * cluster_bytes();
  QCRASH_ASSIGN_OR_RETURN(uint8_t * bytes, refcount_cache_->GetNew(block_offset));
  if (self_describing) {
    f::SetRefcount({bytes, cluster_bytes()}, block_cluster % per, header_.refcount_order, 1);
  }
  ++stats_.clusters_allocated;
  allocated_end_ = std::max(allocated_end_, block_cluster + 1);
  QCRASH_RETURN_IF_ERROR(refcount_cache_->MarkDirty(block_offset));
  // Why: the table entry must never name a block whose contents are not on
  // disk yet (R2), and the block's own refcount must be durable with it.
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kContentsBeforePointer, refcount_cache_.get()));
  refcount_table_[table_index] = block_offset;
  uint8_t entry[8];
  StoreBe64(entry, block_offset);
  QCRASH_RETURN_IF_ERROR(io_.WriteMetadata(header_.refcount_table_offset + table_index * 8, entry));
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kEveryWrite));
  return block_offset;
}

// R6 relocate, then switch. The new table and the refcount blocks that cover
// it go at the end of the image, describing themselves:
//  1. size the area (table + new blocks) until it stops growing;
//  2. write the new blocks and the new table;
//  3. flush: they and the increments in old blocks must be durable first;
//  4. switch the header to the new table with one sector write, flush;
//  5. free the old table (R4: it is unreachable and the switch is durable).
Status Image::Impl::GrowRefcountTable(uint64_t needed_table_index) {
  const uint64_t per = refcount_block_entries();
  const uint64_t cb = cluster_bytes();
  if ((needed_table_index + 1) * 8 > f::kMaxRefcountTableBytes) {
    return Status::Limit("refcount table entry " + std::to_string(needed_table_index) +
                         " would need a refcount table beyond 8 MiB");
  }
  const uint64_t start = std::max(allocated_end_, (device_.SizeBytes() + cb - 1) / cb);
  const uint64_t old_entries = refcount_table_.size();
  uint64_t entries = std::max(needed_table_index + 1, old_entries + old_entries / 2);
  uint64_t table_clusters = 0, new_blocks = 0;
  std::vector<uint64_t> block_indices;
  for (;;) {  // step 1: converges within a few rounds
    table_clusters = (entries * 8 + cb - 1) / cb;
    const uint64_t area_end = start + new_blocks + table_clusters;
    block_indices.clear();
    for (uint64_t bi = start / per; bi <= (area_end - 1) / per; ++bi) {
      if (bi >= old_entries || refcount_table_[bi] == 0) block_indices.push_back(bi);
    }
    const uint64_t max_index = block_indices.empty() ? 0 : block_indices.back();
    if (block_indices.size() == new_blocks && max_index < entries) break;
    new_blocks = block_indices.size();
    entries = std::max(entries, max_index + 1);
  }
  if ((table_clusters * cb) > f::kMaxRefcountTableBytes) {
    return Status::Limit("refcount table would exceed 8 MiB");
  }
  const uint64_t area_end = start + new_blocks + table_clusters;
  std::vector<uint8_t> blocks(new_blocks * cb, 0);
  std::vector<uint64_t> table(table_clusters * cb / 8, 0);
  std::copy(refcount_table_.begin(), refcount_table_.end(), table.begin());
  for (uint64_t i = 0; i < new_blocks; ++i) table[block_indices[i]] = (start + i) * cb;
  for (uint64_t c = start; c < area_end; ++c) {
    auto it = std::find(block_indices.begin(), block_indices.end(), c / per);
    if (it == block_indices.end()) {
      QCRASH_RETURN_IF_ERROR(UpdateRefcount(c, +1));  // an old block covers it
      continue;
    }
    const uint64_t i = static_cast<uint64_t>(it - block_indices.begin());
    f::SetRefcount({blocks.data() + i * cb, cb}, c % per, header_.refcount_order, 1);
  }
  // Step 2.
  std::vector<uint8_t> table_bytes(table.size() * 8);
  for (size_t i = 0; i < table.size(); ++i) StoreBe64(&table_bytes[i * 8], table[i]);
  if (!blocks.empty()) QCRASH_RETURN_IF_ERROR(io_.WriteMetadata(start * cb, blocks));
  QCRASH_RETURN_IF_ERROR(io_.WriteMetadata((start + new_blocks) * cb, table_bytes));
  stats_.clusters_allocated += new_blocks + table_clusters;
  allocated_end_ = std::max(allocated_end_, area_end);
  // Step 3. Why: the header must never name a table whose contents, or the
  // refcounts of its own clusters, are not on disk.
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch, refcount_cache_.get()));
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));
  // Step 4.
  const uint64_t old_offset = header_.refcount_table_offset;
  const uint64_t old_clusters = header_.refcount_table_clusters;
  header_.refcount_table_offset = (start + new_blocks) * cb;
  header_.refcount_table_clusters = static_cast<uint32_t>(table_clusters);
  refcount_table_ = std::move(table);
  QCRASH_RETURN_IF_ERROR(WriteHeader());
  // Why: the old table is freed next and may be reused; the switch must be
  // durable before anything overwrites it.
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));
  // Step 5.
  return FreeClusters(old_offset, old_clusters);
}

Result<uint64_t> Image::Impl::FindFreeClusters(uint64_t count) {
  const uint64_t max_clusters = f::kMaxImageSizeBytes / cluster_bytes();
  const uint64_t per = refcount_block_entries();
  uint64_t run_start = free_cluster_hint_, run_length = 0;
  for (uint64_t c = free_cluster_hint_; c < max_clusters; ++c) {
    if (run_length == 0) run_start = c;
    const uint64_t table_index = c / per;
    const bool no_block =
        table_index >= refcount_table_.size() || refcount_table_[table_index] == 0;
    if (no_block && c % per == 0 && c >= allocated_end_ && count <= per) {
      return c;  // nothing at or past here is used: a fresh block is all free
    }
    uint64_t refcount = 0;
    if (!no_block) {
      QCRASH_ASSIGN_OR_RETURN(refcount, GetRefcount(c));
    }
    if (refcount == 0 && quarantine_.count(c) == 0) {
      if (++run_length == count) return run_start;
    } else {
      run_length = 0;
      if (count == 1 && c == free_cluster_hint_ && refcount != 0) free_cluster_hint_ = c + 1;
    }
  }
  return Status::NoSpace("no free host clusters left below 2^55 bytes");
}

// Allocation steps: find a free run, make sure refcount blocks exist for it
// (creating them may take clusters of the run, so search again), then raise
// each refcount. Under the ordered policies the L2 cache now depends on the
// refcount cache (R1: refcount before pointer).
Result<uint64_t> Image::Impl::AllocateClusters(uint64_t count) {
  const uint64_t per = refcount_block_entries();
  uint64_t first = 0;
  for (int attempt = 0;; ++attempt) {
    if (attempt > 64) return Status::Corruption("cluster allocation does not converge");
    QCRASH_ASSIGN_OR_RETURN(first, FindFreeClusters(count));
    bool blocks_ready = true;
    for (uint64_t bi = first / per; bi <= (first + count - 1) / per; ++bi) {
      if (bi >= refcount_table_.size() || refcount_table_[bi] == 0) {
        blocks_ready = false;
        QCRASH_RETURN_IF_ERROR(EnsureRefcountBlock(bi).status());
      }
    }
    if (blocks_ready) break;
  }
  for (uint64_t c = first; c < first + count; ++c) QCRASH_RETURN_IF_ERROR(UpdateRefcount(c, +1));
  stats_.clusters_allocated += count;
  if (count == 1 && first == free_cluster_hint_) free_cluster_hint_ = first + 1;
  if (rules_.Of(Rule::kRefcountBeforePointer) == Mechanism::kDependency) {
    QCRASH_RETURN_IF_ERROR(
        l2_cache_->SetDependency(refcount_cache_.get(), Rule::kRefcountBeforePointer));
  }
  return first * cluster_bytes();
}

// The extent policy reserves `extent_clusters` clusters at once and makes
// their refcounts durable before handing any out, so L2 entries never wait
// for a refcount write; a crash only leaks the unused rest.
Result<uint64_t> Image::Impl::AllocateCluster() {
  if (rules_.Of(Rule::kRefcountBeforePointer) != Mechanism::kBatch) return AllocateClusters(1);
  if (extent_.empty()) {
    const uint64_t batch = std::max<uint32_t>(options_.extent_clusters, 1);
    QCRASH_ASSIGN_OR_RETURN(const uint64_t first, AllocateClusters(batch));
    // Why: the batch's refcounts must be durable before any pointer to one
    // of its clusters can reach the disk.
    QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRefcountBeforePointer, refcount_cache_.get()));
    for (uint64_t i = batch; i-- > 0;) extent_.push_back(first + i * cluster_bytes());
  }
  const uint64_t host_offset = extent_.back();
  extent_.pop_back();
  return host_offset;
}

Status Image::Impl::ReleaseExtent() {
  while (!extent_.empty()) {
    const uint64_t host_offset = extent_.back();
    extent_.pop_back();
    QCRASH_RETURN_IF_ERROR(FreeClusters(host_offset, 1));
  }
  return Status::Ok();
}

Status Image::Impl::FreeClusters(uint64_t host_offset, uint64_t count) {
  const uint64_t first = host_offset / cluster_bytes();
  for (uint64_t c = first; c < first + count; ++c) {
    l2_cache_->Drop(c * cluster_bytes());  // a freed L2 table must never be written back
    if (journal_) {
      journal_->OnFree(c * cluster_bytes(), cluster_bytes(),
                       rules_.Of(Rule::kRevokeBeforeReuse) == Mechanism::kRevoke);
    }
    QCRASH_RETURN_IF_ERROR(UpdateRefcount(c, -1));
  }
  return Status::Ok();
}

}  // namespace qcrash::engine
