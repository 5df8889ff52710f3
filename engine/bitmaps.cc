// Persistent dirty bitmaps written by the engine (QCOW2-NOTES §7, the 2015
// spec thread). A bitmap marks every granule of the guest disk written
// while it is enabled; a backup tool trusts every bitmap that is not
// in_use. So the one thing a crash must never leave is a bitmap without
// in_use that misses a write which reached the disk (I11).
//
// The bitmaps live in memory while the image is open (one bit per granule)
// and reach the disk at close, as in QEMU:
//  - open (read-write, v3, not under the journal policy): every bitmap the
//    directory lists is loaded, except those already in_use (inconsistent:
//    a writer crashed with them) or too large to hold; those are kept as
//    found and can only be removed;
//  - R10, first half: before the first change of guest content in a
//    session (write, zero write, discard, resize), in_use is set on every
//    bitmap of the on-disk directory, in place, and made durable. The
//    flags word of an entry never crosses a sector, so a torn directory
//    write leaves each flag old or new;
//  - each change marks its granules in every enabled bitmap (in memory);
//  - close (R6 + R10, second half): each loaded bitmap's data clusters and
//    table in new clusters, a new directory without in_use, all of it and
//    its refcounts durable; then the header names the new directory
//    (durable); then the old directory, tables and data are freed.
// A crash before the header switch leaves the old directory with in_use
// set: inconsistent bitmaps, never wrong ones.
#include <algorithm>

#include "engine/endian.h"
#include "engine/image_impl.h"

