// Device faults over a run's write log: the lying flush (a crash state of
// a log with the flush taken out) and the misdirected write (the final image
// with one write moved by a cluster). See device_faults.h.
#include "properties/device_faults.h"

#include <algorithm>
#include <set>
#include <utility>

#include "engine/check.h"
#include "engine/header.h"
#include "engine/image.h"
#include "engine/journal_format.h"
#include "engine/memory_device.h"
#include "engine/qcow2_format.h"
#include "properties/oracle.h"
#include "sim/chunked_image.h"

namespace qcrash::properties {
namespace {

bool IsBarrier(const sim::LogRecord& record) {
  return record.kind == sim::RecordKind::kFlush || record.kind == sim::RecordKind::kResize;
}

bool IsWrite(const sim::LogRecord& record) {
  return record.kind == sim::RecordKind::kWrite || record.kind == sim::RecordKind::kWriteFua;
}

// `count` indices spread evenly over [0, total) (all of them when total <= count).
std::vector<size_t> Stride(size_t total, size_t count) {
  std::vector<size_t> out;
  if (total <= count) {
    for (size_t i = 0; i < total; ++i) out.push_back(i);
    return out;
  }
  for (size_t k = 0; k < count; ++k) out.push_back(k * total / count);
  return out;
}

}  // namespace

// ---- Lying flush ---------------------------------------------------------------

Result<LyingFlushCase> BuildLyingFlushCase(const WorkloadRun& run, uint64_t flush_record,
                                           bool drop_epoch) {
  if (run.data_initial) {
    // The device fault models act on the image file's log alone; a log
    // with a second device (an external data file, sim M11, or the backing
    // file a commit writes, M12) is not modelled.
    return Status::NotSupported(
        "device faults of an image with an external data file or a committed backing file");
  }
  const sim::WriteLog& log = *run.log;
  if (flush_record >= log.size() || log.record(flush_record).kind != sim::RecordKind::kFlush) {
    return Status::InvalidArgument("record " + std::to_string(flush_record) + " is not a flush");
  }
  const uint64_t f = flush_record;
  // The lying epoch is [s, f); the next one [f + 1, g), g the next barrier or the end.
  uint64_t s = f;
  while (s > 0 && !IsBarrier(log.record(s - 1))) --s;
  uint64_t g = f + 1;
  while (g < log.size() && !IsBarrier(log.record(g))) ++g;

  // The merged log: the records of both epochs without the flush, starting
  // on the durable image of the lying epoch.
  std::shared_ptr<const sim::ChunkedImage> base = run.timeline->EpochBase(s);
  auto merged = std::make_shared<sim::WriteLog>(log.sector_bytes(), base->SizeBytes());
  for (uint64_t i = s; i < g; ++i) {
    if (i == f) continue;
    const sim::LogRecord& r = log.record(i);
    merged->AppendWrite(r.offset_bytes, log.DataOf(r), r.kind == sim::RecordKind::kWriteFua);
  }
  // Original record index -> merged index: records before s all count as
  // done before the merged log starts (index 0), those after f move down one.
  auto map = [&](uint64_t i) -> uint64_t {
    if (i <= s) return 0;
    return i <= f ? i - s : i - s - 1;
  };
  auto derived = std::make_shared<WorkloadRun>(run);
  derived->initial = base;
  derived->log = merged;
  derived->timeline = std::make_shared<const sim::CrashTimeline>(base, merged);
  bool guest_flush = false;
  for (size_t i = 0; i < derived->spans.size(); ++i) {
    OpSpan& span = derived->spans[i];
    if (span.start <= f && f < span.end && i < run.workload.ops.size()) {
      const OpKind kind = run.workload.ops[i].kind;
      guest_flush = kind == OpKind::kFlush || kind == OpKind::kClose;
    }
    span = {map(span.start), map(span.end)};
  }

  LyingFlushCase out;
  out.flush_record = f;
  out.crash_point = g;
  out.guest_flush = guest_flush;
  out.point = derived->timeline->Point(merged->size());
  out.state.point = merged->size();
  const uint64_t first_after = f - s;  // merged index of the first record after the flush
  if (drop_epoch) {
    const sim::CrashPoint& point = *out.point;
    for (const sim::PendingSector& p : point.pending) {
      // The newest pending version came from the lying epoch: nothing after
      // the flush rewrote the sector, so it falls back to before the epoch.
      if (point.version_record[p.first + p.count] < first_after) {
        out.state.deviations.push_back({p.sector, sim::ChoiceKind::kVersion, 0, 0, 0});
      }
    }
  }
  out.dropped_sectors = out.state.deviations.size();
  out.run = std::move(derived);
  return out;
}

Result<LyingFlushReport> MeasureLyingFlush(const WorkloadRun& run,
                                           const LyingFlushOptions& options) {
  if (run.data_initial) {
    // The device fault models act on the image file's log alone; a log
    // with a second device (an external data file, sim M11, or the backing
    // file a commit writes, M12) is not modelled.
    return Status::NotSupported(
        "device faults of an image with an external data file or a committed backing file");
  }
  const sim::WriteLog& log = *run.log;
  LyingFlushReport report;
  // Flushes whose epoch holds a non-FUA write: the ones a lie can hurt.
  std::vector<uint64_t> flushes;
  bool epoch_has_writes = false;
  for (uint64_t i = 0; i < log.size(); ++i) {
    const sim::LogRecord& r = log.record(i);
    if (r.kind == sim::RecordKind::kWrite && r.length_bytes > 0) epoch_has_writes = true;
    if (r.kind == sim::RecordKind::kFlush) {
      ++report.flushes;
      if (epoch_has_writes) {
        flushes.push_back(i);
      } else {
        ++report.empty_epochs;
      }
    }
    if (IsBarrier(r)) epoch_has_writes = false;
  }
  for (size_t k : Stride(flushes.size(), options.flushes_max)) {
    QCRASH_ASSIGN_OR_RETURN(LyingFlushCase c,
                            BuildLyingFlushCase(run, flushes[k], options.drop_epoch));
    const GuestOracle oracle(*c.run);
    const StateResult result = RecoverState(*c.run, oracle, c.point, c.state, {});
    ++report.states;
    if (result.violations.empty()) continue;
    ++report.violating_states;
    std::set<std::string> broken;
    for (const Violation& v : result.violations) broken.insert(v.invariant);
    for (const std::string& invariant : broken) ++report.invariants[invariant];
    if (report.examples.size() < 4) {
      report.examples.push_back({c.flush_record, c.crash_point, c.dropped_sectors, c.guest_flush,
                                 sim::FormatCrashStateId(c.state),
                                 result.violations.front().invariant,
                                 result.violations.front().message});
    }
  }
  return report;
}

// ---- Misdirected write -----------------------------------------------------------

const char* ZoneName(Zone zone) {
  switch (zone) {
    case Zone::kHeader:
      return "header";
    case Zone::kL1:
      return "L1 table";
    case Zone::kL2:
      return "L2 table";
    case Zone::kRefcountTable:
      return "refcount table";
    case Zone::kRefcountBlock:
      return "refcount block";
    case Zone::kJournal:
      return "journal";
    case Zone::kGuestData:
      return "guest data";
    case Zone::kUnowned:
      return "unowned";
  }
  return "?";
}

namespace {

void Apply(sim::ChunkedImage& image, const sim::WriteLog& log, const sim::LogRecord& r,
           uint64_t offset_bytes) {
  if (IsWrite(r)) {
    image.Write(offset_bytes, log.DataOf(r));
  } else if (r.kind == sim::RecordKind::kResize) {
    image.Resize(r.offset_bytes);
  }
}

Result<std::vector<uint64_t>> ReadEntries(BlockDevice& device, uint64_t offset, uint64_t count) {
  std::vector<uint64_t> out;
  if (offset == 0 || count == 0 || offset >= device.SizeBytes()) return out;
  count = std::min<uint64_t>(count, (device.SizeBytes() - offset) / 8);
  std::vector<uint8_t> bytes(count * 8);
  QCRASH_RETURN_IF_ERROR(device.Read(offset, bytes));
  out.resize(count);
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t v = 0;
    for (int b = 0; b < 8; ++b) v = v << 8 | bytes[i * 8 + b];
    out[i] = v;
  }
  return out;
}

}  // namespace

