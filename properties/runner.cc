// RunWorkload: create on memory, replay the operations over a SimDisk.
#include "properties/runner.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <deque>

#include "engine/memory_device.h"
#include "properties/qemu_engine.h"
#include "sim/sim_disk.h"

namespace qcrash::properties {

Result<std::vector<uint64_t>> HostOffsets(engine::Image& image) {
  const uint64_t cluster_bytes = image.header().cluster_bytes();
  std::vector<uint64_t> hosts((image.size_bytes() + cluster_bytes - 1) / cluster_bytes, 0);
  QCRASH_ASSIGN_OR_RETURN(std::vector<engine::MapExtent> map, image.Map());
  for (const engine::MapExtent& e : map) {
    if (!e.has_offset || e.depth != 0) continue;
    for (uint64_t at = e.start; at < e.start + e.length; at += cluster_bytes) {
      if (at % cluster_bytes == 0) hosts[at / cluster_bytes] = e.offset + (at - e.start);
    }
  }
  return hosts;
}

namespace {

engine::EngineStats Sum(const engine::EngineStats& a, const engine::EngineStats& b) {
  engine::EngineStats s;
  s.guest_writes = a.guest_writes + b.guest_writes;
  s.guest_flushes = a.guest_flushes + b.guest_flushes;
  s.device_flushes = a.device_flushes + b.device_flushes;
  s.metadata_writes = a.metadata_writes + b.metadata_writes;
  s.data_writes = a.data_writes + b.data_writes;
  s.clusters_allocated = a.clusters_allocated + b.clusters_allocated;
  s.eviction_writes = a.eviction_writes + b.eviction_writes;
  for (size_t i = 0; i < s.flushes_by_rule.size(); ++i)
    s.flushes_by_rule[i] = a.flushes_by_rule[i] + b.flushes_by_rule[i];
  s.transaction_barriers = a.transaction_barriers + b.transaction_barriers;
  return s;
}

}  // namespace

GuestModel::Expected GuestModel::WholeSector(uint64_t sector) const {
  auto it = sectors_.find(sector);
  if (it != sectors_.end()) return it->second;
  // A sector a shrink dropped (and nothing wrote since) reads zeroes.
  if (sector >= zero_from_) return Expected{0, false};
  return Expected{InitialSectorTag(backing_, sector), false};
}

std::optional<uint64_t> GuestModel::WholeTag(uint64_t sector) const {
  if (partial_.count(sector)) return std::nullopt;
  const Expected whole = WholeSector(sector);
  if (whole.or_zero) return std::nullopt;
  return whole.tag;
}

GuestModel::PartialSector& GuestModel::Partial(uint64_t sector) {
  auto [it, fresh] = partial_.try_emplace(sector);
  if (fresh) {
    const Expected whole = WholeSector(sector);
    for (uint64_t b = 0; b < kGuestSectorBytes; ++b) it->second.bytes[b] = TagByte(whole.tag, b);
    if (whole.or_zero) it->second.or_zero.set();
  }
  return it->second;
}

void GuestModel::Apply(const GuestOp& op, uint64_t op_number) {
  if (op.kind == OpKind::kResize) {
    // A shrink: past the new end reads zeroes if the disk grows again.
    const uint64_t first = op.length_bytes / kGuestSectorBytes;
    if (first < size_ / kGuestSectorBytes) {
      sectors_.erase(sectors_.lower_bound(first), sectors_.end());
      partial_.erase(partial_.lower_bound(first), partial_.end());
      zero_from_ = std::min(zero_from_, first);
    }
    size_ = op.length_bytes;
    return;
  }
  if (!WritesData(op.kind) && op.kind != OpKind::kWriteZeroes && op.kind != OpKind::kDiscard) {
    return;  // flush, close, read; a resize only grows (zeroes)
  }
  const uint64_t end_bytes = op.offset_bytes + op.length_bytes;
  for (uint64_t s = op.offset_bytes / kGuestSectorBytes; s * kGuestSectorBytes < end_bytes; ++s) {
    const uint64_t lo = std::max(op.offset_bytes, s * kGuestSectorBytes) - s * kGuestSectorBytes;
    const uint64_t hi = std::min(end_bytes, (s + 1) * kGuestSectorBytes) - s * kGuestSectorBytes;
    const uint64_t tag = WritesData(op.kind) ? SectorTag(op_number, s) : 0;
    auto part_it = partial_.find(s);
    if (lo == 0 && hi == kGuestSectorBytes && op.kind == OpKind::kDiscard &&
        part_it != partial_.end()) {
      part_it->second.or_zero.set();  // its bytes as they are, or zeroes
      continue;
    }
    if (lo == 0 && hi == kGuestSectorBytes) {  // the whole sector
      partial_.erase(s);
      if (op.kind == OpKind::kDiscard) {
        auto [it, fresh] = sectors_.try_emplace(s, WholeSector(s));
        it->second.or_zero = true;
      } else {
        sectors_[s] = {tag, false};
      }
      continue;
    }
    PartialSector& part = Partial(s);
    for (uint64_t b = lo; b < hi; ++b) {
      if (op.kind == OpKind::kDiscard) {
        part.or_zero.set(b);
      } else {
        part.bytes[b] = TagByte(tag, b);
        part.or_zero.reset(b);
      }
    }
  }
}

Status GuestModel::CheckRead(uint64_t offset, std::span<const uint8_t> bytes) const {
  const uint64_t end_bytes = offset + bytes.size();
  for (uint64_t s = offset / kGuestSectorBytes; s * kGuestSectorBytes < end_bytes; ++s) {
    const uint64_t base = s * kGuestSectorBytes;
    const uint64_t lo = std::max(offset, base) - base;
    const uint64_t hi = std::min(end_bytes, base + kGuestSectorBytes) - base;
    const uint8_t* got = bytes.data() + (base + lo - offset);
    auto part = partial_.find(s);
    const Expected whole = WholeSector(s);
    if (part == partial_.end() && lo == 0 && hi == kGuestSectorBytes) {
      const uint64_t actual = SectorTagOf(got);
      if (actual == whole.tag || (whole.or_zero && actual == 0)) continue;
      return Status::Corruption("read of " + std::to_string(bytes.size()) + " bytes at " +
                                HexOffset(offset) + ": guest sector at " + HexOffset(base) +
                                " reads " + DescribeSectorTag(actual) + "; the last write left " +
                                DescribeSectorTag(whole.tag) +
                                (whole.or_zero ? " (or zeroes: discarded)" : ""));
    }
    for (uint64_t b = lo; b < hi; ++b) {
      const uint8_t want = part != partial_.end() ? part->second.bytes[b] : TagByte(whole.tag, b);
      const bool or_zero = part != partial_.end() ? part->second.or_zero.test(b) : whole.or_zero;
      const uint8_t actual = got[b - lo];
      if (actual == want || (or_zero && actual == 0)) continue;
      char text[64];
      std::snprintf(text, sizeof(text), "0x%02x where the last write left 0x%02x", actual, want);
      return Status::Corruption("read of " + std::to_string(bytes.size()) + " bytes at " +
                                HexOffset(offset) + ": guest byte at " + HexOffset(base + b) +
                                " reads " + text + (or_zero ? " (or zero: discarded)" : "") +
                                " (sector of " + DescribeSectorTag(whole.tag) + " before)");
    }
  }
  return Status::Ok();
}

namespace {

// Keeps WorkloadRun::bitmap_epochs up to date after operation `index`
// returned (the model already has its effect).
void NoteBitmapOp(const GuestOp& op, size_t index, uint64_t size_before, const GuestModel& model,
                  std::map<uint64_t, size_t>& current,
                  std::vector<WorkloadRun::BitmapEpoch>& epochs) {
  auto found = current.find(op.offset_bytes);
  switch (op.kind) {
    case OpKind::kBitmapAdd:
    case OpKind::kBitmapClear: {
      const bool enabled = op.kind == OpKind::kBitmapAdd ||
                           (found != current.end() && epochs[found->second].enabled);
      epochs.push_back({op.offset_bytes, index, model, enabled, {}});
      current[op.offset_bytes] = epochs.size() - 1;
      return;
    }
    case OpKind::kBitmapRemove:
      if (found != current.end()) current.erase(found);
      return;
    case OpKind::kBitmapEnable:
    case OpKind::kBitmapDisable:
      if (found != current.end()) epochs[found->second].enabled = op.kind == OpKind::kBitmapEnable;
      return;
    case OpKind::kWrite:
    case OpKind::kWriteCompressed:
    case OpKind::kWriteZeroes:
    case OpKind::kDiscard:
    case OpKind::kResize:
    case OpKind::kSnapshotRevert: {
      // A revert changes the whole disk.
      uint64_t begin = op.offset_bytes, end = op.offset_bytes + op.length_bytes;
      if (op.kind == OpKind::kResize) {
        begin = std::min(size_before, op.length_bytes);
        end = std::max(size_before, op.length_bytes);
      } else if (op.kind == OpKind::kSnapshotRevert) {
        begin = 0;
        end = UINT64_MAX;
      }
      for (const auto& [number, epoch] : current) {
        if (!epochs[epoch].enabled && end > begin) epochs[epoch].untracked.push_back({begin, end});
      }
      return;
    }
    default:
      return;
  }
}

}  // namespace

Status RunGuestOp(engine::Image& image, const GuestOp& op, uint64_t op_number,
                  const GuestModel* model) {
  switch (op.kind) {
    case OpKind::kSnapshotCreate:
      return image.CreateSnapshot("s" + std::to_string(op_number));
    case OpKind::kSnapshotDelete: {
      QCRASH_ASSIGN_OR_RETURN(auto snapshots, image.Snapshots());
      if (snapshots.empty()) return Status::InvalidArgument("no snapshot to delete");
      return image.DeleteSnapshot(snapshots.front().name);
    }
    case OpKind::kBitmapAdd:
      return image.AddBitmap("b" + std::to_string(op.offset_bytes), op.length_bytes, true);
    case OpKind::kBitmapRemove:
      return image.RemoveBitmap("b" + std::to_string(op.offset_bytes));
    case OpKind::kBitmapClear:
      return image.ClearBitmap("b" + std::to_string(op.offset_bytes));
    case OpKind::kBitmapEnable:
    case OpKind::kBitmapDisable:
      return image.EnableBitmap("b" + std::to_string(op.offset_bytes),
                                op.kind == OpKind::kBitmapEnable);
    case OpKind::kSnapshotRevert: {
      QCRASH_ASSIGN_OR_RETURN(auto snapshots, image.Snapshots());
      if (snapshots.empty()) return Status::InvalidArgument("no snapshot to revert to");
      return image.ApplySnapshot(snapshots.back().name);
    }
    case OpKind::kRead: {
      std::vector<uint8_t> data(op.length_bytes);
      QCRASH_RETURN_IF_ERROR(image.Read(op.offset_bytes, data));
      return model != nullptr ? model->CheckRead(op.offset_bytes, data) : Status::Ok();
    }
    case OpKind::kWrite: {
      std::vector<uint8_t> data(op.length_bytes);
      FillOpBytes(op_number, op.offset_bytes, data);
      return image.Write(op.offset_bytes, data);
    }
    case OpKind::kWriteCompressed: {
      std::vector<uint8_t> data(op.length_bytes);
      FillOpBytes(op_number, op.offset_bytes, data);
      return image.WriteCompressed(op.offset_bytes, data);
    }
    case OpKind::kWriteZeroes:
      return image.WriteZeroes(op.offset_bytes, op.length_bytes, op.may_unmap);
    case OpKind::kDiscard:
      return image.Discard(op.offset_bytes, op.length_bytes);
    case OpKind::kFlush:
      return image.Flush();
    case OpKind::kResize:
      return image.Truncate(op.length_bytes, engine::Preallocation::kOff);
    case OpKind::kRebase: {
      const std::string name = RebaseTarget(op);
      return image.Rebase(name, name.empty() ? std::nullopt : std::optional<std::string>("raw"),
                          /*unsafe=*/false);
    }
    case OpKind::kClose:
      return image.Close();
    case OpKind::kAmend: {
      engine::AmendOptions amend;
      if (op.amend.refcount_bits != 0) amend.refcount_bits = op.amend.refcount_bits;
      if (op.amend.version != 0) amend.version = op.amend.version;
      amend.lazy_refcounts = op.amend.lazy_refcounts;
      return image.Amend(amend);
    }
    case OpKind::kCommit: {
      engine::Image::CommitOptions commit;
      commit.keep_top = op.keep;
      return image.Commit(commit);
    }
  }
  return Status::InvalidArgument("unknown operation");
}

namespace {

// The backing file's reads as one run counts them, across every open.
struct BackingReads {
  uint64_t fail_nth = 0;  // RunOptions::backing_read_error
  uint64_t count = 0;
  bool fired = false;
};

// The backing file each open is handed: reads share the run's bytes (an
// open of a crash state must not copy the whole file); a write, which a
// backing file opened read-only never gets, first takes a copy. With
// `reads`, its nth read fails once with EIO (RunOptions::backing_read_error).
class SharedBacking final : public BlockDevice {
 public:
  SharedBacking(std::shared_ptr<const std::vector<uint8_t>> bytes,
                std::shared_ptr<BackingReads> reads)
      : shared_(std::move(bytes)), reads_(std::move(reads)) {}
  Status Read(uint64_t offset_bytes, std::span<uint8_t> out) override {
    if (reads_ && ++reads_->count == reads_->fail_nth) {
      reads_->fired = true;
      return Status::IoError("injected EIO on backing file read " + std::to_string(reads_->count) +
                             " at " + HexOffset(offset_bytes));
    }
    if (owned_) return owned_->Read(offset_bytes, out);
    const std::vector<uint8_t>& bytes = *shared_;
    if (offset_bytes > bytes.size() || out.size() > bytes.size() - offset_bytes) {
      return Status::IoError("read of " + std::to_string(out.size()) + " bytes at " +
                             HexOffset(offset_bytes) + " past the end of the device (" +
                             std::to_string(bytes.size()) + " bytes)");
    }
    std::copy_n(bytes.begin() + static_cast<ptrdiff_t>(offset_bytes), out.size(), out.begin());
    return Status::Ok();
  }
  Status Write(uint64_t offset_bytes, std::span<const uint8_t> data) override {
    return Own().Write(offset_bytes, data);
  }
  Status WriteFua(uint64_t offset_bytes, std::span<const uint8_t> data) override {
    return Own().WriteFua(offset_bytes, data);
  }
  Status Flush() override { return owned_ ? owned_->Flush() : Status::Ok(); }
  uint64_t SizeBytes() const override { return owned_ ? owned_->SizeBytes() : shared_->size(); }
  Status Resize(uint64_t size_bytes, ResizeMode mode) override {
    return Own().Resize(size_bytes, mode);
  }
  DeviceGeometry Geometry() const override { return {}; }

