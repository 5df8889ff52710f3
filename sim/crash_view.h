// CrashView: one crash state presented as a readable and writable block
// device, copy-on-write over the shared durable image of its flush epoch.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "engine/block_device.h"
#include "sim/crash_model.h"
#include "sim/write_log.h"

namespace qcrash::sim {

// Building a view copies the point's latest overlay (one entry per pending or
// FUA-durable sector) and patches the state's deviations: O(pending sectors),
// never O(disk). Reads walk the overlay and fill gaps from the shared base;
// a durable version (0) is read in place from its base chunk.
// Writes (recovery) land in the view's own sorted sector list; with StartLog() they
// are also logged, so a crash during recovery is a nested timeline.
class CrashView final : public BlockDevice {
 public:
  // Checks state against point (InvalidArgument on a sector that is not
  // pending there, a version out of range, a mix with a bad cut...).
  static Result<std::unique_ptr<CrashView>> Build(std::shared_ptr<const CrashPoint> point,
                                                  const CrashState& state);

  Status Read(uint64_t offset_bytes, std::span<uint8_t> out) override;
  Status Write(uint64_t offset_bytes, std::span<const uint8_t> data) override;
  Status WriteFua(uint64_t offset_bytes, std::span<const uint8_t> data) override;
  Status Flush() override;
  uint64_t SizeBytes() const override { return size_bytes_; }
  Status Resize(uint64_t size_bytes, ResizeMode mode) override;
  DeviceGeometry Geometry() const override;

  // Starts logging this view's writes; the current content becomes the
  // nested log's initial image. Restarting discards the earlier nested log.
  void StartLog();
  bool logging() const { return logging_; }
  const WriteLog& nested_log() const { return nested_log_; }
  // The crash timeline of the writes logged since StartLog() (nested states).
  Result<CrashTimeline> NestedTimeline(NonAtomicOptions non_atomic = {}) const;

  // The view's current content as its own chunked image (shares base chunks).
  ChunkedImage Materialize() const;
  const CrashPoint& crash_point() const { return *point_; }
  uint64_t written_sector_count() const { return written_.size(); }

 private:
  explicit CrashView(std::shared_ptr<const CrashPoint> point);
  // Base + crash overlay + truncation, without the view's own writes.
  void ReadUnwritten(uint64_t offset_bytes, std::span<uint8_t> out) const;
  void ReadAll(uint64_t offset_bytes, std::span<uint8_t> out) const;
  Status WriteImpl(uint64_t offset_bytes, std::span<const uint8_t> data, bool fua);

  std::shared_ptr<const CrashPoint> point_;
  std::vector<OverlayEntry> overlay_;  // sorted by sector
  std::vector<uint8_t> owned_;         // bytes of mixed and garbage sectors
  // The view's own writes: sectors (sorted) and where their bytes sit in
  // written_bytes_ (slot * sector_bytes_). One flat buffer, not a node and a
  // heap block per sector; a truncation drops entries and leaves their slots.
  struct WrittenSector {
    uint64_t sector;
    uint64_t slot;
  };
  std::vector<WrittenSector> written_;
  std::vector<uint8_t> written_bytes_;
  uint8_t* WrittenBytes(const WrittenSector& entry) {
    return written_bytes_.data() + entry.slot * sector_bytes_;
  }
  const uint8_t* WrittenBytes(const WrittenSector& entry) const {
    return written_bytes_.data() + entry.slot * sector_bytes_;
  }
  std::vector<WrittenSector>::const_iterator FirstWrittenFrom(uint64_t sector) const;
  uint64_t size_bytes_ = 0;
  uint64_t truncated_at_bytes_ = 0;  // base and overlay bytes at or past this read as zero
  uint32_t sector_bytes_ = 512;
  // The overlay index where the last read stopped (a search hint only: any
  // value is correct, a good one skips the binary search).
  mutable size_t read_hint_ = 0;
  bool logging_ = false;
  WriteLog nested_log_;
  std::shared_ptr<const ChunkedImage> nested_initial_;
};

}  // namespace qcrash::sim
