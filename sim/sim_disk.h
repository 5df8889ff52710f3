// SimDisk: the simulated disk. A BlockDevice with durable media and volatile
// pending writes, which logs every write, FUA write, flush and resize so the
// crash states of its history can be enumerated (crash_model.h).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/block_device.h"
#include "sim/chunked_image.h"
#include "sim/crash_model.h"
#include "sim/crash_view.h"  // BuildView returns views: callers need the complete type
#include "sim/fault_injection.h"
#include "sim/write_log.h"

namespace qcrash::sim {

struct SimDiskOptions {
  uint32_t sector_bytes = 512;                  // 512 or 4096 (M3)
  bool atomic_sector = true;                    // false: the non-atomic mode (M8) is reported
  uint64_t initial_size_bytes = 0;              // used when no initial image is given
  uint64_t max_size_bytes = uint64_t{1} << 34;  // growth bound (NoSpace past it)
  FaultRules faults = {};                       // injected I/O errors and ENOSPC
};

// Reads return the latest data (what the host sees before a crash). Durable
// media hold what survives a crash for sure: flushed writes and FUA writes.
// A request that an injected fault fails is neither applied nor logged.
class SimDisk final : public BlockDevice {
 public:
  explicit SimDisk(SimDiskOptions options = {},
                   std::shared_ptr<const ChunkedImage> initial = nullptr);

  Status Read(uint64_t offset_bytes, std::span<uint8_t> out) override;
  Status Write(uint64_t offset_bytes, std::span<const uint8_t> data) override;
  Status WriteFua(uint64_t offset_bytes, std::span<const uint8_t> data) override;
  Status Flush() override;
  uint64_t SizeBytes() const override { return latest_.SizeBytes(); }
  Status Resize(uint64_t size_bytes, ResizeMode mode) override;
  DeviceGeometry Geometry() const override;

  const WriteLog& log() const { return log_; }
  const std::shared_ptr<const ChunkedImage>& initial_image() const { return initial_; }
  const ChunkedImage& durable_image() const { return durable_; }
  const ChunkedImage& latest_image() const { return latest_; }
  // Log indices of the writes issued since the last flush or resize.
  const std::vector<size_t>& pending_records() const { return pending_records_; }
  FaultInjector& faults() { return faults_; }

  // Mirrors every logged record to sink (e.g. a shared-memory log); a sink
  // error fails the request, which is then neither applied nor logged.
  void set_sink(LogSink* sink) { sink_ = sink; }

  // The crash timeline of the log so far (copies the log; O(log bytes)).
  CrashTimeline Timeline(NonAtomicOptions non_atomic = {}) const;

  // M11: a second device (an external data file) whose writes, flushes and
  // resizes go to this disk's log (offsets from kSecondDeviceBaseBytes) and
  // whose flushes make only its own writes durable. `initial` is its
  // content at the start. Attach once, before the log holds anything; the
  // device lives as long as the disk.
  BlockDevice& AttachSecondDevice(std::shared_ptr<const ChunkedImage> initial);
  BlockDevice* second_device() { return second_.get(); }
  const std::shared_ptr<const ChunkedImage>& second_initial_image() const {
    return second_initial_;
  }
  const ChunkedImage& second_latest_image() const { return second_latest_; }

 private:
  class SecondDevice;
  Status WriteImpl(uint32_t device, uint64_t offset_bytes, std::span<const uint8_t> data, bool fua);
  Status ReadImpl(uint32_t device, uint64_t offset_bytes, std::span<uint8_t> out);
  Status FlushImpl(uint32_t device);
  Status ResizeImpl(uint32_t device, uint64_t size_bytes);

  SimDiskOptions options_;
  std::shared_ptr<const ChunkedImage> initial_;
  ChunkedImage latest_;
  ChunkedImage durable_;
  WriteLog log_;
  std::vector<size_t> pending_records_;
  FaultInjector faults_;
  LogSink* sink_ = nullptr;
  std::shared_ptr<const ChunkedImage> second_initial_;
  ChunkedImage second_latest_;
  ChunkedImage second_durable_;
  std::unique_ptr<BlockDevice> second_;
};

}  // namespace qcrash::sim
