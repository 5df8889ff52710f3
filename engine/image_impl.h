// Image::Impl: the state of an open qcow2 image and the members that the
// engine's .cc files share (image.cc: open, create, header, L1, resize;
// refcounts.cc: refcounts and the cluster allocator; cluster_io.cc: the
// guest read, write, zero and discard paths and the map; journal_image.cc:
// the journal hooks). Each section below is one module's interface to the
// others. The allocator (refcounts.cc) is the narrowest: the other modules
// reach refcounts only through its functions (get, update, allocate, free,
// release the quarantine, write back or flush the refcount cache), never
// its table, cache, free hint, quarantine or extent batch.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <span>
#include <vector>

#include "engine/image.h"
#include "engine/journal.h"
#include "engine/metadata_cache.h"
#include "engine/ordering.h"
#include "engine/qcow2_format.h"
#include "engine/snapshot_table.h"

namespace qcrash::engine {

// QEMU's names for what an L2 entry describes.
enum class ClusterType : uint8_t { kUnallocated, kZeroPlain, kZeroAlloc, kNormal, kCompressed };

// One L2 entry, located: the table it lives in and its index there.
struct L2Slot {
  uint64_t l2_table_offset = 0;  // host offset of the L2 table
  uint32_t index = 0;            // entry index inside it
  uint64_t entry = 0;            // its value (host order)
  uint64_t bitmap = 0;           // extended L2: the subcluster bitmap word (else 0)
};

// Reads a table of `entries` big-endian 8-byte entries (the L1 or refcount
// table at open, image.cc and refcounts.cc); Corruption when it starts past
// the file's last partial cluster.
Result<std::vector<uint64_t>> ReadTableEntries(CountingIo& io, uint64_t offset, uint64_t entries,
                                               uint64_t cluster_bytes, const char* what);

class Image::Impl {
 public:
  Impl(BlockDevice& device, const OpenOptions& options);

  // ---- image.cc ----
  Status Load();
  Status WriteHeader();
  Status MarkCorrupt(const Status& why);
  // Why a write is refused: the corrupt bit (found at open or set by
  // MarkCorrupt) or a read-only open.
  Status WriteRefused() const;
  Status SetDirtyBit(bool dirty);
  Status GrowL1(uint64_t l1_entries);
  Status WriteL1Entry(uint64_t l1_index);
  Status Truncate(uint64_t new_size_bytes, Preallocation preallocation);
  Status DropTail(uint64_t new_size_bytes, uint64_t old_size_bytes);  // a shrink's first part
  Status Preallocate(uint64_t from_bytes, uint64_t to_bytes, Preallocation preallocation);
  Status FlushAll();
  Status Close();
  Status OpenBacking();
  // Opens backing file `name` of `format` (nullopt: probed) through `open`
  // (also the opener of its own backing chain) into `device`, `image`
  // (null for raw) and `size_bytes`.
  Status OpenBackingFile(const BackingOpener& open, const std::string& name,
                         const std::optional<std::string>& format,
                         std::unique_ptr<BlockDevice>& device, std::unique_ptr<Image>& image,
                         uint64_t& size_bytes);
  Status BeforeMetadataChange();
  // Honours `rule` here as the ordering table says (engine/ordering.h):
  // a device flush (after writing back `cache`, when given, and only if it
  // wrote anything), a write-back into the open journal transaction, a
  // journal commit, or nothing (the rule is kept some other way, or not).
  Status Barrier(Rule rule, MetadataCache* cache = nullptr);
  Mechanism MechanismOf(Rule rule) const;
  bool quarantine_frees() const;

  // ---- refcounts.cc: refcounts and the cluster allocator ----
  // The allocator's interface: what the other modules use (image.cc: open,
  // L1 growth, preallocation, flush and close; cluster_io.cc: copy-on-write
  // and the frees of unlinked clusters; journal_image.cc: the journal area
  // and commits). They never touch the allocator's state (below): the
  // refcount table and cache, the free hint, the quarantine, the extent batch.
  // Open: reads the refcount table and sets up the refcount cache.
  Status LoadRefcounts(uint64_t file_size_bytes, bool writethrough);
  Result<uint64_t> GetRefcount(uint64_t cluster_index);
  Status UpdateRefcount(uint64_t cluster_index, int64_t delta);
  // Allocates `count` contiguous clusters with refcount 1; returns the host offset.
  Result<uint64_t> AllocateClusters(uint64_t count);
  // One cluster for data or an L2 table; the extent policy serves it from its batch.
  Result<uint64_t> AllocateCluster();
  // Decreases the refcounts; a cluster that reaches 0 is quarantined until
  // the next durable flush when the policy says so (R5).
  Status FreeClusters(uint64_t host_offset, uint64_t count);
  Status ReleaseExtent();
  // After a durable flush or journal commit: the unlinks and refcount
  // decreases of the quarantined clusters are durable, so they may be reused.
  void ReleaseQuarantine();
  // The refcount cache, for the flush protocols: its dirty blocks written
  // back (in dependency order), flushed under `rule`, their count, and the
  // barrier that orders them (Barrier(rule, refcount_cache())).
  Status WriteBackRefcounts();
  Status FlushRefcounts(Rule rule);
  void IgnoreRefcountDependencies();
  uint64_t dirty_refcount_blocks() const;
  MetadataCache* refcount_cache() { return refcount_cache_.get(); }
  // One past the highest cluster index the image uses.
  uint64_t allocated_end() const { return allocated_end_; }
  // Internal to refcounts.cc.
  Result<uint64_t> EnsureRefcountBlock(uint64_t table_index);
  Status GrowRefcountTable(uint64_t needed_table_index);
  Result<uint64_t> FindFreeClusters(uint64_t count);

