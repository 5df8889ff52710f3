// BlockDevice: the one seam between the qcow2 engine and whatever stores its
// bytes (a POSIX file, memory, the simulated disk, a crash view). The engine
// never knows which one it runs on.
#pragma once

#include <cstdint>
#include <span>

#include "engine/status.h"

namespace qcrash {

// What the device promises at power loss. The engine's ordering and the
// simulator's tearing read this same answer.
struct DeviceGeometry {
  uint32_t sector_bytes = 512;  // the unit a crash cannot tear when atomic_sector holds
  bool atomic_sector = true;    // a sector holds one whole version after a crash
};

enum class ResizeMode : uint8_t {
  kSparse,    // grow without allocating (a hole reads as zeroes)
  kAllocate,  // grow and reserve the space (posix_fallocate where the device has one)
};

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;

  // Reads exactly out.size() bytes; a range past SizeBytes() is an I/O error.
  virtual Status Read(uint64_t offset_bytes, std::span<uint8_t> out) = 0;
  // Writes data; a write past the end grows the device, as a file does.
  // The bytes are volatile until a Flush() completes.
  virtual Status Write(uint64_t offset_bytes, std::span<const uint8_t> data) = 0;
  // A write that is durable when it returns (Force Unit Access).
  virtual Status WriteFua(uint64_t offset_bytes, std::span<const uint8_t> data) = 0;
  // Makes every earlier write durable.
  virtual Status Flush() = 0;
  virtual uint64_t SizeBytes() const = 0;
  // Truncates or grows the device; growth reads as zeroes.
  virtual Status Resize(uint64_t size_bytes, ResizeMode mode) = 0;
  virtual DeviceGeometry Geometry() const = 0;
};

}  // namespace qcrash
