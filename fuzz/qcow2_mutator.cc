// Structure-aware mutations of qcow2 images, and the libFuzzer hook
// (LLVMFuzzerCustomMutator) that mixes them with libFuzzer's own.
#include "fuzz/qcow2_mutator.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <random>
#include <utility>
#include <vector>

#include "engine/endian.h"
#include "engine/qcow2_format.h"

namespace qcrash::fuzz {
namespace {

namespace f = engine::format;

struct Field {
  uint32_t offset;
  uint32_t width;  // 4 or 8
};
constexpr Field kHeaderFields[] = {
    {f::kOffVersion, 4},
    {f::kOffBackingFileOffset, 8},
    {f::kOffBackingFileSize, 4},
    {f::kOffClusterBits, 4},
    {f::kOffSize, 8},
    {f::kOffCryptMethod, 4},
    {f::kOffL1Size, 4},
    {f::kOffL1TableOffset, 8},
    {f::kOffRefcountTableOffset, 8},
    {f::kOffRefcountTableClusters, 4},
    {f::kOffNbSnapshots, 4},
    {f::kOffSnapshotsOffset, 8},
    {f::kOffIncompatibleFeatures, 8},
    {f::kOffCompatibleFeatures, 8},
    {f::kOffAutoclearFeatures, 8},
    {f::kOffRefcountOrder, 4},
    {f::kOffHeaderLength, 4},
};
constexpr uint32_t kExtensionTypes[] = {
    f::kExtEnd,     f::kExtBackingFormat, f::kExtFeatureNameTable,
    f::kExtBitmaps, f::kExtCryptoHeader,  f::kExtDataFile};

// The image as far as the mutator needs it: where the tables are.
struct Layout {
  uint32_t cluster_bits = 16;
  bool extended_l2 = false;  // 16-byte L2 entries: descriptor, then subcluster bitmap
  uint64_t cluster_bytes = 0;
  uint64_t l1_offset = 0;
  uint64_t l1_entries = 0;  // clipped to the input
  uint64_t refcount_table_offset = 0;
  uint64_t refcount_table_entries = 0;  // clipped to the input
  uint64_t extensions_offset = 0;
  std::vector<uint64_t> l2_tables;        // in the input
  std::vector<uint64_t> refcount_blocks;  // in the input
  std::vector<uint64_t> structures;       // every offset worth pointing at
  // Snapshot table: the entries in the input, and each one's L1 table
  // (offset, entries clipped to the input).
  std::vector<uint64_t> snapshot_entries;
  std::vector<std::pair<uint64_t, uint64_t>> snapshot_l1s;
  // Bitmaps: where the extension's data starts (0: none), the directory
  // entries and the bitmap tables (offset, entries clipped to the input).
  uint64_t bitmap_extension = 0;
  std::vector<uint64_t> bitmap_entries;
  std::vector<std::pair<uint64_t, uint64_t>> bitmap_tables;
};

// Snapshot table entry fields (offset in the entry, width); the last three
// live in the extra data and exist only when extra_data_size covers them.
constexpr Field kSnapshotFields[] = {{0, 8},  {8, 4},  {12, 2}, {14, 2}, {16, 4}, {20, 4},
                                     {24, 8}, {32, 4}, {36, 4}, {40, 8}, {48, 8}, {56, 8}};
// Bitmap directory entry fields: table offset, table size, flags, type,
// granularity bits, name size, extra data size.
constexpr Field kBitmapFields[] = {{0, 8}, {8, 4}, {12, 4}, {16, 1}, {17, 1}, {18, 2}, {20, 4}};
// The bitmaps extension's data: nb_bitmaps, reserved, directory size and offset.
constexpr Field kBitmapExtensionFields[] = {{0, 4}, {4, 4}, {8, 8}, {16, 8}};
// Entries of either table walked by the mutator, at most.
constexpr uint64_t kMaxScannedEntries = 64;

class Mutator {
 public:
  Mutator(uint8_t* data, size_t size, uint32_t seed, MutatorFocus focus)
      : data_(data), size_(size), rng_(seed), focus_(focus) {}

