// WriteLog: record keeping, the bounds-checked binary codec, and replay.
#include "sim/write_log.h"

#include <cstdio>
#include <cstring>
#include <memory>

namespace qcrash::sim {
namespace {

constexpr char kMagic[8] = {'Q', 'C', 'R', 'W', 'L', 'O', 'G', '1'};

void PutU64(uint64_t value, std::vector<uint8_t>* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<uint8_t>(value >> (8 * i)));
}
void PutU32(uint32_t value, std::vector<uint8_t>* out) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<uint8_t>(value >> (8 * i)));
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}
uint32_t GetU32(const uint8_t* p) {
  uint32_t value = 0;
  for (int i = 3; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}

bool ValidSectorBytes(uint32_t sector_bytes) { return sector_bytes == 512 || sector_bytes == 4096; }

}  // namespace

const char* RecordKindName(RecordKind kind) {
  switch (kind) {
    case RecordKind::kWrite:
      return "write";
    case RecordKind::kWriteFua:
      return "write_fua";
    case RecordKind::kFlush:
      return "flush";
    case RecordKind::kResize:
      return "resize";
  }
  return "unknown";
}

void WriteLog::AppendWrite(uint64_t offset_bytes, std::span<const uint8_t> data, bool fua) {
  LogRecord record;
  record.kind = fua ? RecordKind::kWriteFua : RecordKind::kWrite;
  record.offset_bytes = offset_bytes;
  record.length_bytes = data.size();
  record.data_offset = data_.size();
  data_.insert(data_.end(), data.begin(), data.end());
  records_.push_back(record);
}

void WriteLog::AppendFlush(uint32_t device) {
  const uint64_t base = device == 1 ? kSecondDeviceBaseBytes : 0;
  records_.push_back({RecordKind::kFlush, base, 0, data_.size()});
}

void WriteLog::AppendResize(uint64_t size_bytes, uint32_t device) {
  const uint64_t base = device == 1 ? kSecondDeviceBaseBytes : 0;
  records_.push_back({RecordKind::kResize, base + size_bytes, 0, data_.size()});
}

WriteLog WriteLog::Prefix(size_t count) const {
  WriteLog prefix(sector_bytes_, initial_size_bytes_);
  if (count > records_.size()) count = records_.size();
  prefix.records_.assign(records_.begin(), records_.begin() + static_cast<ptrdiff_t>(count));
  const uint64_t data_end = count == records_.size() ? data_.size() : records_[count].data_offset;
  prefix.data_.assign(data_.begin(), data_.begin() + static_cast<ptrdiff_t>(data_end));
  return prefix;
}

void WriteLog::EncodeHeader(uint32_t sector_bytes, uint64_t initial_size_bytes,
                            uint64_t record_count, std::vector<uint8_t>* out) {
  out->insert(out->end(), kMagic, kMagic + 8);
  PutU32(sector_bytes, out);
  PutU32(0, out);
  PutU64(initial_size_bytes, out);
  PutU64(record_count, out);
}

void WriteLog::EncodeRecord(RecordKind kind, uint64_t offset_bytes, std::span<const uint8_t> data,
                            std::vector<uint8_t>* out) {
  out->push_back(static_cast<uint8_t>(kind));
  PutU64(offset_bytes, out);
  PutU64(data.size(), out);
  out->insert(out->end(), data.begin(), data.end());
}

std::vector<uint8_t> WriteLog::Encode() const {
  std::vector<uint8_t> out;
  out.reserve(kLogHeaderBytes + records_.size() * kLogRecordHeaderBytes + data_.size());
  EncodeHeader(sector_bytes_, initial_size_bytes_, records_.size(), &out);
  for (const LogRecord& record : records_) {
    EncodeRecord(record.kind, record.offset_bytes, DataOf(record), &out);
  }
  return out;
}

