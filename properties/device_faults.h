// Device faults: what a misbehaving disk does to an image, measured over a
// run's write log. These are measurements, not gates: every ordering policy
// rests on the device keeping its promises, so violations here are the
// expected finding, not a bug of the engine. Separate from the engine's bug
// switches (`--bug`), which break the engine, not the device.
//
// Lying flush. The device acknowledges a flush but drops the writes of the
// epoch it closed. For a flush record f the state built is: the crash comes
// at the end of the epoch after f (or at the end of the log), every write of
// that later epoch landed, and every sector whose newest write belongs to
// f's epoch holds what it held before that epoch (a sector the later epoch
// wrote again holds that newer write). The guest still saw its flush
// succeed: the oracle works from the run's own operation spans. The state is
// built on a copy of the log without record f, so f's epoch and the next one
// merge into one, and a crash state of that merged epoch's last point puts
// the dropped sectors back to their durable version (version 0).
//
// Misdirected write. One write record lands one cluster further on (one
// cluster back when that would pass the end of the device) and its intended
// place keeps what it held; everything else lands. The final image is checked
// (engine::CheckImage, no repair): a corruption, a leak or a check error the
// correct final image does not have, or an image that no longer opens, is
// "detected"; otherwise it is silent, and the guest view is compared with the
// correct final image's.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/status.h"
#include "properties/recovery.h"
#include "properties/runner.h"
#include "sim/crash_model.h"

namespace qcrash::properties {

// ---- Lying flush ---------------------------------------------------------------

// One lying-flush crash state, ready for RecoverState.
struct LyingFlushCase {
  // The run over the merged log (flush record removed, starting at the
  // lying epoch's durable image) with the spans mapped onto it; the guest
  // oracle is built from it.
  std::shared_ptr<const WorkloadRun> run;
  std::shared_ptr<const sim::CrashPoint> point;  // the merged epoch's last point
  sim::CrashState state;
  uint64_t flush_record = 0;     // the lying flush, in the original log
  uint64_t crash_point = 0;      // the original log's point the crash stands for
  uint64_t dropped_sectors = 0;  // sectors put back to their pre-epoch version
  bool guest_flush = false;      // the flush was issued by a guest flush or close
};

// Builds the state for flush record `flush_record` of `run`'s log. With
// drop_epoch false nothing is dropped (the control: the same merged log and
// point, every sector at its latest version).
Result<LyingFlushCase> BuildLyingFlushCase(const WorkloadRun& run, uint64_t flush_record,
                                           bool drop_epoch = true);

struct LyingFlushOptions {
  size_t flushes_max = 64;  // states built per run; a stride through the flushes when more
  bool drop_epoch = true;   // false: the control
};

struct LyingFlushExample {
  uint64_t flush_record = 0;
  uint64_t crash_point = 0;
  uint64_t dropped_sectors = 0;
  bool guest_flush = false;
  std::string state_id;  // in the merged log's numbering
  std::string invariant;
  std::string message;
};

struct LyingFlushReport {
  uint64_t flushes = 0;       // flush records in the log
  uint64_t empty_epochs = 0;  // flushes whose epoch wrote nothing a flush covers (skipped)
  uint64_t states = 0;        // states built and recovered
  uint64_t violating_states = 0;
  std::map<std::string, uint64_t> invariants;  // invariant -> states that break it
  std::vector<LyingFlushExample> examples;     // the first few violating states
};

Result<LyingFlushReport> MeasureLyingFlush(const WorkloadRun& run,
                                           const LyingFlushOptions& options = {});

// ---- Misdirected write -----------------------------------------------------------

enum class Zone : uint8_t {
  kHeader,         // cluster 0
  kL1,             // the active L1 table
  kL2,             // an L2 table the L1 table names
  kRefcountTable,  // the refcount table
  kRefcountBlock,  // a refcount block the refcount table names
  kJournal,        // the metadata journal's area
  kGuestData,      // a data cluster an L2 entry names
  kUnowned,        // nothing in the final image owns it (freed, junk, past the tables)
};
inline constexpr size_t kZoneCount = 8;
const char* ZoneName(Zone zone);
// The owner of every host cluster of the image on `device` (the first owner
// found keeps a cluster: metadata is marked before data).
Result<std::vector<Zone>> ClusterZones(BlockDevice& device);

struct ZoneCounts {
  uint64_t writes = 0;       // write records of the log whose first cluster is in the zone
  uint64_t misdirected = 0;  // of those, misdirected (a stride when there are many)
  uint64_t detected = 0;
  uint64_t silent = 0;
  uint64_t silent_wrong_data = 0;  // silent, and the guest view differs
};

struct MisdirectCase {
  uint64_t record = 0;
  Zone zone = Zone::kUnowned;
  uint64_t offset_bytes = 0;  // where the write should have gone
  uint64_t landed_bytes = 0;  // where it went
  bool detected = false;
  bool wrong_data = false;  // silent only: the guest view differs
  std::string how;          // the first new finding, or why the image failed
};

struct MisdirectOptions {
  size_t per_zone_max = 24;  // records misdirected per zone; a stride when more
};

struct MisdirectReport {
  std::array<ZoneCounts, kZoneCount> zones{};
  uint64_t write_records = 0;
  uint64_t misdirected = 0;     // the sum of zones[].misdirected
  uint64_t baseline_leaks = 0;  // the correct final image's check
  uint64_t baseline_corruptions = 0;
  std::vector<MisdirectCase> cases;  // every misdirected record, in log order
};

Result<MisdirectReport> MeasureMisdirect(const WorkloadRun& run,
                                         const MisdirectOptions& options = {});

}  // namespace qcrash::properties