Result<std::vector<Zone>> ClusterZones(BlockDevice& device) {
  QCRASH_ASSIGN_OR_RETURN(engine::Header header, engine::ReadHeader(device));
  const uint32_t bits = header.cluster_bits;
  const uint64_t cluster = header.cluster_bytes();
  std::vector<Zone> zones((device.SizeBytes() + cluster - 1) / cluster, Zone::kUnowned);
  // The first owner found keeps a cluster: metadata is marked before data.
  auto mark = [&](uint64_t offset, uint64_t bytes, Zone zone) {
    if (bytes == 0) return;
    for (uint64_t c = offset >> bits; c <= (offset + bytes - 1) >> bits && c < zones.size(); ++c)
      if (zones[c] == Zone::kUnowned) zones[c] = zone;
  };
  if (!zones.empty()) zones[0] = Zone::kHeader;
  mark(header.l1_table_offset, uint64_t{header.l1_size} * 8, Zone::kL1);
  mark(header.refcount_table_offset, uint64_t{header.refcount_table_clusters} * cluster,
       Zone::kRefcountTable);
  for (const engine::HeaderExtension& e : header.unknown_extensions) {
    if (e.type != engine::journal::kExtJournal) continue;
    auto location = engine::journal::DecodeLocation(e.data, bits, device.SizeBytes());
    if (location.ok()) mark(location->offset_bytes, location->size_bytes, Zone::kJournal);
  }
  QCRASH_ASSIGN_OR_RETURN(std::vector<uint64_t> refcount_table,
                          ReadEntries(device, header.refcount_table_offset,
                                      uint64_t{header.refcount_table_clusters} * cluster / 8));
  for (uint64_t e : refcount_table) {
    mark(e & engine::format::kRefcountTableOffsetMask, cluster, Zone::kRefcountBlock);
  }
  QCRASH_ASSIGN_OR_RETURN(std::vector<uint64_t> l1,
                          ReadEntries(device, header.l1_table_offset, header.l1_size));
  std::vector<uint64_t> l2_tables;
  for (uint64_t e : l1) {
    const uint64_t l2 = e & engine::format::kL1EntryOffsetMask;
    if (l2 == 0) continue;
    mark(l2, cluster, Zone::kL2);
    l2_tables.push_back(l2);
  }
  for (uint64_t l2 : l2_tables) {
    QCRASH_ASSIGN_OR_RETURN(std::vector<uint64_t> entries,
                            ReadEntries(device, l2, engine::format::ClusterBytes(bits) / 8));
    const size_t stride = header.l2_entry_bytes() / 8;  // skip extended L2's bitmap words
    for (size_t k = 0; k < entries.size(); k += stride) {
      const uint64_t e = entries[k];
      if (e & engine::format::kOflagCompressed) {
        const auto extent = engine::format::DecodeCompressed(e, bits);
        mark(extent.host_offset, extent.bytes, Zone::kGuestData);
      } else {
        mark(e & engine::format::kL2EntryOffsetMask, cluster, Zone::kGuestData);
      }
    }
  }
  return zones;
}

