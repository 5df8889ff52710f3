// External data files (incompatible bit 2, extension 0x44415441): opening
// the data file, host offsets of its clusters, and the checks on them.
//
// With a data file, guest data lives in that file at host offset = guest
// offset (QEMU allocates no other way and refuses any other mapping); the
// qcow2 file holds only metadata, and its refcounts do not count data
// clusters. With data_file_raw (autoclear bit 1) the data file is also a
// valid raw image of the disk: every cluster stays mapped (created with
// metadata preallocation) and zero writes and discards write zeroes into it.
#include "engine/image_impl.h"

namespace qcrash::engine {

namespace f = format;

// Open step (after the header is decoded): the data file the header names,
// through the caller's opener. Compressed clusters and backing files are
// refused with one (QEMU refuses compression; qcrash leaves a backing file
// beside a data file unimplemented).
Status Image::Impl::OpenDataFile() {
  if (!(header_.incompatible_features & f::kIncompatDataFile)) return Status::Ok();
  const std::string& name = header_.data_file.value_or("");
  if (!header_.backing_file.empty()) {
    return Status::NotSupported("image has both a backing file and an external data file ('" +
                                name + "'): not supported");
  }
  if (!options_.open_data_file) {
    return Status::NotSupported("image stores its data in the external data file '" + name +
                                "' and no way to open it was given");
  }
  auto opened = options_.open_data_file(name, options_.read_only);
  if (!opened.ok()) return opened.status().WithContext("data file '" + name + "'");
  data_device_ = std::move(opened).value();
  io_.set_data_device(data_device_.get());
  return Status::Ok();
}

Result<uint64_t> Image::Impl::AllocateDataCluster(uint64_t guest_cluster) {
  if (!io_.has_data_device()) return AllocateCluster();
  ++stats_.clusters_allocated;
  return guest_cluster * cluster_bytes();  // identity, never refcounted
}

Status Image::Impl::CheckDataFileMapping(uint64_t guest_cluster, uint64_t entry) {
  if (!io_.has_data_device()) return Status::Ok();
  const uint64_t host = entry & f::kL2EntryOffsetMask;
  if (host == guest_cluster * cluster_bytes()) return Status::Ok();
  return MarkCorrupt(Status::Corruption("external data file host cluster offset " +
                                        HexOffset(host) + " does not match guest cluster offset " +
                                        HexOffset(guest_cluster * cluster_bytes())));
}

// A raw data file must read as the disk: zeroing a cluster writes zeroes
// into it (through the normal write path, which keeps or makes the
// identity mapping) instead of setting the zero flag.
Status Image::Impl::ZeroRawDataCluster(uint64_t guest_cluster) {
  const uint64_t start = guest_cluster * cluster_bytes();
  const uint64_t n = std::min(cluster_bytes(), header_.size_bytes - start);
  const std::vector<uint8_t> zeroes(n, 0);
  return WriteCluster(guest_cluster, 0, zeroes);
}

// Resize with a data file: a raw one follows the disk's size, and its new
// clusters are mapped at once.
Status Image::Impl::ResizeDataFile(uint64_t old_size_bytes, uint64_t new_size_bytes) {
  if (!header_.data_file_raw()) return Status::Ok();
  QCRASH_RETURN_IF_ERROR(data_device_->Resize(new_size_bytes, ResizeMode::kSparse));
  if (new_size_bytes <= old_size_bytes) return Status::Ok();
  return Preallocate(old_size_bytes, new_size_bytes, Preallocation::kMetadata);
}

}  // namespace qcrash::engine