Result<WriteLog> WriteLog::Decode(std::span<const uint8_t> bytes) {
  if (bytes.size() < kLogHeaderBytes) {
    return Status::Corruption("write log: " + std::to_string(bytes.size()) +
                              " bytes, shorter than the 32-byte header");
  }
  if (std::memcmp(bytes.data(), kMagic, 8) != 0) {
    return Status::Corruption("write log at 0x0: field magic: not \"QCRWLOG1\"");
  }
  const uint32_t sector_bytes = GetU32(bytes.data() + 8);
  if (!ValidSectorBytes(sector_bytes)) {
    return Status::Corruption("write log at 0x8: field sector_bytes: " +
                              std::to_string(sector_bytes) + " is neither 512 nor 4096");
  }
  WriteLog log(sector_bytes, GetU64(bytes.data() + 16));
  const uint64_t record_count = GetU64(bytes.data() + 24);
  uint64_t position = kLogHeaderBytes;
  while (record_count == kLogStreamedCount ? position < bytes.size() : log.size() < record_count) {
    if (bytes.size() - position < kLogRecordHeaderBytes) {
      return Status::Corruption("write log at " + HexOffset(position) + ": record " +
                                std::to_string(log.size()) + " header truncated");
    }
    const uint8_t kind = bytes[position];
    const uint64_t offset_bytes = GetU64(bytes.data() + position + 1);
    const uint64_t length_bytes = GetU64(bytes.data() + position + 9);
    const std::string where =
        "write log at " + HexOffset(position) + ": record " + std::to_string(log.size());
    if (kind < 1 || kind > 4) {
      return Status::Corruption(where + ": field kind: " + std::to_string(kind) + " is unknown");
    }
    const bool is_write = kind <= 2;
    if (!is_write && length_bytes != 0) {
      return Status::Corruption(where + ": field length: a flush or resize carries no data");
    }
    if (length_bytes > kLogMaxWriteBytes || offset_bytes > (uint64_t{1} << 62)) {
      return Status::Corruption(where + ": field length/offset beyond qcrash's limits");
    }
    position += kLogRecordHeaderBytes;
    if (bytes.size() - position < length_bytes) {
      return Status::Corruption(where + ": data truncated (" + std::to_string(length_bytes) +
                                " bytes announced, " + std::to_string(bytes.size() - position) +
                                " remain)");
    }
    const auto data = bytes.subspan(position, length_bytes);
    switch (static_cast<RecordKind>(kind)) {
      case RecordKind::kWrite:
        log.AppendWrite(offset_bytes, data, false);
        break;
      case RecordKind::kWriteFua:
        log.AppendWrite(offset_bytes, data, true);
        break;
      case RecordKind::kFlush:
        log.AppendFlush(offset_bytes >= kSecondDeviceBaseBytes ? 1 : 0);
        break;
      case RecordKind::kResize:
        log.AppendResize(offset_bytes);
        break;
    }
    position += length_bytes;
  }
  if (record_count != kLogStreamedCount && position != bytes.size()) {
    return Status::Corruption("write log at " + HexOffset(position) + ": " +
                              std::to_string(bytes.size() - position) +
                              " trailing bytes after the last record");
  }
  return log;
}

Status WriteLog::SaveToFile(const std::string& path) const {
  const std::vector<uint8_t> bytes = Encode();
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!file) return Status::IoError(path + ": cannot create the write log");
  if (std::fwrite(bytes.data(), 1, bytes.size(), file.get()) != bytes.size()) {
    return Status::IoError(path + ": short write of the write log");
  }
  if (std::fflush(file.get()) != 0) return Status::IoError(path + ": flush failed");
  return Status::Ok();
}

Result<WriteLog> WriteLog::LoadFromFile(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) return Status::IoError(path + ": cannot open the write log");
  std::vector<uint8_t> bytes;
  uint8_t buffer[65536];
  size_t got = 0;
  while ((got = std::fread(buffer, 1, sizeof buffer, file.get())) > 0) {
    bytes.insert(bytes.end(), buffer, buffer + got);
  }
  if (std::ferror(file.get())) return Status::IoError(path + ": read error");
  auto log = Decode(bytes);
  if (!log.ok()) return log.status().WithContext(path);
  return log;
}

Status ReplayLog(const WriteLog& log, size_t count, BlockDevice& image_device,
                 BlockDevice* second) {
  if (count > log.size()) {
    return Status::InvalidArgument("replay of " + std::to_string(count) +
                                   " records from a log of " + std::to_string(log.size()));
  }
  for (size_t i = 0; i < count; ++i) {
    const LogRecord& record = log.record(i);
    if (RecordDevice(record) == 1 && second == nullptr) continue;
    BlockDevice& device = RecordDevice(record) == 1 ? *second : image_device;
    const uint64_t offset = RecordDeviceOffset(record);
    Status status;
    switch (record.kind) {
      case RecordKind::kWrite:
        status = device.Write(offset, log.DataOf(record));
        break;
      case RecordKind::kWriteFua:
        status = device.WriteFua(offset, log.DataOf(record));
        break;
      case RecordKind::kFlush:
        status = device.Flush();
        break;
      case RecordKind::kResize:
        status = device.Resize(offset, ResizeMode::kSparse);
        break;
    }
    if (!status.ok()) return status.WithContext("replay of record " + std::to_string(i));
  }
  return Status::Ok();
}

}  // namespace qcrash::sim
