// ImportDmLog: the bounds-checked reader of dm-log-writes logs.
#include "sim/dm_log.h"

#include <fstream>
#include <iterator>

namespace qcrash::sim {
namespace {

uint64_t GetU64(const uint8_t* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}

uint32_t GetU32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

// A discard becomes zeroes held in memory: bound it, so that a hostile
// entry cannot ask for terabytes.
constexpr uint64_t kMaxDiscardBytes = uint64_t{1} << 30;
constexpr uint64_t kMaxImportedBytes = uint64_t{4} << 30;
constexpr uint64_t kSuperBytes = 28;
constexpr uint64_t kEntryBytes = 32;

std::string Where(uint64_t entry, uint64_t offset) {
  return "entry " + std::to_string(entry) + " at offset " + std::to_string(offset);
}

}  // namespace

Result<DmLogImport> ImportDmLog(std::span<const uint8_t> bytes, uint64_t initial_size_bytes) {
  if (bytes.size() < kSuperBytes) {
    return Status::Corruption("superblock at offset 0: the log is " + std::to_string(bytes.size()) +
                              " bytes, shorter than a superblock (28)");
  }
  if (GetU64(bytes.data()) != kDmLogMagic)
    return Status::Corruption(
        "superblock at offset 0: magic is not dm-log-writes' (0x6a736677736872)");
  const uint64_t version = GetU64(bytes.data() + 8);
  if (version != 1)
    return Status::Corruption("superblock at offset 8: version " + std::to_string(version) +
                              " (only 1 is known)");
  const uint64_t count = GetU64(bytes.data() + 16);
  const uint32_t sector = GetU32(bytes.data() + 24);  // the superblock's last field
  if (sector < 512 || sector > (1u << 20) || (sector & (sector - 1)) != 0) {
    return Status::Corruption("superblock at offset 24: sectorsize " + std::to_string(sector) +
                              " (want a power of two from 512 to 1 MiB)");
  }
  DmLogImport out;
  out.sector_bytes = sector;
  out.entries = count;
  out.log = WriteLog(sector == 4096 ? 4096 : 512, initial_size_bytes);
  const uint64_t size = bytes.size();
  uint64_t at = sector;  // the first entry's sector
  uint64_t imported = 0;
  std::vector<uint8_t> zeroes;
  for (uint64_t k = 0; k < count; ++k) {
    if (at > size || size - at < kEntryBytes) {
      return Status::Corruption(Where(k, at) + ": truncated: the superblock counts " +
                                std::to_string(count) + " entries, the file (" +
                                std::to_string(size) + " bytes) ends before this one");
    }
    const uint8_t* e = bytes.data() + at;
    const uint64_t first = GetU64(e), sectors = GetU64(e + 8), flags = GetU64(e + 16),
                   data_len = GetU64(e + 24);
    if (flags & ~(kDmLogFlush | kDmLogFua | kDmLogDiscard | kDmLogMark | kDmLogMetadata)) {
      return Status::Corruption(Where(k, at) + ": unknown flags 0x" + [&] {
        char hex[24];
        std::snprintf(hex, sizeof hex, "%llx", static_cast<unsigned long long>(flags));
        return std::string(hex);
      }());
    }
    const uint64_t max_sectors = kMaxImportedBytes / sector;
    if (sectors > max_sectors || first > (UINT64_MAX / sector) - sectors) {
      return Status::Corruption(Where(k, at) + ": nr_sectors " + std::to_string(sectors) +
                                " at sector " + std::to_string(first) + " is out of range");
    }
    const uint64_t offset = first * sector, length = sectors * sector;
    const uint64_t data_at = at + sector;
    if (flags & kDmLogMark) {
      if (data_len > sector - kEntryBytes || sectors != 0) {
        return Status::Corruption(Where(k, at) + ": a mark of " + std::to_string(data_len) +
                                  " bytes and " + std::to_string(sectors) +
                                  " sectors (a mark fits its entry's sector and has no data)");
      }
      out.marks.push_back(
          {std::string(reinterpret_cast<const char*>(e + kEntryBytes), data_len), out.log.size()});
    } else if (flags & kDmLogDiscard) {
      if (length > kMaxDiscardBytes) {
        return Status::Corruption(Where(k, at) + ": a discard of " + std::to_string(length) +
                                  " bytes (more than 1 GiB)");
      }
      if (flags & kDmLogFlush) out.log.AppendFlush();
      zeroes.assign(length, 0);
      imported += length;
      if (length > 0) out.log.AppendWrite(offset, zeroes, (flags & kDmLogFua) != 0);
    } else {
      if (data_at > size || size - data_at < length) {
        return Status::Corruption(Where(k, at) + ": truncated: its " + std::to_string(length) +
                                  " bytes of data run past the end of the file (" +
                                  std::to_string(size) + " bytes)");
      }
      imported += length;
      if (imported > kMaxImportedBytes)
        return Status::Corruption(Where(k, at) + ": the log holds more than 4 GiB of writes");
      if (flags & kDmLogFlush) out.log.AppendFlush();
      if (length > 0) {
        out.log.AppendWrite(offset, bytes.subspan(data_at, length), (flags & kDmLogFua) != 0);
      } else if (flags & kDmLogFua) {
        out.log.AppendFlush();  // an empty FUA write orders like a flush
      }
    }
    out.records_after.push_back(out.log.size());
    at = data_at + ((flags & (kDmLogDiscard | kDmLogMark)) ? 0 : length);
  }
  return out;
}

Result<DmLogImport> ImportDmLogFile(const std::string& path, uint64_t initial_size_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IoError("cannot open " + path);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  return ImportDmLog(bytes, initial_size_bytes);
}

Result<uint64_t> DmLogEntryCount(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IoError("cannot open " + path);
  uint8_t super[kSuperBytes] = {};
  // A writer that has logged nothing yet has written no superblock either.
  if (!in.read(reinterpret_cast<char*>(super), sizeof super)) return uint64_t{0};
  if (GetU64(super) != kDmLogMagic)
    return Status::Corruption(path + ": superblock at offset 0: not a dm-log-writes log");
  return GetU64(super + 16);
}

}  // namespace qcrash::sim
