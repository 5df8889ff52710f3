// The data `qcrash report` draws its page from (docs/report.md), added to the
// explore report under --report: the write log with the metadata zone each
// write hit, the guest operations' spans in it, the crash points by worst
// verdict, and each minimized violation's deviating sectors. Every list is
// bounded (ranges and bins past a size), so a 100k-state run stays small.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "properties/explorer.h"
#include "properties/json.h"
#include "properties/runner.h"

namespace qcrash::properties {

// What a write of the log hit. The device_faults zones, plus the snapshot
// and bitmap structures and the second device (an external data file, or
// the backing file a commit writes).
enum class PageZone : uint8_t {
  kHeader,
  kL1,
  kL2,
  kRefcountTable,
  kRefcountBlock,
  kData,
  kJournal,
  kSnapshot,  // the snapshot table and the snapshots' L1 tables
  kBitmap,    // the bitmap directory, bitmap tables and bitmap data
  kUnowned,
  kSecondDevice,
};
inline constexpr size_t kPageZoneCount = 11;
const char* PageZoneName(PageZone zone);

struct PageLimits {
  size_t records_listed = 2000;  // records listed one by one (the rest only in bins)
  size_t bins = 600;             // write-log bins of the timeline
  size_t point_ranges = 1200;    // crash-point ranges
  size_t epoch_images = 4096;    // epoch images walked to classify writes the final image disowns
};

// The zone of each record of run's log (flushes and resizes: kUnowned).
// A write is classified against the final image; one whose cluster the
// final image does not own (a table moved away, a cluster freed later) is
// classified against the first image at an epoch end that owns it, before
// the cluster's next write. At most limits.epoch_images such images are
// walked (they are walked only while a write waits); later ones stay unowned.
std::vector<PageZone> ClassifyLogRecords(const WorkloadRun& run, const PageLimits& limits = {});

// {"write_log": {...}, "ops": [...], "points": {...}}: see docs/report.md.
nlohmann::json ReportPageJson(const WorkloadRun& run, const ExploreReport& report,
                              const PageLimits& limits = {});

// How state `state_id` of run differs from the latest state at its point:
// [{"sector","offset","device","zone","choice","pending"}], a row per
// deviating sector ("choice": "version K of N", "mix ...", "garbage").
// The report's "points" object of `count` crash points from their tallies
// (ExploreReport::point_verdicts); `report merge` rebuilds it from the
// shards' summed "tallies".
inline constexpr uint64_t kPointTalliesMax = 100000;
nlohmann::json PointsJsonOf(uint64_t count, const std::vector<PointTally>& tallies,
                            const PageLimits& limits = {});
nlohmann::json DeviationsJson(const WorkloadRun& run, const std::string& state_id);

}  // namespace qcrash::properties
