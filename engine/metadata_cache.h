// MetadataCache: a write-back cache of cluster-sized metadata tables (L2
// tables or refcount blocks) with the dependencies between caches that make
// write-back safe.
//
// A dependency "L2 cache depends on refcount cache" means: before any L2
// table is written to the device, every dirty refcount block is written and
// a device flush completes. "Depends on flush" means a device flush must
// complete before the next table of this cache is written (guest data
// before the L2 entry that exposes it). Dependencies are set when an update
// needs them and cleared once satisfied, as in QEMU's qcow2-cache.c, which
// lets refcount increases and frees order themselves in opposite directions
// without a cycle.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/block_device.h"
#include "engine/options.h"
#include "engine/ordering.h"
#include "engine/status.h"

namespace qcrash::engine {

// Where metadata goes under the journal policy (engine/journal.h): writes
// join the open transaction, reads see journalled-but-unsynced bytes.
class MetadataSink {
 public:
  virtual ~MetadataSink() = default;
  virtual Status Write(uint64_t offset_bytes, std::span<const uint8_t> data) = 0;
  virtual Status Read(uint64_t offset_bytes, std::span<uint8_t> out) = 0;
};

// The device as the engine's metadata paths see it: counts every write and flush.
// With an external data file (set_data_device), guest data reads and writes
// go to that second device; every flush of the image flushes the data file
// first (data before the metadata that may name it), and FlushDataFile
// flushes the data file alone (R12, before an L2 write-back).
class CountingIo {
 public:
  CountingIo(BlockDevice& device, EngineStats& stats) : device_(device), stats_(stats) {}
  // The external data file (nullptr: guest data lives in the image file).
  void set_data_device(BlockDevice* data_device) { data_device_ = data_device; }
  BlockDevice& data_device() { return data_device_ != nullptr ? *data_device_ : device_; }
  bool has_data_device() const { return data_device_ != nullptr; }
  // Flushes the data file only, when data was written to it since its last
  // flush; counted under `why`.
  Status FlushDataFile(Rule why);
  Status ReadMetadata(uint64_t offset_bytes, std::span<uint8_t> out);
  Status WriteMetadata(uint64_t offset_bytes, std::span<const uint8_t> data);
  Status WriteData(uint64_t offset_bytes, std::span<const uint8_t> data);
  Status ReadData(uint64_t offset_bytes, std::span<uint8_t> out);
  // A device flush, counted under the rule that needs it. Whether a rule
  // flushes at all is the ordering table's business (engine/ordering.h):
  // under the journal policy its barriers never get here.
  Status DeviceFlush(Rule why);
  void set_sink(MetadataSink* sink) { sink_ = sink; }
  BlockDevice& device() { return device_; }
  EngineStats& stats() { return stats_; }
  // Data writes since the last completed flush (strict data ordering needs them durable).
  bool data_pending() const { return data_pending_; }
  // Any write (data or metadata) since the last completed flush.
  bool writes_pending() const { return writes_pending_; }
  // Counts completed flushes: a write made in generation g is durable once
  // the generation passes g.
  uint64_t flush_generation() const { return flush_generation_; }

 private:
  BlockDevice& device_;
  EngineStats& stats_;
  BlockDevice* data_device_ = nullptr;
  bool data_file_pending_ = false;  // writes to the data file since its last flush
  MetadataSink* sink_ = nullptr;
  bool data_pending_ = false;
  bool writes_pending_ = false;
  uint64_t flush_generation_ = 0;
};

class MetadataCache {
 public:
  MetadataCache(std::string name, CountingIo& io, uint32_t capacity_tables, uint32_t table_bytes,
                bool writethrough);

  // The table at host_offset, read from the device on a miss. The pointer is
  // valid until the next call on this cache.
  Result<uint8_t*> Get(uint64_t host_offset);
  // A new, zero-filled table at host_offset; nothing is read.
  Result<uint8_t*> GetNew(uint64_t host_offset);
  // Records that the table changed. A writethrough cache writes it (after its
  // dependencies) and flushes at once.
  Status MarkDirty(uint64_t host_offset);
  // Writes every dirty table (dependencies first) and flushes the device
  // (unless nothing was written since the last flush), for rule `why`.
  Status Flush(Rule why);
  // Writes every dirty table without flushing (dependencies still honoured).
  Status WriteBack();
  // Forgets a table that was freed, without writing it.
  void Drop(uint64_t host_offset);

  // Tables of this cache may be written only after `other` is flushed
  // (rule `why`: R1 for L2 on refcounts, R4 for refcounts on L2).
  Status SetDependency(MetadataCache* other, Rule why);
  // A device flush must complete before the next table of this cache is
  // written (R3: the guest data they name).
  void DependOnFlush() { depends_on_flush_ = true; }
  // Disables all dependencies (the unsafe policy and the skip-refcount-barrier switch).
  void set_ignore_dependencies(bool ignore) { ignore_dependencies_ = ignore; }
  void set_keep_dirty_on_failed_write(bool keep) { keep_dirty_on_failed_write_ = keep; }
  // With a data file, DependOnFlush flushes that file (R12); false: it does
  // not (the ordering table's R12 cell is none).
  void set_data_file_barrier(bool barrier) { data_file_barrier_ = barrier; }
  bool has_dirty() const;
  size_t dirty_count() const;
  const std::string& name() const { return name_; }

 private:
  struct Entry {
    uint64_t host_offset = 0;
    std::vector<uint8_t> bytes;
    bool dirty = false;
    uint64_t last_use = 0;
  };
  Result<Entry*> Slot(uint64_t host_offset);
  Status SatisfyDependencies();
  Status WriteEntry(Entry& entry);

  std::string name_;
  CountingIo& io_;
  uint32_t capacity_tables_;
  uint32_t table_bytes_;
  bool writethrough_;
  bool ignore_dependencies_ = false;
  bool keep_dirty_on_failed_write_ = true;  // OrderingRules::keep_dirty_on_failed_write
  bool data_file_barrier_ = true;
  MetadataCache* depends_on_ = nullptr;
  Rule depends_on_rule_ = Rule::kRefcountBeforePointer;
  bool depends_on_flush_ = false;
  uint64_t clock_ = 0;
  // Generation of our last table write; ~0 when none is waiting for a flush.
  uint64_t unflushed_generation_ = ~uint64_t{0};
  std::vector<Entry> entries_;
  std::unordered_map<uint64_t, size_t> index_;
};

}  // namespace qcrash::engine
