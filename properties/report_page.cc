// ReportPageJson, ClassifyLogRecords, DeviationsJson.
#include "properties/report_page.h"

#include <algorithm>
#include <array>
#include <map>
#include <span>

#include "engine/header.h"
#include "engine/snapshot_table.h"
#include "properties/device_faults.h"
#include "sim/chunked_image.h"
#include "sim/crash_model.h"

namespace qcrash::properties {

using nlohmann::json;

const char* PageZoneName(PageZone zone) {
  switch (zone) {
    case PageZone::kHeader:
      return "header";
    case PageZone::kL1:
      return "L1 table";
    case PageZone::kL2:
      return "L2 table";
    case PageZone::kRefcountTable:
      return "refcount table";
    case PageZone::kRefcountBlock:
      return "refcount block";
    case PageZone::kData:
      return "data";
    case PageZone::kJournal:
      return "journal";
    case PageZone::kSnapshot:
      return "snapshot";
    case PageZone::kBitmap:
      return "bitmap";
    case PageZone::kUnowned:
      return "unowned";
    case PageZone::kSecondDevice:
      return "data file";
  }
  return "?";
}

namespace {

PageZone FromZone(Zone zone) {
  switch (zone) {
    case Zone::kHeader:
      return PageZone::kHeader;
    case Zone::kL1:
      return PageZone::kL1;
    case Zone::kL2:
      return PageZone::kL2;
    case Zone::kRefcountTable:
      return PageZone::kRefcountTable;
    case Zone::kRefcountBlock:
      return PageZone::kRefcountBlock;
    case Zone::kJournal:
      return PageZone::kJournal;
    case Zone::kGuestData:
      return PageZone::kData;
    case Zone::kUnowned:
      return PageZone::kUnowned;
  }
  return PageZone::kUnowned;
}

// A read-only device over a ChunkedImage: the zone walk reads the metadata
// it needs without flattening the image (the data can be hundreds of MiB,
// and an image is walked once per epoch that needs it).
class ImageReader final : public BlockDevice {
 public:
  ImageReader(const sim::ChunkedImage& image, uint32_t sector_bytes)
      : image_(image), sector_bytes_(sector_bytes) {}
  Status Read(uint64_t offset_bytes, std::span<uint8_t> out) override {
    if (offset_bytes > image_.SizeBytes() || out.size() > image_.SizeBytes() - offset_bytes)
      return Status::IoError("read past the end of the image");
    image_.Read(offset_bytes, out);
    return Status::Ok();
  }
  Status Write(uint64_t, std::span<const uint8_t>) override { return ReadOnly(); }
  Status WriteFua(uint64_t, std::span<const uint8_t>) override { return ReadOnly(); }
  Status Flush() override { return Status::Ok(); }
  uint64_t SizeBytes() const override { return image_.SizeBytes(); }
  Status Resize(uint64_t, ResizeMode) override { return ReadOnly(); }
  DeviceGeometry Geometry() const override { return {sector_bytes_, true}; }

