// The guest view of an image file, qcow2 or raw, as the commands that only
// read guest data see it (compare, measure): its size, its reads, and its
// block status the way qemu-img asks for it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cli/cli_common.h"
#include "engine/image.h"

namespace qcrash::cli {

struct GuestView {
  std::string path;
  bool raw = false;
  uint64_t size_bytes = 0;
  OpenedImage image;                 // qcow2 (with its backing chain)
  std::unique_ptr<FileDevice> file;  // raw

  Status Read(uint64_t offset_bytes, std::span<uint8_t> out);
  // Runs covering [0, size_bytes) in guest order, as qemu-img's
  // block_status_above over the whole chain reports them: "present" is
  // allocated somewhere in the chain, "zero" reads as zeroes (holes of raw
  // files included, SEEK_HOLE), "data" is backed by host data.
  Result<std::vector<engine::MapExtent>> Extents();
};

// Opens `path` read-only as `format` ("qcow2", "raw", or "" to probe: the
// qcow2 magic, else raw, as qemu-img probes), holding QEMU's read lock
// unless force_share.
Result<GuestView> OpenGuestView(const std::string& path, const std::string& format,
                                bool force_share);

}  // namespace qcrash::cli
