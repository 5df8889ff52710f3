// FileDevice: a BlockDevice over a POSIX file (pread, pwrite, fdatasync).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/block_device.h"

namespace qcrash {

class FileDevice final : public BlockDevice {
 public:
  enum class Mode : uint8_t { kReadOnly, kReadWrite, kCreate };

  // kCreate truncates or creates the file. A read-only device refuses writes.
  static Result<std::unique_ptr<FileDevice>> Open(const std::string& path, Mode mode);
  ~FileDevice() override;
  FileDevice(const FileDevice&) = delete;
  FileDevice& operator=(const FileDevice&) = delete;

  Status Read(uint64_t offset_bytes, std::span<uint8_t> out) override;
  Status Write(uint64_t offset_bytes, std::span<const uint8_t> data) override;
  Status WriteFua(uint64_t offset_bytes, std::span<const uint8_t> data) override;
  Status Flush() override;
  uint64_t SizeBytes() const override { return size_bytes_; }
  Status Resize(uint64_t size_bytes, ResizeMode mode) override;
  DeviceGeometry Geometry() const override { return geometry_; }

  const std::string& path() const { return path_; }
  int fd() const { return fd_; }

 private:
  FileDevice(std::string path, int fd, uint64_t size_bytes, bool writable);
  Status Errno(const char* what, uint64_t offset_bytes) const;

  std::string path_;
  int fd_;
  uint64_t size_bytes_;
  bool writable_;
  DeviceGeometry geometry_;
};

}  // namespace qcrash
