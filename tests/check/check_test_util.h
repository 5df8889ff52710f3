// Helpers for the check tests: temporary directories, running qemu-img and
// qemu-io, reading an image's active L2 entries, corrupting images by class,
// and a device that counts what a repair writes.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/block_device.h"
#include "engine/endian.h"
#include "engine/qcow2_format.h"
#include "properties/corruptions.h"

namespace qcrash::check_test {

namespace f = engine::format;

// A directory removed with everything in it when the object goes.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "qcrash-check-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
};

// Runs a shell command, capturing stdout (stderr is discarded).
inline CommandResult RunCommand(const std::string& command) {
  CommandResult result;
  FILE* pipe = popen((command + " 2>/dev/null").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof(buffer), pipe)) > 0;) result.out.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

inline std::vector<uint8_t> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void WriteFileBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// Creates `path` with qemu-img create (extra options) and runs qemu-io commands on it.
inline bool MakeImage(const std::string& path, const std::string& create_options,
                      const std::string& size, const std::vector<std::string>& io_commands) {
  if (RunCommand("qemu-img create -f qcow2 " + create_options + " '" + path + "' " + size +
                 " >/dev/null")
          .exit_code != 0) {
    return false;
  }
  if (io_commands.empty()) return true;
  std::string command = "qemu-io";
  for (const std::string& c : io_commands) command += " -c '" + c + "'";
  return RunCommand(command + " '" + path + "' >/dev/null").exit_code == 0;
}

// The raw guest content of an image (qemu-img convert -O raw).
inline std::vector<uint8_t> GuestBytes(const std::string& image, const std::string& scratch) {
  if (RunCommand("qemu-img convert -U -f qcow2 -O raw '" + image + "' '" + scratch + "'")
          .exit_code != 0) {
    return {};
  }
  return ReadFileBytes(scratch);
}

// The image layout and the active L2 entries: properties/corruptions.h.
using properties::ActiveL2Slots;
using properties::ImageLayout;
using properties::L2Slot;
using properties::LayoutOf;

inline uint64_t Load64(const std::vector<uint8_t>& image, uint64_t offset) {
  return LoadBe64(&image[offset]);
}
inline void Store64(std::vector<uint8_t>& image, uint64_t offset, uint64_t value) {
  StoreBe64(&image[offset], value);
}

// Host offset of the first refcount block and the refcount of `cluster` in it.
inline uint64_t FirstRefcountBlock(const std::vector<uint8_t>& image) {
  const ImageLayout l = LayoutOf(image);
  return Load64(image, l.refcount_table_offset) & f::kRefcountTableOffsetMask;
}

// A device that forwards to another and counts what it is asked to do.
class CountingDevice final : public BlockDevice {
 public:
  explicit CountingDevice(BlockDevice& inner) : inner_(inner) {}
  Status Read(uint64_t offset, std::span<uint8_t> out) override { return inner_.Read(offset, out); }
  Status Write(uint64_t offset, std::span<const uint8_t> data) override {
    ++writes;
    return inner_.Write(offset, data);
  }
  Status WriteFua(uint64_t offset, std::span<const uint8_t> data) override {
    ++writes;
    return inner_.WriteFua(offset, data);
  }
  Status Flush() override {
    ++flushes;
    return inner_.Flush();
  }
  uint64_t SizeBytes() const override { return inner_.SizeBytes(); }
  Status Resize(uint64_t size, ResizeMode mode) override {
    ++writes;
    return inner_.Resize(size, mode);
  }
  DeviceGeometry Geometry() const override { return inner_.Geometry(); }

  uint64_t writes = 0;
  uint64_t flushes = 0;

 private:
  BlockDevice& inner_;
};

}  // namespace qcrash::check_test
