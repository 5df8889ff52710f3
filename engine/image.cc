// Image: open, create, header updates, L1 growth, resize, flush and close.
#include "engine/image.h"

#include <algorithm>
#include <cstring>

#include "engine/check.h"
#include "engine/endian.h"
#include "engine/image_impl.h"

namespace qcrash::engine {

namespace f = format;

Image::Impl::Impl(BlockDevice& device, const OpenOptions& options)
    : device_(device),
      options_(options),
      rules_(options.rules ? *options.rules : RulesFor(options.policy, options.faults)),
      io_(device, stats_) {}

Result<std::vector<uint64_t>> ReadTableEntries(CountingIo& io, uint64_t offset, uint64_t entries,
                                               uint64_t cluster_bytes, const char* what) {
  const uint64_t bytes = entries * 8;
  // Like QEMU, a table may end in the file's last partial cluster (the rest
  // reads as zeroes); one that starts past it is corrupt.
  const uint64_t size = io.device().SizeBytes();
  if (bytes != 0 && (offset >= size || bytes - 1 > size - offset + cluster_bytes)) {
    return Status::Corruption(std::string(what) + " at " + HexOffset(offset) + " (" +
                              std::to_string(bytes) + " bytes) lies past the end of the file");
  }
  std::vector<uint8_t> raw(bytes);
  QCRASH_RETURN_IF_ERROR(io.ReadMetadata(offset, raw));
  std::vector<uint64_t> table(entries);
  for (uint64_t i = 0; i < entries; ++i) table[i] = LoadBe64(&raw[i * 8]);
  return table;
}

// Open steps:
//  1. decode the header from cluster 0;
//  2. read-write with the dirty bit set (a crash under lazy refcounts):
//     rebuild the refcounts with a full repair, which clears the bit;
//  3. load the L1 and refcount tables;
//  4. read-write: load the persistent bitmaps (engine/bitmaps.cc) and clear
//     the autoclear bits we do not keep (bit 0, bitmaps, under the journal
//     policy and on v2, as an older writer would).
Status Image::Impl::Load() {
  QCRASH_ASSIGN_OR_RETURN(header_, ReadHeader(device_));  // step 1
  // The data file opens before anything is written: an image whose data
  // file cannot be opened is left untouched.
  QCRASH_RETURN_IF_ERROR(OpenDataFile());
  const bool corrupt = (header_.incompatible_features & f::kIncompatCorrupt) != 0;
  if (!options_.read_only && !corrupt && (header_.incompatible_features & f::kIncompatDirty)) {
    auto repaired = CheckImage(device_, {RepairMode::kAll});  // step 2
    if (!repaired.ok()) return repaired.status().WithContext("refcount rebuild of a dirty image");
    if (repaired->corruptions != 0 || repaired->check_errors != 0) {
      return Status::Corruption("refcount rebuild of a dirty image left " +
                                std::to_string(repaired->corruptions) + " corruptions");
    }
    QCRASH_ASSIGN_OR_RETURN(header_, ReadHeader(device_));
  }
  const uint64_t file_size = device_.SizeBytes();
  read_only_ = options_.read_only;
  if (header_.incompatible_features & f::kIncompatCorrupt) read_only_ = true;
  QCRASH_RETURN_IF_ERROR(RecoverJournal());  // a dirty journal replays before any table is read
  QCRASH_ASSIGN_OR_RETURN(l1_table_, ReadTableEntries(io_, header_.l1_table_offset, header_.l1_size,
                                                      cluster_bytes(), "L1 table"));
  const bool writethrough = rules_.Of(Rule::kEveryWrite) == Mechanism::kFlush;
  QCRASH_RETURN_IF_ERROR(LoadRefcounts(file_size, writethrough));
  l2_cache_ = std::make_unique<MetadataCache>("L2", io_, options_.l2_cache_tables,
                                              static_cast<uint32_t>(cluster_bytes()), writethrough);
  l2_cache_->set_keep_dirty_on_failed_write(rules_.keep_dirty_on_failed_write);
  l2_cache_->set_data_file_barrier(rules_.Of(Rule::kDataFileBeforePointer) != Mechanism::kNone);
  if (!rules_.cache_dependencies()) l2_cache_->set_ignore_dependencies(true);
  QCRASH_RETURN_IF_ERROR(LoadBitmaps());
  const uint64_t known = f::kAutoclearKnown | (bitmaps_kept() ? f::kAutoclearBitmaps : 0) |
                         (header_.has_data_file() ? f::kAutoclearDataFileRaw : 0);
  if (!read_only_ && (header_.autoclear_features & ~known) != 0) {
    header_.autoclear_features &= known;
    QCRASH_RETURN_IF_ERROR(WriteHeader());
    QCRASH_RETURN_IF_ERROR(Barrier(Rule::kHeaderFeatures));
  }
  if (!read_only_ && rules_.Of(Rule::kDirtyBitFirst) != Mechanism::kNone) {
    if (header_.version < 3) {
      return Status::InvalidArgument("the lazy policy needs a compat=1.1 (v3) image");
    }
    if (!(header_.compatible_features & f::kCompatLazyRefcounts)) {
      header_.compatible_features |= f::kCompatLazyRefcounts;
      QCRASH_RETURN_IF_ERROR(WriteHeader());
      QCRASH_RETURN_IF_ERROR(Barrier(Rule::kHeaderFeatures));
    }
  }
  QCRASH_RETURN_IF_ERROR(AttachJournal());
  return OpenBacking();
}

Status Image::Impl::OpenBacking() {
  if (header_.backing_file.empty()) return Status::Ok();
  if (!options_.open_backing) return Status::Ok();  // reads of unallocated clusters will fail
  return OpenBackingFile(options_.open_backing, header_.backing_file, header_.backing_format,
                         backing_device_, backing_image_, backing_size_bytes_);
}

Status Image::Impl::OpenBackingFile(const BackingOpener& open, const std::string& name,
                                    const std::optional<std::string>& format,
                                    std::unique_ptr<BlockDevice>& device,
                                    std::unique_ptr<Image>& image, uint64_t& size_bytes) {
  if (options_.max_backing_depth == 0) {
    return Status::Limit("backing chain deeper than the limit (a loop?) at '" + name + "'");
  }
  QCRASH_ASSIGN_OR_RETURN(device, open(name));
  std::string format_name = format.value_or("");
  if (format_name.empty()) {
    uint8_t magic[4] = {};
    if (device->SizeBytes() >= 4) QCRASH_RETURN_IF_ERROR(device->Read(0, magic));
    format_name = LoadBe32(magic) == f::kMagic ? "qcow2" : "raw";
  }
  if (format_name == "raw") {
    size_bytes = device->SizeBytes();
    return Status::Ok();
  }
  if (format_name != "qcow2") {
    return Status::NotSupported("backing file format '" + format_name + "' is not supported");
  }
  OpenOptions backing_options = options_;
  backing_options.read_only = true;
  backing_options.max_backing_depth = options_.max_backing_depth - 1;
  backing_options.open_backing = open;
  auto opened = Image::Open(*device, backing_options);
  if (!opened.ok()) return opened.status().WithContext("backing file '" + name + "'");
  image = std::move(opened).value();
  size_bytes = image->size_bytes();
  return Status::Ok();
}

// Rewrites cluster 0's used bytes. The fields a switch changes (table
// offsets and sizes, feature bits) all sit in the first sector, so a torn
// header write can only mix whole old and new sectors of unchanged text.
Status Image::Impl::WriteHeader() {
  QCRASH_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, EncodeHeader(header_));
  size_t used = bytes.size();
  while (used > 0 && bytes[used - 1] == 0) --used;
  used = std::max<size_t>(512, (used + 511) / 512 * 512);
  used = std::min(used, bytes.size());
  return io_.WriteMetadata(0, std::span<const uint8_t>(bytes).first(used));
}

