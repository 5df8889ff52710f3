// Header and header-extension decoding and encoding with full validation.
#include "engine/header.h"

#include <algorithm>
#include <cstring>

#include "engine/endian.h"
#include "engine/qcow2_format.h"

namespace qcrash::engine {
namespace {

namespace f = format;

Status Bad(uint64_t offset, const char* field, const std::string& what) {
  return Status::Corruption("header offset " + HexOffset(offset) + " (" + field + "): " + what);
}

bool Aligned(uint64_t offset, const Header& h) { return (offset & (h.cluster_bytes() - 1)) == 0; }

Status ValidateFixedFields(const Header& h, uint64_t file_size_bytes) {
  if (h.cluster_bits < f::kMinClusterBits || h.cluster_bits > f::kMaxClusterBits) {
    return Bad(f::kOffClusterBits, "cluster_bits",
               std::to_string(h.cluster_bits) + " is outside 9..21");
  }
  if (h.size_bytes > f::kMaxGuestSizeBytes) {
    return Bad(f::kOffSize, "size", std::to_string(h.size_bytes) + " bytes is too large");
  }
  if (h.crypt_method != 0) {
    return Status::NotSupported("header offset 0x20 (crypt_method): encryption method " +
                                std::to_string(h.crypt_method) + " is not supported");
  }
  if (uint64_t{h.l1_size} * f::kL1EntryBytes > f::kMaxL1TableBytes) {
    return Status::Limit("header offset 0x24 (l1_size): " + std::to_string(h.l1_size) +
                         " entries exceed the 32 MiB L1 limit");
  }
  if (h.l1_size < f::L1EntriesFor(h.size_bytes, h.cluster_bits, h.extended_l2())) {
    return Bad(f::kOffL1Size, "l1_size",
               "L1 table too small for a disk of " + std::to_string(h.size_bytes) + " bytes");
  }
  if (!Aligned(h.l1_table_offset, h) || (h.l1_size > 0 && h.l1_table_offset == 0)) {
    return Bad(f::kOffL1TableOffset, "l1_table_offset",
               HexOffset(h.l1_table_offset) + " is not a valid cluster offset");
  }
  if (h.l1_table_offset > f::kMaxImageSizeBytes) {
    return Bad(f::kOffL1TableOffset, "l1_table_offset", "offset beyond 2^55");
  }
  if (!Aligned(h.refcount_table_offset, h) || h.refcount_table_offset == 0 ||
      h.refcount_table_offset > f::kMaxImageSizeBytes) {
    return Bad(f::kOffRefcountTableOffset, "refcount_table_offset",
               HexOffset(h.refcount_table_offset) + " is not a valid cluster offset");
  }
  if (h.refcount_table_clusters == 0) {
    return Bad(f::kOffRefcountTableClusters, "refcount_table_clusters", "is zero");
  }
  if ((uint64_t{h.refcount_table_clusters} << h.cluster_bits) > f::kMaxRefcountTableBytes) {
    return Status::Limit("header offset 0x38 (refcount_table_clusters): " +
                         std::to_string(h.refcount_table_clusters) +
                         " clusters exceed the 8 MiB refcount table limit");
  }
  if (h.nb_snapshots > f::kMaxSnapshots) {
    return Status::Limit("header offset 0x3c (nb_snapshots): " + std::to_string(h.nb_snapshots) +
                         " snapshots exceed the limit of 65536");
  }
  if (h.nb_snapshots > 0 && (!Aligned(h.snapshots_offset, h) || h.snapshots_offset == 0)) {
    return Bad(f::kOffSnapshotsOffset, "snapshots_offset",
               HexOffset(h.snapshots_offset) + " is not a valid cluster offset");
  }
  (void)file_size_bytes;  // tables past EOF are check's business, not the parser's
  return Status::Ok();
}

Status ValidateV3Fields(const Header& h) {
  if (h.refcount_order > f::kMaxRefcountOrder) {
    return Bad(f::kOffRefcountOrder, "refcount_order",
               std::to_string(h.refcount_order) + " is outside 0..6");
  }
  if (h.header_length < f::kV3MinHeaderLength || h.header_length % 8 != 0 ||
      h.header_length > h.cluster_bytes()) {
    return Bad(
        f::kOffHeaderLength, "header_length",
        std::to_string(h.header_length) + " must be >= 104, a multiple of 8 and fit cluster 0");
  }
  // The external data file (bit 2) is implemented beside kIncompatKnown's bits.
  const uint64_t unknown_incompatible =
      h.incompatible_features & ~(f::kIncompatKnown | f::kIncompatDataFile);
  if (unknown_incompatible != 0) {
    return Status::NotSupported(
        "header offset 0x48 (incompatible_features): unsupported feature(s): " +
        DescribeFeatureBits(unknown_incompatible, 0, h.feature_names));
  }
  if (h.extended_l2() && h.cluster_bits < f::kMinExtendedL2ClusterBits) {
    return Bad(f::kOffClusterBits, "cluster_bits",
               std::to_string(h.cluster_bits) + " is below 14, the least extended L2 allows");
  }
  if ((h.incompatible_features & f::kIncompatDataFile) && !h.data_file) {
    return Bad(f::kOffIncompatibleFeatures, "incompatible_features",
               "bit 2 (external data file) is set but no data file name extension names the file");
  }
  if (h.compression_type != f::kCompressionZlib && h.compression_type != f::kCompressionZstd) {
    return Status::NotSupported("header offset 0x68 (compression_type): type " +
                                std::to_string(h.compression_type) +
                                " is not supported (0 zlib, 1 zstd)");
  }
  // The incompatible bit says "compression_type is not zlib": both or neither.
  const bool bit_set = (h.incompatible_features & f::kIncompatCompressionType) != 0;
  if (bit_set != (h.compression_type != f::kCompressionZlib)) {
    return Bad(f::kOffIncompatibleFeatures, "incompatible_features",
               bit_set ? "compression type bit 3 is set but compression_type is zlib"
                       : "compression_type is zstd but compression type bit 3 is clear");
  }
  return Status::Ok();
}

// Walks the extension list from `start`; every record must fit in `cluster0`.
Status DecodeExtensions(std::span<const uint8_t> cluster0, uint32_t start, Header& h) {
  uint64_t offset = start;
  bool seen_backing_format = false, seen_feature_table = false;
  for (;;) {
    if (offset + 8 > cluster0.size()) {
      return Bad(offset, "header extension", "extension list runs past cluster 0");
    }
    const uint32_t type = LoadBe32(&cluster0[offset]);
    const uint32_t length = LoadBe32(&cluster0[offset + 4]);
    if (type == f::kExtEnd) return Status::Ok();
    const uint64_t data_offset = offset + 8;
    if (length > cluster0.size() - data_offset) {
      return Bad(offset + 4, "header extension length",
                 std::to_string(length) + " bytes run past cluster 0");
    }
    std::span<const uint8_t> data = cluster0.subspan(data_offset, length);
    if (type == f::kExtBackingFormat) {
      if (seen_backing_format) return Bad(offset, "backing format extension", "appears twice");
      seen_backing_format = true;
      h.backing_format = std::string(data.begin(), data.end());
    } else if (type == f::kExtFeatureNameTable) {
      if (seen_feature_table) return Bad(offset, "feature name table", "appears twice");
      seen_feature_table = true;
      if (length % f::kFeatureNameEntryBytes != 0) {
        return Bad(offset + 4, "feature name table length", "not a multiple of 48");
      }
      for (uint32_t i = 0; i < length; i += f::kFeatureNameEntryBytes) {
        const char* name = reinterpret_cast<const char*>(&data[i + 2]);
        h.feature_names.push_back(
            {data[i], data[i + 1], std::string(name, strnlen(name, f::kFeatureNameBytes))});
      }
    } else if (type == f::kExtDataFile && (h.incompatible_features & f::kIncompatDataFile)) {
      // Without bit 2 the name means nothing: the extension is kept verbatim below.
      if (h.data_file) return Bad(offset, "data file name extension", "appears twice");
      if (length == 0 || length > f::kMaxBackingFileNameBytes) {
        return Bad(offset + 4, "data file name length",
                   std::to_string(length) + " is outside 1..1023");
      }
      if (std::find(data.begin(), data.end(), uint8_t{0}) != data.end()) {
        return Bad(data_offset, "data file name", "holds a NUL byte");
      }
      h.data_file = std::string(data.begin(), data.end());
    } else if (type == f::kExtBitmaps) {
      if (h.bitmaps) return Bad(offset, "bitmaps extension", "appears twice");
      if (length < 24) return Bad(offset + 4, "bitmaps extension length", "shorter than 24 bytes");
      h.bitmaps = BitmapsExtension{LoadBe32(&data[0]), LoadBe64(&data[8]), LoadBe64(&data[16])};
      if (length > 24) h.unknown_extensions.push_back({type, {data.begin(), data.end()}});
    } else {
      for (const HeaderExtension& seen : h.unknown_extensions) {
        if (seen.type == type) return Bad(offset, "header extension", "type appears twice");
      }
      h.unknown_extensions.push_back({type, {data.begin(), data.end()}});
    }
    offset = data_offset + ((uint64_t{length} + 7) & ~uint64_t{7});
  }
}

Status DecodeBackingFile(std::span<const uint8_t> cluster0, Header& h) {
  if (h.backing_file_offset == 0) return Status::Ok();
  if (h.backing_file_size == 0 || h.backing_file_size > f::kMaxBackingFileNameBytes) {
    return Bad(f::kOffBackingFileSize, "backing_file_size",
               std::to_string(h.backing_file_size) + " is outside 1..1023");
  }
  if (h.backing_file_offset > cluster0.size() ||
      h.backing_file_size > cluster0.size() - h.backing_file_offset) {
    return Bad(f::kOffBackingFileOffset, "backing_file_offset",
               "the backing file name does not lie inside cluster 0");
  }
  const auto* name = &cluster0[h.backing_file_offset];
  h.backing_file.assign(name, name + h.backing_file_size);
  return Status::Ok();
}

void PutExtension(std::vector<uint8_t>& out, uint32_t type, std::span<const uint8_t> data) {
  const size_t at = out.size();
  out.resize(at + 8 + ((data.size() + 7) & ~size_t{7}), 0);
  StoreBe32(&out[at], type);
  StoreBe32(&out[at + 4], static_cast<uint32_t>(data.size()));
  std::copy(data.begin(), data.end(), out.begin() + at + 8);
}

}  // namespace

Result<Header> DecodeHeader(std::span<const uint8_t> cluster0, uint64_t file_size_bytes) {
  if (cluster0.size() < f::kV2HeaderLength) {
    return Status::Corruption("header: file too short for a qcow2 header (" +
                              std::to_string(cluster0.size()) + " bytes)");
  }
  const uint8_t* p = cluster0.data();
  if (LoadBe32(p + f::kOffMagic) != f::kMagic) return Bad(0, "magic", "not a qcow2 image");
  Header h;
  h.version = LoadBe32(p + f::kOffVersion);
  if (h.version != 2 && h.version != 3) {
    return Status::NotSupported("header offset 0x4 (version): qcow2 version " +
                                std::to_string(h.version) + " is not supported");
  }
  h.backing_file_offset = LoadBe64(p + f::kOffBackingFileOffset);
  h.backing_file_size = LoadBe32(p + f::kOffBackingFileSize);
  h.cluster_bits = LoadBe32(p + f::kOffClusterBits);
  h.size_bytes = LoadBe64(p + f::kOffSize);
  h.crypt_method = LoadBe32(p + f::kOffCryptMethod);
  h.l1_size = LoadBe32(p + f::kOffL1Size);
  h.l1_table_offset = LoadBe64(p + f::kOffL1TableOffset);
  h.refcount_table_offset = LoadBe64(p + f::kOffRefcountTableOffset);
  h.refcount_table_clusters = LoadBe32(p + f::kOffRefcountTableClusters);
  h.nb_snapshots = LoadBe32(p + f::kOffNbSnapshots);
  h.snapshots_offset = LoadBe64(p + f::kOffSnapshotsOffset);
  if (h.version == 2) {
    h.refcount_order = f::kV2RefcountOrder;
    h.header_length = f::kV2HeaderLength;
  } else {
    if (cluster0.size() < f::kV3MinHeaderLength) {
      return Status::Corruption("header: file too short for a v3 header");
    }
    h.incompatible_features = LoadBe64(p + f::kOffIncompatibleFeatures);
    h.compatible_features = LoadBe64(p + f::kOffCompatibleFeatures);
    h.autoclear_features = LoadBe64(p + f::kOffAutoclearFeatures);
    h.refcount_order = LoadBe32(p + f::kOffRefcountOrder);
    h.header_length = LoadBe32(p + f::kOffHeaderLength);
  }
  QCRASH_RETURN_IF_ERROR(ValidateFixedFields(h, file_size_bytes));
  // The extensions and the backing name must lie inside cluster 0.
  cluster0 = cluster0.first(std::min<uint64_t>(cluster0.size(), h.cluster_bytes()));
  if (h.version == 3) {
    if (h.header_length > cluster0.size()) {
      return Bad(f::kOffHeaderLength, "header_length", "runs past the end of the file");
    }
    if (h.header_length > f::kOffCompressionType) h.compression_type = p[f::kOffCompressionType];
    if (h.header_length > f::kOffCompressionType + 1) {
      h.header_tail.assign(p + f::kOffCompressionType + 1, p + h.header_length);
    }
    // Feature names help the unknown-bit message, so read extensions first.
    QCRASH_RETURN_IF_ERROR(DecodeExtensions(cluster0, h.header_length, h));
    QCRASH_RETURN_IF_ERROR(ValidateV3Fields(h));
  } else {
    QCRASH_RETURN_IF_ERROR(DecodeExtensions(cluster0, f::kV2HeaderLength, h));
  }
  QCRASH_RETURN_IF_ERROR(DecodeBackingFile(cluster0, h));
  return h;
}

Result<Header> ReadHeader(BlockDevice& device) {
  const uint64_t file_size = device.SizeBytes();
  std::vector<uint8_t> probe(std::min<uint64_t>(file_size, kHeaderProbeBytes));
  QCRASH_RETURN_IF_ERROR(device.Read(0, probe));
  uint64_t cluster0_bytes = probe.size();
  if (probe.size() >= 24 && LoadBe32(probe.data()) == f::kMagic) {
    const uint32_t bits = LoadBe32(&probe[f::kOffClusterBits]);
    if (bits >= f::kMinClusterBits && bits <= f::kMaxClusterBits) {
      cluster0_bytes = std::min<uint64_t>(file_size, uint64_t{1} << bits);
    }
  }
  std::vector<uint8_t> cluster0(cluster0_bytes);
  QCRASH_RETURN_IF_ERROR(device.Read(0, cluster0));
  return DecodeHeader(cluster0, file_size);
}

Result<std::vector<uint8_t>> EncodeHeader(const Header& h) {
  const uint32_t header_length = h.version == 2 ? f::kV2HeaderLength : h.header_length;
  std::vector<uint8_t> out(header_length, 0);
  uint8_t* p = out.data();
  StoreBe32(p + f::kOffMagic, f::kMagic);
  StoreBe32(p + f::kOffVersion, h.version);
  StoreBe32(p + f::kOffBackingFileSize, static_cast<uint32_t>(h.backing_file.size()));
  StoreBe32(p + f::kOffClusterBits, h.cluster_bits);
  StoreBe64(p + f::kOffSize, h.size_bytes);
  StoreBe32(p + f::kOffCryptMethod, h.crypt_method);
  StoreBe32(p + f::kOffL1Size, h.l1_size);
  StoreBe64(p + f::kOffL1TableOffset, h.l1_table_offset);
  StoreBe64(p + f::kOffRefcountTableOffset, h.refcount_table_offset);
  StoreBe32(p + f::kOffRefcountTableClusters, h.refcount_table_clusters);
  StoreBe32(p + f::kOffNbSnapshots, h.nb_snapshots);
  StoreBe64(p + f::kOffSnapshotsOffset, h.snapshots_offset);
  if (h.version == 3) {
    StoreBe64(p + f::kOffIncompatibleFeatures, h.incompatible_features);
    StoreBe64(p + f::kOffCompatibleFeatures, h.compatible_features);
    StoreBe64(p + f::kOffAutoclearFeatures, h.autoclear_features);
    StoreBe32(p + f::kOffRefcountOrder, h.refcount_order);
    StoreBe32(p + f::kOffHeaderLength, header_length);
    if (header_length > f::kOffCompressionType) p[f::kOffCompressionType] = h.compression_type;
    const size_t tail_room =
        header_length > f::kOffCompressionType + 1 ? header_length - f::kOffCompressionType - 1 : 0;
    std::copy_n(h.header_tail.begin(), std::min(tail_room, h.header_tail.size()),
                out.begin() + f::kOffCompressionType + 1);
  }
  if (h.backing_format) {
    PutExtension(
        out, f::kExtBackingFormat,
        {reinterpret_cast<const uint8_t*>(h.backing_format->data()), h.backing_format->size()});
  }
  if (!h.feature_names.empty()) {
    std::vector<uint8_t> table(h.feature_names.size() * f::kFeatureNameEntryBytes, 0);
    for (size_t i = 0; i < h.feature_names.size(); ++i) {
      uint8_t* e = &table[i * f::kFeatureNameEntryBytes];
      e[0] = h.feature_names[i].kind;
      e[1] = h.feature_names[i].bit;
      std::memcpy(e + 2, h.feature_names[i].name.data(),
                  std::min<size_t>(h.feature_names[i].name.size(), f::kFeatureNameBytes));
    }
    PutExtension(out, f::kExtFeatureNameTable, table);
  }
  if (h.bitmaps) {
    uint8_t data[24] = {};
    StoreBe32(data, h.bitmaps->nb_bitmaps);
    StoreBe64(data + 8, h.bitmaps->directory_size);
    StoreBe64(data + 16, h.bitmaps->directory_offset);
    bool has_long_form = false;
    for (const HeaderExtension& e : h.unknown_extensions) has_long_form |= e.type == f::kExtBitmaps;
    if (!has_long_form) PutExtension(out, f::kExtBitmaps, data);
  }
  if (h.data_file) {
    if (h.data_file->empty() || h.data_file->size() > f::kMaxBackingFileNameBytes) {
      return Status::InvalidArgument("data file name must be 1 to 1023 bytes long");
    }
    PutExtension(out, f::kExtDataFile,
                 {reinterpret_cast<const uint8_t*>(h.data_file->data()), h.data_file->size()});
  }
  for (const HeaderExtension& e : h.unknown_extensions) PutExtension(out, e.type, e.data);
  PutExtension(out, f::kExtEnd, {});
  if (!h.backing_file.empty()) {
    if (h.backing_file.size() > f::kMaxBackingFileNameBytes) {
      return Status::InvalidArgument("backing file name longer than 1023 bytes");
    }
    const size_t at = out.size();
    out.insert(out.end(), h.backing_file.begin(), h.backing_file.end());
    StoreBe64(out.data() + f::kOffBackingFileOffset, at);
  }
  if (out.size() > 512 && !h.feature_names.empty()) {
    // The feature name table only names bits for humans (384 bytes). A
    // header that would need more than its first sector with it drops it:
    // an extension added or removed later (bitmaps) shifts what follows,
    // and a header write torn at the sector boundary would join a new
    // first sector to a stale second one (the crash explorer found a
    // torn write naming a freed bitmap directory that way). Within one
    // sector, the disk writes the header atomically.
    Header without_names = h;
    without_names.feature_names.clear();
    return EncodeHeader(without_names);
  }
  if (out.size() > h.cluster_bytes()) {
    return Status::InvalidArgument("header, extensions and backing file name (" +
                                   std::to_string(out.size()) + " bytes) do not fit in cluster 0");
  }
  out.resize(h.cluster_bytes(), 0);
  return out;
}

bool Header::has_data_file() const {
  return (incompatible_features & f::kIncompatDataFile) != 0 && data_file.has_value();
}

bool Header::data_file_raw() const {
  return has_data_file() && (autoclear_features & f::kAutoclearDataFileRaw) != 0;
}

std::vector<FeatureName> DefaultFeatureNames() {
  return {
      {0, 0, "dirty bit"},        {0, 1, "corrupt bit"},         {0, 2, "external data file"},
      {0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
      {2, 0, "bitmaps"},          {2, 1, "raw external data"},
  };
}

std::string DescribeFeatureBits(uint64_t bits, uint8_t kind,
                                const std::vector<FeatureName>& names) {
  std::string out;
  for (uint32_t bit = 0; bit < 64; ++bit) {
    if (!(bits & (uint64_t{1} << bit))) continue;
    std::string name = "bit " + std::to_string(bit);
    for (const FeatureName& n : names) {
      if (n.kind == kind && n.bit == bit) name = n.name + " (bit " + std::to_string(bit) + ")";
    }
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

}  // namespace qcrash::engine
