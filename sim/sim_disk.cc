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

// The second device (M11): the disk's own paths with device 1.
class SimDisk::SecondDevice final : public BlockDevice {
 public:
  explicit SecondDevice(SimDisk& disk) : disk_(disk) {}
  Status Read(uint64_t offset_bytes, std::span<uint8_t> out) override {
    return disk_.ReadImpl(1, offset_bytes, out);
  }
  Status Write(uint64_t offset_bytes, std::span<const uint8_t> data) override {
    return disk_.WriteImpl(1, offset_bytes, data, false);
  }
  Status WriteFua(uint64_t offset_bytes, std::span<const uint8_t> data) override {
    return disk_.WriteImpl(1, offset_bytes, data, true);
  }
  Status Flush() override { return disk_.FlushImpl(1); }
  uint64_t SizeBytes() const override { return disk_.second_latest_.SizeBytes(); }
  Status Resize(uint64_t size_bytes, ResizeMode /*mode*/) override {
    return disk_.ResizeImpl(1, size_bytes);
  }
  DeviceGeometry Geometry() const override { return disk_.Geometry(); }

 private:
  SimDisk& disk_;
};

BlockDevice& SimDisk::AttachSecondDevice(std::shared_ptr<const ChunkedImage> initial) {
  assert(!second_ && log_.size() == 0);
  second_initial_ = initial ? std::move(initial) : std::make_shared<const ChunkedImage>();
  second_latest_ = *second_initial_;
  second_durable_ = *second_initial_;
  second_ = std::make_unique<SecondDevice>(*this);
  return *second_;
}

Status SimDisk::Read(uint64_t offset_bytes, std::span<uint8_t> out) {
  return ReadImpl(0, offset_bytes, out);
}

Status SimDisk::ReadImpl(uint32_t device, uint64_t offset_bytes, std::span<uint8_t> out) {
  QCRASH_RETURN_IF_ERROR(faults_.Check(IoOp::kRead, offset_bytes, out.size()));
  const ChunkedImage& latest = device == 1 ? second_latest_ : latest_;
  const uint64_t size = latest.SizeBytes();
  if (offset_bytes > size || out.size() > size - offset_bytes) {
    return Status::IoError("sim disk: read of " + std::to_string(out.size()) + " bytes at " +
                           HexOffset(offset_bytes) + " past the end (" + std::to_string(size) +
                           " bytes)");
  }
  latest.Read(offset_bytes, out);
  return Status::Ok();
}

Status SimDisk::WriteImpl(uint32_t device, uint64_t offset_bytes, std::span<const uint8_t> data,
                          bool fua) {
  QCRASH_RETURN_IF_ERROR(faults_.Check(IoOp::kWrite, offset_bytes, data.size()));
  if (offset_bytes > options_.max_size_bytes ||
      data.size() > options_.max_size_bytes - offset_bytes) {
    return Status::NoSpace("sim disk: write at " + HexOffset(offset_bytes) +
                           " past the device limit");
  }
  QCRASH_RETURN_IF_ERROR(faults_.CheckSpace(offset_bytes + data.size()));
  const uint64_t logged_offset = offset_bytes + (device == 1 ? kSecondDeviceBaseBytes : 0);
  if (sink_ != nullptr) {
    QCRASH_RETURN_IF_ERROR(
        sink_->Append(fua ? RecordKind::kWriteFua : RecordKind::kWrite, logged_offset, data));
  }
  log_.AppendWrite(logged_offset, data, fua);
  ChunkedImage& latest = device == 1 ? second_latest_ : latest_;
  latest.Write(offset_bytes, data);
  if (data.empty()) return Status::Ok();
  if (!fua) {
    if (device == 0) pending_records_.push_back(log_.size() - 1);
    return Status::Ok();
  }
  // M5: the whole sectors a FUA write touches reach the media as the cache
  // holds them now (read-modify-write of partial sectors).
  const uint64_t sector_bytes = options_.sector_bytes;
  const uint64_t start = offset_bytes / sector_bytes * sector_bytes;
  const uint64_t end =
      std::min(latest.SizeBytes(),
               (offset_bytes + data.size() + sector_bytes - 1) / sector_bytes * sector_bytes);
  std::vector<uint8_t> sectors(end - start);
  latest.Read(start, sectors);
  (device == 1 ? second_durable_ : durable_).Write(start, sectors);
  return Status::Ok();
}

Status SimDisk::Write(uint64_t offset_bytes, std::span<const uint8_t> data) {
  return WriteImpl(0, offset_bytes, data, false);
}

Status SimDisk::WriteFua(uint64_t offset_bytes, std::span<const uint8_t> data) {
  return WriteImpl(0, offset_bytes, data, true);
}

Status SimDisk::Flush() { return FlushImpl(0); }

Status SimDisk::FlushImpl(uint32_t device) {
  QCRASH_RETURN_IF_ERROR(faults_.Check(IoOp::kFlush, 0, 0));
  if (sink_ != nullptr) {
    QCRASH_RETURN_IF_ERROR(
        sink_->Append(RecordKind::kFlush, device == 1 ? kSecondDeviceBaseBytes : 0, {}));
  }
  log_.AppendFlush(device);
  // M4 (per device, M11): everything before the flush is durable (shares chunks).
  if (device == 1) {
    second_durable_ = second_latest_;
  } else {
    durable_ = latest_;
    pending_records_.clear();
  }
  return Status::Ok();
}

Status SimDisk::Resize(uint64_t size_bytes, ResizeMode /*mode*/) {
  return ResizeImpl(0, size_bytes);
}

Status SimDisk::ResizeImpl(uint32_t device, uint64_t size_bytes) {
  if (size_bytes > options_.max_size_bytes) {
    return Status::NoSpace("sim disk: resize to " + std::to_string(size_bytes) +
                           " past the device limit");
  }
  ChunkedImage& latest = device == 1 ? second_latest_ : latest_;
  if (size_bytes > latest.SizeBytes()) QCRASH_RETURN_IF_ERROR(faults_.CheckSpace(size_bytes));
  const uint64_t logged = size_bytes + (device == 1 ? kSecondDeviceBaseBytes : 0);
  if (sink_ != nullptr) QCRASH_RETURN_IF_ERROR(sink_->Append(RecordKind::kResize, logged, {}));
  log_.AppendResize(size_bytes, device);
  latest.Resize(size_bytes);
  // M4: a resize is durable at once and ordered like a flush (of its device).
  if (device == 1) {
    second_durable_ = second_latest_;
  } else {
    durable_ = latest_;
    pending_records_.clear();
  }
  return Status::Ok();
}

CrashTimeline SimDisk::Timeline(NonAtomicOptions non_atomic) const {
  if (!options_.atomic_sector && !non_atomic.enabled) non_atomic.enabled = true;
  return CrashTimeline(initial_, std::make_shared<const WriteLog>(log_), std::move(non_atomic),
                       second_initial_);
}

}  // namespace qcrash::sim