Status Image::Impl::MarkCorrupt(const Status& why) {
  if (!read_only_ && !(header_.incompatible_features & f::kIncompatCorrupt)) {
    header_.incompatible_features |= f::kIncompatCorrupt;
    if (header_.version >= 3 && WriteHeader().ok()) (void)Barrier(Rule::kCorruptBit);
  }
  read_only_ = true;
  return why;
}

Status Image::Impl::WriteRefused() const {
  if (header_.incompatible_features & f::kIncompatCorrupt) {
    return Status::ReadOnly("image is marked corrupt; run check -r all");
  }
  return Status::ReadOnly("image is open read-only");
}

Status Image::Impl::SetDirtyBit(bool dirty) {
  const bool is_dirty = (header_.incompatible_features & f::kIncompatDirty) != 0;
  if (dirty == is_dirty) return Status::Ok();
  if (dirty) {
    header_.incompatible_features |= f::kIncompatDirty;
  } else {
    header_.incompatible_features &= ~f::kIncompatDirty;
  }
  QCRASH_RETURN_IF_ERROR(WriteHeader());
  // Why (R7): set, the bit must be durable before any L2 entry that its
  // refcount does not cover; cleared, it follows the flushed caches.
  return io_.DeviceFlush(Rule::kDirtyBitFirst);
}

