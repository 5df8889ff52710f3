// Image::Rebase: qemu-img rebase, safe and unsafe. The safe mode keeps
// what the guest reads: before the header names the new backing file,
// every range this image does not allocate, where the new backing file
// would read differently from the old one, gets the old bytes as ordinary
// guest writes (allocation, refcounts and L2 entries under R1-R3). The
// switch is a relocation's (R6): the new copy durable first, then the
// header, so that a crash at any point reads the old bytes through either
// backing file.
#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/image_impl.h"

namespace qcrash::engine {

namespace f = format;

namespace {

// Reads `out` at `guest_offset` of a backing file (a qcow2 image or a raw
// device of `size_bytes`), zeroes past its end and with no file at all.
Status ReadBackingFile(BlockDevice* device, Image* image, uint64_t size_bytes,
                       uint64_t guest_offset, std::span<uint8_t> out) {
  std::fill(out.begin(), out.end(), 0);
  if (device == nullptr || guest_offset >= size_bytes) return Status::Ok();
  const uint64_t n = std::min<uint64_t>(out.size(), size_bytes - guest_offset);
  if (image != nullptr) return image->Read(guest_offset, out.first(n));
  return device->Read(guest_offset, out.first(n));
}

}  // namespace

Status Image::Rebase(const std::string& backing_file,
                     const std::optional<std::string>& backing_format, bool unsafe,
                     const BackingOpener& open) {
  Impl& m = *impl_;
  if (m.read_only_) return m.WriteRefused();
  if (backing_file.size() > f::kMaxBackingFileNameBytes) {
    return Status::InvalidArgument("backing file name longer than 1023 bytes");
  }
  if (backing_format && *backing_format != "raw" && *backing_format != "qcow2") {
    return Status::NotSupported("backing file format '" + *backing_format + "' is not supported");
  }
  std::unique_ptr<BlockDevice> device;
  std::unique_ptr<Image> image;
  uint64_t size_bytes = 0;
  const BackingOpener& opener = open ? open : m.options_.open_backing;
  if (!backing_file.empty() && opener) {
    const Status opened =
        m.OpenBackingFile(opener, backing_file, backing_format, device, image, size_bytes);
    // Unsafe mode does not read the new file: it may not exist yet. The
    // image then reads unallocated clusters as an image whose backing
    // file is missing does (an error).
    if (!opened.ok() && !unsafe) {
      return opened.WithContext("Could not open new backing file '" + backing_file + "'");
    }
    if (!opened.ok()) device.reset(), image.reset(), size_bytes = 0;
  } else if (!backing_file.empty() && !unsafe) {
    return Status::InvalidArgument("no backing file opener: cannot open '" + backing_file + "'");
  }
  if (!unsafe) {
    if (!m.header_.backing_file.empty() && !m.backing_device_) {
      return Status::InvalidArgument("the old backing file '" + m.header_.backing_file +
                                     "' is not open: its data cannot be copied");
    }
    QCRASH_ASSIGN_OR_RETURN(const std::vector<MapExtent> extents, Map());
    const uint64_t cb = m.cluster_bytes();
    std::vector<uint8_t> old_bytes(cb), new_bytes(cb);
    for (const MapExtent& e : extents) {
      if (e.present && e.depth == 0) continue;  // this image's own data (or zero flag)
      for (uint64_t at = e.start; at < e.start + e.length;) {
        const uint64_t n = std::min(cb - at % cb, e.start + e.length - at);
        const std::span<uint8_t> old_view(old_bytes.data(), n), new_view(new_bytes.data(), n);
        QCRASH_RETURN_IF_ERROR(m.ReadFromBacking(at, old_view));
        QCRASH_RETURN_IF_ERROR(
            ReadBackingFile(device.get(), image.get(), size_bytes, at, new_view));
        if (std::memcmp(old_bytes.data(), new_bytes.data(), n) != 0) {
          QCRASH_RETURN_IF_ERROR(Write(at, old_view));
        }
        at += n;
      }
    }
    // Why (R6): the copies (their data, L2 entries and refcounts) durable
    // before the header names the new file; a crash after the switch must
    // find them. Bug switch rebase-header-before-copy: they stay in the
    // caches, behind the header.
    if (m.rules_.copy_before_backing_switch) QCRASH_RETURN_IF_ERROR(m.FlushAll());
  }
  QCRASH_RETURN_IF_ERROR(m.BeforeMetadataChange());
  const std::string old_file = m.header_.backing_file;
  const std::optional<std::string> old_format = m.header_.backing_format;
  m.header_.backing_file = backing_file;
  m.header_.backing_format = backing_file.empty() ? std::nullopt : backing_format;
  if (Status written = m.WriteHeader(); !written.ok()) {
    m.header_.backing_file = old_file;
    m.header_.backing_format = old_format;
    return written;
  }
  m.backing_image_ = std::move(image);
  m.backing_device_ = std::move(device);
  m.backing_size_bytes_ = size_bytes;
  // A rebase is acknowledged like a guest flush: its header durable.
  return m.FlushAll();
}

}  // namespace qcrash::engine
