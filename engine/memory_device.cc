// MemoryDevice: bounds-checked reads and growing writes over a vector.
#include "engine/memory_device.h"

#include <algorithm>
#include <cstring>

namespace qcrash {

MemoryDevice::MemoryDevice(std::vector<uint8_t> bytes, DeviceGeometry geometry,
                           uint64_t max_size_bytes)
    : bytes_(std::move(bytes)), geometry_(geometry), max_size_bytes_(max_size_bytes) {}

Status MemoryDevice::Read(uint64_t offset_bytes, std::span<uint8_t> out) {
  if (offset_bytes > bytes_.size() || out.size() > bytes_.size() - offset_bytes) {
    return Status::IoError("read of " + std::to_string(out.size()) + " bytes at " +
                           HexOffset(offset_bytes) + " past the end of the device (" +
                           std::to_string(bytes_.size()) + " bytes)");
  }
  if (!out.empty()) std::memcpy(out.data(), bytes_.data() + offset_bytes, out.size());
  return Status::Ok();
}

Status MemoryDevice::Write(uint64_t offset_bytes, std::span<const uint8_t> data) {
  if (offset_bytes > max_size_bytes_ || data.size() > max_size_bytes_ - offset_bytes) {
    return Status::NoSpace("write at " + HexOffset(offset_bytes) + " past the device limit");
  }
  // An empty write is a no-op, as pwrite(2) of zero bytes is: it does not grow the device.
  if (data.empty()) return Status::Ok();
  const uint64_t end = offset_bytes + data.size();
  if (end > bytes_.size()) bytes_.resize(end, 0);
  std::memcpy(bytes_.data() + offset_bytes, data.data(), data.size());
  return Status::Ok();
}

Status MemoryDevice::WriteFua(uint64_t offset_bytes, std::span<const uint8_t> data) {
  return Write(offset_bytes, data);
}

Status MemoryDevice::Flush() {
  ++flush_count_;
  return Status::Ok();
}

Status MemoryDevice::Resize(uint64_t size_bytes, ResizeMode /*mode*/) {
  if (size_bytes > max_size_bytes_) {
    return Status::NoSpace("resize to " + std::to_string(size_bytes) + " past the device limit");
  }
  bytes_.resize(size_bytes, 0);
  return Status::Ok();
}

}  // namespace qcrash
