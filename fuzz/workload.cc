// Workload + crash harness: runs decoded guest operations on a SimDisk,
// picks one crash state from the input, recovers it with check and repair,
// and checks the DESIGN.md invariants against a per-sector oracle.
#include "fuzz/workload.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <memory>

#include "engine/check.h"
#include "engine/image.h"
#include "sim/crash_view.h"
#include "sim/sim_disk.h"

namespace qcrash::fuzz {
namespace {

constexpr uint64_t kGuestSectorBytes = 512;
constexpr size_t kMaxOps = 16;
constexpr uint64_t kMaxGuestBytes = uint64_t{2} << 20;
constexpr size_t kMaxChosenSectors = 4096;

// The tag a sector holds after op `op_index` wrote it: every 8-byte word of
// the sector holds it, so a sector from another op or place never matches.
uint64_t WriteTag(size_t op_index, uint64_t sector) {
  return (uint64_t{op_index + 1} << 40) | (sector + 1);
}

// One executed operation and the log records it produced.
struct OpRecord {
  GuestOp op;
  uint64_t log_start = 0;  // log size before the call
  uint64_t log_end = 0;    // log size after it returned
};

// What each guest sector may read after a crash at point p (I4, I5): the tag
// it had when the last flush completed before p, or the tag of any later
// operation that had started (issued a record) before p.
class SectorOracle {
 public:
  SectorOracle(const std::vector<OpRecord>& records, uint64_t sector_count,
               uint64_t cluster_sectors)
      : records_(records), sector_count_(sector_count), cluster_sectors_(cluster_sectors) {}

  std::vector<uint64_t> Allowed(uint64_t sector, uint64_t point) const {
    size_t flushed = 0;  // ops [0, flushed) are durable
    for (size_t i = 0; i < records_.size(); ++i) {
      if (records_[i].op.kind == GuestOpKind::kFlush && records_[i].log_end <= point)
        flushed = i + 1;
    }
    uint64_t durable = 0;
    for (size_t i = 0; i < flushed; ++i) TagAfter(i, sector, &durable);
    std::vector<uint64_t> allowed = {durable};
    for (size_t i = flushed; i < records_.size(); ++i) {
      uint64_t tag = 0;
      if (records_[i].log_start < point && TagAfter(i, sector, &tag)) allowed.push_back(tag);
    }
    return allowed;
  }

 private:
  // Sets *tag when op i changes the sector's content.
  bool TagAfter(size_t i, uint64_t sector, uint64_t* tag) const {
    const GuestOp& op = records_[i].op;
    if (op.kind == GuestOpKind::kFlush) return false;
    if (sector < op.first_sector || sector >= op.first_sector + op.sector_count) return false;
    if (op.kind == GuestOpKind::kDiscard) {
      // Only whole clusters (or the tail cluster) are discarded.
      const uint64_t cluster = sector / cluster_sectors_;
      const uint64_t begin = cluster * cluster_sectors_;
      const uint64_t end = std::min(begin + cluster_sectors_, sector_count_);
      const bool tail = op.first_sector + op.sector_count == sector_count_;
      if (begin < op.first_sector || (end > op.first_sector + op.sector_count && !tail))
        return false;
    }
    *tag = op.kind == GuestOpKind::kWrite ? WriteTag(i, sector) : 0;
    return true;
  }