namespace qcrash::engine {
namespace f = format;

namespace {

constexpr uint64_t kTableEntryOffsetMask = 0x00FFFFFFFFFFFE00ULL;
constexpr uint64_t kTableEntryReservedMask = 0xFF000000000001FEULL;
constexpr uint32_t kMinGranularityBits = 9, kMaxGranularityBits = 31;
constexpr size_t kMaxBitmapNameBytes = 1023;
constexpr size_t kMaxBitmapCount = 65535;
// A bitmap larger than this is not loaded (kept as found, in_use once the
// guest writes): 64 MiB of bits covers 32 TiB at 64 KiB granules.
constexpr uint64_t kMaxLoadedBitmapBytes = uint64_t{64} << 20;

uint64_t DivUp(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

}  // namespace

uint64_t BitmapBytesFor(uint64_t size_bytes, uint8_t granularity_bits) {
  return DivUp(DivUp(size_bytes, uint64_t{1} << granularity_bits), 8);
}

// Reads the bits of a directory entry, every offset checked. NotSupported
// when it cannot be loaded (in_use, unknown type, too large); Corruption
// when its table or data do not parse.
Result<std::vector<uint8_t>> ReadBitmapBits(CountingIo& io, const Header& header,
                                            uint64_t file_bytes, const BitmapEntry& entry) {
  if (entry.flags & kBitmapInUse)
    return Status::NotSupported("bitmap '" + entry.name + "' is in use (inconsistent)");
  if (entry.type != 1 || entry.granularity_bits < kMinGranularityBits ||
      entry.granularity_bits > kMaxGranularityBits)
    return Status::NotSupported("bitmap '" + entry.name + "' has an unknown type or granularity");
  const uint64_t bytes = BitmapBytesFor(header.size_bytes, entry.granularity_bits);
  if (bytes > kMaxLoadedBitmapBytes)
    return Status::NotSupported("bitmap '" + entry.name + "' is too large to load");
  const uint64_t cb = header.cluster_bytes();
  const uint64_t table_entries = DivUp(bytes, cb);
  if (entry.table_size != table_entries)
    return Status::Corruption("bitmap '" + entry.name + "': table_size " +
                              std::to_string(entry.table_size) + " where the disk needs " +
                              std::to_string(table_entries));
  if (entry.table_offset % cb != 0 || entry.table_offset > file_bytes ||
      file_bytes - entry.table_offset < table_entries * 8)
    return Status::Corruption("bitmap '" + entry.name + "': table at " +
                              HexOffset(entry.table_offset) + " is outside the file");
  std::vector<uint8_t> table(table_entries * 8);
  QCRASH_RETURN_IF_ERROR(io.ReadMetadata(entry.table_offset, table));
  std::vector<uint8_t> bits(bytes, 0);
  for (uint64_t i = 0; i < table_entries; ++i) {
    const uint64_t value = LoadBe64(&table[i * 8]);
    const uint64_t offset = value & kTableEntryOffsetMask;
    const std::span<uint8_t> chunk =
        std::span<uint8_t>(bits).subspan(i * cb, std::min(cb, bytes - i * cb));
    if ((value & kTableEntryReservedMask) || offset % cb != 0 || (offset != 0 && (value & 1)) ||
        offset > file_bytes || file_bytes - offset < chunk.size())
      return Status::Corruption("bitmap '" + entry.name + "': table entry " + std::to_string(i) +
                                " (" + HexOffset(value) + ") is invalid");
    if (offset == 0) {
      if (value & 1) std::fill(chunk.begin(), chunk.end(), 0xFF);
      continue;
    }
    QCRASH_RETURN_IF_ERROR(io.ReadMetadata(offset, chunk));
  }
  return bits;
}

// Open, read-write: every bitmap in memory (or kept as found).
Status Image::Impl::LoadBitmaps() {
  bitmaps_.clear();
  stored_bitmaps_.clear();
  if (read_only_ || rules_.journal() || header_.version < 3) return Status::Ok();
  auto directory = ReadBitmapDirectory(device_, header_);
  if (!directory.ok() && directory.status().code() == StatusCode::kCorruption) {
    // A directory that does not parse: the bitmaps are dropped, as a
    // writer that does not know them drops them (autoclear bit 0 cleared
    // below; their clusters become leaks). QEMU refuses such an image;
    // check -r all discards them the same way.
    header_.autoclear_features &= ~f::kAutoclearBitmaps;
    QCRASH_RETURN_IF_ERROR(WriteHeader());
    return Barrier(Rule::kHeaderFeatures);
  }
  QCRASH_ASSIGN_OR_RETURN(stored_bitmaps_, std::move(directory));
  const uint64_t file_bytes = device_.SizeBytes();
  for (const BitmapEntry& entry : stored_bitmaps_) {
    LoadedBitmap bitmap;
    bitmap.entry = entry;
    auto bits = ReadBitmapBits(io_, header_, file_bytes, entry);
    if (bits.ok()) {
      bitmap.bits = std::move(bits).value();
      bitmap.loaded = true;
    } else if (bits.status().code() == StatusCode::kIoError) {
      return bits.status();
    }  // otherwise kept as found: in_use once the guest writes, and removable
    bitmaps_.push_back(std::move(bitmap));
  }
  return Status::Ok();
}

bool Image::Impl::bitmaps_kept() const {
  return !read_only_ && !rules_.journal() && header_.version >= 3;
}

// R10, first half: in_use durable on every stored bitmap before the first
// change of guest content in this session.
Status Image::Impl::MarkBitmapsInUse() {
  if (bitmaps_in_use_ || stored_bitmaps_.empty()) return Status::Ok();
  const BitmapsExtension& ext = *header_.bitmaps;
  // The sectors the directory covers, each entry's flags word patched.
  const uint64_t first = ext.directory_offset / 512 * 512;
  const uint64_t end = DivUp(ext.directory_offset + ext.directory_size, 512) * 512;
  std::vector<uint8_t> sectors(end - first);
  QCRASH_RETURN_IF_ERROR(io_.ReadMetadata(first, sectors));
  for (const BitmapEntry& entry : stored_bitmaps_) {
    uint8_t* flags = &sectors[entry.offset + 12 - first];
    StoreBe32(flags, LoadBe32(flags) | kBitmapInUse);
  }
  QCRASH_RETURN_IF_ERROR(io_.WriteMetadata(first, sectors));
  for (BitmapEntry& entry : stored_bitmaps_) entry.flags |= kBitmapInUse;
  for (LoadedBitmap& bitmap : bitmaps_) {
    if (!bitmap.loaded) bitmap.entry.flags |= kBitmapInUse;  // stays inconsistent
  }
  bitmaps_in_use_ = true;
  // Why: a guest write that reaches the disk before in_use leaves a bitmap
  // that looks consistent and misses it (the 2015 thread).
  return Barrier(Rule::kBitmapTracking);
}

// Marks [offset, offset + length) in every enabled bitmap, after in_use
// is durable on disk.
Status Image::Impl::BeforeGuestChange(uint64_t offset, uint64_t length) {
  // A bitmap removed in memory is still on disk until the close: it needs
  // in_use too (the generated workloads found this).
  if ((bitmaps_.empty() && stored_bitmaps_.empty()) || length == 0) return Status::Ok();
  QCRASH_RETURN_IF_ERROR(MarkBitmapsInUse());
  for (LoadedBitmap& bitmap : bitmaps_) {
    if (!bitmap.loaded || !(bitmap.entry.flags & kBitmapAuto)) continue;
    SetBitmapRange(bitmap, offset, length);
  }
  return Status::Ok();
}

void Image::Impl::SetBitmapRange(LoadedBitmap& bitmap, uint64_t offset, uint64_t length) {
  const uint64_t first = offset >> bitmap.entry.granularity_bits;
  const uint64_t end = DivUp(offset + length, uint64_t{1} << bitmap.entry.granularity_bits);
  for (uint64_t g = first; g < end && g / 8 < bitmap.bits.size(); ++g)
    bitmap.bits[g / 8] |= static_cast<uint8_t>(1u << (g % 8));
}

// A resize: the bits follow the new size; a growth marks the new area, as
// QEMU marks the range a truncate adds.
Status Image::Impl::ResizeBitmaps(uint64_t old_size, uint64_t new_size) {
  if (bitmaps_.empty() && stored_bitmaps_.empty()) return Status::Ok();
  QCRASH_RETURN_IF_ERROR(MarkBitmapsInUse());
  for (LoadedBitmap& bitmap : bitmaps_) {
    if (!bitmap.loaded) continue;
    const uint8_t gbits = bitmap.entry.granularity_bits;
    const uint64_t bytes = BitmapBytesFor(new_size, gbits);
    if (bytes > kMaxLoadedBitmapBytes) {
      bitmap.loaded = false;  // kept in_use: inconsistent from now on
      bitmap.bits.clear();
      continue;
    }
    if (new_size < old_size) {
      // Bits past the new end are dropped, so that a later growth starts clean.
      const uint64_t granules = DivUp(new_size, uint64_t{1} << gbits);
      for (uint64_t g = granules; g < bitmap.bits.size() * 8; ++g)
        bitmap.bits[g / 8] &= static_cast<uint8_t>(~(1u << (g % 8)));
    }
    bitmap.bits.resize(bytes, 0);
    if (new_size > old_size && (bitmap.entry.flags & kBitmapAuto))
      SetBitmapRange(bitmap, old_size, new_size - old_size);
  }
  return Status::Ok();
}

// R6 + R10, second half: the bitmaps as they are in memory replace the
// directory on disk.
Status Image::Impl::StoreBitmaps() {
  if (!bitmaps_in_use_ && !bitmaps_changed_) return Status::Ok();
  const uint64_t cb = cluster_bytes();
  std::vector<BitmapEntry> entries;
  for (LoadedBitmap& bitmap : bitmaps_) {
    BitmapEntry entry = bitmap.entry;
    if (bitmap.loaded) {
      // The data clusters (all-zero chunks need none), then the table.
      const uint64_t table_entries = DivUp(bitmap.bits.size(), cb);
      std::vector<uint8_t> table(table_entries * 8, 0);
      for (uint64_t i = 0; i < table_entries; ++i) {
        const std::span<const uint8_t> chunk =
            std::span<const uint8_t>(bitmap.bits)
                .subspan(i * cb, std::min<uint64_t>(cb, bitmap.bits.size() - i * cb));
        if (std::all_of(chunk.begin(), chunk.end(), [](uint8_t b) { return b == 0; })) continue;
        QCRASH_ASSIGN_OR_RETURN(const uint64_t data, AllocateClusters(1));
        std::vector<uint8_t> padded(cb, 0);
        std::copy(chunk.begin(), chunk.end(), padded.begin());
        QCRASH_RETURN_IF_ERROR(io_.WriteMetadata(data, padded));
        StoreBe64(&table[i * 8], data);
      }
      const uint64_t table_clusters = std::max<uint64_t>(1, DivUp(table.size(), cb));
      QCRASH_ASSIGN_OR_RETURN(const uint64_t table_offset, AllocateClusters(table_clusters));
      table.resize(table_clusters * cb, 0);
      QCRASH_RETURN_IF_ERROR(io_.WriteMetadata(table_offset, table));
      entry.table_offset = table_offset;
      entry.table_size = static_cast<uint32_t>(table_entries);
      entry.flags &= ~kBitmapInUse;
    }
    entries.push_back(std::move(entry));
  }
  const std::vector<uint8_t> directory = EncodeBitmapDirectory(entries);
  uint64_t directory_offset = 0;
  if (!directory.empty()) {
    const uint64_t clusters = DivUp(directory.size(), cb);
    QCRASH_ASSIGN_OR_RETURN(directory_offset, AllocateClusters(clusters));
    std::vector<uint8_t> padded(clusters * cb, 0);
    std::copy(directory.begin(), directory.end(), padded.begin());
    QCRASH_RETURN_IF_ERROR(io_.WriteMetadata(directory_offset, padded));
  }
  // Why: the header must not name a directory, table or data cluster that
  // is unwritten or uncounted, and in_use may clear only once the data it
  // vouches for is durable.
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch, refcount_cache()));
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kBitmapTracking));
  // The old structures, read before the switch.
  const std::vector<BitmapEntry> old = stored_bitmaps_;
  const std::optional<BitmapsExtension> old_ext = header_.bitmaps;
  QCRASH_RETURN_IF_ERROR(BeforeMetadataChange());
  // An extension written longer than 24 bytes is kept verbatim by the
  // header encoder, which would write the old directory back (bitmap_fuzzer
  // found it): the new one is written in the 24-byte form.
  std::erase_if(header_.unknown_extensions,
                [](const HeaderExtension& e) { return e.type == f::kExtBitmaps; });
  if (entries.empty()) {
    header_.bitmaps.reset();
    header_.autoclear_features &= ~f::kAutoclearBitmaps;
  } else {
    header_.bitmaps =
        BitmapsExtension{static_cast<uint32_t>(entries.size()), directory.size(), directory_offset};
    header_.autoclear_features |= f::kAutoclearBitmaps;
  }
  QCRASH_RETURN_IF_ERROR(WriteHeader());
  // Why: the old directory, tables and data are freed next and may be
  // reused at once.
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));
  stored_bitmaps_ = entries;
  for (LoadedBitmap& bitmap : bitmaps_) bitmap.entry = entries[&bitmap - bitmaps_.data()];
  bitmaps_in_use_ = false;
  bitmaps_changed_ = false;
  // Free what only the old directory named: loaded bitmaps' tables and
  // data (the tables of bitmaps kept as found are in the new one too).
  std::set<uint64_t> kept;
  for (const BitmapEntry& entry : entries) kept.insert(entry.table_offset);
  const uint64_t file_bytes = device_.SizeBytes();
  for (const BitmapEntry& entry : old) {
    if (kept.count(entry.table_offset) || entry.table_offset == 0) continue;
    // A removed bitmap that was never loaded may be anything: what does
    // not parse is left as a leak.
    const uint64_t table_bytes = uint64_t{entry.table_size} * 8;
    if (entry.table_offset % cb != 0 || table_bytes > kMaxLoadedBitmapBytes ||
        entry.table_offset > file_bytes || file_bytes - entry.table_offset < table_bytes)
      continue;
    std::vector<uint8_t> table(table_bytes);
    QCRASH_RETURN_IF_ERROR(io_.ReadMetadata(entry.table_offset, table));
    for (uint32_t i = 0; i < entry.table_size; ++i) {
      const uint64_t value = LoadBe64(&table[i * 8]);
      const uint64_t data = value & kTableEntryOffsetMask;
      if (data == 0 || (value & kTableEntryReservedMask) || data % cb != 0 || data >= file_bytes)
        continue;
      QCRASH_RETURN_IF_ERROR(FreeClusters(data, 1));
    }
    QCRASH_RETURN_IF_ERROR(
        FreeClusters(entry.table_offset, std::max<uint64_t>(1, DivUp(table.size(), cb))));
  }
  if (old_ext && old_ext->directory_offset != 0 && old_ext->directory_size != 0)
    QCRASH_RETURN_IF_ERROR(
        FreeClusters(old_ext->directory_offset, DivUp(old_ext->directory_size, cb)));
  return Status::Ok();
}

