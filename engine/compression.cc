// Compressed clusters: the zlib and zstd codecs for one cluster, the byte
// allocator that packs several compressed clusters into one host cluster,
// the compressed write and read paths.
#include "engine/compression.h"

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cstring>

#include "engine/image_impl.h"

namespace qcrash::engine {

namespace f = format;

const char* CompressionTypeName(uint8_t compression_type) {
  switch (compression_type) {
    case f::kCompressionZlib:
      return "zlib";
    case f::kCompressionZstd:
      return "zstd";
    default:
      return nullptr;
  }
}

Result<CompressionType> ParseCompressionType(std::string_view name) {
  if (name == "zlib") return CompressionType::kZlib;
  if (name == "zstd") return CompressionType::kZstd;
  return Status::InvalidArgument("unknown compression type '" + std::string(name) +
                                 "' (zlib or zstd)");
}

namespace {

// zlib's deflate with a 4 KiB window and no header (windowBits -12), the
// stream QEMU writes; a stream that does not end inside `capacity` bytes is
// not worth storing.
Result<std::vector<uint8_t>> Deflate(std::span<const uint8_t> cluster, size_t capacity) {
  z_stream z{};
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
    return Status::IoError("zlib deflateInit2 failed");
  }
  std::vector<uint8_t> out(capacity);
  z.next_in = const_cast<uint8_t*>(cluster.data());
  z.avail_in = static_cast<uInt>(cluster.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  const size_t produced = out.size() - z.avail_out;
  deflateEnd(&z);
  if (rc != Z_STREAM_END) return std::vector<uint8_t>();  // did not fit: store it plain
  out.resize(produced);
  return out;
}

Result<std::vector<uint8_t>> ZstdCompress(std::span<const uint8_t> cluster, size_t capacity) {
  std::vector<uint8_t> out(capacity);
  const size_t produced =
      ZSTD_compress(out.data(), out.size(), cluster.data(), cluster.size(), ZSTD_CLEVEL_DEFAULT);
  if (ZSTD_isError(produced)) {
    if (ZSTD_getErrorCode(produced) == ZSTD_error_dstSize_tooSmall) return std::vector<uint8_t>();
    return Status::IoError(std::string("zstd compression failed: ") + ZSTD_getErrorName(produced));
  }
  out.resize(produced);
  return out;
}

Status Inflate(std::span<const uint8_t> compressed, std::span<uint8_t> out) {
  z_stream z{};
  // -15 accepts every raw deflate window up to 32 KiB, so QEMU's older -15
  // streams and today's -12 ones both read.
  if (inflateInit2(&z, -15) != Z_OK) return Status::IoError("zlib inflateInit2 failed");
  z.next_in = const_cast<uint8_t*>(compressed.data());
  z.avail_in = static_cast<uInt>(compressed.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = inflate(&z, Z_FINISH);
  const bool complete = z.avail_out == 0 && (rc == Z_STREAM_END || rc == Z_OK || rc == Z_BUF_ERROR);
  inflateEnd(&z);
  if (!complete) return Status::InvalidArgument("zlib stream does not inflate to a full cluster");
  return Status::Ok();
}

// A window larger than the largest cluster (2 MiB) never comes from a
// qcow2 writer; refusing it bounds what a hostile frame can make us allocate.
constexpr int kZstdWindowLogMax = 22;

Status ZstdDecompress(std::span<const uint8_t> compressed, std::span<uint8_t> out) {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  if (dctx == nullptr) return Status::IoError("zstd: cannot create a decompression context");
  ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, kZstdWindowLogMax);
  ZSTD_inBuffer in{compressed.data(), compressed.size(), 0};
  ZSTD_outBuffer output{out.data(), out.size(), 0};
  Status status = Status::Ok();
  // Stream until the cluster is full, the frame ends or the input runs out
  // (the entry's range is sector-rounded: bytes past the frame are ignored).
  while (output.pos < output.size) {
    const size_t in_before = in.pos, out_before = output.pos;
    const size_t rc = ZSTD_decompressStream(dctx, &output, &in);
    if (ZSTD_isError(rc)) {
      status = Status::InvalidArgument(std::string("zstd frame does not decompress: ") +
                                       ZSTD_getErrorName(rc));
      break;
    }
    if (rc == 0) break;  // the frame ended
    // No progress: the input is exhausted.
    if (in.pos == in_before && output.pos == out_before) break;
  }
  ZSTD_freeDCtx(dctx);
  if (status.ok() && output.pos != output.size) {
    status = Status::InvalidArgument("zstd frame decompresses to " + std::to_string(output.pos) +
                                     " bytes, not a full cluster");
  }
  return status;
}

}  // namespace

Result<std::vector<uint8_t>> CompressCluster(CompressionType type,
                                             std::span<const uint8_t> cluster) {
  // Worth storing compressed only when smaller than the cluster.
  const size_t capacity = cluster.size() - 1;
  if (type == CompressionType::kZstd) return ZstdCompress(cluster, capacity);
  return Deflate(cluster, capacity);
}

Status DecompressCluster(CompressionType type, std::span<const uint8_t> compressed,
                         std::span<uint8_t> out) {
  if (type == CompressionType::kZstd) return ZstdDecompress(compressed, out);
  return Inflate(compressed, out);
}

// ---- Image::Impl: reading ----------------------------------------------------

Status Image::Impl::ReadCompressed(uint64_t entry, uint64_t in_cluster, std::span<uint8_t> out) {
  const f::CompressedExtent extent = f::DecodeCompressed(entry, header_.cluster_bits);
  const uint64_t file_size = device_.SizeBytes();
  if (extent.host_offset >= file_size) {
    return MarkCorrupt(Status::Corruption("compressed cluster at " + HexOffset(extent.host_offset) +
                                          " lies past the end of the file"));
  }
  std::vector<uint8_t> compressed(std::min(extent.bytes, file_size - extent.host_offset));
  QCRASH_RETURN_IF_ERROR(io_.ReadData(extent.host_offset, compressed));
  std::vector<uint8_t> cluster(cluster_bytes());
  const Status decoded = DecompressCluster(static_cast<CompressionType>(header_.compression_type),
                                           compressed, cluster);
  if (!decoded.ok()) {
    return MarkCorrupt(Status::Corruption("compressed cluster at " + HexOffset(extent.host_offset) +
                                          ": " + decoded.message()));
  }
  std::memcpy(out.data(), cluster.data() + in_cluster, out.size());
  return Status::Ok();
}

// ---- Image::Impl: the packing allocator --------------------------------------

// Raises the refcount of a host cluster that already holds other compressed
// clusters, ordered before the L2 entry that will name it (R1) the way the
// policy orders a fresh allocation's refcount.
Status Image::Impl::RaiseSharedRefcount(uint64_t cluster_index) {
  QCRASH_RETURN_IF_ERROR(UpdateRefcount(cluster_index, +1));
  switch (rules_.Of(Rule::kRefcountBeforePointer)) {
    case Mechanism::kDependency:
      return l2_cache_->SetDependency(refcount_cache_.get(), Rule::kRefcountBeforePointer);
    case Mechanism::kBatch:
      // Why: the extent policy's batch made only fresh clusters' refcounts
      // durable in advance; this increment must be durable before the entry.
      return Barrier(Rule::kRefcountBeforePointer, refcount_cache_.get());
    default:
      return Status::Ok();  // writethrough writes it now; lazy rebuilds it; unsafe does not care
  }
}

// Byte allocation for compressed clusters (QEMU's "free byte offset"):
//  1. keep packing into the current partially filled host cluster while its
//     refcount can count one more user;
//  2. when the bytes do not fit in what is left of it, take a fresh cluster;
//     if it directly follows the current one, the bytes straddle the two,
//     otherwise they start the fresh cluster and the old tail stays unused;
//  3. every host cluster the bytes touch gains one reference (a fresh
//     cluster's first reference is its allocation), so a host cluster's
//     refcount is the number of compressed entries in it.
Result<uint64_t> Image::Impl::AllocateCompressedBytes(uint64_t bytes) {
  const uint64_t cb = cluster_bytes();
  uint64_t at = compressed_cursor_;
  if (at != 0) {  // step 1
    QCRASH_ASSIGN_OR_RETURN(const uint64_t refcount, GetRefcount(at / cb));
    if (refcount == 0 || refcount >= f::MaxRefcount(header_.refcount_order)) at = 0;
  }
  const uint64_t room = at != 0 ? cb - at % cb : 0;
  if (at != 0 && bytes <= room) {
    QCRASH_RETURN_IF_ERROR(RaiseSharedRefcount(at / cb));
  } else {  // step 2
    QCRASH_ASSIGN_OR_RETURN(const uint64_t fresh, AllocateCluster());
    if (at != 0 && fresh == (at / cb + 1) * cb) {
      QCRASH_RETURN_IF_ERROR(RaiseSharedRefcount(at / cb));  // step 3
    } else {
      at = fresh;
    }
  }
  compressed_cursor_ = (at + bytes) % cb == 0 ? 0 : at + bytes;
  return at;
}

void Image::Impl::ForgetCompressedCursor(uint64_t cluster_index) {
  if (compressed_cursor_ != 0 && compressed_cursor_ / cluster_bytes() == cluster_index) {
    compressed_cursor_ = 0;
  }
}

// Drops a compressed entry's references: one from each host cluster its
// range touches, the count AllocateCompressedBytes added.
Status Image::Impl::FreeCompressedEntry(uint64_t entry) {
  const f::CompressedExtent extent = f::DecodeCompressed(entry, header_.cluster_bits);
  const uint64_t first = extent.host_offset / cluster_bytes();
  const uint64_t last = (extent.host_offset + extent.bytes - 1) / cluster_bytes();
  for (uint64_t c = first; c <= last; ++c) {
    uint64_t references = 1;
    if (!rules_.count_compressed_users) {  // bug switch compressed-sole-user
      QCRASH_ASSIGN_OR_RETURN(references, GetRefcount(c));
      references = std::max<uint64_t>(references, 1);
    }
    for (uint64_t i = 0; i < references; ++i) {
      QCRASH_RETURN_IF_ERROR(FreeClusters(c * cluster_bytes(), 1));
    }
  }
  return Status::Ok();
}

// ---- Image::Impl: the compressed write of one cluster ---------------------------

// Compressed write steps for one whole guest cluster:
//  1. compress; output not smaller than a cluster is written as a normal
//     allocating write instead (QEMU does the same);
//  2. find the L2 slot (allocating the L2 table if needed);
//  3. allocate bytes in a packed host cluster (refcounts raised, R1);
//  4. write the compressed bytes;
//  5. data before pointer (R3): the L2 cache waits for a flush, in either
//     data-ordering mode, since a compressed entry naming bytes that never
//     landed does not read as stale data but fails to decompress;
//  6. point the L2 entry at them (never COPIED). WriteCompressed only lets
//     unallocated and plain zero clusters through, so nothing is freed.
//     (A cluster that does not compress is written by WriteCluster, which
//     frees what it replaces itself.)
Status Image::Impl::WriteCompressedCluster(uint64_t guest_cluster,
                                           std::span<const uint8_t> cluster) {
  QCRASH_ASSIGN_OR_RETURN(
      const std::vector<uint8_t> compressed,
      CompressCluster(static_cast<CompressionType>(header_.compression_type), cluster));  // step 1
  if (compressed.empty()) return WriteCluster(guest_cluster, 0, cluster);
  QCRASH_ASSIGN_OR_RETURN(const L2Slot slot, LookupL2ForWrite(guest_cluster));  // step 2
  QCRASH_ASSIGN_OR_RETURN(const uint64_t host, AllocateCompressedBytes(compressed.size()));
  QCRASH_RETURN_IF_ERROR(io_.WriteData(host, compressed));  // step 4
  l2_cache_->DependOnFlush();                               // step 5
  const uint64_t entry = f::EncodeCompressed(host, compressed.size(), header_.cluster_bits);
  return SetL2Entry(slot, entry, 0);  // step 6 (extended L2: a compressed entry's bitmap is 0)
}

// ---- Image: the public compressed write -----------------------------------------

Status Image::WriteCompressed(uint64_t guest_offset, std::span<const uint8_t> data) {
  if (impl_->read_only_) return impl_->WriteRefused();
  const uint64_t cb = impl_->cluster_bytes();
  const uint64_t size = size_bytes();
  if (guest_offset > size || data.size() > size - guest_offset) {
    return Status::InvalidArgument(
        "compressed write at " + HexOffset(guest_offset) + " for " + std::to_string(data.size()) +
        " bytes goes past the end of the disk (" + std::to_string(size) + " bytes)");
  }
  // Whole clusters only; the disk's last cluster may be partial (padded
  // with zeroes), as qemu-io's write -c allows.
  const bool ends_at_disk_end = guest_offset + data.size() == size;
  if (guest_offset % cb != 0 || (data.size() % cb != 0 && !ends_at_disk_end)) {
    return Status::InvalidArgument(
        "compressed write at " + HexOffset(guest_offset) + " for " + std::to_string(data.size()) +
        " bytes is not cluster-aligned (cluster size " + std::to_string(cb) + ")");
  }
  if (impl_->rules_.journal()) {
    return Status::NotSupported("compressed writes under the journal policy");
  }
  if (impl_->io_.has_data_device()) {  // as QEMU: compressed clusters cannot live in a data file
    return Status::NotSupported("compressed writes in an image with an external data file");
  }
  // As QEMU's qcow2 driver, a compressed write fills only clusters without
  // a host cluster (unallocated or plain zero): checked for every cluster
  // first, so that a refused request writes nothing.
  for (uint64_t done = 0; done < data.size(); done += cb) {
    const uint64_t guest_cluster = (guest_offset + done) / cb;
    QCRASH_ASSIGN_OR_RETURN(const L2Slot slot, impl_->LookupL2(guest_cluster));
    QCRASH_ASSIGN_OR_RETURN(const ClusterType type, impl_->Classify(slot));
    if (type == ClusterType::kNormal || type == ClusterType::kZeroAlloc ||
        type == ClusterType::kCompressed) {
      return Status::InvalidArgument("compressed write at " + HexOffset(guest_cluster * cb) +
                                     ": the cluster is allocated (a compressed write only fills "
                                     "unallocated or zero clusters, as QEMU's)");
    }
  }
  QCRASH_RETURN_IF_ERROR(impl_->BeforeGuestChange(guest_offset, data.size()));
  ++impl_->stats_.guest_writes;
  std::vector<uint8_t> cluster(cb);
  for (uint64_t done = 0; done < data.size(); done += cb) {
    const uint64_t n = std::min<uint64_t>(cb, data.size() - done);
    std::fill(cluster.begin(), cluster.end(), 0);
    std::memcpy(cluster.data(), data.data() + done, n);
    QCRASH_RETURN_IF_ERROR(impl_->WriteCompressedCluster((guest_offset + done) / cb, cluster));
  }
  return impl_->AfterGuestOp();
}

}  // namespace qcrash::engine