Mechanism Image::Impl::MechanismOf(Rule rule) const {
  const Mechanism m = rules_.Of(rule);
  // Before the journal is attached (the first steps of open) its rules
  // fall back to plain flushes.
  if ((m == Mechanism::kTransaction || m == Mechanism::kCommit) && journal_ == nullptr)
    return Mechanism::kFlush;
  return m;
}

Status Image::Impl::Barrier(Rule rule, MetadataCache* cache) {
  switch (MechanismOf(rule)) {
    case Mechanism::kFlush:
    case Mechanism::kBatch:
      return cache != nullptr ? cache->Flush(rule) : io_.DeviceFlush(rule);
    case Mechanism::kTransaction:
      // Inside the open transaction: its parts become durable together at
      // the commit, so their order here does not matter.
      ++stats_.transaction_barriers;
      return cache != nullptr ? cache->WriteBack() : Status::Ok();
    case Mechanism::kCommit:
      return FlushJournal();
    default:
      // The rule is kept elsewhere (a cache dependency, the dirty bit,
      // quarantine, a revoke, writethrough caches) or not at all.
      return Status::Ok();
  }
}

Status Image::Impl::BeforeMetadataChange() {
  if (read_only_) return WriteRefused();
  if (rules_.Of(Rule::kDirtyBitFirst) != Mechanism::kNone) return SetDirtyBit(true);
  return Status::Ok();
}

Status Image::Impl::WriteL1Entry(uint64_t l1_index) {
  uint8_t bytes[8];
  StoreBe64(bytes, l1_table_[l1_index]);
  QCRASH_RETURN_IF_ERROR(io_.WriteMetadata(header_.l1_table_offset + l1_index * 8, bytes));
  return Barrier(Rule::kEveryWrite);
}

// R6 relocate, then switch:
//  1. allocate the new L1 (refcounts raised);
//  2. write its contents;
//  3. flush: contents and refcounts durable before the header names it;
//  4. switch l1_table_offset and l1_size (one sector), flush;
//  5. free the old L1.
Status Image::Impl::GrowL1(uint64_t l1_entries) {
  if (l1_entries * 8 > f::kMaxL1TableBytes) return Status::Limit("L1 table would exceed 32 MiB");
  const uint64_t clusters = (l1_entries * 8 + cluster_bytes() - 1) / cluster_bytes();
  QCRASH_ASSIGN_OR_RETURN(const uint64_t new_offset, AllocateClusters(clusters));  // step 1
  std::vector<uint8_t> bytes(clusters * cluster_bytes(), 0);
  for (size_t i = 0; i < l1_table_.size(); ++i) StoreBe64(&bytes[i * 8], l1_table_[i]);
  QCRASH_RETURN_IF_ERROR(io_.WriteMetadata(new_offset, bytes));  // step 2
  // Step 3. Why: a header naming an unwritten or unreferenced L1 is corrupt.
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch, refcount_cache()));
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));
  const uint64_t old_offset = header_.l1_table_offset;
  const uint64_t old_clusters =
      (uint64_t{header_.l1_size} * 8 + cluster_bytes() - 1) / cluster_bytes();
  header_.l1_table_offset = new_offset;
  header_.l1_size = static_cast<uint32_t>(l1_entries);
  l1_table_.resize(l1_entries, 0);
  QCRASH_RETURN_IF_ERROR(WriteHeader());  // step 4
  // Why: the old L1 is freed next and may be reused at once by writethrough.
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kRelocateThenSwitch));
  if (old_offset != 0 && old_clusters != 0)
    return FreeClusters(old_offset, old_clusters);  // step 5
  return Status::Ok();
}

