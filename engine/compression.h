// Compressing and decompressing one guest cluster for compressed L2 entries:
// zlib (raw deflate) or zstd, as the header's compression_type byte says
// (engine/FORMAT.md "Compressed clusters").
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "engine/options.h"
#include "engine/status.h"

namespace qcrash::engine {

// "zlib", "zstd", or nullptr for a value qcrash does not know.
const char* CompressionTypeName(uint8_t compression_type);
// "zlib" or "zstd" (qemu-img's -o compression_type values).
Result<CompressionType> ParseCompressionType(std::string_view name);

// Compresses one cluster. Returns the compressed bytes, or an empty vector
// when they would not be smaller than the cluster: the caller then stores
// the cluster uncompressed, as QEMU does. zlib writes a raw deflate stream
// with a 4 KiB window (windowBits -12); zstd writes one frame.
Result<std::vector<uint8_t>> CompressCluster(CompressionType type,
                                             std::span<const uint8_t> cluster);

// Decompresses `compressed` (the sector-rounded range an L2 entry names, so
// it may carry trailing bytes past the stream) into exactly `out.size()`
// bytes. zlib accepts any window size up to 32 KiB (QEMU wrote -15 streams
// before it switched to -12); zstd decompresses as a stream, so a frame
// without a content size decodes too. InvalidArgument when the stream is
// broken or yields fewer bytes than `out` holds; the caller adds where.
Status DecompressCluster(CompressionType type, std::span<const uint8_t> compressed,
                         std::span<uint8_t> out);

}  // namespace qcrash::engine
