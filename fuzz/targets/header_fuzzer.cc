// Fuzz target: the header and header-extension parser. Property: a header
// that decodes re-encodes, and the encoding decodes to the same header.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "engine/header.h"
#include "fuzz/fuzz_support.h"

namespace {

// Names the fields in which two headers differ, for the failure message.
std::string DiffHeaders(const qcrash::engine::Header& a, const qcrash::engine::Header& b) {
  std::string out;
  auto field = [&out](const char* name, auto x, auto y) {
    if (!(x == y)) out += std::string(" ") + name;
  };
  field("version", a.version, b.version);
  field("backing_file_offset", a.backing_file_offset, b.backing_file_offset);
  field("backing_file_size", a.backing_file_size, b.backing_file_size);
  field("cluster_bits", a.cluster_bits, b.cluster_bits);
  field("size", a.size_bytes, b.size_bytes);
  field("l1_size", a.l1_size, b.l1_size);
  field("l1_table_offset", a.l1_table_offset, b.l1_table_offset);
  field("refcount_table_offset", a.refcount_table_offset, b.refcount_table_offset);
  field("refcount_table_clusters", a.refcount_table_clusters, b.refcount_table_clusters);
  field("nb_snapshots", a.nb_snapshots, b.nb_snapshots);
  field("snapshots_offset", a.snapshots_offset, b.snapshots_offset);
  field("incompatible_features", a.incompatible_features, b.incompatible_features);
  field("compatible_features", a.compatible_features, b.compatible_features);
  field("autoclear_features", a.autoclear_features, b.autoclear_features);
  field("refcount_order", a.refcount_order, b.refcount_order);
  field("header_length", a.header_length, b.header_length);
  field("compression_type", a.compression_type, b.compression_type);
  field("header_tail", a.header_tail, b.header_tail);
  field("backing_file", a.backing_file, b.backing_file);
  field("backing_format", a.backing_format, b.backing_format);
  field("feature_names", a.feature_names, b.feature_names);
  for (size_t i = 0; i < a.feature_names.size() && i < b.feature_names.size(); ++i) {
    if (!(a.feature_names[i] == b.feature_names[i])) {
      out += " (feature name " + std::to_string(i) + ": '" + a.feature_names[i].name + "' vs '" +
             b.feature_names[i].name + "')";
      break;
    }
  }
  if (a.feature_names.size() != b.feature_names.size()) {
    out += " (" + std::to_string(a.feature_names.size()) + " vs " +
           std::to_string(b.feature_names.size()) + " feature names)";
  }
  field("bitmaps", a.bitmaps, b.bitmaps);
  field("unknown_extensions", a.unknown_extensions, b.unknown_extensions);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qcrash;
  const std::span<const uint8_t> cluster0(data, size);
  auto decoded = engine::DecodeHeader(cluster0, size);
  if (!decoded.ok()) return 0;
  const engine::Header& header = *decoded;
  (void)engine::DescribeFeatureBits(header.incompatible_features, 0, header.feature_names);
  auto encoded = engine::EncodeHeader(header);
  if (!encoded.ok()) return 0;  // e.g. extensions that fit the input but not one cluster
  auto again = engine::DecodeHeader(*encoded, encoded->size());
  if (!again.ok()) {
    fuzz::Fail("an encoded header decodes", again.status().ToString());
  }
  // Where the backing file name sits (and its size field without a backing
  // file, which the spec leaves undefined) is the encoder's choice, and so is
  // dropping the feature name table (names for humans) when cluster 0 is full.
  engine::Header expected = header;
  engine::Header actual = *again;
  for (engine::Header* h : {&expected, &actual}) {
    h->backing_file_offset = 0;
    h->backing_file_size = static_cast<uint32_t>(h->backing_file.size());
  }
  if (actual.feature_names.empty()) expected.feature_names.clear();
  if (!(actual == expected)) {
    fuzz::Fail("DecodeHeader(EncodeHeader(h)) == h",
               "fields differ:" + DiffHeaders(expected, actual));
  }
  return 0;
}
