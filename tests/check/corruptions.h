// Corruption classes for the check tests: each turns a valid image (as
// bytes) into a corrupt one of one class, and names the guest clusters whose
// content the corruption itself changes (the rest must survive a repair).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tests/check/check_test_util.h"

namespace qcrash::check_test {

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
};
inline constexpr int kCorruptionCount = 18;

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
                                                       "compressed-copied"};
  return kNames[static_cast<int>(c)];
}

struct Applied {
  bool ok = false;                          // false: this image has nothing to corrupt that way
  std::vector<uint64_t> affected_clusters;  // guest clusters whose content the corruption changes
};

namespace corruption_detail {

inline uint64_t RefcountAt(const std::vector<uint8_t>& image, uint64_t cluster, bool set,
                           uint64_t value) {
  const ImageLayout l = LayoutOf(image);
  const uint64_t per = f::RefcountBlockEntries(l.cluster_bits, l.refcount_order);
  const uint64_t entry = Load64(image, l.refcount_table_offset + (cluster / per) * 8);
  const uint64_t block = entry & f::kRefcountTableOffsetMask;
  if (block == 0 || block + l.cluster_bytes > image.size()) return ~uint64_t{0};
  std::span<uint8_t> bytes(const_cast<uint8_t*>(&image[block]), l.cluster_bytes);
  if (set) f::SetRefcount(bytes, cluster % per, l.refcount_order, value);
  return f::GetRefcount(bytes, cluster % per, l.refcount_order);
}

// Appends one cluster (filled with `fill`) and returns its offset.
inline uint64_t AppendCluster(std::vector<uint8_t>& image, uint8_t fill) {
  const ImageLayout l = LayoutOf(image);
  const uint64_t offset = (image.size() + l.cluster_bytes - 1) & ~(l.cluster_bytes - 1);
  image.resize(offset + l.cluster_bytes, fill);
  return offset;
}

inline std::vector<L2Slot> StandardSlots(const std::vector<uint8_t>& image) {
  std::vector<L2Slot> out;
  for (const L2Slot& s : ActiveL2Slots(image)) {
    if (!(s.entry & f::kOflagCompressed) && (s.entry & f::kL2EntryOffsetMask)) out.push_back(s);
  }
  return out;
}

inline std::vector<L2Slot> CompressedSlots(const std::vector<uint8_t>& image) {
  std::vector<L2Slot> out;
  for (const L2Slot& s : ActiveL2Slots(image)) {
    if (s.entry & f::kOflagCompressed) out.push_back(s);
  }
  return out;
}

inline uint64_t FirstL1Entry(const std::vector<uint8_t>& image) {
  const ImageLayout l = LayoutOf(image);
  for (uint32_t i = 0; i < l.l1_size; ++i) {
    if (Load64(image, l.l1_offset + i * 8) != 0) return l.l1_offset + i * 8;
  }
  return 0;
}

inline bool Leak(std::vector<uint8_t>& image) {
  const ImageLayout l = LayoutOf(image);
  const uint64_t offset = AppendCluster(image, 0);
  return RefcountAt(image, offset >> l.cluster_bits, true, 1) == 1;
}

}  // namespace corruption_detail

