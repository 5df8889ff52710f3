// ReadSnapshotTable, ReadBitmapDirectory: bounds-checked decoding.
#include "engine/snapshot_table.h"

#include <algorithm>

#include "engine/endian.h"
#include "engine/qcow2_format.h"

namespace qcrash::engine {
namespace {

constexpr uint64_t kMaxTableBytes = uint64_t{64} << 20;
constexpr uint32_t kMaxExtraBytes = 1024;

uint64_t Align8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

std::string Where(const char* what, uint64_t index, uint64_t offset) {
  return std::string(what) + " " + std::to_string(index) + " at offset " + std::to_string(offset);
}

}  // namespace

Result<std::vector<SnapshotEntry>> ReadSnapshotTable(BlockDevice& device, const Header& header) {
  std::vector<SnapshotEntry> out;
  if (header.nb_snapshots == 0) return out;
  if (header.nb_snapshots > format::kMaxSnapshots)
    return Status::Corruption("header: nb_snapshots " + std::to_string(header.nb_snapshots) +
                              " is more than 65536");
  const uint64_t file = device.SizeBytes();
  uint64_t at = header.snapshots_offset;
  for (uint32_t i = 0; i < header.nb_snapshots; ++i) {
    uint8_t fixed[40];
    if (at > file || file - at < sizeof fixed || at - header.snapshots_offset > kMaxTableBytes)
      return Status::Corruption(Where("snapshot table entry", i, at) +
                                ": past the end of the file");
    QCRASH_RETURN_IF_ERROR(device.Read(at, fixed));
    SnapshotEntry s;
    s.offset = at;
    s.l1_table_offset = LoadBe64(fixed);
    s.l1_size = LoadBe32(fixed + 8);
    const uint16_t id_bytes = LoadBe16(fixed + 12), name_bytes = LoadBe16(fixed + 14);
    s.date_sec = LoadBe32(fixed + 16);
    s.date_nsec = LoadBe32(fixed + 20);
    s.vm_clock_nsec = LoadBe64(fixed + 24);
    s.vm_state_size = LoadBe32(fixed + 32);
    s.extra_data_size = LoadBe32(fixed + 36);
    if (s.extra_data_size > kMaxExtraBytes)
      return Status::Corruption(Where("snapshot table entry", i, at) + ": extra_data_size " +
                                std::to_string(s.extra_data_size) + " is more than 1024");
    const uint64_t used = 40 + uint64_t{s.extra_data_size} + id_bytes + name_bytes;
    if (file - at < used)
      return Status::Corruption(Where("snapshot table entry", i, at) +
                                ": runs past the end of the file");
    std::vector<uint8_t> rest(used - 40);
    QCRASH_RETURN_IF_ERROR(device.Read(at + 40, rest));
    const uint8_t* extra = rest.data();
    if (s.extra_data_size >= 8) s.vm_state_size = LoadBe64(extra);
    if (s.extra_data_size >= 16) s.disk_size = LoadBe64(extra + 8);
    if (s.extra_data_size >= 24) s.icount = LoadBe64(extra + 16);
    const uint8_t* strings = extra + s.extra_data_size;
    s.id.assign(strings, strings + id_bytes);
    s.name.assign(strings + id_bytes, strings + id_bytes + name_bytes);
    out.push_back(std::move(s));
    at += Align8(used);
  }
  return out;
}

std::vector<SnapshotEntry>::const_iterator FindSnapshot(const std::vector<SnapshotEntry>& table,
                                                        const std::string& name_or_id) {
  auto found = std::find_if(table.begin(), table.end(),
                            [&](const SnapshotEntry& s) { return s.id == name_or_id; });
  if (found != table.end()) return found;
  return std::find_if(table.begin(), table.end(),
                      [&](const SnapshotEntry& s) { return s.name == name_or_id; });
}

Result<std::vector<BitmapEntry>> ReadBitmapDirectory(BlockDevice& device, const Header& header) {
  std::vector<BitmapEntry> out;
  if (!header.bitmaps || !(header.autoclear_features & format::kAutoclearBitmaps)) return out;
  const BitmapsExtension& ext = *header.bitmaps;
  const uint64_t file = device.SizeBytes();
  if (ext.directory_size > kMaxTableBytes || ext.directory_offset > file ||
      file - ext.directory_offset < ext.directory_size) {
    return Status::Corruption(
        "bitmaps extension: directory at offset " + std::to_string(ext.directory_offset) + " of " +
        std::to_string(ext.directory_size) + " bytes runs past the end of the file");
  }
  std::vector<uint8_t> dir(ext.directory_size);
  QCRASH_RETURN_IF_ERROR(device.Read(ext.directory_offset, dir));
  uint64_t at = 0;
  for (uint32_t i = 0; i < ext.nb_bitmaps; ++i) {
    if (dir.size() - at < 24 || at > dir.size())
      return Status::Corruption(Where("bitmap directory entry", i, ext.directory_offset + at) +
                                ": past the end of the directory");
    const uint8_t* e = dir.data() + at;
    BitmapEntry b;
    b.offset = ext.directory_offset + at;
    b.table_offset = LoadBe64(e);
    b.table_size = LoadBe32(e + 8);
    b.flags = LoadBe32(e + 12);
    b.type = e[16];
    b.granularity_bits = e[17];
    const uint16_t name_bytes = LoadBe16(e + 18);
    const uint32_t extra_bytes = LoadBe32(e + 20);
    const uint64_t used = 24 + uint64_t{extra_bytes} + name_bytes;
    if (dir.size() - at < used)
      return Status::Corruption(Where("bitmap directory entry", i, b.offset) +
                                ": runs past the end of the directory");
    b.extra.assign(e + 24, e + 24 + extra_bytes);
    b.name.assign(e + 24 + extra_bytes, e + 24 + extra_bytes + name_bytes);
    out.push_back(std::move(b));
    at += Align8(used);
  }
  return out;
}

std::vector<uint8_t> EncodeBitmapDirectory(const std::vector<BitmapEntry>& entries) {
  std::vector<uint8_t> out;
  for (const BitmapEntry& b : entries) {
    const size_t at = out.size();
    out.resize(at + Align8(24 + b.extra.size() + b.name.size()), 0);
    uint8_t* e = out.data() + at;
    StoreBe64(e, b.table_offset);
    StoreBe32(e + 8, b.table_size);
    StoreBe32(e + 12, b.flags);
    e[16] = b.type;
    e[17] = b.granularity_bits;
    StoreBe16(e + 18, static_cast<uint16_t>(b.name.size()));
    StoreBe32(e + 20, static_cast<uint32_t>(b.extra.size()));
    std::copy(b.extra.begin(), b.extra.end(), e + 24);
    std::copy(b.name.begin(), b.name.end(), e + 24 + b.extra.size());
  }
  return out;
}

}  // namespace qcrash::engine
