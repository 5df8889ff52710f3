// Image: a qcow2 image opened over a BlockDevice. Reads, writes, zero writes,
// discards, flushes and resizes, with metadata ordered by the chosen policy.
//
// Destroying an Image without Close() models a crash: nothing is flushed.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/block_device.h"
#include "engine/header.h"
#include "engine/options.h"
#include "engine/snapshot_table.h"
#include "engine/status.h"

namespace qcrash::engine {

struct ReplayReport;  // engine/journal.h

// One run of guest clusters with the same state, as `qemu-img map` prints it.
struct MapExtent {
  uint64_t start = 0;    // guest offset
  uint64_t length = 0;   // bytes
  uint32_t depth = 0;    // 0 = this image, 1 = its backing file, ...
  bool present = false;  // allocated in this image or a backing file (or zero)
  bool zero = false;     // reads as zeroes
  bool data = false;     // backed by host data
  bool compressed = false;
  bool has_offset = false;  // offset is meaningful (data in a raw-readable host cluster)
  uint64_t offset = 0;      // host offset in the file at `depth`
};

// A bitmap's entry and bits (bit g of byte g / 8, least significant first:
// granule g, of 2^granularity_bits bytes, was written).
struct BitmapContent {
  BitmapEntry entry;
  std::vector<uint8_t> bits;
  bool Marked(uint64_t guest_offset) const;  // the granule holding this byte
};

// What `qemu-img amend -o` changes (engine/amend.cc); unset: unchanged.
struct AmendOptions {
  std::optional<uint32_t> refcount_bits;  // 1, 2, 4, ..., 64
  std::optional<uint32_t> version;        // 2 (compat=0.10) or 3 (compat=1.1)
  std::optional<bool> lazy_refcounts;
  std::optional<uint64_t> size_bytes;  // size=: a resize, as Truncate
};

class Image {
 public:
  // Formats `device` as a new qcow2 image and opens it with `open_options`.
  static Result<std::unique_ptr<Image>> Create(BlockDevice& device, const CreateOptions& options,
                                               const OpenOptions& open_options);
  // Opens an existing image. A set dirty bit (lazy refcounts) triggers a
  // refcount rebuild first, unless the image is opened read-only.
  static Result<std::unique_ptr<Image>> Open(BlockDevice& device, const OpenOptions& options);

  ~Image();
  Image(const Image&) = delete;
  Image& operator=(const Image&) = delete;

  Status Read(uint64_t guest_offset, std::span<uint8_t> out);
  Status Write(uint64_t guest_offset, std::span<const uint8_t> data);
  // Like qemu-io's `write -c`: whole clusters, each stored compressed with
  // the image's compression_type (engine/compression.cc), several packed
  // into one host cluster. The disk's last cluster may be partial (padded
  // with zeroes). A cluster that does not compress is written normally.
  // As QEMU, only clusters without a host cluster (unallocated or plain
  // zero) may be written so: InvalidArgument otherwise, nothing written.
  // NotSupported under the journal policy.
  Status WriteCompressed(uint64_t guest_offset, std::span<const uint8_t> data);
  // may_unmap: like qemu-io's `write -z -u`: the host clusters may be freed.
  // Without it, allocated clusters keep their host cluster (zero-alloc).
  Status WriteZeroes(uint64_t guest_offset, uint64_t length_bytes, bool may_unmap);
  // Like qemu-io's `discard`: the clusters are freed (v3: read as zeroes).
  Status Discard(uint64_t guest_offset, uint64_t length_bytes);
  Status Flush();
  // Grows, or shrinks when the clusters past the new end are free.
  Status Truncate(uint64_t new_size_bytes, Preallocation preallocation);
  // Flushes everything and clears the dirty bit. The image stays usable.
  Status Close();

  Result<std::vector<MapExtent>> Map();

  // qemu-img rebase (engine/rebase.cc): the image's backing file becomes
  // `backing_file` ("" for none) of `backing_format` (nullopt: probed at
  // each open), opened through `open` (OpenOptions::open_backing when
  // unset; the caller resolves the name relative to this image). Safe mode first
  // copies into this image every range it does not allocate where the old
  // and the new backing file read differently (the old bytes, what the
  // guest read), all of it durable before the header names the new file
  // (R6: new copy, then switch): the guest reads the same before and after,
  // and after a crash at any point. Unsafe (qemu-img rebase -u) only
  // rewrites the name.
  Status Rebase(const std::string& backing_file, const std::optional<std::string>& backing_format,
                bool unsafe, const BackingOpener& open = nullptr);

  // Internal snapshots (engine/snapshots.cc): create one of the active
  // state, delete one by id or name, list them. Apply (qemu-img snapshot
  // -a) makes the active state a copy of the snapshot's, which stays; the
  // disk takes the snapshot's size.
  Status CreateSnapshot(const std::string& name);
  Status DeleteSnapshot(const std::string& name_or_id);
  Status ApplySnapshot(const std::string& name_or_id);
  Result<std::vector<SnapshotEntry>> Snapshots();
  // Reads the guest view a snapshot holds.
  Status ReadSnapshot(const std::string& name_or_id, uint64_t guest_offset, std::span<uint8_t> out);

  // Persistent dirty bitmaps (engine/bitmaps.cc), as qemu-img bitmap:
  // held in memory while the image is open, stored at Close().
  // granularity_bytes 0: the default (64 KiB, or the cluster size if larger).
  Status AddBitmap(const std::string& name, uint64_t granularity_bytes, bool enabled);
  Status RemoveBitmap(const std::string& name);
  Status ClearBitmap(const std::string& name);
  Status EnableBitmap(const std::string& name, bool enabled);
  // Marks in `target` every granule `source` marks.
  Status MergeBitmap(const std::string& target, const std::string& source);
  // The directory entries (as they will be stored, on a read-write open).
  Result<std::vector<BitmapEntry>> Bitmaps();
  // A bitmap's bits; NotSupported when it is in_use (inconsistent).
  Result<BitmapContent> ReadBitmap(const std::string& name);

  // qemu-img amend (engine/amend.cc): upgrade, refcount width, lazy
  // refcounts, size, downgrade, in QEMU's order, each step crash-safe
  // (refcount structures relocated then switched, R6; a downgrade's
  // expanded zero clusters durable before the header says version 2).
  // Refusals use qemu-img's words (InvalidArgument / NotSupported), with
  // nothing written. NotSupported under the journal policy.
  Status Amend(const AmendOptions& options);
  // qemu-img commit (engine/commit.cc): every guest range this image, and
  // each backing image above the base, allocates (data or zeroes) is
  // written into the base, the base is flushed (R13), and then, unless
  // options.keep_top, this image is emptied: its L2 entries dropped and
  // their clusters freed (R4), so that it reads the base. The guest view
  // does not change. A raw base is written through the backing device, a
  // qcow2 base reopened read-write over it; the opener must give writable
  // devices (the CLI's commit does).
  struct CommitOptions {
    uint32_t base_depth = 1;  // 1: this image's backing file; k: k levels down (qemu-img -b)
    bool keep_top = false;    // qemu-img commit -d
    std::function<void(double percent)> progress;  // qemu-img commit -p
  };
  Status Commit(const CommitOptions& options);

  const Header& header() const;
  uint64_t size_bytes() const;
  bool read_only() const;
  const EngineStats& stats() const;
  // What journal replay did when this image was opened (empty if nothing).
  const ReplayReport& replay_report() const;

  class Impl;

 private:
  explicit Image(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qcrash::engine
