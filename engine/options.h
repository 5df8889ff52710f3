// Options chosen when an image is created or opened: the metadata ordering
// policy, guest-data ordering, cache sizes and the known-bug switches.
#pragma once

#include <array>
#include <cstddef>
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
  kExtent,   // allocate clusters in batches, one refcount update per batch: leaks, never corrupts
  kUnsafe,   // no ordering at all: the harness must catch it
  kJournal,  // every L1, L2, refcount and header update goes through journal transactions
};

// How guest data is ordered against the L2 entry that exposes it (I5).
enum class DataOrdering : uint8_t {
  kStrict,  // data durable before an L2 entry exposes a newly allocated host cluster
  kQemu,    // QEMU's choice: a full-cluster allocating write is not flushed before its L2 entry
};

enum class Preallocation : uint8_t { kOff, kMetadata, kFalloc, kFull };

// The header's compression_type byte (offset 104): how compressed clusters
// are encoded. Anything but zlib sets incompatible bit 3.
enum class CompressionType : uint8_t { kZlib = 0, kZstd = 1 };

// Historical bug classes (DESIGN.md, "Known-bug catalogue"). All off by default.
struct OrderingRules;  // engine/ordering.h

// The number of ordering rules (engine/ordering.h Rule).
inline constexpr size_t kOrderingRuleCount = 18;

struct BugSwitches {
  bool skip_refcount_barrier = false;  // an L2 entry may reach disk before its cluster's refcount
  bool early_free_reuse = false;       // a freed cluster is reused before its unlink is durable
  bool zero_cluster_realloc = false;  // writing an allocated zero cluster moves it to a new cluster
  bool no_revoke = false;             // journal: freeing journalled metadata issues no revoke
  bool unchecksummed_journal = false;       // journal: transactions carry no checksums
  bool failed_write_kept_clean = false;     // a metadata write that fails leaves its table clean
  bool snapshot_without_dirty_bit = false;  // snapshot create/delete outside the dirty bit (R8)
  bool bitmap_no_inuse = false;  // tracked guest writes may land before a bitmap's in_use (R10)
  bool subcluster_bit_before_data = false;  // extended L2: allocation bits before the data (R3)
  bool compressed_sole_user = false;  // freeing a compressed cluster frees its whole host cluster
  bool data_file_no_flush = false;    // the data file is not flushed before the L2 entry (R12)
  // amend refcount_bits=: the header switch to the new refcount structures
  // is not ordered after them (R6's barrier skipped)
  bool amend_header_before_refcounts = false;
  // amend compat=0.10: the version 2 header is not ordered after the
  // expanded zero clusters (the downgrade's barrier skipped)
  bool amend_v2_before_expansion = false;
  bool shrink_header_before_tail = false;  // a shrink's size durable before its tail is unmapped
  bool rebase_header_before_copy = false;  // a rebase's new backing name before its copies (R6)
  bool commit_empty_before_base_flush = false;  // commit empties the top before the base's flush
  bool any() const {
    return skip_refcount_barrier || early_free_reuse || zero_cluster_realloc || no_revoke ||
           unchecksummed_journal || failed_write_kept_clean || snapshot_without_dirty_bit ||
           bitmap_no_inuse || subcluster_bit_before_data || compressed_sole_user ||
           data_file_no_flush || amend_header_before_refcounts || amend_v2_before_expansion ||
           shrink_header_before_tail || rebase_header_before_copy || commit_empty_before_base_flush;
  }
};

const char* PolicyName(OrderingPolicy policy);
Result<OrderingPolicy> ParsePolicy(std::string_view name);
const char* PreallocationName(Preallocation preallocation);
Result<Preallocation> ParsePreallocation(std::string_view name);

// Opens the backing file an image names. The engine never creates devices
// itself; the caller (CLI, tests) resolves the name relative to the image.
using BackingOpener =
    std::function<Result<std::unique_ptr<BlockDevice>>(const std::string& backing_file)>;

// Opens the external data file an image names (incompatible bit 2, header
// extension "DATA"), read-write unless the image is opened read-only. Like
// the backing opener, the caller resolves the name relative to the image.
using DataFileOpener = std::function<Result<std::unique_ptr<BlockDevice>>(
    const std::string& data_file, bool read_only)>;