  bool Run();

 private:
  uint64_t Rand(uint64_t bound) { return bound == 0 ? 0 : rng_() % bound; }
  bool Fits(uint64_t offset, uint64_t width) const {
    return offset <= size_ && width <= size_ - offset;
  }
  uint64_t Load(uint64_t offset, uint32_t width) const {
    switch (width) {
      case 8:
        return LoadBe64(data_ + offset);
      case 4:
        return LoadBe32(data_ + offset);
      case 2:
        return LoadBe16(data_ + offset);
      default:
        return data_[offset];
    }
  }
  void Store(uint64_t offset, uint32_t width, uint64_t value) {
    if (!Fits(offset, width)) return;
    switch (width) {
      case 8:
        StoreBe64(data_ + offset, value);
        break;
      case 4:
        StoreBe32(data_ + offset, static_cast<uint32_t>(value));
        break;
      case 2:
        StoreBe16(data_ + offset, static_cast<uint16_t>(value));
        break;
      default:
        data_[offset] = static_cast<uint8_t>(value);
        break;
    }
  }
  void Scan();
  void ScanSnapshots();
  void ScanBitmaps();
  uint64_t AnyStructure() { return layout_.structures[Rand(layout_.structures.size())]; }
  uint64_t NewValue(uint64_t old, uint32_t width);
  uint64_t NewTableEntry(uint64_t old, bool l2);
  void MutateHeaderField();
  void SwitchCompressionType();
  void MutateTableEntry(uint64_t table, uint64_t entries, bool l2);
  uint64_t NewSubclusterBitmap(uint64_t old);
  void MutateRefcount();
  void MutateExtension();
  void MutateField(uint64_t at, const Field& field);
  void MutateGeneral();
  void MutateSnapshots();
  void MutateBitmaps();

