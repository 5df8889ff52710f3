// Runs a workload on the engine over a SimDisk and keeps what the explorer
// needs: the write log and its crash timeline, where each guest operation
// started and ended in the log, and the engine's flush accounting.
#pragma once

#include <array>
#include <bitset>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/image.h"
#include "engine/options.h"
#include "properties/corruptions.h"
#include "properties/workload.h"
#include "sim/crash_model.h"
#include "sim/fault_injection.h"

namespace qcrash::properties {

// The engine under test is QEMU's qcow2 driver, run by qemu-io over its
// blklogwrites driver (properties/qemu_engine.h); unset: ours.
struct QemuEngineOptions {
  std::string qemu_io = "qemu-io";
  std::string qemu_img = "qemu-img";
  std::string cache = "writeback";  // qemu-io -t: writeback none writethrough directsync unsafe
  std::string runtime_opts;         // qcow2 runtime options, "lazy-refcounts=on,l2-cache-size=1M"
  std::string create_opts;          // more qemu-img create -o options
};

struct RunOptions {
  // Set: the workload runs through qemu-io instead of our engine, whose
  // open options below then serve recovery alone.
  std::shared_ptr<const QemuEngineOptions> qemu;
  engine::OpenOptions open;     // policy, data ordering, cache sizes, bug switches
  uint32_t sector_bytes = 512;  // the simulated disk's atomic unit: 512 or 4096
  // Free clusters filled with junk appended to the created image (refcount
  // 0, nothing points at them), as a used image's free space holds old
  // data. The allocator reuses them first, so a pointer that lands before
  // its cluster's contents exposes junk instead of the zeroes of a fresh
  // file end, which would read as an allowed old value.
  uint32_t junk_free_clusters = 64;
  // M8: pending sectors may also hold a mix of two versions or garbage
  // (`explore --non-atomic`).
  sim::NonAtomicOptions non_atomic;
  // I/O errors the simulated disk injects into the workload's requests
  // (properties/eio.h). The run stops at the first guest operation that
  // fails; when an injected error fired, the image is then closed (the
  // guest gave up, as qemu-io exits after an error) and the disk kept.
  sim::FaultRules io_errors;
  // The nth (1-based) read of the backing file fails once with EIO (0: none):
  // a copy-on-write that reads the backing file meets it (properties/eio.h).
  uint64_t backing_read_error = 0;
  // Corrupt start (`explore --corrupt CLASS[:N]`): the operations run to a
  // clean close without a crash, the image is corrupted (properties/
  // corruptions.h, entry N of the class), and the log holds no operation:
  // its one crash state is the corrupt image, whose repair the nested
  // enumerator crashes (I8: no crash state worse than the corrupt image).
  std::optional<Corruption> corruption;
  uint64_t corruption_choice = 0;
};

// What every guest sector reads while no crash intervenes: the last
// write's content, zeroes, or, after a discard (which may keep a partial
// cluster's bytes), its old content or zeroes. Read operations are held to
// it as they run: a read the engine gets wrong stops the run with an error,
// and a stopped run fails its cell.
class GuestModel {
 public:
  explicit GuestModel(const Workload& workload)
      : backing_(workload), size_(workload.image.size_bytes) {
    backing_.ops.clear();  // only the image and backing options are needed
  }
  // Records the effect of operation `op_number` (1-based), which succeeded.
  void Apply(const GuestOp& op, uint64_t op_number);
  // The first sector of a read at `offset` that holds what it may not.
  Status CheckRead(uint64_t offset, std::span<const uint8_t> bytes) const;
  // The tag a whole guest sector holds (0: zeroes), or nullopt when it may
  // also read zeroes (discarded) or operations covered only part of it.
  std::optional<uint64_t> WholeTag(uint64_t sector) const;