Status Image::Impl::Truncate(uint64_t new_size_bytes, Preallocation preallocation) {
  if (read_only_) return WriteRefused();
  if (new_size_bytes > f::kMaxGuestSizeBytes) return Status::InvalidArgument("size too large");
  const uint64_t old_size = header_.size_bytes;
  if (new_size_bytes != old_size) QCRASH_RETURN_IF_ERROR(ResizeBitmaps(old_size, new_size_bytes));
  if (new_size_bytes < old_size) QCRASH_RETURN_IF_ERROR(DropTail(new_size_bytes, old_size));
  const uint64_t needed =
      f::L1EntriesFor(new_size_bytes, header_.cluster_bits, header_.extended_l2());
  if (needed > l1_table_.size()) QCRASH_RETURN_IF_ERROR(GrowL1(needed));
  QCRASH_RETURN_IF_ERROR(BeforeMetadataChange());
  header_.size_bytes = new_size_bytes;
  QCRASH_RETURN_IF_ERROR(WriteHeader());
  // Why: a completed resize must survive a crash like any acknowledged write.
  QCRASH_RETURN_IF_ERROR(Barrier(Rule::kAcknowledgedResize));
  QCRASH_RETURN_IF_ERROR(ResizeDataFile(old_size, new_size_bytes));
  if (new_size_bytes > old_size && preallocation != Preallocation::kOff) {
    return Preallocate(old_size, new_size_bytes, preallocation);
  }
  return Status::Ok();
}

// Shrinking, before the header names the new size: what lies past the new
// end must read as zeroes if the disk grows again, as on a fresh disk.
//  1. the part of the last cluster past the new end gets explicit zeroes;
//  2. each whole cluster past it loses its mapping and its host cluster is
//     freed (unlink before free, R4, as a discard); with a backing file the
//     entry becomes a zero cluster instead, so the backing file's bytes do
//     not show through (v2 has no zero flag: refused);
//  3. all of it durable before the header shrinks (a guest flush): a crash
//     after the smaller size is durable must not leave the tail mapped.
// The L1 table keeps its size (the format allows a larger one).
Status Image::Impl::DropTail(uint64_t new_size_bytes, uint64_t old_size_bytes) {
  const uint64_t cb = cluster_bytes();
  const bool has_backing = !header_.backing_file.empty();
  if (has_backing && header_.version < 3) {
    return Status::NotSupported(
        "cannot shrink a version 2 image with a backing file (no zero clusters)");
  }
  const uint64_t first = (new_size_bytes + cb - 1) / cb;
  const uint64_t end = (old_size_bytes + cb - 1) / cb;
  if (new_size_bytes % cb != 0) {  // step 1
    const uint64_t gc = new_size_bytes / cb;
    QCRASH_ASSIGN_OR_RETURN(const L2Slot slot, LookupL2(gc));
    QCRASH_ASSIGN_OR_RETURN(const ClusterType type, Classify(slot));
    const bool reads_zero =
        type == ClusterType::kZeroPlain || type == ClusterType::kZeroAlloc ||
        (type == ClusterType::kUnallocated && !(has_backing && gc * cb < backing_size_bytes_));
    if (!reads_zero) {
      const uint64_t tail = std::min(first * cb, old_size_bytes) - new_size_bytes;
      const std::vector<uint8_t> zeroes(tail, 0);
      QCRASH_RETURN_IF_ERROR(WriteCluster(gc, new_size_bytes % cb, zeroes));
    }
  }
  for (uint64_t gc = first; gc < end; ++gc) {  // step 2
    QCRASH_ASSIGN_OR_RETURN(L2Slot slot, LookupL2(gc));
    // Past the backing file's end an unallocated cluster reads zeroes.
    const bool shows_backing = has_backing && gc * cb < backing_size_bytes_;
    if (slot.l2_table_offset == 0 && !shows_backing) continue;
    QCRASH_ASSIGN_OR_RETURN(const ClusterType type, Classify(slot));
    // With extended L2 the bitmap carries the zero flag, per subcluster.
    const bool extended = header_.extended_l2();
    const uint64_t new_entry = shows_backing && !extended ? f::kOflagZero : 0;
    const uint64_t new_bitmap = shows_backing && extended ? f::kL2BitmapZeroMask : 0;
    if (slot.entry == new_entry && slot.bitmap == new_bitmap) continue;
    QCRASH_ASSIGN_OR_RETURN(slot, LookupL2ForWrite(gc));
    QCRASH_RETURN_IF_ERROR(SetL2Entry(slot, new_entry, new_bitmap));
    QCRASH_RETURN_IF_ERROR(FreeEntryClusters(slot.entry, type));
    if (gc + 1 < end) QCRASH_RETURN_IF_ERROR(AtClusterBoundary());
  }
  // Bug switch shrink-header-before-tail: the unmapping stays in the cache,
  // behind the header write that follows.
  if (!rules_.drop_tail_before_shrink) return Status::Ok();
  return FlushAll();  // step 3
}

