// qemu-img commit: the top image's allocated ranges (and those of the
// backing images above the base) are written into the base, the base is
// flushed, and the top is emptied so that it reads the base.
//
// Crash safety. The top's clusters hold the only durable copy of the
// guest's data until the base's copies are durable: the top drops none of
// them before the base's flush (R13, rule `base_before_empty`; the base is
// another file, so no flush of the top orders it). The emptying itself is
// an unlink and a free per cluster, ordered as every free is (R4, the L2
// cache written back before the refcount decrease). A crash anywhere in
// between leaves the guest view unchanged: the top still maps what it
// maps, and a dropped entry reads the base, which already holds its data.
#include <algorithm>
#include <vector>

#include "engine/image_impl.h"
#include "engine/qcow2_format.h"

namespace qcrash::engine {

namespace f = format;

Status Image::Impl::DropCluster(uint64_t guest_cluster) {
  QCRASH_ASSIGN_OR_RETURN(L2Slot slot, LookupL2(guest_cluster));
  if (slot.entry == 0 && slot.bitmap == 0) return Status::Ok();  // reads the base already
  QCRASH_ASSIGN_OR_RETURN(const ClusterType type, Classify(slot));
  const bool allocated = type == ClusterType::kNormal || type == ClusterType::kZeroAlloc ||
                         type == ClusterType::kCompressed;
  // A snapshot's shared L2 table is copied first (LookupL2ForWrite), so
  // the snapshot keeps its mapping and only our reference goes.
  QCRASH_ASSIGN_OR_RETURN(slot, LookupL2ForWrite(guest_cluster));
  QCRASH_RETURN_IF_ERROR(SetL2Entry(slot, 0, 0));
  if (allocated) QCRASH_RETURN_IF_ERROR(FreeEntryClusters(slot.entry, type));
  return Status::Ok();
}

namespace {

constexpr uint64_t kCopyChunkBytes = uint64_t{1} << 20;

// Where the copies go: the base's qcow2 image, or its raw device.
struct CommitBase {
  Image* image = nullptr;
  BlockDevice* raw = nullptr;
  Status Write(uint64_t offset, std::span<const uint8_t> data) {
    return image != nullptr ? image->Write(offset, data) : raw->Write(offset, data);
  }
  Status WriteZeroes(uint64_t offset, uint64_t length) {
    if (image != nullptr) return image->WriteZeroes(offset, length, /*may_unmap=*/false);
    const std::vector<uint8_t> zeroes(std::min(length, kCopyChunkBytes), 0);
    for (uint64_t done = 0; done < length;) {
      const uint64_t n = std::min<uint64_t>(length - done, zeroes.size());
      QCRASH_RETURN_IF_ERROR(raw->Write(offset + done, std::span(zeroes).first(n)));
      done += n;
    }
    return Status::Ok();
  }
  Status Flush() { return image != nullptr ? image->Flush() : raw->Flush(); }
};

}  // namespace

// Commit steps:
//  1. find the base (options.base_depth levels down) and make it writable:
//     a qcow2 base is reopened read-write over its device; grow it to the
//     top's size when it is smaller (as qemu-img commit does);
//  2. copy every range the top or an image above the base allocates (data
//     read through the top, zeroes written as zeroes) into the base;
//  3. the base flushed (R13): its copies durable before any drop;
//  4. unless keep_top: drop every cluster of the top (R4 for each free);
//  5. the top flushed, then the base flushed (a raw one only when step 3
//     did not; switch commit-empty-before-base-flush makes this the base's
//     only flush, after the drops are durable) or, qcow2, closed.
Status Image::Commit(const CommitOptions& options) {
  Impl& top = *impl_;
  if (top.read_only_) return top.WriteRefused();
  if (top.header_.backing_file.empty()) {
    return Status::InvalidArgument("Image does not have a backing file");
  }
  if (top.header_.data_file_raw()) {
    return Status::NotSupported(
        "commit of an image with a raw external data file (data_file_raw) is not implemented");
  }
  if (options.base_depth == 0) return Status::InvalidArgument("the base must be below the top");
  // Step 1: the image whose backing file is the base.
  Impl* parent = &top;
  for (uint32_t depth = 1; depth < options.base_depth; ++depth) {
    if (!parent->backing_image_) {
      return Status::InvalidArgument("the base is not in the image's backing chain (depth " +
                                     std::to_string(options.base_depth) + ")");
    }
    parent = parent->backing_image_->impl_.get();
  }
  if (!parent->backing_device_) {
    return Status::InvalidArgument("backing file '" + parent->header_.backing_file +
                                   "' is not open");
  }
  CommitBase base;
  if (parent->backing_image_) {
    OpenOptions base_options = parent->backing_image_->impl_->options_;
    base_options.read_only = false;
    base_options.policy = top.options_.policy;
    base_options.faults = top.options_.faults;
    parent->backing_image_.reset();
    auto reopened = Image::Open(*parent->backing_device_, base_options);
    if (!reopened.ok()) {
      return reopened.status().WithContext("backing file '" + parent->header_.backing_file + "'");
    }
    parent->backing_image_ = std::move(reopened).value();
    base.image = parent->backing_image_.get();
  } else {
    base.raw = parent->backing_device_.get();
  }
  const uint64_t size = size_bytes();
  if (parent->backing_size_bytes_ < size) {
    if (base.image != nullptr) {
      QCRASH_RETURN_IF_ERROR(base.image->Truncate(size, Preallocation::kOff));
    } else {
      QCRASH_RETURN_IF_ERROR(base.raw->Resize(size, ResizeMode::kSparse));
    }
    parent->backing_size_bytes_ = size;
  }
  // Step 2. The map names, per range, the image that allocates it (depth).
  QCRASH_ASSIGN_OR_RETURN(const std::vector<MapExtent> extents, Map());
  uint64_t to_copy = 0;
  for (const MapExtent& e : extents) {
    if (e.present && e.depth < options.base_depth) to_copy += e.length;
  }
  uint64_t copied = 0;
  auto report = [&](double percent) {
    if (options.progress) options.progress(percent);
  };
  report(0);
  std::vector<uint8_t> buffer;
  for (const MapExtent& e : extents) {
    if (!e.present || e.depth >= options.base_depth) continue;
    if (e.zero) {
      QCRASH_RETURN_IF_ERROR(base.WriteZeroes(e.start, e.length));
    } else {
      for (uint64_t done = 0; done < e.length;) {
        const uint64_t n = std::min(e.length - done, kCopyChunkBytes);
        buffer.resize(n);
        QCRASH_RETURN_IF_ERROR(Read(e.start + done, buffer));
        QCRASH_RETURN_IF_ERROR(base.Write(e.start + done, buffer));
        done += n;
      }
    }
    copied += e.length;
    report(to_copy == 0 ? 100.0 : 90.0 * static_cast<double>(copied) / to_copy);
  }
  // Step 3 (R13). Why: the drops below make the top read the base; until
  // the base's copies are durable, a crash after a durable drop would read
  // the base's old data where the guest's flushed data was.
  const bool flushed_first = top.MechanismOf(Rule::kBaseBeforeEmpty) == Mechanism::kFlush;
  if (flushed_first) {
    ++top.stats_.flushes_by_rule[static_cast<size_t>(Rule::kBaseBeforeEmpty)];
    QCRASH_RETURN_IF_ERROR(base.Flush());
  }
  // Step 4, only for the image whose backing file is the base: with a base
  // further down, the images between would read garbage (qemu-img's -b
  // implies -d for that reason).
  if (!options.keep_top && options.base_depth == 1) {
    const uint64_t cb = top.cluster_bytes();
    const uint64_t clusters = (size + cb - 1) / cb;
    const uint64_t cover =
        f::L1EntryCoverBytes(top.header_.cluster_bits, top.header_.extended_l2());
    for (uint64_t gc = 0; gc < clusters; ++gc) {
      const uint64_t l1_index = gc * cb / cover;
      if (l1_index >= top.l1_table_.size() ||
          (top.l1_table_[l1_index] & f::kL1EntryOffsetMask) == 0) {
        gc = (l1_index + 1) * cover / cb - 1;  // no L2 table: nothing mapped here
        continue;
      }
      QCRASH_RETURN_IF_ERROR(top.DropCluster(gc));
      QCRASH_RETURN_IF_ERROR(top.AtClusterBoundary());
    }
  }
  QCRASH_RETURN_IF_ERROR(top.FlushAll());
  if (base.image != nullptr) {
    // Closed as qemu-img closes it (it stays usable): a qcow2 base opened
    // read-write here must not be left with its dirty bit set or its
    // bitmaps in_use.
    QCRASH_RETURN_IF_ERROR(base.image->Close());
  } else if (!flushed_first) {
    QCRASH_RETURN_IF_ERROR(base.Flush());
  }
  report(100);
  return top.AfterGuestOp();
}

}  // namespace qcrash::engine
