// MemoryDevice: a BlockDevice held in a byte vector. Everything written is
// "durable" at once; the simulated disk (sim/) is the device that models loss.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/block_device.h"

namespace qcrash {

class MemoryDevice : public BlockDevice {
 public:
  // max_size_bytes bounds growth, so hostile images cannot exhaust memory.
  explicit MemoryDevice(std::vector<uint8_t> bytes = {}, DeviceGeometry geometry = {},
                        uint64_t max_size_bytes = uint64_t{1} << 34);

  Status Read(uint64_t offset_bytes, std::span<uint8_t> out) override;
  Status Write(uint64_t offset_bytes, std::span<const uint8_t> data) override;
  Status WriteFua(uint64_t offset_bytes, std::span<const uint8_t> data) override;
  Status Flush() override;
  uint64_t SizeBytes() const override { return bytes_.size(); }
  Status Resize(uint64_t size_bytes, ResizeMode mode) override;
  DeviceGeometry Geometry() const override { return geometry_; }

  const std::vector<uint8_t>& bytes() const { return bytes_; }
  uint64_t flush_count() const { return flush_count_; }

 private:
  std::vector<uint8_t> bytes_;
  DeviceGeometry geometry_;
  uint64_t max_size_bytes_;
  uint64_t flush_count_ = 0;
};

}  // namespace qcrash
