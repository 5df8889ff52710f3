// SimDisk: logging, durability bookkeeping and fault checks of the simulated disk.
#include "sim/sim_disk.h"

#include <algorithm>
#include <cassert>

namespace qcrash::sim {

SimDisk::SimDisk(SimDiskOptions options, std::shared_ptr<const ChunkedImage> initial)
    : options_(std::move(options)),
      initial_(initial ? std::move(initial)
                       : std::make_shared<const ChunkedImage>(options_.initial_size_bytes)),
      latest_(*initial_),
      durable_(*initial_),
      log_(options_.sector_bytes, initial_->SizeBytes()),
      faults_(options_.faults) {
  assert(options_.sector_bytes == 512 || options_.sector_bytes == 4096);
}

DeviceGeometry SimDisk::Geometry() const { return {options_.sector_bytes, options_.atomic_sector}; }

Status SimDisk::Read(uint64_t offset_bytes, std::span<uint8_t> out) {
  QCRASH_RETURN_IF_ERROR(faults_.Check(IoOp::kRead, offset_bytes, out.size()));
  const uint64_t size = latest_.SizeBytes();
  if (offset_bytes > size || out.size() > size - offset_bytes) {
    return Status::IoError("sim disk: read of " + std::to_string(out.size()) + " bytes at " +
                           HexOffset(offset_bytes) + " past the end (" + std::to_string(size) +
                           " bytes)");
  }
  latest_.Read(offset_bytes, out);
  return Status::Ok();
}

Status SimDisk::WriteImpl(uint64_t offset_bytes, std::span<const uint8_t> data, bool fua) {
  QCRASH_RETURN_IF_ERROR(faults_.Check(IoOp::kWrite, offset_bytes, data.size()));
  if (offset_bytes > options_.max_size_bytes ||
      data.size() > options_.max_size_bytes - offset_bytes) {
    return Status::NoSpace("sim disk: write at " + HexOffset(offset_bytes) +
                           " past the device limit");
  }
  QCRASH_RETURN_IF_ERROR(faults_.CheckSpace(offset_bytes + data.size()));
  if (sink_ != nullptr) {
    QCRASH_RETURN_IF_ERROR(
        sink_->Append(fua ? RecordKind::kWriteFua : RecordKind::kWrite, offset_bytes, data));
  }
  log_.AppendWrite(offset_bytes, data, fua);
  latest_.Write(offset_bytes, data);
  if (data.empty()) return Status::Ok();
  if (!fua) {
    pending_records_.push_back(log_.size() - 1);
    return Status::Ok();
  }
  // M5: the whole sectors a FUA write touches reach the media as the cache
  // holds them now (read-modify-write of partial sectors).
  const uint64_t sector_bytes = options_.sector_bytes;
  const uint64_t start = offset_bytes / sector_bytes * sector_bytes;
  const uint64_t end =
      std::min(latest_.SizeBytes(),
               (offset_bytes + data.size() + sector_bytes - 1) / sector_bytes * sector_bytes);
  std::vector<uint8_t> sectors(end - start);
  latest_.Read(start, sectors);
  durable_.Write(start, sectors);
  return Status::Ok();
}

Status SimDisk::Write(uint64_t offset_bytes, std::span<const uint8_t> data) {
  return WriteImpl(offset_bytes, data, false);
}

Status SimDisk::WriteFua(uint64_t offset_bytes, std::span<const uint8_t> data) {
  return WriteImpl(offset_bytes, data, true);
}

Status SimDisk::Flush() {
  QCRASH_RETURN_IF_ERROR(faults_.Check(IoOp::kFlush, 0, 0));
  if (sink_ != nullptr) QCRASH_RETURN_IF_ERROR(sink_->Append(RecordKind::kFlush, 0, {}));
  log_.AppendFlush();
  durable_ = latest_;  // M4: everything before the flush is durable (shares chunks)
  pending_records_.clear();
  return Status::Ok();
}

Status SimDisk::Resize(uint64_t size_bytes, ResizeMode /*mode*/) {
  if (size_bytes > options_.max_size_bytes) {
    return Status::NoSpace("sim disk: resize to " + std::to_string(size_bytes) +
                           " past the device limit");
  }
  if (size_bytes > latest_.SizeBytes()) QCRASH_RETURN_IF_ERROR(faults_.CheckSpace(size_bytes));
  if (sink_ != nullptr) QCRASH_RETURN_IF_ERROR(sink_->Append(RecordKind::kResize, size_bytes, {}));
  log_.AppendResize(size_bytes);
  latest_.Resize(size_bytes);
  durable_ = latest_;  // M4: a resize is durable at once and ordered like a flush
  pending_records_.clear();
  return Status::Ok();
}

CrashTimeline SimDisk::Timeline(NonAtomicOptions non_atomic) const {
  if (!options_.atomic_sector && !non_atomic.enabled) non_atomic.enabled = true;
  return CrashTimeline(initial_, std::make_shared<const WriteLog>(log_), std::move(non_atomic));
}

}  // namespace qcrash::sim