  // ---- journal_image.cc ----
  Status RecoverJournal();  // open, before the tables load: replay a dirty journal
  Status AttachJournal();   // open, at the end: the journal policy's journal, created or reset
  Status CreateJournal();
  Status FlushJournal();
  // After each guest operation, and between the clusters of one, under the
  // journal policy: commits early when the open transaction nears half the
  // ring, so that neither a run of writes between two guest flushes nor one
  // large write outgrows a small journal. A cluster boundary is a safe
  // commit point: each cluster's metadata change is complete there, and a
  // guest write need not be atomic (old-or-new per sector).
  Status AfterGuestOp();  // FlushAll under the journal policy: one commit
  Status AtClusterBoundary() { return AfterGuestOp(); }
  Status SetJournalDirtyInPlace(bool dirty);
  JournalOptions EffectiveJournalOptions() const;

  // ---- data_file.cc: the external data file ----
  Status OpenDataFile();  // open: the data file the header names
  // The host offset of a new data cluster for `guest_cluster`: with a data
  // file the identity (no refcount), else AllocateCluster().
  Result<uint64_t> AllocateDataCluster(uint64_t guest_cluster);
  // With a data file: Corruption (and the corrupt bit) unless entry maps
  // the guest cluster to the same offset in the data file.
  Status CheckDataFileMapping(uint64_t guest_cluster, uint64_t entry);
  Status ZeroRawDataCluster(uint64_t guest_cluster);
  Status ResizeDataFile(uint64_t old_size_bytes, uint64_t new_size_bytes);

  // ---- snapshots.cc ----
  Status CreateSnapshot(const std::string& name);
  Status DeleteSnapshot(const std::string& name);
  Status ApplySnapshot(const std::string& name_or_id);
  Status ShareEntryClusters(uint64_t entry, int64_t delta);
  Status ShareL2Tables(const std::vector<uint64_t>& l1);
  Result<uint64_t> WriteL1Copy(const std::vector<uint64_t>& l1);
  Status ReleaseTree(const std::vector<uint64_t>& l1, uint64_t l1_offset, uint64_t l1_clusters);
  Status RestoreCopied();
  Status WriteSnapshotTable(const std::vector<SnapshotEntry>& entries);
  Status BeginSharingChange();
  Status CheckSharingFits(const std::vector<uint64_t>& l1);
  Status EndSharingChange();

  // ---- amend.cc ----
  Status Amend(const AmendOptions& options);
  Status ChangeRefcountOrder(uint32_t new_order);
  Status ExpandZeroClusters();
  Status ExpandZeroClustersInL1(const std::vector<uint64_t>& l1, std::set<uint64_t>& done);
  Status Downgrade();
  Status Upgrade();
  Status SetLazyRefcounts(bool on);

  // ---- bitmaps.cc ----
  struct LoadedBitmap {
    BitmapEntry entry;          // flags as they will be stored
    std::vector<uint8_t> bits;  // loaded: one bit per granule of the disk
    bool loaded = false;        // false: kept as found (in_use at open, too large, unparsable)
  };
  bool bitmaps_kept() const;  // read-write, v3, not under the journal policy
  Status LoadBitmaps();
  Status MarkBitmapsInUse();
  Status BeforeGuestChange(uint64_t offset, uint64_t length);
  void SetBitmapRange(LoadedBitmap& bitmap, uint64_t offset, uint64_t length);
  Status ResizeBitmaps(uint64_t old_size, uint64_t new_size);
  Status StoreBitmaps();
  LoadedBitmap* FindBitmap(const std::string& name);
  Result<LoadedBitmap*> UsableBitmap(const std::string& name);
  Status AddBitmap(const std::string& name, uint64_t granularity_bytes, bool enabled);
  Status RemoveBitmap(const std::string& name);
  Status ClearBitmap(const std::string& name);
  Status EnableBitmap(const std::string& name, bool enabled);
  Status MergeBitmap(const std::string& target, const std::string& source);

