#include "cli/guest_view.h"

#include <array>

#include "cli/host_holes.h"

namespace qcrash::cli {

Status GuestView::Read(uint64_t offset_bytes, std::span<uint8_t> out) {
  if (!raw) return image.image->Read(offset_bytes, out);
  // A raw file reads as it is; nothing lies past its end.
  return file->Read(offset_bytes, out);
}

Result<std::vector<engine::MapExtent>> GuestView::Extents() {
  if (raw) {
    engine::MapExtent whole;
    whole.length = size_bytes;
    whole.present = whole.data = whole.has_offset = true;
    if (size_bytes == 0) return std::vector<engine::MapExtent>{};
    return SplitHostHoles({ChainFile{path, true}}, {whole});
  }
  QCRASH_ASSIGN_OR_RETURN(std::vector<engine::MapExtent> extents, image.image->Map());
  if (image.image->header().has_data_file()) return extents;
  return SplitHostHoles(BackingChain(path), extents);
}

Result<GuestView> OpenGuestView(const std::string& path, const std::string& format,
                                bool force_share) {
  GuestView view;
  view.path = path;
  std::string chosen = format;
  if (chosen.empty()) {
    QCRASH_ASSIGN_OR_RETURN(auto probe, FileDevice::Open(path, FileDevice::Mode::kReadOnly));
    std::array<uint8_t, 4> magic{};
    const bool long_enough = probe->SizeBytes() >= magic.size();
    if (long_enough) QCRASH_RETURN_IF_ERROR(probe->Read(0, magic));
    chosen = long_enough && magic == std::array<uint8_t, 4>{'Q', 'F', 'I', 0xfb} ? "qcow2" : "raw";
  }
  if (chosen == "raw") {
    view.raw = true;
    QCRASH_ASSIGN_OR_RETURN(view.image.lock, LockImage(path, /*read_only=*/true, force_share));
    QCRASH_ASSIGN_OR_RETURN(view.file, FileDevice::Open(path, FileDevice::Mode::kReadOnly));
    view.size_bytes = view.file->SizeBytes();
    return view;
  }
  if (chosen != "qcow2") {
    return Status::NotSupported("Unknown driver '" + chosen + "' (qcrash reads qcow2 and raw)");
  }
  engine::OpenOptions options;
  options.read_only = true;
  QCRASH_ASSIGN_OR_RETURN(view.image, OpenImage(path, options, force_share));
  view.size_bytes = view.image.image->size_bytes();
  return view;
}

}  // namespace qcrash::cli