// Allocates every cluster in [from, to) with a normal L2 entry (metadata),
// reserves the file space (falloc) or writes zeroes into it (full).
Status Image::Impl::Preallocate(uint64_t from_bytes, uint64_t to_bytes,
                                Preallocation preallocation) {
  const uint64_t cb = cluster_bytes();
  for (uint64_t gc = from_bytes / cb; gc < (to_bytes + cb - 1) / cb; ++gc) {
    QCRASH_ASSIGN_OR_RETURN(L2Slot slot, LookupL2ForWrite(gc));
    if (slot.entry != 0 || slot.bitmap != 0) continue;
    QCRASH_ASSIGN_OR_RETURN(const uint64_t host, AllocateDataCluster(gc));
    // Extended L2: the subclusters stay unallocated (they read as before).
    QCRASH_RETURN_IF_ERROR(SetL2Entry(slot, host | f::kOflagCopied, 0));
  }
  if (io_.has_data_device()) {
    // The data clusters live in the data file: it grows, the image file not.
    BlockDevice& data = io_.data_device();
    if (preallocation != Preallocation::kMetadata && data.SizeBytes() < to_bytes) {
      QCRASH_RETURN_IF_ERROR(data.Resize(to_bytes, ResizeMode::kAllocate));
    }
    return FlushAll();
  }
  const uint64_t end_bytes = allocated_end() * cb;
  if (preallocation == Preallocation::kFull) {
    const std::vector<uint8_t> zeroes(std::min<uint64_t>(cb * 16, uint64_t{4} << 20), 0);
    for (uint64_t at = device_.SizeBytes(); at < end_bytes;) {
      const uint64_t n = std::min<uint64_t>(zeroes.size(), end_bytes - at);
      QCRASH_RETURN_IF_ERROR(io_.WriteData(at, std::span<const uint8_t>(zeroes).first(n)));
      at += n;
    }
  } else if (end_bytes > device_.SizeBytes()) {
    const ResizeMode mode =
        preallocation == Preallocation::kMetadata ? ResizeMode::kSparse : ResizeMode::kAllocate;
    QCRASH_RETURN_IF_ERROR(device_.Resize(end_bytes, mode));
  }
  return FlushAll();
}

