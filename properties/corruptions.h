// Corruption classes: each turns a valid image (as bytes) into a corrupt one
// of one class, and names the guest clusters whose content the corruption
// itself changes (the rest must survive a repair). The check tests use them,
// and so does the suite's corrupt-start pass: the repair of each class is
// crashed at its own writes, and no crash state may be worse than the
// corrupt image it started from (invariant I8).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qcrash::properties {

enum class Corruption : uint8_t {
  kLeak,                     // a free cluster gets refcount 1
  kDanglingFree,             // an L2 entry points to a cluster with refcount 0
  kSharedCluster,            // two L2 entries point to one cluster
  kCopiedFlipped,            // OFLAG_COPIED wrong on a data cluster
  kCopiedL1Flipped,          // OFLAG_COPIED wrong on an L1 entry
  kPastEof,                  // an L2 entry points past the end of the file
  kRefcountTableReserved,    // reserved bits in a refcount table entry
  kRefcountTableMisaligned,  // a refcount block offset not cluster aligned
  kRefcountTablePastEof,     // a refcount block past the end of the file
  kRefcountTableOverlap,     // a refcount block pointer onto an L2 table
  kL2Reserved,               // reserved bits in an L2 entry
  kL1Reserved,               // reserved bits in an L1 entry
  kMisalignedData,           // a data cluster offset not cluster aligned
  kL2IntoMetadata,           // an L2 entry points at the refcount table
  kRefcountDecrement,        // a data cluster's refcount one too low
  kRefcountIncrement,        // a data cluster's refcount one too high
  kDirtyLeak,                // dirty bit (lazy refcounts) plus a leak
  kCompressedCopied,         // OFLAG_COPIED on a compressed entry
  kMarkedCorrupt,  // a shared cluster, and the corrupt bit set (as QEMU sets it on an overlap)
};
inline constexpr int kCorruptionCount = 19;

inline const char* CorruptionName(Corruption c) {
  static const char* const kNames[kCorruptionCount] = {"leak",
                                                       "dangling-free",
                                                       "shared-cluster",
                                                       "copied-flipped",
                                                       "copied-l1-flipped",
                                                       "past-eof",
                                                       "reftable-reserved",
                                                       "reftable-misaligned",
                                                       "reftable-past-eof",
                                                       "reftable-overlap",
                                                       "l2-reserved",
                                                       "l1-reserved",
                                                       "misaligned-data",
                                                       "l2-into-metadata",
                                                       "refcount-decrement",
                                                       "refcount-increment",
                                                       "dirty-leak",
                                                       "compressed-copied",
                                                       "marked-corrupt"};
  return kNames[static_cast<int>(c)];
}

struct Applied {
  bool ok = false;                          // false: this image has nothing to corrupt that way
  std::vector<uint64_t> affected_clusters;  // guest clusters whose content the corruption changes
};

// Raw header fields of an image held as bytes.
struct ImageLayout {
  uint32_t version = 0;
  uint32_t cluster_bits = 0;
  uint64_t cluster_bytes = 0;
  uint64_t l1_offset = 0;
  uint32_t l1_size = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_order = 4;
};
ImageLayout LayoutOf(const std::vector<uint8_t>& image);

// One non-zero entry of an active L2 table.
struct L2Slot {
  uint64_t entry_offset = 0;  // host offset of the L2 entry
  uint64_t entry = 0;
  uint64_t guest_cluster = 0;
};
// Every non-zero entry of the active L2 tables.
std::vector<L2Slot> ActiveL2Slots(const std::vector<uint8_t>& image);

// "dangling-free" -> Corruption::kDanglingFree; nullopt for an unknown name.
std::optional<Corruption> ParseCorruption(const std::string& name);

// Applies `c` to `image`; `choice` picks which entry (taken modulo the candidates).
Applied ApplyCorruption(std::vector<uint8_t>& image, Corruption c, uint64_t choice);

}  // namespace qcrash::properties