  uint8_t* data_;
  size_t size_;
  std::minstd_rand rng_;
  MutatorFocus focus_;
  Layout layout_;
};

void Mutator::Scan() {
  Layout& l = layout_;
  l.cluster_bits = std::clamp<uint32_t>(LoadBe32(data_ + f::kOffClusterBits), f::kMinClusterBits,
                                        f::kMaxClusterBits);
  l.cluster_bytes = uint64_t{1} << l.cluster_bits;
  l.extended_l2 = LoadBe32(data_ + f::kOffVersion) >= 3 && Fits(f::kOffIncompatibleFeatures, 8) &&
                  (LoadBe64(data_ + f::kOffIncompatibleFeatures) & f::kIncompatExtendedL2) != 0;
  l.l1_offset = LoadBe64(data_ + f::kOffL1TableOffset);
  l.l1_entries = Fits(l.l1_offset, 0) ? std::min<uint64_t>(LoadBe32(data_ + f::kOffL1Size),
                                                           (size_ - l.l1_offset) / 8)
                                      : 0;
  l.refcount_table_offset = LoadBe64(data_ + f::kOffRefcountTableOffset);
  l.refcount_table_entries =
      Fits(l.refcount_table_offset, 0)
          ? std::min<uint64_t>(
                uint64_t{LoadBe32(data_ + f::kOffRefcountTableClusters)} << l.cluster_bits,
                size_ - l.refcount_table_offset) /
                8
          : 0;
  const uint32_t version = LoadBe32(data_ + f::kOffVersion);
  l.extensions_offset = version >= 3 ? LoadBe32(data_ + f::kOffHeaderLength) : f::kV2HeaderLength;
  for (uint64_t i = 0; i < l.l1_entries && l.l2_tables.size() < 64; ++i) {
    const uint64_t l2 = LoadBe64(data_ + l.l1_offset + i * 8) & f::kL1EntryOffsetMask;
    if (l2 != 0 && Fits(l2, l.cluster_bytes)) l.l2_tables.push_back(l2);
  }
  for (uint64_t i = 0; i < l.refcount_table_entries && l.refcount_blocks.size() < 64; ++i) {
    const uint64_t block =
        LoadBe64(data_ + l.refcount_table_offset + i * 8) & f::kRefcountTableOffsetMask;
    if (block != 0 && Fits(block, l.cluster_bytes)) l.refcount_blocks.push_back(block);
  }
  l.structures = {0,
                  l.cluster_bytes,
                  l.l1_offset,
                  l.refcount_table_offset,
                  LoadBe64(data_ + f::kOffSnapshotsOffset),
                  (size_ + l.cluster_bytes - 1) / l.cluster_bytes * l.cluster_bytes,
                  (size_ / l.cluster_bytes + 2) * l.cluster_bytes};
  l.structures.insert(l.structures.end(), l.l2_tables.begin(), l.l2_tables.end());
  l.structures.insert(l.structures.end(), l.refcount_blocks.begin(), l.refcount_blocks.end());
  ScanSnapshots();
  ScanBitmaps();
}

// The snapshot entries that lie in the input, walked as a reader would:
// 40 fixed bytes, extra data, id and name, padded to 8.
void Mutator::ScanSnapshots() {
  Layout& l = layout_;
  uint64_t at = LoadBe64(data_ + f::kOffSnapshotsOffset);
  const uint64_t count =
      std::min<uint64_t>(LoadBe32(data_ + f::kOffNbSnapshots), kMaxScannedEntries);
  for (uint64_t i = 0; i < count && Fits(at, 40); ++i) {
    l.snapshot_entries.push_back(at);
    const uint64_t l1 = LoadBe64(data_ + at);
    if (Fits(l1, 8)) {
      l.snapshot_l1s.emplace_back(l1,
                                  std::min<uint64_t>(LoadBe32(data_ + at + 8), (size_ - l1) / 8));
      l.structures.push_back(l1);
    }
    const uint64_t bytes = 40 + uint64_t{LoadBe32(data_ + at + 36)} + LoadBe16(data_ + at + 12) +
                           LoadBe16(data_ + at + 14);
    at += (bytes + 7) & ~uint64_t{7};
  }
}

// The bitmaps extension among the header extensions, then the directory
// entries (24 fixed bytes, extra data, name, padded to 8) in the input.
void Mutator::ScanBitmaps() {
  Layout& l = layout_;
  uint64_t at = l.extensions_offset;
  for (int i = 0; i < 16 && Fits(at, 8); ++i) {
    const uint32_t type = LoadBe32(data_ + at);
    const uint64_t length = LoadBe32(data_ + at + 4);
    if (type == f::kExtEnd) break;
    if (type == f::kExtBitmaps && Fits(at + 8, 24)) {
      l.bitmap_extension = at + 8;
      break;
    }
    at += 8 + (length + 7) / 8 * 8;
  }
  if (l.bitmap_extension == 0) return;
  uint64_t entry = LoadBe64(data_ + l.bitmap_extension + 16);
  l.structures.push_back(entry);
  const uint64_t count =
      std::min<uint64_t>(LoadBe32(data_ + l.bitmap_extension), kMaxScannedEntries);
  for (uint64_t i = 0; i < count && Fits(entry, 24); ++i) {
    l.bitmap_entries.push_back(entry);
    const uint64_t table = LoadBe64(data_ + entry);
    if (Fits(table, 8)) {
      l.bitmap_tables.emplace_back(
          table, std::min<uint64_t>(LoadBe32(data_ + entry + 8), (size_ - table) / 8));
      l.structures.push_back(table);
    }
    const uint64_t bytes =
        24 + uint64_t{LoadBe32(data_ + entry + 20)} + LoadBe16(data_ + entry + 18);
    entry += (bytes + 7) & ~uint64_t{7};
  }
}

// A new value for a header field: an edge of its range, a near neighbour,
// a bit flip or another structure's offset.
uint64_t Mutator::NewValue(uint64_t old, uint32_t width) {
  const uint64_t max = width == 8 ? ~uint64_t{0} : (uint64_t{1} << (width * 8)) - 1;
  switch (Rand(8)) {
    case 0:
      return 0;
    case 1:
      return max;
    case 2:
      return old + 1 + Rand(4);
    case 3:
      return old - 1 - Rand(4);
    case 4:
      return old ^ (uint64_t{1} << Rand(width * 8));
    case 5:
      return AnyStructure();
    case 6:
      return AnyStructure() + layout_.cluster_bytes * Rand(4) + (Rand(4) == 0 ? 512 : 0);
    default:
      return uint64_t{1} << Rand(width * 8);
  }
}

uint64_t Mutator::NewTableEntry(uint64_t old, bool l2) {
  const uint64_t flags = old & (f::kOflagCopied | (l2 ? f::kOflagCompressed | f::kOflagZero : 0));
  switch (Rand(9)) {
    case 0:
      return 0;
    case 1:
      return old ^ f::kOflagCopied;
    case 2:
      return l2 ? old ^ f::kOflagZero : old;
    case 3:
      return l2 ? old ^ f::kOflagCompressed : old;
    case 4:
      return old | (uint64_t{1} << Rand(9));  // reserved or misaligning low bits
    case 5:
      return old | (uint64_t{1} << (56 + Rand(6)));  // reserved high bits
    case 6:
      return flags | (AnyStructure() & f::kL2EntryOffsetMask);
    case 7:
      return f::kOflagCopied |
             ((old & f::kL2EntryOffsetMask) + layout_.cluster_bytes * (1 + Rand(8)));
    default:
      return f::kOflagCompressed | (AnyStructure() + Rand(layout_.cluster_bytes));
  }
}

void Mutator::MutateHeaderField() {
  const Field& field = kHeaderFields[Rand(std::size(kHeaderFields))];
  if (!Fits(field.offset, field.width)) return;
  Store(field.offset, field.width, NewValue(Load(field.offset, field.width), field.width));
}

// The other compression type, the header kept consistent (byte 104 and
// incompatible bit 3 together), so that the compressed clusters' streams
// reach the other decoder: a zlib stream read as zstd, or the reverse.
void Mutator::SwitchCompressionType() {
  if (!Fits(f::kOffCompressionType, 1) || LoadBe32(data_ + f::kOffVersion) < 3 ||
      LoadBe32(data_ + f::kOffHeaderLength) <= f::kOffCompressionType) {
    return;
  }
  const bool zstd = data_[f::kOffCompressionType] == f::kCompressionZlib;
  data_[f::kOffCompressionType] = zstd ? f::kCompressionZstd : f::kCompressionZlib;
  uint64_t incompatible = Load(f::kOffIncompatibleFeatures, 8);
  incompatible = zstd ? incompatible | f::kIncompatCompressionType
                      : incompatible & ~f::kIncompatCompressionType;
  Store(f::kOffIncompatibleFeatures, 8, incompatible);
}

void Mutator::MutateTableEntry(uint64_t table, uint64_t entries, bool l2) {
  if (entries == 0) return;
  const uint64_t word = Rand(entries);
  const uint64_t at = table + word * 8;
  if (!Fits(at, 8)) return;
  if (l2 && layout_.extended_l2 && word % 2 == 1) {
    Store(at, 8, NewSubclusterBitmap(Load(at, 8)));
    return;
  }
  Store(at, 8, NewTableEntry(Load(at, 8), l2));
}

// An extended L2 entry's bitmap word: a subcluster both allocated and zero,
// all allocated, all zero, empty, or one bit flipped.
uint64_t Mutator::NewSubclusterBitmap(uint64_t old) {
  const uint64_t sc = Rand(f::kSubclusters);
  switch (Rand(5)) {
    case 0:
      return old | (uint64_t{1} << sc) | (uint64_t{1} << (32 + sc));
    case 1:
      return f::kL2BitmapAllocMask;
    case 2:
      return f::kL2BitmapZeroMask;
    case 3:
      return 0;
    default:
      return old ^ (uint64_t{1} << Rand(64));
  }
}

// Refcounts: bytes of a refcount block set to 0, 1, 2, all ones, or nudged.
void Mutator::MutateRefcount() {
  if (layout_.refcount_blocks.empty()) return;
  const uint64_t block = layout_.refcount_blocks[Rand(layout_.refcount_blocks.size())];
  const uint64_t at = block + Rand(std::min<uint64_t>(layout_.cluster_bytes, 256));
  if (!Fits(at, 1)) return;
  static constexpr uint8_t kValues[] = {0, 1, 2, 0xFF, 0x80, 0x7F};
  data_[at] =
      Rand(3) == 0 ? static_cast<uint8_t>(data_[at] + 1) : kValues[Rand(std::size(kValues))];
}

// The extension area: a record's type becomes a known magic, its length an
// edge value, or an end marker moves.
void Mutator::MutateExtension() {
  uint64_t at = layout_.extensions_offset;
  const uint64_t records = Rand(4);
  for (uint64_t i = 0; i < records && Fits(at, 8); ++i) {
    const uint64_t length = LoadBe32(data_ + at + 4);
    if (LoadBe32(data_ + at) == 0 || length > layout_.cluster_bytes) break;
    at += 8 + (length + 7) / 8 * 8;
  }
  if (!Fits(at, 8)) return;
  if (Rand(2) == 0) {
    Store(at, 4, kExtensionTypes[Rand(std::size(kExtensionTypes))]);
  } else {
    static constexpr uint32_t kLengths[] = {0, 1, 7, 8, 16, 24, 48, 0xFFFF, 0xFFFFFFFF};
    Store(at + 4, 4,
          Rand(2) == 0 ? kLengths[Rand(std::size(kLengths))] : Load(at + 4, 4) + Rand(16));
  }
}

// One field of a structure at `at` gets a new value.
void Mutator::MutateField(uint64_t at, const Field& field) {
  if (!Fits(at + field.offset, field.width)) return;
  Store(at + field.offset, field.width,
        NewValue(Load(at + field.offset, field.width), field.width));
}

void Mutator::MutateGeneral() {
  switch (Rand(7)) {
    case 0:
      if (Rand(8) == 0) {
        SwitchCompressionType();
      } else {
        MutateHeaderField();
      }
      break;
    case 1:
      MutateTableEntry(layout_.l1_offset, layout_.l1_entries, false);
      break;
    case 2:
    case 3:
      if (!layout_.l2_tables.empty()) {
        MutateTableEntry(layout_.l2_tables[Rand(layout_.l2_tables.size())],
                         layout_.cluster_bytes / 8, true);
      }
      break;
    case 4:
      MutateTableEntry(layout_.refcount_table_offset, layout_.refcount_table_entries, false);
      break;
    case 5:
      MutateRefcount();
      break;
    default:
      MutateExtension();
      break;
  }
}

// The snapshot table: the header's count and offset, an entry's fields
// (an L1 pointed at the active L1 or another snapshot's, sizes at their
// edges), an entry copied over another (duplicate ids), a snapshot L1 entry.
void Mutator::MutateSnapshots() {
  const Layout& l = layout_;
  const uint64_t entry =
      l.snapshot_entries.empty() ? 0 : l.snapshot_entries[Rand(l.snapshot_entries.size())];
  switch (Rand(6)) {
    case 0:
      MutateField(0,
                  Rand(2) == 0 ? Field{f::kOffNbSnapshots, 4} : Field{f::kOffSnapshotsOffset, 8});
      break;
    case 1:
    case 2:
      if (entry != 0) MutateField(entry, kSnapshotFields[Rand(std::size(kSnapshotFields))]);
      break;
    case 3:
      if (entry != 0) {
        const bool active = Rand(2) == 0 || l.snapshot_l1s.empty();
        Store(entry, 8, active ? l.l1_offset : l.snapshot_l1s[Rand(l.snapshot_l1s.size())].first);
        if (Rand(2) == 0) Store(entry + 8, 4, active ? l.l1_entries : Load(entry + 8, 4) + 1);
      }
      break;
    case 4:
      if (l.snapshot_entries.size() >= 2) {
        const uint64_t from = l.snapshot_entries[Rand(l.snapshot_entries.size())];
        const uint64_t bytes = std::min<uint64_t>(48 + Rand(32), size_ - std::max(from, entry));
        if (from != entry && Fits(from, bytes) && Fits(entry, bytes))
          std::memmove(data_ + entry, data_ + from, bytes);
      }
      break;
    default:
      if (!l.snapshot_l1s.empty()) {
        const auto& [l1, entries] = l.snapshot_l1s[Rand(l.snapshot_l1s.size())];
        MutateTableEntry(l1, entries, false);
      }
      break;
  }
}

// Bitmaps: autoclear bit 0, the extension's fields, a directory entry's
// fields (flags in_use / auto / unknown bits, type, granularity edges), a
// bitmap table entry (all-ones, a pointer at another structure, reserved
// or misaligning bits).
void Mutator::MutateBitmaps() {
  const Layout& l = layout_;
  switch (Rand(6)) {
    case 0:
      Store(f::kOffAutoclearFeatures, 8, Load(f::kOffAutoclearFeatures, 8) ^ f::kAutoclearBitmaps);
      break;
    case 1:
      if (l.bitmap_extension != 0) {
        MutateField(l.bitmap_extension,
                    kBitmapExtensionFields[Rand(std::size(kBitmapExtensionFields))]);
      }
      break;
    case 2:
    case 3:
      if (!l.bitmap_entries.empty()) {
        const uint64_t entry = l.bitmap_entries[Rand(l.bitmap_entries.size())];
        switch (Rand(4)) {
          case 0:
            Store(entry + 12, 4, Load(entry + 12, 4) ^ (uint64_t{1} << Rand(32)));
            break;
          case 1: {
            static constexpr uint8_t kGranularity[] = {0, 8, 9, 16, 31, 32, 63, 64, 255};
            Store(entry + 17, 1, kGranularity[Rand(std::size(kGranularity))]);
            break;
          }
          default:
            MutateField(entry, kBitmapFields[Rand(std::size(kBitmapFields))]);
            break;
        }
      }
      break;
    default:
      if (!l.bitmap_tables.empty()) {
        const auto& [table, entries] = l.bitmap_tables[Rand(l.bitmap_tables.size())];
        if (entries == 0) break;
        const uint64_t at = table + Rand(entries) * 8;
        switch (Rand(4)) {
          case 0:
            Store(at, 8, 1);
            break;  // all ones
          case 1:
            Store(at, 8, AnyStructure() & f::kL2EntryOffsetMask);
            break;
          default:
            Store(at, 8, NewTableEntry(Load(at, 8), false));
            break;
        }
      }
      break;
  }
}

bool Mutator::Run() {
  if (size_ < f::kV3MinHeaderLength || LoadBe32(data_) != f::kMagic) return false;
  Scan();
  const uint64_t rounds = 1 + Rand(3);
  for (uint64_t i = 0; i < rounds; ++i) {
    // A focused mutator spends three rounds in four on its structure.
    const bool focused = focus_ != MutatorFocus::kImage && Rand(4) != 0;
    if (!focused) {
      MutateGeneral();
    } else if (focus_ == MutatorFocus::kSnapshots) {
      MutateSnapshots();
    } else {
      MutateBitmaps();
    }
  }
  return true;
}

}  // namespace

bool MutateQcow2(uint8_t* data, size_t size, uint32_t seed, MutatorFocus focus) {
  return Mutator(data, size, seed, focus).Run();
}

}  // namespace qcrash::fuzz

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

// The focus this copy of the mutator library was built with (fuzz/CMakeLists.txt).
#ifndef QCRASH_MUTATOR_FOCUS
#define QCRASH_MUTATOR_FOCUS kImage
#endif

// One in three mutations is structural when the input holds an image (one
// in two for a focused mutator); the rest are libFuzzer's byte-level ones
// (which also grow and shrink inputs).
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  using qcrash::fuzz::MutatorFocus;
  constexpr MutatorFocus kFocus = MutatorFocus::QCRASH_MUTATOR_FOCUS;
  const unsigned share = kFocus == MutatorFocus::kImage ? 3 : 2;
  if (seed % share == 0 && qcrash::fuzz::MutateQcow2(data, size, seed / share, kFocus)) return size;
  return LLVMFuzzerMutate(data, size, max_size);
}