// The journal's spec variants (the draft's open questions, docs/journal-variants.md)
// and its geometry. Used when the journal policy creates a journal.
enum class JournalCommit : uint8_t {
  kHeader,          // committed_seq in the journal header (FUA write after one flush)
  kDescriptorFlag,  // Kevin's alternative: a commit flag rewritten in the descriptor
};
enum class JournalRecovery : uint8_t {
  kHeaderBookkeeping,  // synced/committed pointers in the journal header
  kScanOnly,           // Stefan's proposal: find transactions by scanning the ring
};
enum class JournalTerminator : uint8_t {
  kBlankBlock,  // a zeroed block after the last transaction ends the chain
  kEscapeFlag,  // no terminator; a leading "qjbk" in data blocks is escaped
};
struct JournalOptions {
  uint32_t block_order = 9;  // 512-byte journal blocks
  uint64_t size_bytes = uint64_t{1} << 20;
  JournalCommit commit = JournalCommit::kHeader;
  JournalRecovery recovery = JournalRecovery::kHeaderBookkeeping;
  JournalTerminator terminator = JournalTerminator::kBlankBlock;
  bool checksums = true;
  bool byte_sum_checksum = false;  // the draft's ones'-complement byte sum instead of CRC32
};

struct OpenOptions {
  bool read_only = false;
  OrderingPolicy policy = OrderingPolicy::kOrdered;
  DataOrdering data_ordering = DataOrdering::kStrict;
  uint32_t l2_cache_tables = 32;  // small values force eviction writes
  uint32_t refcount_cache_blocks = 8;
  uint32_t extent_clusters = 32;  // batch size of the extent policy
  BugSwitches faults;
  BackingOpener open_backing;       // unset: a backing file is an error on read
  DataFileOpener open_data_file;    // unset: an image with a data file does not open
  uint32_t max_backing_depth = 16;  // guards against backing chains that loop
  JournalOptions journal;           // the journal policy's variant and geometry
  // A row of the ordering table to use instead of the policy's (a policy
  // being designed, or a test's); unset: RulesFor(policy, faults).
  std::shared_ptr<const OrderingRules> rules;
};

struct CreateOptions {
  uint64_t size_bytes = 0;
  uint32_t version = 3;         // 2 = compat 0.10, 3 = compat 1.1
  uint32_t cluster_bits = 16;   // 9..21
  uint32_t refcount_order = 4;  // 0..6 (v2: 4 only)
  bool lazy_refcounts = false;
  bool extended_l2 = false;  // 128-bit L2 entries, 32 subclusters (v3, clusters >= 16 KiB)
  Preallocation preallocation = Preallocation::kOff;
  std::string backing_file;
  std::string backing_format;  // "raw", "qcow2" or empty
  // How compressed clusters are encoded (header byte 104); zstd needs v3.
  CompressionType compression_type = CompressionType::kZlib;
  // An external data file (qemu-img create -o data_file=NAME): guest data
  // lives there at host offset = guest offset, the qcow2 file holds only
  // metadata. Create opens it through OpenOptions::open_data_file; the
  // caller has created it (sized to the disk when raw).
  std::string data_file;
  bool data_file_raw = false;  // the data file is a valid raw image (every cluster mapped)
};

// What the engine did, for "flushes per guest write" and friends.
struct EngineStats {
  uint64_t guest_writes = 0;        // Write / WriteZeroes / Discard calls
  uint64_t guest_flushes = 0;       // Flush calls
  uint64_t device_flushes = 0;      // flushes issued to the device
  uint64_t metadata_writes = 0;     // header, L1, L2, refcount writes
  uint64_t data_writes = 0;         // guest data and COW writes
  uint64_t clusters_allocated = 0;  // host clusters allocated (data and metadata)
  uint64_t eviction_writes = 0;     // metadata written because a cache was full
  // Device flushes by the rule that asked for them (engine/ordering.h Rule
  // order), and barriers a journal transaction made free.
  std::array<uint64_t, kOrderingRuleCount> flushes_by_rule{};
  uint64_t transaction_barriers = 0;
};

}  // namespace qcrash::engine
