// The qcow2 header and its extensions, decoded from and encoded to cluster 0.
// Decoding validates every field against the spec and qcrash's limits and
// names the offset and field of the first violation.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/block_device.h"
#include "engine/qcow2_format.h"
#include "engine/status.h"

namespace qcrash::engine {

struct FeatureName {
  uint8_t kind = 0;  // 0 incompatible, 1 compatible, 2 autoclear
  uint8_t bit = 0;
  std::string name;
  bool operator==(const FeatureName&) const = default;
};

// An extension qcrash does not interpret: kept verbatim and written back.
struct HeaderExtension {
  uint32_t type = 0;
  std::vector<uint8_t> data;
  bool operator==(const HeaderExtension&) const = default;
};

struct BitmapsExtension {
  uint32_t nb_bitmaps = 0;
  uint64_t directory_size = 0;
  uint64_t directory_offset = 0;
  bool operator==(const BitmapsExtension&) const = default;
};

struct Header {
  uint32_t version = 3;
  uint64_t backing_file_offset = 0;
  uint32_t backing_file_size = 0;
  uint32_t cluster_bits = 16;
  uint64_t size_bytes = 0;
  uint32_t crypt_method = 0;
  uint32_t l1_size = 0;
  uint64_t l1_table_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  // v3 only (zero on v2, refcount_order 4 implied)
  uint64_t incompatible_features = 0;
  uint64_t compatible_features = 0;
  uint64_t autoclear_features = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = 112;
  uint8_t compression_type = 0;
  // header bytes past 104 other than compression_type, kept on rewrite
  std::vector<uint8_t> header_tail;

  std::string backing_file;
  std::optional<std::string> backing_format;
  std::vector<FeatureName> feature_names;
  std::optional<BitmapsExtension> bitmaps;
  // The external data file's name (extension 0x44415441); used when
  // incompatible bit 2 is set.
  std::optional<std::string> data_file;
  std::vector<HeaderExtension> unknown_extensions;  // in the order found

  uint64_t cluster_bytes() const { return uint64_t{1} << cluster_bits; }
  // Extended L2 entries (incompatible bit 4): 128-bit L2 entries, 32 subclusters.
  bool extended_l2() const { return (incompatible_features & format::kIncompatExtendedL2) != 0; }
  uint32_t l2_entry_bytes() const { return format::L2EntryBytes(extended_l2()); }
  uint64_t l2_entries() const { return format::L2Entries(cluster_bits, extended_l2()); }
  uint64_t subcluster_bytes() const {
    return extended_l2() ? cluster_bytes() / format::kSubclusters : cluster_bytes();
  }
  bool has_data_file() const;  // incompatible bit 2
  bool data_file_raw() const;  // autoclear bit 1, with a data file
  bool operator==(const Header&) const = default;
};

// Bytes of cluster 0 needed to decode the fixed header (the rest follows
// from cluster_bits): read this much first, then the whole cluster.
inline constexpr size_t kHeaderProbeBytes = 112;

// Decodes cluster 0 (or as much of it as the file holds). `file_size_bytes`
// bounds the offsets the header may name.
Result<Header> DecodeHeader(std::span<const uint8_t> cluster0, uint64_t file_size_bytes);

// Reads cluster 0 from `device` (its size follows from cluster_bits) and
// decodes it: the one way every tool reads a header from an image.
Result<Header> ReadHeader(BlockDevice& device);

// Encodes the header, its extensions and the backing file name into one
// cluster-sized buffer. Fails if they do not fit in cluster 0.
Result<std::vector<uint8_t>> EncodeHeader(const Header& header);

// The feature name table qcrash writes (QEMU's names for the bits it knows).
std::vector<FeatureName> DefaultFeatureNames();

// "dirty, corrupt" style list of the set bits of a feature mask.
std::string DescribeFeatureBits(uint64_t bits, uint8_t kind, const std::vector<FeatureName>& names);

}  // namespace qcrash::engine