 private:
  MemoryDevice& Own() {
    if (!owned_) owned_ = std::make_unique<MemoryDevice>(*shared_);
    return *owned_;
  }
  std::shared_ptr<const std::vector<uint8_t>> shared_;
  std::shared_ptr<BackingReads> reads_;
  std::unique_ptr<MemoryDevice> owned_;
};

RunOptions WithCountedBacking(const Workload& workload, RunOptions options,
                              std::shared_ptr<BackingReads> reads) {
  if (!workload.backing) return options;
  // By name: a rebase switches the image between the two backing files
  // (and a crash state names either).
  auto bytes = std::make_shared<const std::vector<uint8_t>>(BackingFileBytes(workload));
  std::shared_ptr<const std::vector<uint8_t>> second;
  if (UsesSecondBacking(workload)) {
    second = std::make_shared<const std::vector<uint8_t>>(
        BackingFileBytes(workload, kBacking2FileName).value());
  }
  options.open.open_backing =
      [bytes, second, reads](const std::string& name) -> Result<std::unique_ptr<BlockDevice>> {
    std::shared_ptr<const std::vector<uint8_t>> chosen = name == kBackingFileName ? bytes : nullptr;
    if (name == kBacking2FileName) chosen = second;
    if (chosen == nullptr) return Status::IoError("no backing file '" + name + "'");
    return std::unique_ptr<BlockDevice>(std::make_unique<SharedBacking>(chosen, reads));
  };
  return options;
}

}  // namespace

engine::DataFileOpener DataFileOpenerFor(BlockDevice& device) {
  return [&device](const std::string&, bool) -> Result<std::unique_ptr<BlockDevice>> {
    return std::unique_ptr<BlockDevice>(std::make_unique<DeviceRef>(device));
  };
}

// The data file as create leaves it: sized to the disk (qemu-img create
// does so), zeroes when raw; otherwise its free space holds junk from an
// earlier life (`junk`), which only a mapping that lands before its data
// can expose.
std::vector<uint8_t> InitialDataFile(const Workload& workload, bool junk) {
  std::vector<uint8_t> bytes;
  if (workload.image.data_file_raw || !junk) {
    bytes.resize(workload.image.size_bytes);
    return bytes;
  }
  const uint64_t cluster_bytes = uint64_t{1} << workload.image.cluster_bits;
  AppendJunkClusters(
      bytes, cluster_bytes,
      static_cast<uint32_t>((workload.image.size_bytes + cluster_bytes - 1) / cluster_bytes));
  bytes.resize(workload.image.size_bytes);
  return bytes;
}

RunOptions WithBacking(const Workload& workload, RunOptions options) {
  return WithCountedBacking(workload, std::move(options), nullptr);
}

void AppendJunkClusters(std::vector<uint8_t>& image, uint64_t cluster_bytes, uint32_t count) {
  const uint64_t start = image.size();
  const uint64_t end =
      (start + cluster_bytes - 1) / cluster_bytes * cluster_bytes + uint64_t{count} * cluster_bytes;
  image.resize(end);
  // Not a sector of one repeated word (no guest tag, no zeroes), and not
  // valid metadata: every 8-byte word differs.
  // Byte b of word w is (w * K) >> (56 - 8 * b % 56), computed a word at a time.
  for (uint64_t at = start; at < end;) {
    const uint64_t word = (at >> 3) * 0x9e3779b97f4a7c15ULL;
    for (const uint64_t stop = std::min(end, (at | 7) + 1); at < stop; ++at)
      image[at] = static_cast<uint8_t>(word >> (56 - 8 * (at & 7) % 56));
  }
}

Result<WorkloadRun> RunWorkload(const Workload& workload, const RunOptions& given) {
  if (given.qemu) return RunWorkloadOnQemu(workload, given);
  QCRASH_RETURN_IF_ERROR(ValidateWorkload(workload));
  auto backing_reads = std::make_shared<BackingReads>();
  backing_reads->fail_nth = given.backing_read_error;
  const RunOptions options = WithCountedBacking(workload, given, backing_reads);
  WorkloadRun run;
  run.workload = workload;
  // Opens after the run (recovery, replays) read the backing file plainly.
  run.options = WithBacking(workload, given);
  MemoryDevice created;
  // The log's second device (M11): the external data file, or (M12) the
  // backing file a commit writes. A workload has at most one of them.
  const bool records_backing = RecordsBacking(workload);
  const bool has_second_device = !workload.image.data_file.empty() || records_backing;
  MemoryDevice created_data(records_backing ? BackingFileBytes(workload)
                            : has_second_device
                                ? InitialDataFile(workload, given.junk_free_clusters > 0)
                                : std::vector<uint8_t>{});
  // The engine reaches the second device as its data file or backing file.
  auto attach = [records_backing](engine::OpenOptions& open, BlockDevice& device) {
    if (records_backing) {
      open.open_backing = [&device](const std::string&) -> Result<std::unique_ptr<BlockDevice>> {
        return std::unique_ptr<BlockDevice>(std::make_unique<DeviceRef>(device));
      };
    } else {
      open.open_data_file = DataFileOpenerFor(device);
    }
  };
  // The create is not under test; under the journal policy it also formats
  // the journal, so the log holds the workload's transactions, not the
  // zeroing of a fresh ring.
  engine::OpenOptions create_open;
  if (options.open.policy == engine::OrderingPolicy::kJournal) {
    create_open.policy = options.open.policy;
    create_open.journal = options.open.journal;
    // The journal header records its variant (checksums or not) at format time.
    create_open.faults.unchecksummed_journal = options.open.faults.unchecksummed_journal;
  }
  if (has_second_device) attach(create_open, created_data);
  {
    QCRASH_ASSIGN_OR_RETURN(auto image,
                            engine::Image::Create(created, workload.image, create_open));
    QCRASH_RETURN_IF_ERROR(image->Close());
    if (workload.check_reservations) {
      QCRASH_ASSIGN_OR_RETURN(run.reserved_host_offsets, HostOffsets(*image));
    }
  }
  if (options.corruption) {
    // The operations run on the created image directly (no crash), then
    // the corruption; what follows logs nothing but the open and close.
    RunOptions direct = options;
    if (has_second_device) attach(direct.open, created_data);
    {
      QCRASH_ASSIGN_OR_RETURN(auto image, engine::Image::Open(created, direct.open));
      GuestModel model(workload);
      std::deque<GuestModel> snapshots;  // the live snapshots' models, oldest first
      for (size_t i = 0; i < workload.ops.size(); ++i) {
        if (i > 0 && workload.ops[i - 1].kind == OpKind::kClose) {
          image.reset();
          QCRASH_ASSIGN_OR_RETURN(image, engine::Image::Open(created, direct.open));
        }
        QCRASH_RETURN_IF_ERROR(RunGuestOp(*image, workload.ops[i], i + 1, &model)
                                   .WithContext("operation " + std::to_string(i)));
        model.Apply(workload.ops[i], i + 1);
        const OpKind kind = workload.ops[i].kind;
        if (kind == OpKind::kSnapshotCreate) snapshots.push_back(model);
        if (kind == OpKind::kSnapshotDelete && !snapshots.empty()) snapshots.pop_front();
        if (kind == OpKind::kSnapshotRevert && !snapshots.empty()) model = snapshots.back();
      }
      QCRASH_RETURN_IF_ERROR(image->Close());
    }
    std::vector<uint8_t> bytes = created.bytes();
    if (!ApplyCorruption(bytes, *options.corruption, options.corruption_choice).ok) {
      return Status::InvalidArgument(std::string("corruption ") +
                                     CorruptionName(*options.corruption) +
                                     " does not apply to this workload's image");
    }
    run.initial = std::make_shared<const sim::ChunkedImage>(sim::ChunkedImage::FromBytes(bytes));
    if (has_second_device) {
      run.data_initial = std::make_shared<const sim::ChunkedImage>(
          sim::ChunkedImage::FromBytes(created_data.bytes()));
    }
    run.log = std::make_shared<const sim::WriteLog>(options.sector_bytes, bytes.size());
    run.timeline = std::make_shared<const sim::CrashTimeline>(run.initial, run.log,
                                                              options.non_atomic, run.data_initial);
    // Every operation had returned before the log starts.
    run.spans.assign(workload.ops.size(), OpSpan{0, 0});
    return run;
  }
  if (options.junk_free_clusters > 0) {
    std::vector<uint8_t> bytes = created.bytes();
    const uint64_t start = bytes.size();
    AppendJunkClusters(bytes, uint64_t{1} << workload.image.cluster_bits,
                       options.junk_free_clusters);
    QCRASH_RETURN_IF_ERROR(created.Write(start, std::span<const uint8_t>(bytes).subspan(start)));
  }
  run.initial =
      std::make_shared<const sim::ChunkedImage>(sim::ChunkedImage::FromBytes(created.bytes()));
  sim::SimDiskOptions disk_options;
  disk_options.sector_bytes = options.sector_bytes;
  disk_options.initial_size_bytes = created.SizeBytes();
  disk_options.faults = options.io_errors;
  sim::SimDisk disk(disk_options, run.initial);
  RunOptions on_disk = options;
  if (has_second_device) {
    run.data_initial = std::make_shared<const sim::ChunkedImage>(
        sim::ChunkedImage::FromBytes(created_data.bytes()));
    attach(on_disk.open, disk.AttachSecondDevice(run.data_initial));
  }
  // Notes the operation during which the first injected error fired.
  auto note_io_error = [&](size_t op) {
    if (run.io_error_op < 0 && (disk.faults().fired_count() > 0 || backing_reads->fired))
      run.io_error_op = static_cast<int64_t>(op);
  };
  auto count_requests = [&] {
    for (size_t k = 0; k < run.device_requests.size(); ++k)
      run.device_requests[k] = disk.faults().op_count(static_cast<sim::IoOp>(k));
    run.backing_reads = backing_reads->count;
  };
  {
    auto opened = engine::Image::Open(disk, on_disk.open);
    if (!opened.ok() && (disk.faults().fired_count() > 0 || backing_reads->fired)) {
      // An injected error met the open: no operation ran.
      run.io_error_op = 0;
      run.opened = false;
      run.workload_status = opened.status().WithContext("open");
      run.spans.push_back({0, disk.log().size()});
      count_requests();
      run.after_close = std::make_shared<const sim::ChunkedImage>(disk.latest_image());
      if (has_second_device) {
        run.after_close_data =
            std::make_shared<const sim::ChunkedImage>(disk.second_latest_image());
      }
      run.log = std::make_shared<const sim::WriteLog>(disk.log());
      run.timeline = std::make_shared<const sim::CrashTimeline>(
          run.initial, run.log, options.non_atomic, run.data_initial);
      return run;
    }
    QCRASH_RETURN_IF_ERROR(opened.status());
    auto image = std::move(opened).value();
    engine::EngineStats earlier_sessions;      // the stats of sessions a close ended
    GuestModel model(workload);                // what reads must return
    std::deque<size_t> live_snapshots;         // snapshot-create operations not deleted yet
    std::map<uint64_t, size_t> current_epoch;  // bitmap number -> its epoch in run.bitmap_epochs
    for (size_t i = 0; i < workload.ops.size(); ++i) {
      const uint64_t start = disk.log().size();
      if (i > 0 && workload.ops[i - 1].kind == OpKind::kClose) {
        // An operation after a close runs in a new session: the image is
        // opened again (its open's writes belong to this operation).
        earlier_sessions = Sum(earlier_sessions, image->stats());
        image.reset();
        auto reopened = engine::Image::Open(disk, on_disk.open);
        if (!reopened.ok()) {
          note_io_error(i);
          run.workload_status =
              reopened.status().WithContext("reopen before operation " + std::to_string(i) + " (" +
                                            DescribeOp(workload.ops[i]) + ")");
          run.spans.push_back({start, disk.log().size()});
          break;
        }
        image = std::move(reopened).value();
      }
      const uint64_t allocated_before = image->stats().clusters_allocated;
      const uint64_t size_before = image->size_bytes();
      const bool reverts =
          workload.ops[i].kind == OpKind::kSnapshotRevert && !live_snapshots.empty();
      if (reverts) run.snapshot_reverted_to[i] = live_snapshots.back();
      run.workload_status = RunGuestOp(*image, workload.ops[i], i + 1, &model);
      if (run.workload_status.ok()) model.Apply(workload.ops[i], i + 1);
      // A revert: the guest sees what it saw at the snapshot's create.
      if (run.workload_status.ok() && reverts)
        model = run.snapshot_models.at(live_snapshots.back());
      if (run.workload_status.ok())
        NoteBitmapOp(workload.ops[i], i, size_before, model, current_epoch, run.bitmap_epochs);
      // The snapshots the run holds, oldest first (a delete removes the
      // oldest), tracked without reading the image: a read here would be
      // one more device request, and an eio case of its own.
      if (run.workload_status.ok() && workload.ops[i].kind == OpKind::kSnapshotCreate) {
        run.snapshot_models.emplace(i, model);
        live_snapshots.push_back(i);
      }
      if (run.workload_status.ok() && workload.ops[i].kind == OpKind::kSnapshotDelete &&
          !live_snapshots.empty()) {
        run.snapshot_deleted_by[i] = live_snapshots.front();
        live_snapshots.pop_front();
      }
      note_io_error(i);
      run.spans.push_back({start, disk.log().size()});
      if (WritesData(workload.ops[i].kind) &&
          image->stats().clusters_allocated > allocated_before) {
        ++run.allocating_writes;
      }
      if (!run.workload_status.ok()) {
        run.workload_status = run.workload_status.WithContext(
            "operation " + std::to_string(i) + " (" + DescribeOp(workload.ops[i]) + ")");
        break;
      }
    }
    run.stats = Sum(earlier_sessions, image ? image->stats() : engine::EngineStats{});
    if (run.io_error_op >= 0 && !run.workload_status.ok()) {
      // The guest gives up after the error and the image is closed; the
      // log (and so the crash timeline) ends before the close.
      run.log = std::make_shared<const sim::WriteLog>(disk.log());
      if (image) run.close_status = image->Close();
      run.after_close = std::make_shared<const sim::ChunkedImage>(disk.latest_image());
      if (has_second_device) {
        run.after_close_data =
            std::make_shared<const sim::ChunkedImage>(disk.second_latest_image());
      }
    }
  }  // otherwise destroyed without Close(): the log ends where the workload ended
  count_requests();
  if (!run.log) run.log = std::make_shared<const sim::WriteLog>(disk.log());
  run.timeline = std::make_shared<const sim::CrashTimeline>(run.initial, run.log,
                                                            options.non_atomic, run.data_initial);
  return run;
}

}  // namespace qcrash::properties
