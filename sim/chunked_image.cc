// ChunkedImage: copy-on-write chunk table behind every durable base image.
#include "sim/chunked_image.h"

#include <algorithm>
#include <cstring>

namespace qcrash::sim {

ChunkedImage ChunkedImage::FromBytes(std::span<const uint8_t> bytes) {
  ChunkedImage image(bytes.size());
  image.Write(0, bytes);
  return image;
}

void ChunkedImage::Read(uint64_t offset_bytes, std::span<uint8_t> out) const {
  uint64_t done = 0;
  while (done < out.size()) {
    const uint64_t position = offset_bytes + done;
    const uint64_t chunk_index = position / kChunkBytes;
    const uint64_t within = position % kChunkBytes;
    const uint64_t step = std::min<uint64_t>(kChunkBytes - within, out.size() - done);
    if (chunk_index < chunks_.size() && chunks_[chunk_index]) {
      std::memcpy(out.data() + done, chunks_[chunk_index]->data() + within, step);
    } else {
      std::memset(out.data() + done, 0, step);
    }
    done += step;
  }
}

ChunkedImage::Chunk& ChunkedImage::MutableChunk(uint64_t chunk_index) {
  std::shared_ptr<Chunk>& slot = chunks_[chunk_index];
  if (!slot) {
    slot = std::make_shared<Chunk>();
    slot->fill(0);
  } else if (slot.use_count() > 1) {
    // Another snapshot holds this chunk: copy before the first write. Only
    // the owner of this table can raise the count of a chunk it holds alone,
    // so a count of one cannot change under us.
    slot = std::make_shared<Chunk>(*slot);
  }
  return *slot;
}

void ChunkedImage::Write(uint64_t offset_bytes, std::span<const uint8_t> data) {
  if (data.empty()) return;
  const uint64_t end = offset_bytes + data.size();
  if (end > size_bytes_) Resize(end);
  uint64_t done = 0;
  while (done < data.size()) {
    const uint64_t position = offset_bytes + done;
    const uint64_t within = position % kChunkBytes;
    const uint64_t step = std::min<uint64_t>(kChunkBytes - within, data.size() - done);
    std::memcpy(MutableChunk(position / kChunkBytes).data() + within, data.data() + done, step);
    done += step;
  }
}

void ChunkedImage::Resize(uint64_t size_bytes) {
  if (size_bytes < size_bytes_) {
    // Clear the tail of the last kept chunk so a later growth reads zeroes.
    const uint64_t within = size_bytes % kChunkBytes;
    const uint64_t last = size_bytes / kChunkBytes;
    if (within != 0 && last < chunks_.size() && chunks_[last]) {
      Chunk& chunk = MutableChunk(last);
      std::memset(chunk.data() + within, 0, kChunkBytes - within);
    }
  }
  chunks_.resize((size_bytes + kChunkBytes - 1) / kChunkBytes);
  size_bytes_ = size_bytes;
}

const uint8_t* ChunkedImage::ContiguousAt(uint64_t offset_bytes, uint64_t length_bytes) const {
  const uint64_t chunk_index = offset_bytes / kChunkBytes;
  const uint64_t within = offset_bytes % kChunkBytes;
  if (within + length_bytes > kChunkBytes || chunk_index >= chunks_.size()) return nullptr;
  const auto& chunk = chunks_[chunk_index];
  return chunk ? chunk->data() + within : nullptr;
}

std::vector<uint8_t> ChunkedImage::Flatten() const {
  std::vector<uint8_t> bytes(size_bytes_);
  Read(0, bytes);
  return bytes;
}

uint64_t ChunkedImage::SharedChunkCount(const ChunkedImage& other) const {
  uint64_t shared = 0;
  const size_t n = std::min(chunks_.size(), other.chunks_.size());
  for (size_t i = 0; i < n; ++i) {
    if (chunks_[i] && chunks_[i] == other.chunks_[i]) ++shared;
  }
  return shared;
}

}  // namespace qcrash::sim