// Applies `c` to `image`; `choice` picks which entry (taken modulo the candidates).
inline Applied ApplyCorruption(std::vector<uint8_t>& image, Corruption c, uint64_t choice) {
  using namespace corruption_detail;  // NOLINT
  const ImageLayout l = LayoutOf(image);
  const std::vector<L2Slot> slots = StandardSlots(image);
  const bool have_slot = !slots.empty();
  const L2Slot slot = have_slot ? slots[choice % slots.size()] : L2Slot{};
  const uint64_t slot_cluster = (slot.entry & f::kL2EntryOffsetMask) >> l.cluster_bits;
  Applied a;
  switch (c) {
    case Corruption::kLeak:
      a.ok = Leak(image);
      break;
    case Corruption::kDanglingFree: {
      if (!have_slot) break;
      const uint64_t offset = AppendCluster(image, 0xAB);
      Store64(image, slot.entry_offset, (slot.entry & ~f::kL2EntryOffsetMask) | offset);
      a = {true, {slot.guest_cluster}};
      break;
    }
    case Corruption::kSharedCluster: {
      if (slots.size() < 2) break;
      const L2Slot& other = slots[(choice + 1) % slots.size()];
      Store64(image, other.entry_offset,
              (other.entry & ~f::kL2EntryOffsetMask) | (slot.entry & f::kL2EntryOffsetMask));
      a = {true, {other.guest_cluster}};
      break;
    }
    case Corruption::kCopiedFlipped:
      if (!have_slot) break;
      Store64(image, slot.entry_offset, slot.entry ^ f::kOflagCopied);
      a.ok = true;
      break;
    case Corruption::kCopiedL1Flipped: {
      const uint64_t at = FirstL1Entry(image);
      if (at == 0) break;
      Store64(image, at, Load64(image, at) ^ f::kOflagCopied);
      a.ok = true;
      break;
    }
    case Corruption::kPastEof:
      if (!have_slot) break;
      Store64(image, slot.entry_offset,
              (slot.entry & ~f::kL2EntryOffsetMask) |
                  (((image.size() >> l.cluster_bits) + 4) << l.cluster_bits));
      a = {true, {slot.guest_cluster}};
      break;
    case Corruption::kRefcountTableReserved:
      Store64(image, l.refcount_table_offset, Load64(image, l.refcount_table_offset) | 1);
      a.ok = true;
      break;
    case Corruption::kRefcountTableMisaligned:
      if (l.cluster_bytes <= 512) break;
      Store64(image, l.refcount_table_offset, Load64(image, l.refcount_table_offset) | 0x200);
      a.ok = true;
      break;
    case Corruption::kRefcountTablePastEof:
      Store64(image, l.refcount_table_offset,
              ((image.size() >> l.cluster_bits) + 4) << l.cluster_bits);
      a.ok = true;
      break;
    case Corruption::kRefcountTableOverlap: {
      const uint64_t at = FirstL1Entry(image);
      if (at == 0) break;
      Store64(image, l.refcount_table_offset, Load64(image, at) & f::kL1EntryOffsetMask);
      a.ok = true;
      break;
    }
    case Corruption::kL2Reserved:
      if (!have_slot) break;
      Store64(image, slot.entry_offset, slot.entry | 2);
      a.ok = true;
      break;
    case Corruption::kL1Reserved: {
      const uint64_t at = FirstL1Entry(image);
      if (at == 0) break;
      Store64(image, at, Load64(image, at) | 2);
      a.ok = true;
      break;
    }
    case Corruption::kMisalignedData:
      if (!have_slot || l.cluster_bytes <= 512) break;
      Store64(image, slot.entry_offset, slot.entry | 0x200);
      a = {true, {slot.guest_cluster}};
      break;
    case Corruption::kL2IntoMetadata:
      if (!have_slot) break;
      Store64(image, slot.entry_offset,
              (slot.entry & ~f::kL2EntryOffsetMask) | l.refcount_table_offset);
      a = {true, {slot.guest_cluster}};
      break;
    case Corruption::kRefcountDecrement:
    case Corruption::kRefcountIncrement: {
      if (!have_slot) break;
      const uint64_t old = RefcountAt(image, slot_cluster, false, 0);
      const bool up = c == Corruption::kRefcountIncrement;
      if (old == ~uint64_t{0} || (!up && old == 0) ||
          (up && old >= f::MaxRefcount(l.refcount_order))) {
        break;
      }
      RefcountAt(image, slot_cluster, true, up ? old + 1 : old - 1);
      a.ok = true;
      break;
    }
    case Corruption::kDirtyLeak:
      if (l.version < 3) break;
      image[f::kOffIncompatibleFeatures + 7] |= 1;
      a.ok = Leak(image);
      break;
    case Corruption::kCompressedCopied: {
      const std::vector<L2Slot> compressed = CompressedSlots(image);
      if (compressed.empty()) break;
      const L2Slot& s = compressed[choice % compressed.size()];
      Store64(image, s.entry_offset, s.entry | f::kOflagCopied);
      a.ok = true;
      break;
    }
  }
  return a;
}

}  // namespace qcrash::check_test