  const std::vector<OpRecord>& records_;
  uint64_t sector_count_;
  uint64_t cluster_sectors_;
};

Status RunOp(engine::Image& image, const GuestOp& op, size_t op_index) {
  const uint64_t offset = op.first_sector * kGuestSectorBytes;
  const uint64_t length = op.sector_count * kGuestSectorBytes;
  switch (op.kind) {
    case GuestOpKind::kWrite: {
      std::vector<uint8_t> data(length);
      for (uint64_t s = 0; s < op.sector_count; ++s) {
        const uint64_t tag = WriteTag(op_index, op.first_sector + s);
        for (uint64_t w = 0; w < kGuestSectorBytes; w += 8) {
          std::memcpy(&data[s * kGuestSectorBytes + w], &tag, 8);
        }
      }
      return image.Write(offset, data);
    }
    case GuestOpKind::kZeroKeep:
      return image.WriteZeroes(offset, length, false);
    case GuestOpKind::kZeroUnmap:
      return image.WriteZeroes(offset, length, true);
    case GuestOpKind::kDiscard:
      return image.Discard(offset, length);
    case GuestOpKind::kFlush:
      return image.Flush();
  }
  return Status::Ok();
}

// The crash state the input chooses at `point`: one byte per pending sector
// picks its version; without input bytes a sector holds its latest version.
sim::CrashState ChooseState(const sim::CrashPoint& point, ByteReader& reader) {
  sim::CrashState state;
  state.point = point.point;
  for (size_t i = 0; i < point.pending.size() && i < kMaxChosenSectors && !reader.empty(); ++i) {
    const uint64_t choices = point.ChoiceCount(i);
    const uint64_t index = reader.U8() % choices;
    if (index == point.pending[i].count) continue;  // the latest version
    state.deviations.push_back(point.ChoiceAt(i, index));
  }
  return state;
}

Violation CheckGuestData(BlockDevice& device, const WorkloadCase& workload,
                         const SectorOracle& oracle, uint64_t point,
                         const engine::CheckReport& repair) {
  engine::OpenOptions options = workload.open;
  options.read_only = true;
  auto opened = engine::Image::Open(device, options);
  if (!opened.ok()) return {"I7 repaired image opens", opened.status().ToString()};
  engine::Image& image = **opened;
  const uint64_t sector_count = workload.create.size_bytes / kGuestSectorBytes;
  // One read of the whole (small) guest disk: much cheaper than per sector.
  std::vector<uint8_t> guest(workload.create.size_bytes);
  const Status read = image.Read(0, guest);
  if (!read.ok()) return {"I4 guest data reads back", read.ToString()};
  for (uint64_t s = 0; s < sector_count; ++s) {
    const uint64_t guest_offset = s * kGuestSectorBytes;
    bool dropped = false;
    for (const engine::DroppedRange& range : repair.dropped) {
      dropped |= guest_offset >= range.guest_offset &&
                 guest_offset < range.guest_offset + range.length_bytes;
    }
    if (dropped) continue;  // repair said so; only a strict-policy pre-check forbids it
    const std::span<const uint8_t> sector(&guest[guest_offset], kGuestSectorBytes);
    uint64_t tag = 0;
    std::memcpy(&tag, sector.data(), 8);
    bool uniform = true;
    for (uint64_t w = 8; w < kGuestSectorBytes; w += 8)
      uniform &= std::memcmp(&sector[w], &tag, 8) == 0;
    const std::vector<uint64_t> allowed = oracle.Allowed(s, point);
    if (uniform && std::find(allowed.begin(), allowed.end(), tag) != allowed.end()) continue;
    std::string detail = "guest sector " + std::to_string(s) + " reads tag " + HexOffset(tag) +
                         (uniform ? "" : " (mixed)") + "; allowed:";
    for (uint64_t a : allowed) detail += " " + HexOffset(a);
    return {"I4/I5 durable, old-or-new guest data", detail};
  }
  return {};
}

// Recovery of one crash state (journal replay, check, repair, check) and the
// invariants.
Violation Recover(sim::CrashView& view, const WorkloadCase& workload, const SectorOracle& oracle,
                  uint64_t point) {
  if (workload.open.policy == engine::OrderingPolicy::kJournal) {
    // Opening read-write replays the committed transactions; Close leaves
    // the journal clean, so check sees the recovered metadata.
    auto opened = engine::Image::Open(view, workload.open);
    if (!opened.ok())
      return {"I8 journal replay opens the crash image", opened.status().ToString()};
    const Status closed = (*opened)->Close();
    if (!closed.ok()) return {"I8 the recovered image closes", closed.ToString()};
  }
  auto before = engine::CheckImage(view, {engine::RepairMode::kNone});
  if (!before.ok()) return {"crash image can be checked", before.status().ToString()};
  if (workload.strict_before_repair && (before->corruptions != 0 || before->check_errors != 0)) {
    return {"I1/I2 no dangling pointer, no over-reference before repair", DescribeReport(*before)};
  }
  auto repair = engine::CheckImage(view, {engine::RepairMode::kAll});
  if (!repair.ok()) return {"I7 repair runs", repair.status().ToString()};
  auto after = engine::CheckImage(view, {engine::RepairMode::kNone});
  if (!after.ok() || !IsClean(*after)) {
    return {"I7 check is clean after repair",
            after.ok() ? DescribeReport(*after) : after.status().ToString()};
  }
  auto again = engine::CheckImage(view, {engine::RepairMode::kAll});
  if (!again.ok() || again->bytes_written != 0) {
    return {"I7 a second repair changes no byte",
            again.ok() ? std::to_string(again->bytes_written) + " bytes written"
                       : again.status().ToString()};
  }
  return CheckGuestData(view, workload, oracle, point, *repair);
}

}  // namespace

WorkloadCase DecodeWorkload(ByteReader& reader) {
  static constexpr engine::OrderingPolicy kPolicies[] = {
      engine::OrderingPolicy::kWritethrough, engine::OrderingPolicy::kOrdered,
      engine::OrderingPolicy::kLazy, engine::OrderingPolicy::kExtent,
      engine::OrderingPolicy::kJournal};
  static constexpr uint32_t kClusterBits[] = {9, 10, 12, 16};
  WorkloadCase w;
  const uint8_t policy_byte = reader.U8();
  w.open = SmallOpenOptions(false);
  w.open.policy = kPolicies[policy_byte % std::size(kPolicies)];
  w.open.l2_cache_tables = 1 + (policy_byte >> 3) % 4;
  w.open.refcount_cache_blocks = 1 + (policy_byte >> 5) % 4;
  w.open.journal.size_bytes = uint64_t{64} << 10;  // 128 blocks: wraparound within a few ops
  w.strict_before_repair = w.open.policy != engine::OrderingPolicy::kLazy;
  const uint8_t format_byte = reader.U8();
  w.create.cluster_bits = kClusterBits[format_byte % 4];
  const bool lazy = w.open.policy == engine::OrderingPolicy::kLazy;
  const bool journal = w.open.policy == engine::OrderingPolicy::kJournal;
  w.create.version = (!lazy && !journal && (format_byte & 4)) ? 2 : 3;
  w.create.refcount_order = w.create.version == 2 ? 4 : (format_byte >> 3) % 7;
  w.create.lazy_refcounts = lazy;
  w.device_sector_bytes = (format_byte & 0x80) ? 4096 : 512;
  const uint64_t cluster_bytes = uint64_t{1} << w.create.cluster_bits;
  w.create.size_bytes = std::min(kMaxGuestBytes, cluster_bytes * (4 + reader.U8() % 29));
  const uint64_t sectors = w.create.size_bytes / kGuestSectorBytes;
  const uint64_t cluster_sectors = cluster_bytes / kGuestSectorBytes;
  const size_t op_count = reader.U8() % (kMaxOps + 1);
  for (size_t i = 0; i < op_count; ++i) {
    GuestOp op;
    op.kind = static_cast<GuestOpKind>(reader.U8() % 5);
    op.first_sector = reader.U16() % sectors;
    op.sector_count =
        std::min<uint64_t>(1 + reader.U8() % (2 * cluster_sectors), sectors - op.first_sector);
    w.ops.push_back(op);
  }
  return w;
}

Violation RunWorkloadCrashCase(const WorkloadCase& workload, ByteReader& crash_choices) {
  sim::SimDiskOptions disk_options;
  disk_options.sector_bytes = workload.device_sector_bytes;
  disk_options.max_size_bytes = kMaxDeviceBytes;
  sim::SimDisk disk(disk_options);
  auto created = engine::Image::Create(disk, workload.create, workload.open);
  if (!created.ok()) return {};  // an option mix the engine refuses: nothing to check
  std::unique_ptr<engine::Image> image = std::move(created).value();
  if (!image->Flush().ok()) return {};
  const uint64_t log_start = disk.log().size();
  std::vector<OpRecord> records;
  for (size_t i = 0; i < workload.ops.size(); ++i) {
    OpRecord record{workload.ops[i], disk.log().size(), 0};
    const Status status = RunOp(*image, workload.ops[i], i);
    record.log_end = disk.log().size();
    records.push_back(record);
    if (!status.ok()) break;  // its effect may be partial: the oracle allows old or new
  }
  image.reset();  // the crash: nothing more reaches the disk
  const sim::CrashTimeline timeline = disk.Timeline();
  const uint64_t point = log_start + crash_choices.Below(timeline.PointCount() - log_start);
  const auto crash_point = timeline.Point(point);
  const sim::CrashState state = ChooseState(*crash_point, crash_choices);
  auto view = sim::CrashTimeline::BuildView(crash_point, state);
  if (!view.ok()) return {"crash state builds", view.status().ToString()};
  const SectorOracle oracle(records, workload.create.size_bytes / kGuestSectorBytes,
                            (uint64_t{1} << workload.create.cluster_bits) / kGuestSectorBytes);
  Violation violation = Recover(**view, workload, oracle, point);
  if (violation.found()) {
    violation.detail += "\n==qcrash-fuzz== policy " +
                        std::string(engine::PolicyName(workload.open.policy)) + ", crash state " +
                        sim::FormatCrashStateId(state) + ", " + std::to_string(records.size()) +
                        " ops";
  }
  return violation;
}

}  // namespace qcrash::fuzz
