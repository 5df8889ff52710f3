// The snapshot table and the bitmap directory as data: what `info` lists
// and what snapshot and bitmap operations start from (QCOW2-NOTES:
// "Snapshots", "Bitmaps"). Read with every length checked against the file;
// a table that does not parse is a Corruption naming the entry and offset.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/block_device.h"
#include "engine/header.h"
#include "engine/status.h"

namespace qcrash::engine {

// One snapshot table entry.
//   bytes 0-7 l1_table_offset, 8-11 l1_size, 12-13 id_str_size,
//   14-15 name_size, 16-19 date_sec, 20-23 date_nsec, 24-31 vm_clock_nsec,
//   32-35 vm_state_size, 36-39 extra_data_size, then the extra data
//   (vm_state_size_large u64, disk_size u64, icount u64, each present when
//   the extra data is long enough), the id, the name, padding to 8.
struct SnapshotEntry {
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
  std::string id;
  std::string name;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  uint64_t vm_state_size = 0;  // the large field when the extra data has it
  std::optional<uint64_t> disk_size;
  std::optional<uint64_t> icount;  // absent, or ~0: no instruction count
  uint32_t extra_data_size = 0;
  uint64_t offset = 0;  // where the entry starts in the file
};

Result<std::vector<SnapshotEntry>> ReadSnapshotTable(BlockDevice& device, const Header& header);
// The entry `name_or_id` names, as QEMU looks one up: by id first, then by
// name (a snapshot named "2" does not hide the one whose id is 2); end()
// when none does.
std::vector<SnapshotEntry>::const_iterator FindSnapshot(const std::vector<SnapshotEntry>& table,
                                                        const std::string& name_or_id);
// The table's bytes (entries padded to 8; extra data: 8, 16 or 24 bytes).
std::vector<uint8_t> EncodeSnapshotTable(const std::vector<SnapshotEntry>& entries);

// One bitmap directory entry.
//   bytes 0-7 bitmap_table_offset, 8-11 bitmap_table_size, 12-15 flags,
//   16 type, 17 granularity_bits, 18-19 name_size, 20-23 extra_data_size,
//   then the extra data, the name, padding to 8.
struct BitmapEntry {
  uint64_t table_offset = 0;
  uint32_t table_size = 0;
  uint32_t flags = 0;  // bit 0 in_use, bit 1 auto
  uint8_t type = 1;
  uint8_t granularity_bits = 16;
  std::string name;
  std::vector<uint8_t> extra;  // the extra data, kept as found
  uint64_t offset = 0;
};
inline constexpr uint32_t kBitmapInUse = 1, kBitmapAuto = 2;
// The directory's bytes (entries padded to 8).
std::vector<uint8_t> EncodeBitmapDirectory(const std::vector<BitmapEntry>& entries);

// The bitmap directory the header's bitmaps extension names (empty without
// one, or when the autoclear bit says the extension is stale).
Result<std::vector<BitmapEntry>> ReadBitmapDirectory(BlockDevice& device, const Header& header);

}  // namespace qcrash::engine