// Guest flush: write back the L2 and refcount caches in dependency order,
// then flush the device, after which freed clusters may be reused.
Status Image::Impl::FlushAll() {
  if (read_only_) return Status::Ok();
  if (MechanismOf(Rule::kGuestFlush) == Mechanism::kCommit) return FlushJournal();
  // Write back in dependency order: a cache that must be durable before
  // the other's tables costs a flush inside WriteBack (refcounts before
  // the L2 entries using them; unlinks before the frees); the rest share
  // the one flush below. Without dependencies the third does nothing.
  QCRASH_RETURN_IF_ERROR(l2_cache_->WriteBack());
  QCRASH_RETURN_IF_ERROR(WriteBackRefcounts());
  QCRASH_RETURN_IF_ERROR(l2_cache_->WriteBack());  // frees made the refcount cache wait on us
  // Why: the guest's flush makes every acknowledged write durable (I4).
  if (io_.writes_pending()) QCRASH_RETURN_IF_ERROR(Barrier(Rule::kGuestFlush));
  ReleaseQuarantine();
  return Status::Ok();
}

Status Image::Impl::Close() {
  if (read_only_) return Status::Ok();
  QCRASH_RETURN_IF_ERROR(StoreBitmaps());
  QCRASH_RETURN_IF_ERROR(ReleaseExtent());
  QCRASH_RETURN_IF_ERROR(FlushAll());
  if (journal_) return journal_->Checkpoint(/*clear_dirty=*/true);
  // A sharing change that failed half-way keeps the bit (R8): refcounts and
  // COPIED may disagree, and the next open rebuilds them.
  if (sharing_change_open_) return Status::Ok();
  // Clearing the dirty bit comes last, after the caches are durable (R7).
  return SetDirtyBit(false);
}

// ---- Image: the public API --------------------------------------------------

