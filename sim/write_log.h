// WriteLog: the ordered record of every write, FUA write, flush and resize a
// device received, in the spirit of dm-log-writes; saved, loaded and replayed.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/block_device.h"
#include "engine/status.h"

namespace qcrash::sim {

enum class RecordKind : uint8_t {
  kWrite = 1,     // volatile until the next flush
  kWriteFua = 2,  // durable when it completes
  kFlush = 3,     // makes every earlier write durable
  kResize = 4,    // new size in offset_bytes; durable at once, ordered like a flush
};

const char* RecordKindName(RecordKind kind);

// M11 (crash_model.h): a second device (an external data file) shares the
// log in the byte range from here: its writes carry offsets from this base,
// its flushes offset_bytes = the base, its resizes the base + the new size.
inline constexpr uint64_t kSecondDeviceBaseBytes = uint64_t{1} << 50;

struct LogRecord {
  RecordKind kind = RecordKind::kWrite;
  uint64_t offset_bytes = 0;  // write offset, or the new size for kResize
  uint64_t length_bytes = 0;  // data length for writes, 0 otherwise
  uint64_t data_offset = 0;   // where the data starts in WriteLog::data()
};

// The device a record belongs to (M11): 0 the image, 1 the second device.
inline uint32_t RecordDevice(const LogRecord& record) {
  return record.offset_bytes >= kSecondDeviceBaseBytes ? 1 : 0;
}
// A record's offset (or, for a resize, the size) on its own device.
inline uint64_t RecordDeviceOffset(const LogRecord& record) {
  return record.offset_bytes - (RecordDevice(record) == 1 ? kSecondDeviceBaseBytes : 0);
}

// Binary form ("compact"): a 32-byte header, then one entry per record.
//
//   header   bytes 0-7   magic "QCRWLOG1"
//            bytes 8-11  sector_bytes (u32, little-endian)
//            bytes 12-15 reserved, zero
//            bytes 16-23 initial_size_bytes (u64): size of the image the log starts on
//            bytes 24-31 record_count (u64), or ~0 for "until the end" (a streamed log)
//   record   byte  0     kind (1..4)
//            bytes 1-8   offset_bytes (u64); from 2^50 the second device's (M11)
//            bytes 9-16  length_bytes (u64), 0 unless a write
//            then length_bytes bytes of data
//
// Decoding checks every length against the bytes that remain: a hostile or
// truncated file is a Corruption status naming the byte offset, never UB.
inline constexpr uint64_t kLogHeaderBytes = 32;
inline constexpr uint64_t kLogRecordHeaderBytes = 17;
inline constexpr uint64_t kLogStreamedCount = ~uint64_t{0};
inline constexpr uint64_t kLogMaxWriteBytes = uint64_t{1} << 32;  // a sanity bound on one write

class WriteLog {
 public:
  WriteLog() = default;
  WriteLog(uint32_t sector_bytes, uint64_t initial_size_bytes)
      : sector_bytes_(sector_bytes), initial_size_bytes_(initial_size_bytes) {}

  void AppendWrite(uint64_t offset_bytes, std::span<const uint8_t> data, bool fua);
  // device 1: the second device's flush or resize (M11).
  void AppendFlush(uint32_t device = 0);
  void AppendResize(uint64_t size_bytes, uint32_t device = 0);

  size_t size() const { return records_.size(); }
  const LogRecord& record(size_t index) const { return records_[index]; }
  const std::vector<LogRecord>& records() const { return records_; }
  std::span<const uint8_t> DataOf(const LogRecord& record) const {
    return {data_.data() + record.data_offset, record.length_bytes};
  }
  uint32_t sector_bytes() const { return sector_bytes_; }
  uint64_t initial_size_bytes() const { return initial_size_bytes_; }
  uint64_t data_bytes() const { return data_.size(); }

  // The first `count` records as their own log (a crash point's history).
  WriteLog Prefix(size_t count) const;

  std::vector<uint8_t> Encode() const;
  static Result<WriteLog> Decode(std::span<const uint8_t> bytes);
  // One encoded record, as a streamed log appends it (used by process isolation).
  static void EncodeRecord(RecordKind kind, uint64_t offset_bytes, std::span<const uint8_t> data,
                           std::vector<uint8_t>* out);
  static void EncodeHeader(uint32_t sector_bytes, uint64_t initial_size_bytes,
                           uint64_t record_count, std::vector<uint8_t>* out);

  Status SaveToFile(const std::string& path) const;
  static Result<WriteLog> LoadFromFile(const std::string& path);

 private:
  uint32_t sector_bytes_ = 512;
  uint64_t initial_size_bytes_ = 0;
  std::vector<LogRecord> records_;
  std::vector<uint8_t> data_;
};

// Applies records [0, count) of log to device in order, as dm-log-writes
// replays onto a device that holds the log's initial image. Records of a
// second device (M11) go to `second` (skipped when it is null).
Status ReplayLog(const WriteLog& log, size_t count, BlockDevice& device,
                 BlockDevice* second = nullptr);

// Receives each record as a device logs it; the shared-memory log of an
// isolated child is one.
class LogSink {
 public:
  virtual ~LogSink() = default;
  virtual Status Append(RecordKind kind, uint64_t offset_bytes, std::span<const uint8_t> data) = 0;
};

}  // namespace qcrash::sim
