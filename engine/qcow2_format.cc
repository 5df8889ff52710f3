// Refcount packing for every refcount_order from 0 (1 bit) to 6 (64 bits).
#include "engine/qcow2_format.h"

#include <cassert>

#include "engine/endian.h"

namespace qcrash::engine::format {

uint64_t GetRefcount(std::span<const uint8_t> refcount_block, uint64_t index,
                     uint32_t refcount_order) {
  const uint32_t bits = 1u << refcount_order;
  switch (bits) {
    case 64:
      return LoadBe64(&refcount_block[index * 8]);
    case 32:
      return LoadBe32(&refcount_block[index * 4]);
    case 16:
      return LoadBe16(&refcount_block[index * 2]);
    case 8:
      return refcount_block[index];
    default: {
      const uint64_t bit = index * bits;
      return (refcount_block[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
  }
}

void SetRefcount(std::span<uint8_t> refcount_block, uint64_t index, uint32_t refcount_order,
                 uint64_t value) {
  const uint32_t bits = 1u << refcount_order;
  assert(value <= MaxRefcount(refcount_order));
  switch (bits) {
    case 64:
      StoreBe64(&refcount_block[index * 8], value);
      return;
    case 32:
      StoreBe32(&refcount_block[index * 4], static_cast<uint32_t>(value));
      return;
    case 16:
      StoreBe16(&refcount_block[index * 2], static_cast<uint16_t>(value));
      return;
    case 8:
      refcount_block[index] = static_cast<uint8_t>(value);
      return;
    default: {
      const uint64_t bit = index * bits;
      const uint8_t mask = static_cast<uint8_t>(((1u << bits) - 1) << (bit % 8));
      uint8_t& byte = refcount_block[bit / 8];
      byte = static_cast<uint8_t>((byte & ~mask) | ((value << (bit % 8)) & mask));
    }
  }
}

uint64_t RefcountMetadataBytes(uint64_t clusters, uint32_t cluster_bits, uint32_t refcount_order) {
  const uint64_t cluster_bytes = uint64_t{1} << cluster_bits;
  const uint64_t per_block = (cluster_bytes * 8) >> refcount_order;  // refcounts in a block
  const uint64_t per_table_cluster = cluster_bytes / kRefcountTableEntryBytes;
  uint64_t blocks = 0, table = 0;
  // Each round counts the clusters the last round's structures need; the
  // counts only grow and are bounded, so this ends in a few rounds.
  for (uint64_t total = clusters, last = ~uint64_t{0}; total != last;) {
    last = total;
    blocks = (clusters + blocks + table + per_block - 1) / per_block;
    table = (blocks + per_table_cluster - 1) / per_table_cluster;
    total = clusters + blocks + table;
  }
  return (blocks + table) * cluster_bytes;
}

uint64_t FullyAllocatedBytes(uint64_t size_bytes, uint32_t cluster_bits, uint32_t refcount_order,
                             bool extended_l2) {
  const uint64_t cluster_bytes = uint64_t{1} << cluster_bits;
  const uint64_t data = (size_bytes + cluster_bytes - 1) / cluster_bytes * cluster_bytes;
  const uint64_t per_l2 = L2Entries(cluster_bits, extended_l2);
  const uint64_t per_l1_cluster = cluster_bytes / kL1EntryBytes;
  uint64_t metadata = cluster_bytes;  // the header
  const uint64_t l2_tables = (data / cluster_bytes + per_l2 - 1) / per_l2;
  metadata += l2_tables * cluster_bytes;
  const uint64_t l1_entries = (l2_tables + per_l1_cluster - 1) / per_l1_cluster * per_l1_cluster;
  metadata += l1_entries * kL1EntryBytes;
  metadata +=
      RefcountMetadataBytes((metadata + data) / cluster_bytes, cluster_bits, refcount_order);
  return metadata + data;
}

uint64_t BitmapBytes(uint64_t disk_bytes, uint32_t granularity_bits, uint32_t cluster_bits) {
  const uint64_t cluster_bytes = uint64_t{1} << cluster_bits;
  const uint64_t granule = uint64_t{1} << granularity_bits;
  const uint64_t bits = (disk_bytes + granule - 1) / granule;
  const uint64_t data_clusters = ((bits + 7) / 8 + cluster_bytes - 1) / cluster_bytes;
  const uint64_t table = (data_clusters * 8 + cluster_bytes - 1) / cluster_bytes * cluster_bytes;
  return data_clusters * cluster_bytes + table;
}

}  // namespace qcrash::engine::format
