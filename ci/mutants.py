#!/usr/bin/env python3
"""Breaks the engine by hand, one realistic bug at a time, and runs the
default exploration (`qcrash explore`, no options) against each: a mutant
the suite does not catch is a hole in the harness. Not part of .ci/run (each
mutant is a rebuild and a 20 s suite); run it after changing the harness:

    python3 ci/mutants.py [--preset default] [--only NAME] [--budget S] [--out FILE]

Each mutant replaces one exact piece of source text (the script refuses a
mutant whose text is gone, so the list stays honest as the engine changes),
rebuilds qcrash, runs the suite, and restores the file. Writes a JSON list:
name, what the bug is, caught or not, the suite's time to its first failing
cell, and the first failure."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, file, old text, new text, the bug in words)
MUTANTS = [
    ("data-file-l2-before-data", "engine/metadata_cache.cc",
     "      if (data_file_barrier_) {\n"
     "        QCRASH_RETURN_IF_ERROR(io_.FlushDataFile(Rule::kDataFileBeforePointer));\n      }",
     "",
     "with an external data file, the L2 write-back does not wait for the data file's flush (R12)"),
    ("data-file-flush-skipped", "engine/metadata_cache.cc",
     "  QCRASH_RETURN_IF_ERROR(FlushDataFile(why));\n  ++stats_.device_flushes;",
     "  ++stats_.device_flushes;",
     "a flush of the image (the guest's included) does not flush the external data file"),
    ("l1-switch-before-table-durable", "engine/image.cc",
     "  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch, refcount_cache()));\n"
     "  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));\n  const uint64_t old_offset = header_.l1_table_offset;",
     "  const uint64_t old_offset = header_.l1_table_offset;",
     "L1 growth: the header switches to the new L1 before its contents and refcounts are durable"),
    ("refcount-table-switch-early", "engine/refcounts.cc",
     "  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch, refcount_cache_.get()));\n"
     "  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));\n  // Step 4.",
     "  // Step 4.",
     "refcount-table growth: the header names the new table before it is durable"),
    ("lazy-close-clears-dirty-first", "engine/image.cc",
     "  QCRASH_RETURN_IF_ERROR(ReleaseExtent());\n  QCRASH_RETURN_IF_ERROR(FlushAll());",
     "  QCRASH_RETURN_IF_ERROR(ReleaseExtent());\n  if (!journal_) QCRASH_RETURN_IF_ERROR(SetDirtyBit(false));\n"
     "  QCRASH_RETURN_IF_ERROR(FlushAll());",
     "close clears the lazy dirty bit before the caches are flushed"),
    ("discard-off-by-one-start", "engine/cluster_io.cc",
     "  const uint64_t from = (guest_offset + unit - 1) / unit * unit;",
     "  const uint64_t from = guest_offset / unit * unit;",
     "discard rounds its start down: a partial leading cluster (subcluster) is discarded whole"),
    ("guest-flush-dropped", "engine/image.cc",
     "  if (io_.writes_pending()) QCRASH_RETURN_IF_ERROR(Barrier(Rule::kGuestFlush));",
     "",
     "the guest flush writes the caches back but never flushes the device"),
    # Extended L2 (subclusters, engine/cluster_io.cc WriteSubclusters, ZeroSubclusters).
    ("subcluster-fresh-cluster-unordered", "engine/cluster_io.cc",
     "    const bool ordered = !owned || rules_.order_subcluster_data;",
     "    const bool ordered = owned && rules_.order_subcluster_data;",
     "extended L2: a write into a fresh host cluster names it before its data is durable"),
    ("subcluster-head-not-copied", "engine/cluster_io.cc",
     "    if (in_cluster > start) {  // step 1",
     "    if (in_cluster > start && false) {  // step 1",
     "extended L2: a write starting inside a new subcluster does not copy the subcluster's head"),
    ("subcluster-zero-bit-kept", "engine/cluster_io.cc",
     "  const uint64_t bitmap = (slot.bitmap | covered) & ~(covered << 32);  // step 5's bits",
     "  const uint64_t bitmap = slot.bitmap | covered;  // step 5's bits",
     "extended L2: a write allocates subclusters but leaves their zero bits set"),
    ("subcluster-zeroing-keeps-allocation", "engine/cluster_io.cc",
     "  const uint64_t bitmap = (slot.bitmap & ~mask) | (mask << 32);",
     "  const uint64_t bitmap = slot.bitmap | (mask << 32);",
     "extended L2: zeroing subclusters sets their zero bits but keeps their allocation bits"),
    ("subcluster-shared-written-in-place", "engine/cluster_io.cc",
     "  const bool owned = type == ClusterType::kNormal && (slot.entry & f::kOflagCopied) != 0;\n"
     "  const uint64_t newly_allocated",
     "  const bool owned = type == ClusterType::kNormal;\n  const uint64_t newly_allocated",
     "extended L2: a write into a cluster a snapshot shares goes in place instead of copying it"),
    ("subcluster-last-floored", "engine/cluster_io.cc",
     "  const uint64_t last = (in_cluster + data.size() - 1) / scb;",
     "  const uint64_t last = std::max(first, (in_cluster + data.size()) / scb - 1);",
     "extended L2: a write ending inside a subcluster does not allocate that last subcluster"),
    ("bitmap-inuse-not-flushed", "engine/bitmaps.cc",
     "  return Barrier(Rule::kBitmapTracking);",
     "  return Status::Ok();",
     "a bitmap's in_use flag is written but not flushed before the guest writes it covers"),
    ("bitmap-inuse-never-set", "engine/bitmaps.cc",
     "  if (bitmaps_in_use_ || stored_bitmaps_.empty()) return Status::Ok();",
     "  if (true) return Status::Ok();",
     "guest writes change an image whose stored bitmaps never get in_use"),
    ("bitmap-removed-not-covered", "engine/bitmaps.cc",
     "  if ((bitmaps_.empty() && stored_bitmaps_.empty()) || length == 0) return Status::Ok();",
     "  if (bitmaps_.empty() || length == 0) return Status::Ok();",
     "a bitmap removed in memory, still on disk until the close, gets no in_use before writes"),
    ("bitmap-granule-end-floored", "engine/bitmaps.cc",
     "  const uint64_t end = DivUp(offset + length, uint64_t{1} << bitmap.entry.granularity_bits);",
     "  const uint64_t end = (offset + length) >> bitmap.entry.granularity_bits;",
     "a write's last, partly covered granule is not marked"),
    ("bitmap-zero-writes-untracked", "engine/cluster_io.cc",
     "  QCRASH_RETURN_IF_ERROR(impl_->BeforeGuestChange(guest_offset, length_bytes));\n"
     "  ++impl_->stats_.guest_writes;\n  const uint64_t cb = impl_->cluster_bytes();\n  const bool v3",
     "  ++impl_->stats_.guest_writes;\n  const uint64_t cb = impl_->cluster_bytes();\n  const bool v3",
     "zero writes are not marked in the bitmaps"),
    ("bitmap-directory-switch-early", "engine/bitmaps.cc",
     "  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch, refcount_cache()));\n"
     "  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kBitmapTracking));\n",
     "",
     "the header names the new bitmap directory before it, its tables and data are durable"),
    ("bitmap-old-freed-before-switch-durable", "engine/bitmaps.cc",
     "  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));\n  stored_bitmaps_ = entries;",
     "  stored_bitmaps_ = entries;",
     "the old bitmap directory and tables are freed before the header switch is durable"),
    ("data-before-pointer-dropped", "engine/cluster_io.cc",
     "  if (options_.data_ordering == DataOrdering::kStrict || !full || reuse) {\n"
     "    l2_cache_->DependOnFlush();  // step 4\n  }",
     "",
     "an allocating write's L2 entry may reach the disk before its data"),
    ("quarantine-ignored", "engine/refcounts.cc",
     "    if (refcount == 0 && quarantine_.count(c) == 0) {",
     "    if (refcount == 0) {",
     "the allocator hands out freed clusters still in quarantine"),
    ("refcount-block-entry-early", "engine/refcounts.cc",
     "  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kContentsBeforePointer, refcount_cache_.get()));\n  refcount_table_[table_index] = block_offset;",
     "  refcount_table_[table_index] = block_offset;",
     "a new refcount block is named in the table before its contents are durable"),
    ("l2-table-pointer-early", "engine/cluster_io.cc",
     "  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kContentsBeforePointer, l2_cache_.get()));",
     "",
     "a new L2 table is named in the L1 before its contents are durable"),
    ("journal-commit-before-flush", "engine/journal.cc",
     "  QCRASH_RETURN_IF_ERROR(io_.DeviceFlush(Rule::kGuestFlush));\n  QCRASH_RETURN_IF_ERROR(CommitRecord(written));  // step 5",
     "  QCRASH_RETURN_IF_ERROR(CommitRecord(written));  // step 5",
     "the journal's commit record is written before the transaction's blocks are durable"),
    ("unlink-after-free", "engine/refcounts.cc",
     "  if (delta < 0 && rules_.Of(Rule::kUnlinkBeforeFree) == Mechanism::kDependency) {",
     "  if (false) {",
     "a refcount decrease may reach the disk before the pointer's removal"),
    ("l1-freed-before-switch-durable", "engine/image.cc",
     "  // Why: the old L1 is freed next and may be reused at once by writethrough.\n"
     "  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));\n",
     "",
     "L1 growth frees (and may reuse) the old L1 before the header switch is durable"),
    ("refcount-table-freed-before-switch-durable", "engine/refcounts.cc",
     "  // durable before anything overwrites it.\n  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));\n",
     "  // durable before anything overwrites it.\n",
     "refcount-table growth frees the old table before the header switch is durable"),
    ("extent-batch-not-durable", "engine/refcounts.cc",
     "    QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRefcountBeforePointer, refcount_cache_.get()));\n",
     "",
     "the extent policy hands out a batch before its refcounts are durable"),
    ("lazy-dirty-bit-not-flushed", "engine/image.cc",
     "  return io_.DeviceFlush(Rule::kDirtyBitFirst);",
     "  return Status::Ok();",
     "the lazy dirty bit is written but not flushed before refcounts start to lag"),
    ("scan-journal-data-not-flushed", "engine/journal.cc",
     "    // guest data it exposes must be durable before any of its blocks.\n"
     "    QCRASH_RETURN_IF_ERROR(io_.DeviceFlush(Rule::kGuestFlush));",
     "    // guest data it exposes must be durable before any of its blocks.",
     "scan-only journal: a transaction is written before the guest data it exposes is durable"),
    ("cow-skips-old-data", "engine/cluster_io.cc",
     "    if (!reuse) {\n      QCRASH_RETURN_IF_ERROR(ReadCluster(guest_cluster, 0, cluster));\n    }",
     "",
     "a partial write into a new cluster does not copy the rest of the old cluster (needs a backing file)"),
    # (Dropping only the flush between the rebuild's blocks and its table is
    # an equivalent mutant: the flush before the header switch covers both.)
    ("snapshot-apply-switch-before-l1-durable", "engine/snapshots.cc",
     "  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRefcountBeforePointer, refcount_cache()));\n"
     "  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kContentsBeforePointer, l2_cache_.get()));\n"
     "  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch, refcount_cache()));\n"
     "  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));\n  // Step 5: the switch.",
     "  // Step 5: the switch.",
     "snapshot apply: the header names the new active L1 before it (and the refcounts it relies on) is durable"),
    # (Dropping the barrier after apply's header switch is an equivalent
    # mutant today: the old tree's decreases run under the dirty bit (R8),
    # so a crash rebuilds refcounts from the tree on disk, and its freed
    # clusters wait in quarantine (R5) or, under writethrough, the switch
    # is flushed as it is written.)
    ("repair-switch-before-table-durable", "engine/repair.cc",
     "  // The table must be durable before the header switches to it (R6).\n  QCRASH_RETURN_IF_ERROR(ctx.device.Flush());",
     "  // The table must be durable before the header switches to it (R6).",
     "repair's refcount rebuild switches the header before its new table is durable"),
    ("repair-edits-not-flushed", "engine/repair.cc",
     "  // changes durable before the dirty/corrupt bits are cleared.\n  QCRASH_RETURN_IF_ERROR(ctx.device.Flush());",
     "  // changes durable before the dirty/corrupt bits are cleared.",
     "repair lowers refcounts before its pointer removals are durable"),
    ("repair-fixes-not-flushed", "engine/repair.cc",
     "  // Raised refcounts durable before OFLAG_COPIED is recomputed from them (R9).\n  QCRASH_RETURN_IF_ERROR(ctx.device.Flush());",
     "  // Raised refcounts durable before OFLAG_COPIED is recomputed from them (R9).",
     "repair's refcount fixes are not flushed before the dirty bit is cleared"),
    ("eviction-ignores-dependencies", "engine/metadata_cache.cc",
     "      ++io_.stats().eviction_writes;\n      QCRASH_RETURN_IF_ERROR(SatisfyDependencies());\n",
     "      ++io_.stats().eviction_writes;\n",
     "a dirty table evicted from a full cache is written without waiting for what it depends on"),
    # (Skipping the data flush when the refcount cache had nothing to flush
    # is an equivalent mutant today: an allocation always leaves the refcount
    # cache dirty after the data write's cluster was chosen, so its flush
    # covers the data.)
    ("cache-flush-skipped-when-clean", "engine/metadata_cache.cc",
     "Status MetadataCache::Flush(Rule why) {\n  QCRASH_RETURN_IF_ERROR(WriteBack());",
     "Status MetadataCache::Flush(Rule why) {\n  if (!has_dirty()) return Status::Ok();\n  QCRASH_RETURN_IF_ERROR(WriteBack());",
     "a cache flush returns early when nothing is dirty, though evictions left writes unflushed"),
    ("resize-not-durable", "engine/image.cc",
     "  // Why: a completed resize must survive a crash like any acknowledged write.\n  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kAcknowledgedResize));",
     "  // Why: a completed resize must survive a crash like any acknowledged write.",
     "a resize is acknowledged before its header write is durable"),
    ("write-zeroes-partial-as-whole", "engine/cluster_io.cc",
     "    const bool whole = at % cb == 0 && (n == cb || at + n == size_bytes());",
     "    const bool whole = at % cb == 0;",
     "write-zeroes turns a cluster-aligned but partial range into a whole zero cluster"),
    ("discard-end-rounds-up", "engine/cluster_io.cc",
     "  uint64_t end = end_bytes == size_bytes() ? (end_bytes + cb - 1) / cb : end_bytes / cb;",
     "  uint64_t end = (end_bytes + cb - 1) / cb;",
     "discard rounds its end up: a partial trailing cluster is discarded whole"),
    ("free-not-quarantined", "engine/refcounts.cc",
     "    if (quarantine_frees()) quarantine_.insert(cluster_index);\n",
     "",
     "a freed cluster is not quarantined: it is reused before its unlink is durable"),
    ("lazy-dirty-bit-never-set", "engine/image.cc",
     "  if (rules_.Of(Rule::kDirtyBitFirst) != Mechanism::kNone) return SetDirtyBit(true);",
     "  if (false) return SetDirtyBit(true);",
     "lazy refcounts without the dirty bit: refcounts lag on an image that says it is clean"),
    ("zero-keep-frees-cluster", "engine/cluster_io.cc",
     "    new_entry = (slot.entry & (f::kL2EntryOffsetMask | f::kOflagCopied)) | f::kOflagZero;\n    free_old = false;",
     "    new_entry = (slot.entry & (f::kL2EntryOffsetMask | f::kOflagCopied)) | f::kOflagZero;",
     "write-zeroes keeping the allocation still frees the host cluster it keeps"),
    ("cow-copies-wrong-cluster", "engine/cluster_io.cc",
     "      QCRASH_RETURN_IF_ERROR(ReadCluster(guest_cluster, 0, cluster));",
     "      QCRASH_RETURN_IF_ERROR(ReadCluster(guest_cluster + 1, 0, cluster));",
     "copy-on-write of a partial write copies the next guest cluster's bytes"),
    ("journal-sync-before-in-place-durable", "engine/journal.cc",
     "  // the synced pointer moves past the transactions that describe it.\n  QCRASH_RETURN_IF_ERROR(io_.DeviceFlush(Rule::kJournalProtocol));",
     "  // the synced pointer moves past the transactions that describe it.",
     "the journal's checkpoint moves the synced pointer before the in-place writes are durable"),
    ("journal-ring-reused-before-sync-durable", "engine/journal.cc",
     "  // only once the synced pointer is durable.\n  QCRASH_RETURN_IF_ERROR(io_.DeviceFlush(Rule::kJournalProtocol));",
     "  // only once the synced pointer is durable.",
     "the journal reuses ring space before the moved synced pointer is durable"),
    ("extent-not-released-at-close", "engine/image.cc",
     "  if (read_only_) return Status::Ok();\n  QCRASH_RETURN_IF_ERROR(ReleaseExtent());\n  QCRASH_RETURN_IF_ERROR(FlushAll());\n  if (journal_)",
     "  if (read_only_) return Status::Ok();\n  QCRASH_RETURN_IF_ERROR(FlushAll());\n  if (journal_)",
     "close keeps the extent policy's unused reservation: a clean close leaks"),
    # The read path (read operations, checked as they run).
    ("read-ignores-offset-in-cluster", "engine/cluster_io.cc",
     "      const uint64_t host = (slot.entry & f::kL2EntryOffsetMask) + in_cluster;",
     "      const uint64_t host = slot.entry & f::kL2EntryOffsetMask;",
     "a read that starts inside an allocated cluster reads from the cluster's start"),
    ("read-split-off-by-one", "engine/cluster_io.cc",
     "    const uint64_t n = std::min<uint64_t>(out.size() - done, cb - at % cb);\n"
     "    QCRASH_RETURN_IF_ERROR(impl_->ReadCluster(",
     "    const uint64_t n = std::min<uint64_t>(out.size() - done, cb - at % cb + 512);\n"
     "    QCRASH_RETURN_IF_ERROR(impl_->ReadCluster(",
     "a read across a cluster boundary takes one sector too many from the first cluster"),
    # I/O-error handling (the eio pass, I13).
    ("device-flush-error-ignored", "engine/metadata_cache.cc",
     "  QCRASH_RETURN_IF_ERROR(device_.Flush());\n  data_pending_ = false;",
     "  (void)device_.Flush();\n  data_pending_ = false;",
     "a failed device flush is taken for a good one: the guest's flush succeeds"),
    ("failed-data-write-still-linked", "engine/cluster_io.cc",
     "  QCRASH_RETURN_IF_ERROR(io_.WriteData(host, full ? data : std::span<const uint8_t>(cluster)));",
     "  const Status written = io_.WriteData(host, full ? data : std::span<const uint8_t>(cluster));\n"
     "  if (!written.ok()) {\n"
     "    (void)SetL2Entry(slot, host | f::kOflagCopied, header_.extended_l2() ? f::kL2BitmapAllocMask : 0);\n"
     "    return written;\n  }",
     "an allocating write whose data write failed still links the new cluster (error checked too late)"),
    ("cow-read-error-ignored", "engine/cluster_io.cc",
     "      QCRASH_RETURN_IF_ERROR(ReadCluster(guest_cluster, 0, cluster));",
     "      (void)ReadCluster(guest_cluster, 0, cluster);",
     "copy-on-write goes on after its read of the old cluster failed"),
    ("in-place-write-sector-rounded", "engine/cluster_io.cc",
     "    return io_.WriteData(old_host + in_cluster, data);",
     "    return io_.WriteData(old_host + in_cluster / 512 * 512, data);",
     "a write inside an owned cluster lands at the start of its sector"),
    ("cow-merge-sector-rounded", "engine/cluster_io.cc",
     "    std::memcpy(cluster.data() + in_cluster, data.data(), data.size());",
     "    std::memcpy(cluster.data() + in_cluster / 512 * 512, data.data(), data.size());",
     "copy-on-write merges the guest's bytes at the start of their sector"),
    ("shrink-header-before-tail-durable", "engine/image.cc",
     "  return FlushAll();  // step 3",
     "  return Status::Ok();  // step 3",
     "a shrink names the smaller size before the dropped tail is durable"),
    ("shrink-drops-the-partial-cluster", "engine/image.cc",
     "  const uint64_t first = (new_size_bytes + cb - 1) / cb;",
     "  const uint64_t first = new_size_bytes / cb;",
     "a shrink inside a cluster drops that whole cluster (off by one)"),
    ("shrink-keeps-the-partial-tail", "engine/image.cc",
     "  if (new_size_bytes % cb != 0) {  // step 1",
     "  if (false) {  // step 1",
     "a shrink inside a cluster leaves the bytes past the new end for a later growth"),
    ("shrink-leaks-the-tail", "engine/image.cc",
     "    QCRASH_RETURN_IF_ERROR(FreeEntryClusters(slot.entry, type));\n    if (gc + 1 < end)",
     "    (void)type;\n    if (gc + 1 < end)",
     "a shrink unmaps the tail without freeing its host clusters"),
    ("compressed-bytes-not-before-entry", "engine/compression.cc",
     "  l2_cache_->DependOnFlush();                               // step 5\n",
     "",
     "compressed write: the L2 entry may reach the disk before the compressed bytes it names"),
    ("compressed-packing-off-by-a-sector", "engine/compression.cc",
     "  compressed_cursor_ = (at + bytes) % cb == 0 ? 0 : at + bytes;",
     "  compressed_cursor_ = (at + bytes) % cb == 0 ? 0 : std::max(at + 1, at + bytes - 512);",
     "compressed packing: the next compressed cluster starts a sector before the end of the last"),
    # qemu-img amend (engine/amend.cc).
    ("amend-new-refcounts-uncounted", "engine/amend.cc",
     "    const uint64_t count = c < start ? counts[c] : 1;  // the new structures count themselves",
     "    const uint64_t count = c < start ? counts[c] : 0;",
     "amend refcount_bits=: the new refcount table and blocks do not count their own clusters"),
    ("amend-snapshot-zero-not-expanded", "engine/amend.cc",
     "    QCRASH_RETURN_IF_ERROR(ExpandZeroClustersInL1(l1, done));\n  }",
     "    (void)l1;\n  }",
     "amend compat=0.10: zero clusters in a snapshot's L2 tables are left with the v3 zero flag"),
    ("amend-expansion-zeroes-unordered", "engine/amend.cc",
     "      l2_cache_->DependOnFlush();\n      QCRASH_RETURN_IF_ERROR(SetL2Entry(slot, host | copied, 0));",
     "      QCRASH_RETURN_IF_ERROR(SetL2Entry(slot, host | copied, 0));",
     "amend compat=0.10: an expanded entry may reach the disk before the zeroes it names (R3)"),
    # Resize (engine/image.cc Truncate, DropTail) and rebase (engine/rebase.cc).
    ("shrink-tail-unflushed", "engine/image.cc",
     "  if (!rules_.drop_tail_before_shrink) return Status::Ok();\n  return FlushAll();  // step 3",
     "  return Status::Ok();",
     "a shrink writes the smaller size while the unmapped tail is still in the L2 cache"),
    ("resize-header-before-l1-growth", "engine/image.cc",
     "  if (needed > l1_table_.size()) QCRASH_RETURN_IF_ERROR(GrowL1(needed));\n"
     "  QCRASH_RETURN_IF_ERROR(BeforeMetadataChange());\n  header_.size_bytes = new_size_bytes;\n"
     "  QCRASH_RETURN_IF_ERROR(WriteHeader());",
     "  QCRASH_RETURN_IF_ERROR(BeforeMetadataChange());\n  header_.size_bytes = new_size_bytes;\n"
     "  QCRASH_RETURN_IF_ERROR(WriteHeader());\n"
     "  if (needed > l1_table_.size()) QCRASH_RETURN_IF_ERROR(GrowL1(needed));",
     "a growth writes the larger size before the larger L1 table exists"),
    ("rebase-switch-before-copies-durable", "engine/rebase.cc",
     "    if (m.rules_.copy_before_backing_switch) QCRASH_RETURN_IF_ERROR(m.FlushAll());",
     "",
     "a safe rebase names the new backing file before the ranges it copied are durable"),
    ("rebase-skips-backing-ranges", "engine/rebase.cc",
     "      if (e.present && e.depth == 0) continue;",
     "      if (e.present) continue;",
     "a safe rebase copies only where the old backing file has nothing (it takes the old "
     "file's data for allocated)"),
    # qemu-img commit (engine/commit.cc).
    ("commit-base-not-flushed", "engine/commit.cc",
     "    ++top.stats_.flushes_by_rule[static_cast<size_t>(Rule::kBaseBeforeEmpty)];\n"
     "    QCRASH_RETURN_IF_ERROR(base.Flush());\n",
     "    ++top.stats_.flushes_by_rule[static_cast<size_t>(Rule::kBaseBeforeEmpty)];\n",
     "commit never flushes the base: the emptied top is durable, the copies are not (R13)"),
    ("commit-partial-cluster-from-top", "engine/commit.cc",
     "      for (uint64_t done = 0; done < e.length;) {\n"
     "        const uint64_t n = std::min(e.length - done, kCopyChunkBytes);\n"
     "        buffer.resize(n);\n"
     "        QCRASH_RETURN_IF_ERROR(Read(e.start + done, buffer));\n"
     "        QCRASH_RETURN_IF_ERROR(base.Write(e.start + done, buffer));\n"
     "        done += n;\n"
     "      }\n",
     "      const uint64_t cb = top.cluster_bytes();\n"
     "      for (uint64_t at = e.start / cb * cb; at < e.start + e.length; at += cb) {\n"
     "        buffer.assign(std::min(cb, size - at), 0);\n"
     "        QCRASH_ASSIGN_OR_RETURN(const L2Slot slot, top.LookupL2(at / cb));\n"
     "        QCRASH_RETURN_IF_ERROR(top.ReadHost(slot.entry & f::kL2EntryOffsetMask, buffer));\n"
     "        QCRASH_RETURN_IF_ERROR(base.Write(at, buffer));\n"
     "      }\n",
     "commit copies a partly allocated cluster whole from the top's host cluster: its "
     "unallocated subclusters get the host cluster's bytes instead of the backing file's"),
    ("commit-empties-before-copy", "engine/commit.cc",
     "  QCRASH_ASSIGN_OR_RETURN(const std::vector<MapExtent> extents, Map());\n",
     "  QCRASH_ASSIGN_OR_RETURN(const std::vector<MapExtent> extents, Map());\n"
     "  for (uint64_t gc = 0; gc * top.cluster_bytes() < size; ++gc)\n"
     "    QCRASH_RETURN_IF_ERROR(top.DropCluster(gc));\n",
     "commit empties the top before it copies: the copy reads the base's old data through it"),
]


def run(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kw)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--only", action="append")
    parser.add_argument("--budget", type=float, default=0, help="suite budget (default: the suite's own)")
    parser.add_argument("--out", default=os.path.join(ROOT, "build", "mutants.json"))
    args = parser.parse_args()
    qcrash = os.path.join(ROOT, "build", args.preset, "qcrash")
    results = []
    for name, path, old, new, what in MUTANTS:
        if args.only and name not in args.only:
            continue
        full = os.path.join(ROOT, path)
        with open(full) as f:
            original = f.read()
        if original.count(old) != 1:
            print("mutant %s: its text is not in %s exactly once; update ci/mutants.py" % (name, path))
            results.append({"name": name, "error": "stale mutant"})
            continue
        try:
            with open(full, "w") as f:
                f.write(original.replace(old, new))
            built = run(["cmake", "--build", "--preset", args.preset, "--target", "qcrash"])
            if built.returncode != 0:
                print("mutant %s: does not build\n%s" % (name, built.stdout[-2000:]))
                results.append({"name": name, "error": "does not build"})
                continue
            with tempfile.TemporaryDirectory() as tmp:
                report = os.path.join(tmp, "suite.json")
                cmd = [qcrash, "explore", "--report", report, "--reproducers", os.path.join(tmp, "r")]
                if args.budget:
                    cmd += ["--budget", str(args.budget)]
                start = time.time()
                explored = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
                seconds = time.time() - start
                if not os.path.exists(report):
                    # The suite itself died (the mutant crashed the engine): a
                    # user sees it, so it is caught, with no time to report.
                    tail = (explored.stderr or explored.stdout).strip().splitlines()[-1:] or [""]
                    r = {"failures": [{"failure": "the suite exited %d: %s" % (explored.returncode, tail[0])}],
                         "first_failure_seconds": seconds}
                else:
                    with open(report) as f:
                        r = json.load(f)
            first = r["failures"][0] if r["failures"] else {}
            result = {"name": name, "bug": what, "caught": explored.returncode != 0,
                      "exit": explored.returncode, "suite_seconds": round(seconds, 1),
                      "first_failure_seconds": round(r["first_failure_seconds"], 1),
                      "failing_cells": len(r["failures"]),
                      # of them, cells of the data pass (data:LIMIT enumerators)
                      "failing_data_cells": sum(1 for f in r["failures"]
                                                if str(f.get("enumerator", "")).startswith("data:")),
                      "first": "%s %s %s: %s" % (first.get("workload"), first.get("policy"), first.get("enumerator"),
                                                 first.get("failure") or first.get("invariant", "")) if first else ""}
            results.append(result)
            print("%-34s %-9s first after %5.1f s, %3d failing cells (%d data)  %s" % (
                name, "CAUGHT" if result["caught"] else "MISSED", result["first_failure_seconds"],
                result["failing_cells"], result["failing_data_cells"], result["first"]))
            sys.stdout.flush()
        finally:
            with open(full, "w") as f:
                f.write(original)
    run(["cmake", "--build", "--preset", args.preset, "--target", "qcrash"])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    caught = sum(1 for r in results if r.get("caught"))
    print("mutants: %d of %d caught (%s)" % (caught, len(results), args.out))
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