 private:
  struct Expected {
    uint64_t tag = 0;
    bool or_zero = false;  // discarded: the old tag or zeroes
  };
  // A sector that operations covered in part: what each byte may read.
  struct PartialSector {
    std::array<uint8_t, kGuestSectorBytes> bytes{};
    std::bitset<kGuestSectorBytes> or_zero;
  };
  Expected WholeSector(uint64_t sector) const;
  PartialSector& Partial(uint64_t sector);     // made from the whole sector's value
  Workload backing_;                           // the initial content (a backing file)
  std::map<uint64_t, Expected> sectors_;       // absent: the initial content
  std::map<uint64_t, PartialSector> partial_;  // wins over sectors_
  uint64_t size_;                              // the disk's size now
  uint64_t zero_from_ = UINT64_MAX;            // sectors from here on that no write set read zeroes
};

// Log positions of one guest operation: records [start, end) are its writes
// and flushes. Crash point p < end means it was not acknowledged at p.
struct OpSpan {
  uint64_t start = 0;
  uint64_t end = 0;
};

struct WorkloadRun {
  Workload workload;
  RunOptions options;
  std::shared_ptr<const sim::ChunkedImage> initial;  // the image right after create
  // The external data file right after create (null: the image has none);
  // the log holds its writes as the second device (sim/crash_model.h M11).
  // With a commit operation (RecordsBacking), the backing file instead (M12).
  std::shared_ptr<const sim::ChunkedImage> data_initial;
  std::shared_ptr<const sim::WriteLog> log;
  std::shared_ptr<const sim::CrashTimeline> timeline;
  std::vector<OpSpan> spans;  // one per operation that ran
  engine::EngineStats stats;
  uint64_t allocating_writes = 0;  // guest writes that allocated at least one cluster
  // Host offset of every guest cluster right after create (0: none), for I10.
  std::vector<uint64_t> reserved_host_offsets;
  Status workload_status;  // the first failed operation (the run stops there)
  // Device requests the run made (reads, writes and FUA writes, flushes),
  // indexed by sim::IoOp, as the disk counted them (failed ones included).
  std::array<uint64_t, 3> device_requests{};
  uint64_t backing_reads = 0;  // reads of the backing file, over every open of the run
  // Injected I/O errors (RunOptions::io_errors): the first operation during
  // which one fired (-1: none fired), and, when one fired and the run
  // stopped, the disk's latest image after the close that followed, and
  // that close's status.
  int64_t io_error_op = -1;
  bool opened = true;  // false: the first open failed (an injected error met it)
  std::shared_ptr<const sim::ChunkedImage> after_close;
  std::shared_ptr<const sim::ChunkedImage> after_close_data;  // its data file, when it has one
  Status close_status;
  // Imported from a log with no workload (`explore --log`): only the
  // structural invariants hold, no guest data is known. span_labels name
  // the spans (the log's marks).
  bool structural_only = false;
  std::vector<std::string> span_labels;
  std::string engine = "qcrash";  // or "qemu"
  // Internal snapshots (I12): what the guest saw when each snapshot-create
  // operation (index) ran, which create's snapshot each snapshot-delete
  // operation (index) removed, and which one each snapshot-revert
  // operation (index) ran to apply (set before it ran: one that failed or
  // was cut may have taken effect too).
  std::map<size_t, GuestModel> snapshot_models;
  std::map<size_t, size_t> snapshot_deleted_by;
  std::map<size_t, size_t> snapshot_reverted_to;
  // Persistent bitmaps (I11): one epoch per bitmap-add and bitmap-clear
  // operation that returned, when the bitmap "b<number>" was empty: what
  // the guest saw then, and the guest ranges changed while the bitmap was
  // disabled, which it need not mark.
  struct BitmapEpoch {
    uint64_t number = 0;
    size_t op = 0;
    GuestModel baseline;
    bool enabled = true;
    std::vector<std::pair<uint64_t, uint64_t>> untracked;  // [offset, end)
  };
  std::vector<BitmapEpoch> bitmap_epochs;
};

// A BlockDevice that forwards every request to one it does not own: what
// the data file openers hand the engine (the device outlives the image).
class DeviceRef final : public BlockDevice {
 public:
  explicit DeviceRef(BlockDevice& device) : device_(device) {}
  Status Read(uint64_t offset_bytes, std::span<uint8_t> out) override {
    return device_.Read(offset_bytes, out);
  }
  Status Write(uint64_t offset_bytes, std::span<const uint8_t> data) override {
    return device_.Write(offset_bytes, data);
  }
  Status WriteFua(uint64_t offset_bytes, std::span<const uint8_t> data) override {
    return device_.WriteFua(offset_bytes, data);
  }
  Status Flush() override { return device_.Flush(); }
  uint64_t SizeBytes() const override { return device_.SizeBytes(); }
  Status Resize(uint64_t size_bytes, ResizeMode mode) override {
    return device_.Resize(size_bytes, mode);
  }
  DeviceGeometry Geometry() const override { return device_.Geometry(); }

 private:
  BlockDevice& device_;
};

// An opener that gives the engine `device` as the image's data file,
// whatever name the header holds.
engine::DataFileOpener DataFileOpenerFor(BlockDevice& device);

// `options` with an opener for the workload's backing file, when it has one
// (every open of the image, the recovery's included, reads it through this).
RunOptions WithBacking(const Workload& workload, RunOptions options);

// Appends `count` free clusters of junk to `image` (from the next cluster
// boundary): RunOptions::junk_free_clusters.
void AppendJunkClusters(std::vector<uint8_t>& image, uint64_t cluster_bytes, uint32_t count);

// Creates the image on memory, then opens it over a SimDisk and runs the
// operations; the log covers the operations only, not the create.
Result<WorkloadRun> RunWorkload(const Workload& workload, const RunOptions& options);

// Runs one guest operation on `image`; `op_number` (1-based) picks the
// content a write carries (FillOpContent). A read is checked against
// `model` when one is given.
Status RunGuestOp(engine::Image& image, const GuestOp& op, uint64_t op_number,
                  const GuestModel* model = nullptr);

// The guest-cluster to host-offset map of an image (0 where unallocated).
Result<std::vector<uint64_t>> HostOffsets(engine::Image& image);

}  // namespace qcrash::properties