 private:
  static Status ReadOnly() { return Status::ReadOnly("the zone walk only reads"); }
  const sim::ChunkedImage& image_;
  uint32_t sector_bytes_;
};

// The big-endian entry at `offset` (0 past the end).
uint64_t Entry(BlockDevice& device, uint64_t offset) {
  std::array<uint8_t, 8> b{};
  if (!device.Read(offset, b).ok()) return 0;
  uint64_t v = 0;
  for (uint8_t byte : b) v = v << 8 | byte;
  return v;
}

// The owner of every cluster of `image`: ClusterZones, then the snapshot and
// bitmap structures in the clusters it left unowned. Snapshot L2 tables the
// active L1 does not name count as L2 tables; their data is not walked (a
// page colour, not a check). An image that does not parse: all unowned.
std::vector<PageZone> ImageZones(const sim::ChunkedImage& image, uint32_t sector_bytes) {
  ImageReader device(image, sector_bytes);
  auto zones = ClusterZones(device);
  auto header = engine::ReadHeader(device);
  if (!zones.ok() || !header.ok()) return {};
  std::vector<PageZone> out;
  out.reserve(zones->size());
  for (Zone z : *zones) out.push_back(FromZone(z));
  const uint32_t bits = header->cluster_bits;
  const uint64_t cluster = header->cluster_bytes();
  auto mark = [&](uint64_t offset, uint64_t length, PageZone zone) {
    if (length == 0 || offset == 0) return;
    for (uint64_t c = offset >> bits; c <= (offset + length - 1) >> bits && c < out.size(); ++c)
      if (out[c] == PageZone::kUnowned) out[c] = zone;
  };
  constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // L1 and bitmap table entries
  if (auto snapshots = engine::ReadSnapshotTable(device, *header); snapshots.ok()) {
    mark(header->snapshots_offset, engine::EncodeSnapshotTable(*snapshots).size(),
         PageZone::kSnapshot);
    for (const engine::SnapshotEntry& s : *snapshots) {
      mark(s.l1_table_offset, uint64_t{s.l1_size} * 8, PageZone::kSnapshot);
      for (uint64_t i = 0; i < s.l1_size; ++i)
        mark(Entry(device, s.l1_table_offset + i * 8) & kOffsetMask, cluster, PageZone::kL2);
    }
  }
  if (auto bitmaps = engine::ReadBitmapDirectory(device, *header);
      bitmaps.ok() && header->bitmaps) {
    mark(header->bitmaps->directory_offset, header->bitmaps->directory_size, PageZone::kBitmap);
    for (const engine::BitmapEntry& b : *bitmaps) {
      mark(b.table_offset, uint64_t{b.table_size} * 8, PageZone::kBitmap);
      for (uint64_t i = 0; i < b.table_size; ++i)
        mark(Entry(device, b.table_offset + i * 8) & kOffsetMask, cluster, PageZone::kBitmap);
    }
  }
  return out;
}

bool IsWriteRecord(const sim::LogRecord& r) {
  return r.kind == sim::RecordKind::kWrite || r.kind == sim::RecordKind::kWriteFua;
}

void ApplyRecord(sim::ChunkedImage& image, const sim::WriteLog& log, const sim::LogRecord& r) {
  if (sim::RecordDevice(r) != 0) return;
  if (IsWriteRecord(r)) {
    image.Write(r.offset_bytes, log.DataOf(r));
  } else if (r.kind == sim::RecordKind::kResize) {
    image.Resize(r.offset_bytes);
  }
}

// Verdicts are ordered from best to worst: the worst is the last counted.
int WorstVerdict(const PointTally& counts) {
  for (int i = kVerdictCount - 1; i >= 0; --i)
    if (counts[i] != 0) return i;
  return -1;  // no state checked at the point
}

json WriteLogJson(const WorkloadRun& run, const std::vector<PageZone>& zones,
                  const PageLimits& limits) {
  const sim::WriteLog& log = *run.log;
  json zone_names = json::array();
  for (size_t z = 0; z < kPageZoneCount; ++z) zone_names.push_back(PageZoneName(PageZone(z)));
  // Per zone: write records, FUA records, bytes.
  std::vector<std::array<uint64_t, 3>> totals(kPageZoneCount);
  json records = json::array();
  // Bins of the timeline: [first, end, flushes, fua, resizes, writes per zone...].
  const size_t bin_width = std::max<size_t>(1, (log.size() + limits.bins - 1) / limits.bins);
  json bins = json::array();
  json bin;
  uint64_t flushes = 0;
  for (size_t i = 0; i < log.size(); ++i) {
    const sim::LogRecord& r = log.record(i);
    if (i % bin_width == 0) {
      if (!bin.is_null()) bins.push_back(std::move(bin));
      bin = json::array({i, std::min(i + bin_width, log.size()), 0, 0, 0});
      for (size_t z = 0; z < kPageZoneCount; ++z) bin.push_back(0);
    }
    const size_t z = static_cast<size_t>(zones[i]);
    if (IsWriteRecord(r)) {
      ++totals[z][0];
      totals[z][1] += r.kind == sim::RecordKind::kWriteFua;
      totals[z][2] += r.length_bytes;
      bin[5 + z] = bin[5 + z].get<uint64_t>() + 1;
      if (r.kind == sim::RecordKind::kWriteFua) bin[3] = bin[3].get<uint64_t>() + 1;
    } else if (r.kind == sim::RecordKind::kFlush) {
      ++flushes;
      bin[2] = bin[2].get<uint64_t>() + 1;
    } else {
      bin[4] = bin[4].get<uint64_t>() + 1;
    }
    if (i < limits.records_listed) {
      // [kind, device, offset, length, zone]; a resize's offset is the new size.
      records.push_back(json::array({sim::RecordKindName(r.kind), sim::RecordDevice(r),
                                     sim::RecordDeviceOffset(r), r.length_bytes,
                                     IsWriteRecord(r) ? static_cast<int>(z) : -1}));
    }
  }
  if (!bin.is_null()) bins.push_back(std::move(bin));
  json zone_totals = json::array();
  for (size_t z = 0; z < kPageZoneCount; ++z) {
    zone_totals.push_back({{"zone", PageZoneName(PageZone(z))},
                           {"writes", totals[z][0]},
                           {"fua_writes", totals[z][1]},
                           {"bytes", totals[z][2]}});
  }
  return {{"record_count", log.size()},
          {"sector_bytes", log.sector_bytes()},
          {"flushes", flushes},
          {"zones", zone_names},
          {"zone_totals", zone_totals},
          {"bin_width", bin_width},
          {"bins", bins},
          {"records", records},
          {"records_truncated", log.size() > limits.records_listed}};
}

json PointsJson(const ExploreReport& report, const PageLimits& limits) {
  return PointsJsonOf(report.crash_points, report.point_verdicts, limits);
}

}  // namespace

json PointsJsonOf(uint64_t count, const std::vector<PointTally>& pv, const PageLimits& limits) {
  auto counts_at = [&](uint64_t p) { return p < pv.size() ? pv[p] : PointTally{}; };
  // Runs of points with the same worst verdict and violating or not;
  // coarser fixed-width ranges when there are too many runs (a range's
  // worst is its points' worst, its counts their sums).
  struct Range {
    uint64_t first, end;
    int worst;
    PointTally counts;
  };
  auto build = [&](uint64_t width) {
    std::vector<Range> ranges;
    for (uint64_t p = 0; p < count; p += width) {
      Range r{p, std::min(p + width, count), -1, {}};
      for (uint64_t q = r.first; q < r.end; ++q) {
        const PointTally c = counts_at(q);
        for (size_t i = 0; i < c.size(); ++i) r.counts[i] += c[i];
      }
      r.worst = WorstVerdict(r.counts);
      if (width == 1 && !ranges.empty() && ranges.back().worst == r.worst &&
          (ranges.back().counts[kPointViolating] != 0) == (r.counts[kPointViolating] != 0)) {
        ranges.back().end = r.end;
        for (size_t i = 0; i < r.counts.size(); ++i) ranges.back().counts[i] += r.counts[i];
      } else {
        ranges.push_back(r);
      }
    }
    return ranges;
  };
  std::vector<Range> ranges = build(1);
  uint64_t width = 1;
  if (ranges.size() > limits.point_ranges) {
    width = (count + limits.point_ranges - 1) / limits.point_ranges;
    ranges = build(width);
  }
  json rows = json::array();
  uint64_t by_worst[kVerdictCount + 1] = {};  // points per worst verdict; [0]: none checked
  uint64_t violating_points = 0;
  for (uint64_t p = 0; p < count; ++p) {
    const PointTally c = counts_at(p);
    ++by_worst[WorstVerdict(c) + 1];
    violating_points += c[kPointViolating] != 0;
  }
  for (const Range& r : ranges) {
    json row = json::array({r.first, r.end, r.worst});
    for (uint64_t c : r.counts) row.push_back(c);
    rows.push_back(std::move(row));
  }
  json worst = json::object();
  worst["unchecked"] = by_worst[0];
  for (int i = 0; i < kVerdictCount; ++i) worst[VerdictName(Verdict(i))] = by_worst[i + 1];
  json verdicts = json::array();
  for (int i = 0; i < kVerdictCount; ++i) verdicts.push_back(VerdictName(Verdict(i)));
  json out = {{"count", count},
              {"verdicts", verdicts},
              {"by_worst_verdict", worst},
              {"violating_points", violating_points},
              {"range_width", width},
              {"ranges", rows}};
  // Each checked point's own tally, [point, counts...], so that `report
  // merge` can add shards up exactly (ranges cannot be split back); left out
  // past kPointTalliesMax points.
  if (count <= kPointTalliesMax) {
    json tallies = json::array();
    for (uint64_t p = 0; p < count && p < pv.size(); ++p) {
      if (WorstVerdict(pv[p]) < 0) continue;
      json row = json::array({p});
      for (uint64_t c : pv[p]) row.push_back(c);
      tallies.push_back(std::move(row));
    }
    out["tallies"] = std::move(tallies);
  }
  return out;
}

std::vector<PageZone> ClassifyLogRecords(const WorkloadRun& run, const PageLimits& limits) {
  const sim::WriteLog& log = *run.log;
  std::vector<PageZone> out(log.size(), PageZone::kUnowned);
  sim::ChunkedImage final_image = run.initial ? *run.initial : sim::ChunkedImage();
  for (const sim::LogRecord& r : log.records()) ApplyRecord(final_image, log, r);
  const std::vector<PageZone> final_zones = ImageZones(final_image, log.sector_bytes());
  // The cluster size is the image's own: an imported log (`explore --log`)
  // has no workload options to take it from.
  uint32_t bits = run.workload.image.cluster_bits;
  {
    ImageReader device(final_image, log.sector_bytes());
    if (auto header = engine::ReadHeader(device); header.ok()) bits = header->cluster_bits;
  }
  // Writes the final image does not own wait for the first epoch end whose
  // image owns their cluster: a new snapshot table or L1 copy is reachable
  // only once a later epoch's header names it. A write waits until its
  // cluster is written again (the later write is the one the owner names).
  sim::ChunkedImage image = run.initial ? *run.initial : sim::ChunkedImage();
  std::map<uint64_t, size_t> last_write;  // cluster -> latest write record applied
  std::vector<size_t> waiting;
  size_t walked = 0;
  for (size_t i = 0; i < log.size(); ++i) {
    const sim::LogRecord& r = log.record(i);
    ApplyRecord(image, log, r);
    if (IsWriteRecord(r)) {
      if (sim::RecordDevice(r) != 0) {
        out[i] = PageZone::kSecondDevice;
      } else {
        const uint64_t c = r.offset_bytes >> bits;
        last_write[c] = i;
        if (c < final_zones.size() && final_zones[c] != PageZone::kUnowned) {
          out[i] = final_zones[c];
        } else {
          waiting.push_back(i);
        }
      }
    }
    // An epoch of the image ends at its flush or resize, and at the log's end.
    const bool epoch_end = (sim::RecordDevice(r) == 0 && !IsWriteRecord(r)) || i + 1 == log.size();
    if (!epoch_end || waiting.empty() || walked >= limits.epoch_images) continue;
    const std::vector<PageZone> zones = ImageZones(image, log.sector_bytes());
    ++walked;
    std::vector<size_t> still;
    for (size_t w : waiting) {
      const uint64_t c = log.record(w).offset_bytes >> bits;
      if (c < zones.size() && zones[c] != PageZone::kUnowned) {
        out[w] = zones[c];
      } else if (last_write[c] == w) {
        still.push_back(w);
      }
    }
    waiting = std::move(still);
  }
  return out;
}

json ReportPageJson(const WorkloadRun& run, const ExploreReport& report, const PageLimits& limits) {
  const std::vector<PageZone> zones = ClassifyLogRecords(run, limits);
  json ops = json::array();
  for (size_t i = 0; i < run.spans.size(); ++i) {
    json op = {{"index", i}, {"start", run.spans[i].start}, {"end", run.spans[i].end}};
    if (i < run.workload.ops.size()) {
      const GuestOp& g = run.workload.ops[i];
      op["kind"] = OpKindName(g.kind);
      op["offset"] = g.offset_bytes;
      op["length"] = g.length_bytes;
    } else if (i < run.span_labels.size()) {
      op["kind"] = run.span_labels[i];
    }
    ops.push_back(std::move(op));
  }
  return {{"write_log", WriteLogJson(run, zones, limits)},
          {"ops", ops},
          {"points", PointsJson(report, limits)}};
}

json DeviationsJson(const WorkloadRun& run, const std::string& state_id) {
  json out = json::array();
  auto state = sim::ParseCrashStateId(state_id);
  if (!state.ok() || state->point >= run.timeline->PointCount()) return out;
  const auto point = run.timeline->Point(state->point);
  const uint32_t sector_bytes = run.timeline->sector_bytes();
  const uint64_t second_base_sector = sim::kSecondDeviceBaseBytes / sector_bytes;
  // A sector's zone is that of its latest pending write.
  const std::vector<PageZone> zones = ClassifyLogRecords(run);
  for (const sim::SectorChoice& d : state->deviations) {
    const bool second = d.sector >= second_base_sector;
    const uint64_t offset = (d.sector - (second ? second_base_sector : 0)) * sector_bytes;
    const int64_t pending = point->FindPending(d.sector);
    uint32_t versions = 0;
    std::string zone = second ? PageZoneName(PageZone::kSecondDevice) : "unowned";
    if (pending >= 0) {
      const sim::PendingSector& ps = point->pending[pending];
      versions = ps.count;
      // The zone of the latest write to this sector.
      const uint64_t record = point->version_record[ps.first + ps.count];
      if (record < zones.size()) zone = PageZoneName(zones[record]);
    }
    std::string choice;
    switch (d.kind) {
      case sim::ChoiceKind::kVersion:
        choice = d.version == 0 ? "its durable content (none of " + std::to_string(versions) +
                                      " pending writes)"
                                : "pending version " + std::to_string(d.version) + " of " +
                                      std::to_string(versions);
        break;
      case sim::ChoiceKind::kMix:
        choice = "versions " + std::to_string(d.version) + "/" + std::to_string(d.second_version) +
                 " cut at byte " + std::to_string(d.cut_bytes);
        break;
      case sim::ChoiceKind::kGarbage:
        choice = "garbage";
        break;
    }
    out.push_back({{"sector", d.sector},
                   {"offset", offset},
                   {"device", second ? "data file" : "image"},
                   {"zone", zone},
                   {"choice", choice},
                   {"pending", versions}});
  }
  return out;
}

}  // namespace qcrash::properties