// ---- the operations (qemu-img bitmap) ----

Image::Impl::LoadedBitmap* Image::Impl::FindBitmap(const std::string& name) {
  for (LoadedBitmap& bitmap : bitmaps_) {
    if (bitmap.entry.name == name) return &bitmap;
  }
  return nullptr;
}

Result<Image::Impl::LoadedBitmap*> Image::Impl::UsableBitmap(const std::string& name) {
  if (read_only_) return WriteRefused();
  LoadedBitmap* bitmap = FindBitmap(name);
  if (bitmap == nullptr) return Status::InvalidArgument("Dirty bitmap '" + name + "' not found");
  if (!bitmap->loaded)
    return Status::InvalidArgument("Bitmap '" + name +
                                   "' is inconsistent and cannot be used; remove it");
  return bitmap;
}

Status Image::Impl::AddBitmap(const std::string& name, uint64_t granularity_bytes, bool enabled) {
  if (read_only_) return WriteRefused();
  if (!bitmaps_kept()) {
    return Status::NotSupported(rules_.journal() ? "persistent bitmaps under the journal policy"
                                                 : "persistent bitmaps need a compat=1.1 image");
  }
  if (granularity_bytes == 0) granularity_bytes = std::max<uint64_t>(65536, cluster_bytes());
  if (granularity_bytes < 512 || (granularity_bytes & (granularity_bytes - 1)) != 0 ||
      granularity_bytes > (uint64_t{1} << kMaxGranularityBits))
    return Status::InvalidArgument("Granularity must be power of 2 and at least 512");
  if (name.empty() || name.size() > kMaxBitmapNameBytes)
    return Status::InvalidArgument("bitmap name must be 1 to 1023 bytes");
  if (FindBitmap(name) != nullptr) return Status::InvalidArgument("Bitmap already exists: " + name);
  if (bitmaps_.size() >= kMaxBitmapCount) return Status::Limit("too many bitmaps");
  LoadedBitmap bitmap;
  bitmap.entry.name = name;
  bitmap.entry.type = 1;
  bitmap.entry.granularity_bits = static_cast<uint8_t>(std::countr_zero(granularity_bytes));
  bitmap.entry.flags = enabled ? kBitmapAuto : 0;
  const uint64_t bytes = BitmapBytesFor(header_.size_bytes, bitmap.entry.granularity_bits);
  if (bytes > kMaxLoadedBitmapBytes) return Status::Limit("bitmap '" + name + "' too large");
  bitmap.bits.assign(bytes, 0);
  bitmap.loaded = true;
  bitmaps_.push_back(std::move(bitmap));
  bitmaps_changed_ = true;
  return Status::Ok();
}

