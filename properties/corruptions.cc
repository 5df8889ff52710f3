// ApplyCorruption: the corruption classes, on an image held as bytes.
#include "properties/corruptions.h"

#include <span>

#include "engine/endian.h"
#include "engine/qcow2_format.h"

namespace qcrash::properties {
namespace {

namespace f = engine::format;

uint64_t Load64(const std::vector<uint8_t>& image, uint64_t offset) {
  return LoadBe64(&image[offset]);
}
void Store64(std::vector<uint8_t>& image, uint64_t offset, uint64_t value) {
  StoreBe64(&image[offset], value);
}

uint64_t RefcountAt(const std::vector<uint8_t>& image, uint64_t cluster, bool set, uint64_t value) {
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
uint64_t AppendCluster(std::vector<uint8_t>& image, uint8_t fill) {
  const ImageLayout l = LayoutOf(image);
  const uint64_t offset = (image.size() + l.cluster_bytes - 1) & ~(l.cluster_bytes - 1);
  image.resize(offset + l.cluster_bytes, fill);
  return offset;
}

std::vector<L2Slot> StandardSlots(const std::vector<uint8_t>& image) {
  std::vector<L2Slot> out;
  for (const L2Slot& s : ActiveL2Slots(image)) {
    if (!(s.entry & f::kOflagCompressed) && (s.entry & f::kL2EntryOffsetMask)) out.push_back(s);
  }
  return out;
}

std::vector<L2Slot> CompressedSlots(const std::vector<uint8_t>& image) {
  std::vector<L2Slot> out;
  for (const L2Slot& s : ActiveL2Slots(image)) {
    if (s.entry & f::kOflagCompressed) out.push_back(s);
  }
  return out;
}

uint64_t FirstL1Entry(const std::vector<uint8_t>& image) {
  const ImageLayout l = LayoutOf(image);
  for (uint32_t i = 0; i < l.l1_size; ++i) {
    if (Load64(image, l.l1_offset + i * 8) != 0) return l.l1_offset + i * 8;
  }
  return 0;
}

bool Leak(std::vector<uint8_t>& image) {
  const ImageLayout l = LayoutOf(image);
  const uint64_t offset = AppendCluster(image, 0);
  return RefcountAt(image, offset >> l.cluster_bits, true, 1) == 1;
}

}  // namespace

ImageLayout LayoutOf(const std::vector<uint8_t>& image) {
  ImageLayout l;
  l.version = LoadBe32(&image[f::kOffVersion]);
  l.cluster_bits = LoadBe32(&image[f::kOffClusterBits]);
  l.cluster_bytes = uint64_t{1} << l.cluster_bits;
  l.l1_size = LoadBe32(&image[f::kOffL1Size]);
  l.l1_offset = LoadBe64(&image[f::kOffL1TableOffset]);
  l.refcount_table_offset = LoadBe64(&image[f::kOffRefcountTableOffset]);
  l.refcount_order = l.version >= 3 ? LoadBe32(&image[f::kOffRefcountOrder]) : 4;
  return l;
}

std::vector<L2Slot> ActiveL2Slots(const std::vector<uint8_t>& image) {
  const ImageLayout l = LayoutOf(image);
  std::vector<L2Slot> slots;
  // Extended L2 entries are 16 bytes: the descriptor, then the bitmap.
  const bool extended = l.version >= 3 && (LoadBe64(&image[f::kOffIncompatibleFeatures]) &
                                           f::kIncompatExtendedL2) != 0;
  const uint64_t entry_bytes = f::L2EntryBytes(extended);
  const uint64_t per_table = l.cluster_bytes / entry_bytes;
  for (uint32_t i = 0; i < l.l1_size; ++i) {
    if (l.l1_offset + i * 8 + 8 > image.size()) break;
    const uint64_t l2 = LoadBe64(&image[l.l1_offset + i * 8]) & f::kL1EntryOffsetMask;
    if (l2 == 0 || l2 + l.cluster_bytes > image.size()) continue;
    for (uint64_t j = 0; j < per_table; ++j) {
      const uint64_t entry = LoadBe64(&image[l2 + j * entry_bytes]);
      if (entry != 0) slots.push_back({l2 + j * entry_bytes, entry, i * per_table + j});
    }
  }
  return slots;
}

std::optional<Corruption> ParseCorruption(const std::string& name) {
  for (int i = 0; i < kCorruptionCount; ++i) {
    if (name == CorruptionName(static_cast<Corruption>(i))) return static_cast<Corruption>(i);
  }
  return std::nullopt;
}

// Applies `c` to `image`; `choice` picks which entry (taken modulo the candidates).
Applied ApplyCorruption(std::vector<uint8_t>& image, Corruption c, uint64_t choice) {
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
    case Corruption::kMarkedCorrupt:
      if (l.version < 3) break;
      a = ApplyCorruption(image, Corruption::kSharedCluster, choice);
      if (a.ok) image[f::kOffIncompatibleFeatures + 7] |= 2;
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

}  // namespace qcrash::properties