  // ---- cluster_io.cc ----
  // The entry's cluster type. With extended L2 a non-compressed entry is
  // kUnallocated (no host cluster) or kNormal (a host cluster); its bitmap
  // says, per subcluster, allocated, zero or neither (read from below).
  Result<ClusterType> Classify(const L2Slot& slot);
  Result<L2Slot> LookupL2(uint64_t guest_cluster);  // entry 0 when no L2 table
  Result<L2Slot> LookupL2ForWrite(uint64_t guest_cluster);
  Result<uint64_t> AllocateL2Table(uint64_t l1_index);
  // Sets the entry (and, with extended L2, its bitmap word).
  Status SetL2Entry(const L2Slot& slot, uint64_t entry, uint64_t bitmap);
  Status ReadCluster(uint64_t guest_cluster, uint64_t in_cluster, std::span<uint8_t> out);
  Status ReadFromBacking(uint64_t guest_offset, std::span<uint8_t> out);
  Status WriteCluster(uint64_t guest_cluster, uint64_t in_cluster, std::span<const uint8_t> data);
  // Extended L2: a write into the clusters' subclusters.
  Status WriteSubclusters(const L2Slot& slot, ClusterType type, uint64_t guest_cluster,
                          uint64_t in_cluster, std::span<const uint8_t> data);
  Status ReadHost(uint64_t host, std::span<uint8_t> out);
  enum class ZeroMode : uint8_t { kKeepAllocation, kUnmap, kDiscard };
  Status ZeroCluster(uint64_t guest_cluster, ZeroMode mode);
  // Extended L2: whole subclusters [first, first + count) of one cluster read
  // as zeroes. false: the cluster is compressed or shared, so the caller
  // must write explicit zeroes (a discard may simply skip it).
  Result<bool> ZeroSubclusters(uint64_t guest_cluster, uint32_t first, uint32_t count,
                               ZeroMode mode);
  Status FreeEntryClusters(uint64_t entry, ClusterType type);
  Status AppendMap(uint64_t start, uint64_t length, uint32_t depth, std::vector<MapExtent>& out);

  // ---- compression.cc ----
  Status ReadCompressed(uint64_t entry, uint64_t in_cluster, std::span<uint8_t> out);
  Status WriteCompressedCluster(uint64_t guest_cluster, std::span<const uint8_t> cluster);
  // Packs `bytes` of compressed data into the current partially filled host
  // cluster (or a fresh one); raises each touched cluster's refcount by one.
  Result<uint64_t> AllocateCompressedBytes(uint64_t bytes);
  Status RaiseSharedRefcount(uint64_t cluster_index);
  Status FreeCompressedEntry(uint64_t entry);
  // The allocator calls this when `cluster_index`'s refcount reaches 0: the
  // packing cursor must not point into a freed cluster.
  void ForgetCompressedCursor(uint64_t cluster_index);

  // ---- commit.cc ----
  // The guest cluster's L2 entry (and bitmap word) set to 0, so that it
  // reads the backing file; its host cluster freed after (R4).
  Status DropCluster(uint64_t guest_cluster);

  uint64_t cluster_bytes() const { return header_.cluster_bytes(); }
  uint64_t refcount_block_entries() const {
    return format::RefcountBlockEntries(header_.cluster_bits, header_.refcount_order);
  }

  BlockDevice& device_;
  OpenOptions options_;
  OrderingRules rules_;  // what this image orders, and how
  EngineStats stats_;
  CountingIo io_;
  Header header_;
  bool read_only_ = false;
  std::vector<uint64_t> l1_table_;  // active L1, host byte order
  std::unique_ptr<MetadataCache> l2_cache_;

  // The allocator's state: refcounts.cc only (the interface is above).
  std::vector<uint64_t> refcount_table_;  // host byte order
  std::unique_ptr<MetadataCache> refcount_cache_;
  uint64_t free_cluster_hint_ = 0;  // no free cluster below this index (except quarantined ones)
  uint64_t allocated_end_ = 0;      // one past the highest cluster index the image uses
  // Clusters freed since the last flush: not reused until their unlink and
  // refcount decrease are durable (R5).
  std::set<uint64_t> quarantine_;
  std::vector<uint64_t> extent_;  // clusters reserved (refcount 1, durable) by the extent policy
  // Where the next compressed cluster goes: a byte offset inside the host
  // cluster compressed writes are filling, or 0 for none (compression.cc).
  uint64_t compressed_cursor_ = 0;

  // A snapshot's sharing change is under way (R8): the dirty bit must stay.
  bool sharing_change_open_ = false;

  // Persistent bitmaps (bitmaps.cc): in memory, the directory on disk, and
  // whether this session set in_use on it or changed a bitmap.
  std::vector<LoadedBitmap> bitmaps_;
  std::vector<BitmapEntry> stored_bitmaps_;
  bool bitmaps_in_use_ = false;
  bool bitmaps_changed_ = false;

  std::unique_ptr<Journal> journal_;  // set under the journal policy (or a read-only replay)
  ReplayReport replay_report_;        // what replay on open did (I6)

  std::unique_ptr<BlockDevice> data_device_;  // the external data file, when the image has one

  std::unique_ptr<BlockDevice> backing_device_;
  std::unique_ptr<Image> backing_image_;  // null for a raw backing file
  uint64_t backing_size_bytes_ = 0;
};

}  // namespace qcrash::engine
