// Options chosen when an image is created or opened: the metadata ordering
// policy, guest-data ordering, cache sizes and the known-bug switches.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "engine/block_device.h"
#include "engine/status.h"

namespace qcrash::engine {

// How metadata updates reach the disk (DESIGN.md, "Metadata ordering policies").
enum class OrderingPolicy : uint8_t {
  kWritethrough,  // flush after every metadata write
  kOrdered,       // write-back caches; refcount blocks durable before the L2 tables using them
  kLazy,          // lazy refcounts under the dirty bit; rebuilt on open after a crash
  kExtent,        // allocate clusters in batches, one refcount update per batch: leaks, never corrupts
  kUnsafe,        // no ordering at all: the harness must catch it
};

// How guest data is ordered against the L2 entry that exposes it (I5).
enum class DataOrdering : uint8_t {
  kStrict,  // data durable before an L2 entry exposes a newly allocated host cluster
  kQemu,    // QEMU's choice: a full-cluster allocating write is not flushed before its L2 entry
};

enum class Preallocation : uint8_t { kOff, kMetadata, kFalloc, kFull };

// Historical bug classes (DESIGN.md, "Known-bug catalogue"). All off by default.
struct BugSwitches {
  bool skip_refcount_barrier = false;  // an L2 entry may reach disk before its cluster's refcount
  bool early_free_reuse = false;       // a freed cluster is reused before its unlink is durable
  bool zero_cluster_realloc = false;   // writing an allocated zero cluster moves it to a new cluster
  bool any() const { return skip_refcount_barrier || early_free_reuse || zero_cluster_realloc; }
};

// Turns "skip-refcount-barrier" (the CLI's --fault names) into a switch.
Status EnableFault(std::string_view name, BugSwitches& switches);
const char* PolicyName(OrderingPolicy policy);
Result<OrderingPolicy> ParsePolicy(std::string_view name);
const char* PreallocationName(Preallocation preallocation);
Result<Preallocation> ParsePreallocation(std::string_view name);

// Opens the backing file an image names. The engine never creates devices
// itself; the caller (CLI, tests) resolves the name relative to the image.
using BackingOpener =
    std::function<Result<std::unique_ptr<BlockDevice>>(const std::string& backing_file)>;

struct OpenOptions {
  bool read_only = false;
  OrderingPolicy policy = OrderingPolicy::kOrdered;
  DataOrdering data_ordering = DataOrdering::kStrict;
  uint32_t l2_cache_tables = 32;        // small values force eviction writes
  uint32_t refcount_cache_blocks = 8;
  uint32_t extent_clusters = 32;        // batch size of the extent policy
  BugSwitches faults;
  BackingOpener open_backing;           // unset: a backing file is an error on read
  uint32_t max_backing_depth = 16;      // guards against backing chains that loop
};

struct CreateOptions {
  uint64_t size_bytes = 0;
  uint32_t version = 3;        // 2 = compat 0.10, 3 = compat 1.1
  uint32_t cluster_bits = 16;  // 9..21
  uint32_t refcount_order = 4; // 0..6 (v2: 4 only)
  bool lazy_refcounts = false;
  Preallocation preallocation = Preallocation::kOff;
  std::string backing_file;
  std::string backing_format;  // "raw", "qcow2" or empty
};

// What the engine did, for "flushes per guest write" and friends.
struct EngineStats {
  uint64_t guest_writes = 0;       // Write / WriteZeroes / Discard calls
  uint64_t guest_flushes = 0;      // Flush calls
  uint64_t device_flushes = 0;     // flushes issued to the device
  uint64_t metadata_writes = 0;    // header, L1, L2, refcount writes
  uint64_t data_writes = 0;        // guest data and COW writes
  uint64_t clusters_allocated = 0; // host clusters allocated (data and metadata)
  uint64_t eviction_writes = 0;    // metadata written because a cache was full
};

}  // namespace qcrash::engine