Status Image::Impl::RemoveBitmap(const std::string& name) {
  if (read_only_) return WriteRefused();
  LoadedBitmap* bitmap = FindBitmap(name);
  if (bitmap == nullptr) return Status::InvalidArgument("Dirty bitmap '" + name + "' not found");
  // Until the close stores the directory without it, the bitmap is still
  // on disk: it must be in_use before the guest changes anything.
  bitmaps_.erase(bitmaps_.begin() + (bitmap - bitmaps_.data()));
  bitmaps_changed_ = true;
  return Status::Ok();
}

Status Image::Impl::ClearBitmap(const std::string& name) {
  QCRASH_ASSIGN_OR_RETURN(LoadedBitmap * bitmap, UsableBitmap(name));
  std::fill(bitmap->bits.begin(), bitmap->bits.end(), 0);
  bitmaps_changed_ = true;
  return Status::Ok();
}

Status Image::Impl::EnableBitmap(const std::string& name, bool enabled) {
  QCRASH_ASSIGN_OR_RETURN(LoadedBitmap * bitmap, UsableBitmap(name));
  bitmap->entry.flags =
      enabled ? (bitmap->entry.flags | kBitmapAuto) : (bitmap->entry.flags & ~kBitmapAuto);
  bitmaps_changed_ = true;
  return Status::Ok();
}