namespace {

// What a user gets back: open the image (a journal replays, a dirty image's
// refcounts are rebuilt) and read the whole guest disk.
Result<std::vector<uint8_t>> GuestView(const std::vector<uint8_t>& bytes, uint32_t sector_bytes,
                                       const engine::BackingOpener& open_backing) {
  MemoryDevice device(bytes, {sector_bytes, true});
  engine::OpenOptions open;
  open.policy = engine::OrderingPolicy::kOrdered;
  open.open_backing = open_backing;  // the workload's backing file
  QCRASH_ASSIGN_OR_RETURN(std::unique_ptr<engine::Image> image, engine::Image::Open(device, open));
  std::vector<uint8_t> out(image->size_bytes());
  constexpr uint64_t kPiece = uint64_t{1} << 20;
  for (uint64_t at = 0; at < out.size(); at += kPiece) {
    const uint64_t n = std::min<uint64_t>(kPiece, out.size() - at);
    QCRASH_RETURN_IF_ERROR(image->Read(at, std::span<uint8_t>(out.data() + at, n)));
  }
  return out;
}

bool Counts(const engine::Finding& f) { return f.severity != engine::Severity::kInfo; }

}  // namespace

Result<MisdirectReport> MeasureMisdirect(const WorkloadRun& run, const MisdirectOptions& options) {
  if (run.data_initial) {
    // The device fault models act on the image file's log alone; a log
    // with a second device (an external data file, sim M11, or the backing
    // file a commit writes, M12) is not modelled.
    return Status::NotSupported(
        "device faults of an image with an external data file or a committed backing file");
  }
  const sim::WriteLog& log = *run.log;
  const uint32_t sector_bytes = log.sector_bytes();
  const uint64_t cluster = uint64_t{1} << run.workload.image.cluster_bits;
  MisdirectReport report;

  sim::ChunkedImage final_image = *run.initial;
  for (const sim::LogRecord& r : log.records()) Apply(final_image, log, r, r.offset_bytes);
  const std::vector<uint8_t> final_bytes = final_image.Flatten();

  // Owners, from the final image as a user gets it back (a journal replayed).
  std::vector<Zone> zones;
  {
    MemoryDevice recovered(final_bytes, {sector_bytes, true});
    engine::OpenOptions open;
    open.policy = engine::OrderingPolicy::kOrdered;
    if (auto image = engine::Image::Open(recovered, open); image.ok()) (void)(*image)->Close();
    auto owned = ClusterZones(recovered);
    if (!owned.ok()) {
      MemoryDevice raw(final_bytes, {sector_bytes, true});
      QCRASH_ASSIGN_OR_RETURN(zones, ClusterZones(raw));
    } else {
      zones = std::move(*owned);
    }
  }
  // The correct final image's own findings are not the misdirection's.
  std::set<std::pair<int, uint64_t>> baseline;
  {
    MemoryDevice device(final_bytes, {sector_bytes, true});
    QCRASH_ASSIGN_OR_RETURN(engine::CheckReport check,
                            engine::CheckImage(device, {engine::RepairMode::kNone}));
    report.baseline_leaks = check.leaks;
    report.baseline_corruptions = check.corruptions;
    for (const engine::Finding& f : check.findings)
      if (Counts(f)) baseline.insert({static_cast<int>(f.kind), f.host_offset});
  }
  QCRASH_ASSIGN_OR_RETURN(const std::vector<uint8_t> guest,
                          GuestView(final_bytes, sector_bytes, run.options.open.open_backing));

  // Pick the records: per zone, a stride through its writes.
  std::array<std::vector<uint64_t>, kZoneCount> by_zone;
  for (uint64_t i = 0; i < log.size(); ++i) {
    const sim::LogRecord& r = log.record(i);
    if (!IsWrite(r) || r.length_bytes == 0) continue;
    ++report.write_records;
    const uint64_t c = r.offset_bytes / cluster;
    const Zone zone = c < zones.size() ? zones[c] : Zone::kUnowned;
    by_zone[static_cast<size_t>(zone)].push_back(i);
    ++report.zones[static_cast<size_t>(zone)].writes;
  }
  std::vector<std::pair<uint64_t, Zone>> picked;
  for (size_t z = 0; z < kZoneCount; ++z) {
    for (size_t k : Stride(by_zone[z].size(), options.per_zone_max))
      picked.push_back({by_zone[z][k], static_cast<Zone>(z)});
  }
  std::sort(picked.begin(), picked.end());

  sim::ChunkedImage before = *run.initial;  // the image right before record `next`
  uint64_t next = 0;
  for (const auto& [record, zone] : picked) {
    for (; next < record; ++next)
      Apply(before, log, log.record(next), log.record(next).offset_bytes);
    const sim::LogRecord& r = log.record(record);
    MisdirectCase c;
    c.record = record;
    c.zone = zone;
    c.offset_bytes = r.offset_bytes;
    const bool fits = r.offset_bytes + cluster + r.length_bytes <= before.SizeBytes();
    c.landed_bytes =
        fits || r.offset_bytes < cluster ? r.offset_bytes + cluster : r.offset_bytes - cluster;
    sim::ChunkedImage image = before;
    Apply(image, log, r, c.landed_bytes);
    for (uint64_t i = record + 1; i < log.size(); ++i)
      Apply(image, log, log.record(i), log.record(i).offset_bytes);
    const std::vector<uint8_t> bytes = image.Flatten();

    MemoryDevice device(bytes, {sector_bytes, true});
    auto check = engine::CheckImage(device, {engine::RepairMode::kNone});
    if (!check.ok()) {
      c.detected = true;
      c.how = "check fails: " + check.status().ToString();
    } else {
      for (const engine::Finding& f : check->findings) {
        if (!Counts(f) || baseline.count({static_cast<int>(f.kind), f.host_offset})) continue;
        c.detected = true;
        c.how = std::string(engine::FindingKindName(f.kind)) + ": " + f.message;
        break;
      }
      if (!c.detected && (check->leaks > report.baseline_leaks ||
                          check->corruptions > report.baseline_corruptions)) {
        c.detected = true;
        c.how = "more leaks or corruptions than the correct image";
      }
    }
    if (!c.detected) {
      auto view = GuestView(bytes, sector_bytes, run.options.open.open_backing);
      if (!view.ok()) {
        c.detected = true;
        c.how = "open or read fails: " + view.status().ToString();
      } else if (*view != guest) {
        c.wrong_data = true;
        size_t at = 0;
        while (at < guest.size() && at < view->size() && (*view)[at] == guest[at]) ++at;
        c.how = "guest data differs at " + std::to_string(at);
      }
    }
    ZoneCounts& counts = report.zones[static_cast<size_t>(zone)];
    ++counts.misdirected;
    ++report.misdirected;
    if (c.detected) {
      ++counts.detected;
    } else {
      ++counts.silent;
      if (c.wrong_data) ++counts.silent_wrong_data;
    }
    report.cases.push_back(std::move(c));
  }
  return report;
}

}  // namespace qcrash::properties
