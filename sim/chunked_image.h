// ChunkedImage: a disk image held as fixed-size copy-on-write chunks, so a
// snapshot of a 64 MiB image costs a table of pointers, not 64 MiB.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/status.h"

namespace qcrash::sim {

// Chunks are shared between snapshots and copied on their first write. A null
// chunk reads as zeroes (a hole), so a large empty disk costs nothing.
class ChunkedImage {
 public:
  static constexpr uint64_t kChunkBytes = 64 * 1024;  // a multiple of every sector size
  using Chunk = std::array<uint8_t, kChunkBytes>;

  ChunkedImage() = default;
  explicit ChunkedImage(uint64_t size_bytes) { Resize(size_bytes); }
  static ChunkedImage FromBytes(std::span<const uint8_t> bytes);

  uint64_t SizeBytes() const { return size_bytes_; }

  // Copies [offset_bytes, offset_bytes + out.size()) into out; bytes past the
  // end read as zeroes (callers bound-check against their own size).
  void Read(uint64_t offset_bytes, std::span<uint8_t> out) const;
  // Writes data, growing the image when the write passes the end.
  void Write(uint64_t offset_bytes, std::span<const uint8_t> data);
  // Truncates or grows; growth reads as zeroes, and a later regrowth after a
  // shrink reads zeroes too (the truncated bytes are cleared).
  void Resize(uint64_t size_bytes);

  // A pointer to the bytes at offset_bytes when [offset, offset + length) lies
  // inside one materialised chunk, else nullptr (a hole or a chunk boundary).
  const uint8_t* ContiguousAt(uint64_t offset_bytes, uint64_t length_bytes) const;

  // The whole image as one flat vector (tests and naive references only).
  std::vector<uint8_t> Flatten() const;

  // Number of distinct chunks this image and other share (for tests of sharing).
  uint64_t SharedChunkCount(const ChunkedImage& other) const;

 private:
  Chunk& MutableChunk(uint64_t chunk_index);

  std::vector<std::shared_ptr<Chunk>> chunks_;
  uint64_t size_bytes_ = 0;
};

}  // namespace qcrash::sim