// Every granule `source` marks is marked in `target` (the granularities
// may differ: a source granule marks each target granule it overlaps).
Status Image::Impl::MergeBitmap(const std::string& target, const std::string& source) {
  QCRASH_ASSIGN_OR_RETURN(LoadedBitmap * from, UsableBitmap(source));
  const LoadedBitmap copy = *from;
  QCRASH_ASSIGN_OR_RETURN(LoadedBitmap * to, UsableBitmap(target));
  const uint64_t granule = uint64_t{1} << copy.entry.granularity_bits;
  for (uint64_t g = 0; g < copy.bits.size() * 8; ++g) {
    if (copy.bits[g / 8] & (1u << (g % 8))) {
      const uint64_t offset = g * granule;
      if (offset < header_.size_bytes)
        SetBitmapRange(*to, offset, std::min(granule, header_.size_bytes - offset));
    }
  }
  bitmaps_changed_ = true;
  return Status::Ok();
}

// ---- Image: the public API ----

Status Image::AddBitmap(const std::string& name, uint64_t granularity_bytes, bool enabled) {
  return impl_->AddBitmap(name, granularity_bytes, enabled);
}
Status Image::RemoveBitmap(const std::string& name) { return impl_->RemoveBitmap(name); }
Status Image::ClearBitmap(const std::string& name) { return impl_->ClearBitmap(name); }
Status Image::EnableBitmap(const std::string& name, bool enabled) {
  return impl_->EnableBitmap(name, enabled);
}
Status Image::MergeBitmap(const std::string& target, const std::string& source) {
  return impl_->MergeBitmap(target, source);
}

