// Import of a dm-log-writes log: the write log format of Linux's
// dm-log-writes target, of xfstests' replay-log, and of QEMU's blklogwrites
// block driver, which logs every write, flush and discard its parent layer
// (QEMU's qcow2 driver, say) sends to the image file.
//
// The format (all fields little-endian), in sectors of `sectorsize` bytes:
//   sector 0   superblock: magic u64 0x6a736677736872, version u64 (1),
//              nr_entries u64, sectorsize u32
//   then per entry, one sector holding
//              sector u64, nr_sectors u64, flags u64, data_len u64,
//              and, for a MARK, data_len bytes of its name;
//              then nr_sectors sectors of data, except for a DISCARD.
//   flags: FLUSH 1, FUA 2, DISCARD 4, MARK 8, METADATA 16 (a hint).
// An entry with FLUSH and data is a flush before the write (REQ_PREFLUSH).
//
// Import maps it onto the sim's WriteLog: a write is a write, FUA a FUA
// write, a flush a flush, a discard a write of zeroes (what a punched hole
// reads; while pending it may still read the old bytes, which the crash
// model allows). MARK entries become named positions in the log, the
// operation boundaries of a harness that marks them.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/status.h"
#include "sim/write_log.h"

namespace qcrash::sim {

inline constexpr uint64_t kDmLogMagic = 0x6a736677736872ULL;
inline constexpr uint64_t kDmLogFlush = 1, kDmLogFua = 2, kDmLogDiscard = 4, kDmLogMark = 8,
                          kDmLogMetadata = 16;

struct DmLogMark {
  std::string name;
  uint64_t records = 0;  // records of the imported log before the mark
};

struct DmLogImport {
  WriteLog log;
  uint64_t entries = 0;       // entries imported (the superblock's count)
  uint32_t sector_bytes = 0;  // the log's sector size
  // records_after[k]: records of `log` once entry k is imported.
  std::vector<uint64_t> records_after;
  std::vector<DmLogMark> marks;
};

// Imports a log onto an image of `initial_size_bytes`. The WriteLog's
// atomic unit is the log's sector size when it is 512 or 4096 (else 512).
// Errors name the entry and its byte offset in the log: a truncated,
// hostile or foreign file is a Corruption status, never undefined behaviour.
Result<DmLogImport> ImportDmLog(std::span<const uint8_t> bytes, uint64_t initial_size_bytes);
Result<DmLogImport> ImportDmLogFile(const std::string& path, uint64_t initial_size_bytes);

// The superblock's entry count (what a writer has logged so far, when it
// updates the superblock after every entry: blklogwrites with
// log-super-update-interval=1); 0 for a file too short to hold one.
Result<uint64_t> DmLogEntryCount(const std::string& path);

}  // namespace qcrash::sim