Image::Image(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Image::~Image() = default;

Result<std::unique_ptr<Image>> Image::Open(BlockDevice& device, const OpenOptions& options) {
  auto impl = std::make_unique<Impl>(device, options);
  QCRASH_RETURN_IF_ERROR(impl->Load());
  return std::unique_ptr<Image>(new Image(std::move(impl)));
}

namespace {

Status ValidateCreateOptions(const CreateOptions& o) {
  if (o.version != 2 && o.version != 3)
    return Status::InvalidArgument("compat must be 0.10 or 1.1");
  if (o.cluster_bits < f::kMinClusterBits || o.cluster_bits > f::kMaxClusterBits) {
    return Status::InvalidArgument("cluster size must be a power of two between 512 and 2M");
  }
  if (o.refcount_order > f::kMaxRefcountOrder) {
    return Status::InvalidArgument("refcount_bits must be a power of two up to 64");
  }
  if (o.version == 2 && o.refcount_order != f::kV2RefcountOrder) {
    return Status::InvalidArgument(
        "different refcount widths than 16 bits require compatibility level 1.1 or above");
  }
  if (o.version == 2 && o.lazy_refcounts) {
    return Status::InvalidArgument(
        "lazy refcounts only supported with compatibility level 1.1 and above");
  }
  if (o.extended_l2 && o.version == 2) {
    return Status::InvalidArgument(
        "Extended L2 entries are only supported with compatibility level 1.1 and above");
  }
  if (o.extended_l2 && o.cluster_bits < f::kMinExtendedL2ClusterBits) {
    return Status::InvalidArgument(
        "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  }
  if (o.size_bytes > f::kMaxGuestSizeBytes) return Status::InvalidArgument("image size too large");
  if (o.version == 2 && o.compression_type != CompressionType::kZlib) {
    return Status::InvalidArgument(
        "compression_type other than zlib needs compatibility level 1.1 (v3)");
  }
  if (o.backing_file.size() > f::kMaxBackingFileNameBytes) {
    return Status::InvalidArgument("backing file name too long");
  }
  if (o.data_file_raw && o.data_file.empty()) {
    return Status::InvalidArgument("data_file_raw requires a data file");
  }
  if (!o.data_file.empty()) {
    if (o.version == 2) {
      return Status::InvalidArgument("external data files require compatibility level 1.1");
    }
    if (!o.backing_file.empty()) {
      return Status::NotSupported("a backing file with an external data file is not supported");
    }
    if (o.data_file.size() > f::kMaxBackingFileNameBytes) {
      return Status::InvalidArgument("data file name too long");
    }
  }
  return Status::Ok();
}

}  // namespace

// Create steps: write cluster 0 (header), cluster 1 (refcount table) and
// cluster 2 (the first refcount block, counting clusters 0-2), flush, then
// open the empty image and grow it to its size, which allocates the L1
// table through the normal allocation path.
Result<std::unique_ptr<Image>> Image::Create(BlockDevice& device, const CreateOptions& options,
                                             const OpenOptions& open_options) {
  QCRASH_RETURN_IF_ERROR(ValidateCreateOptions(options));
  Header h;
  h.version = options.version;
  h.cluster_bits = options.cluster_bits;
  h.refcount_order = options.version == 2 ? f::kV2RefcountOrder : options.refcount_order;
  h.header_length = options.version == 2 ? f::kV2HeaderLength : f::kV3HeaderLengthWritten;
  h.refcount_table_offset = h.cluster_bytes();
  h.refcount_table_clusters = 1;
  if (options.lazy_refcounts) h.compatible_features |= f::kCompatLazyRefcounts;
  if (options.extended_l2) h.incompatible_features |= f::kIncompatExtendedL2;
  h.compression_type = static_cast<uint8_t>(options.compression_type);
  if (options.compression_type != CompressionType::kZlib) {
    h.incompatible_features |= f::kIncompatCompressionType;
  }
  if (options.version == 3) h.feature_names = DefaultFeatureNames();
  h.backing_file = options.backing_file;
  if (!options.backing_format.empty()) h.backing_format = options.backing_format;
  if (!options.data_file.empty()) {
    h.incompatible_features |= f::kIncompatDataFile;
    h.data_file = options.data_file;
    if (options.data_file_raw) h.autoclear_features |= f::kAutoclearDataFileRaw;
  }
  QCRASH_ASSIGN_OR_RETURN(std::vector<uint8_t> image, EncodeHeader(h));
  image.resize(3 * h.cluster_bytes(), 0);
  StoreBe64(&image[h.cluster_bytes()], 2 * h.cluster_bytes());
  std::span<uint8_t> block(&image[2 * h.cluster_bytes()], h.cluster_bytes());
  for (uint64_t c = 0; c < 3; ++c) f::SetRefcount(block, c, h.refcount_order, 1);
  QCRASH_RETURN_IF_ERROR(device.Resize(0, ResizeMode::kSparse));
  QCRASH_RETURN_IF_ERROR(device.Write(0, image));
  QCRASH_RETURN_IF_ERROR(device.Flush());
  OpenOptions rw = open_options;
  rw.read_only = false;
  QCRASH_ASSIGN_OR_RETURN(std::unique_ptr<Image> opened, Open(device, rw));
  // A raw data file maps every cluster from the start, as QEMU's create does.
  const Preallocation preallocation =
      options.data_file_raw && options.preallocation == Preallocation::kOff
          ? Preallocation::kMetadata
          : options.preallocation;
  QCRASH_RETURN_IF_ERROR(opened->impl_->Truncate(options.size_bytes, preallocation));
  QCRASH_RETURN_IF_ERROR(opened->impl_->FlushAll());
  return opened;
}

Status Image::Truncate(uint64_t new_size_bytes, Preallocation preallocation) {
  QCRASH_RETURN_IF_ERROR(impl_->Truncate(new_size_bytes, preallocation));
  return impl_->AfterGuestOp();
}
Status Image::Flush() {
  ++impl_->stats_.guest_flushes;
  return impl_->FlushAll();
}
Status Image::Close() { return impl_->Close(); }
const Header& Image::header() const { return impl_->header_; }
uint64_t Image::size_bytes() const { return impl_->header_.size_bytes; }
bool Image::read_only() const { return impl_->read_only_; }
const EngineStats& Image::stats() const { return impl_->stats_; }

}  // namespace qcrash::engine