Result<std::vector<BitmapEntry>> Image::Bitmaps() {
  if (impl_->bitmaps_kept()) {
    std::vector<BitmapEntry> out;
    for (const Impl::LoadedBitmap& bitmap : impl_->bitmaps_) out.push_back(bitmap.entry);
    return out;
  }
  return ReadBitmapDirectory(impl_->device_, impl_->header_);
}

Result<BitmapContent> Image::ReadBitmap(const std::string& name) {
  BitmapContent out;
  if (impl_->bitmaps_kept()) {
    Impl::LoadedBitmap* bitmap = impl_->FindBitmap(name);
    if (bitmap == nullptr || !bitmap->loaded)
      return Status::InvalidArgument("Dirty bitmap '" + name + "' not found or not loaded");
    out.entry = bitmap->entry;
    out.bits = bitmap->bits;
    return out;
  }
  QCRASH_ASSIGN_OR_RETURN(const std::vector<BitmapEntry> entries,
                          ReadBitmapDirectory(impl_->device_, impl_->header_));
  for (const BitmapEntry& entry : entries) {
    if (entry.name != name) continue;
    out.entry = entry;
    QCRASH_ASSIGN_OR_RETURN(
        out.bits, ReadBitmapBits(impl_->io_, impl_->header_, impl_->device_.SizeBytes(), entry));
    return out;
  }
  return Status::InvalidArgument("Dirty bitmap '" + name + "' not found");
}

bool BitmapContent::Marked(uint64_t offset) const {
  const uint64_t g = offset >> entry.granularity_bits;
  return g / 8 < bits.size() && (bits[g / 8] & (1u << (g % 8))) != 0;
}

}  // namespace qcrash::engine
