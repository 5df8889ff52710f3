// The crash explorer: runs a workload, enumerates its crash states, recovers
// each one and tallies verdicts and invariant violations; minimizes each
// violation to a small workload and crash state (delta debugging).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "properties/recovery.h"
#include "properties/runner.h"
#include "properties/workload.h"
#include "sim/enumerators.h"

namespace qcrash::properties {

struct ExploreConfig {
  Workload workload;
  RunOptions run;
  sim::EnumeratorSpec enumerator;
  RecoveryOptions recovery;
  double budget_seconds = 0;  // 0: no limit
  uint64_t states_max = 0;    // 0: no limit
  uint64_t states_min = 0;    // the budget stops the run only after this many states
  bool stop_at_first_violation = false;
  bool minimize = true;
  // Violations recorded (and minimized) in full: the first state of each
  // distinct invariant x operation class, up to this many classes.
  size_t violations_kept = 8;
  // With states_max: when the enumeration holds more states, check a stride
  // through all of them (shard stride_offset % N of N) instead of the first
  // states_max, so that late crash points are reached too.
  bool stride_to_cap = false;
  uint64_t stride_offset = 0;
  // The workload already run with `run` (RunWorkload), shared by several
  // explorations of it with different enumerators; unset: Explore runs it.
  std::shared_ptr<const WorkloadRun> prepared;
  // The eio pass (properties/eio.h): instead of crash states, each device
  // request of the run fails in turn (`--enumerator eio`); states_max and
  // stride_to_cap apply to the cases as to states.
  bool io_errors = false;
  // One recovery per metadata state of a point (properties/dedup.h); off:
  // every state recovers in full (the reference the dedup property checks).
  bool dedup = true;
  // Tally the states of each crash point (ExploreReport::point_verdicts):
  // the report page's data, off where nothing reads it (a suite keeps
  // hundreds of reports).
  bool tally_points = false;
};

// A crash point's states by verdict, then its violating states.
using PointTally = std::array<uint64_t, kVerdictCount + 1>;
inline constexpr int kPointViolating = kVerdictCount;

// One violation, as found and as minimized.
struct FoundViolation {
  std::string invariant;
  std::string message;
  std::string state_id;      // in the original workload's timeline
  uint64_t state_index = 0;  // the enumerator's unsharded index
  std::vector<std::string> raw_findings;
  // The guest operation in flight at the crash ("write", "flush", ...; "end"
  // after the last one): with the invariant, the violation's class.
  std::string op_class;
  Workload minimized_workload;                      // equals the workload when not minimized
  std::vector<std::string> minimized_raw_findings;  // the raw check of the minimized state
  std::string minimized_state_id;
  std::string minimized_message;
};

struct ExploreReport {
  std::string workload_name;
  std::string policy;
  std::string enumerator;
  uint64_t crash_points = 0;
  uint64_t states_total = 0;    // the enumerator's closed-form count (this shard)
  uint64_t states_checked = 0;  // states given a verdict ("states_covered" in the report)
  uint64_t recoveries_run = 0;  // full recoveries those took (one per metadata group)
  uint64_t skipped_points = 0;
  double elapsed_seconds = 0;
  bool budget_exhausted = false;
  std::array<uint64_t, kVerdictCount> verdicts{};
  std::map<std::string, uint64_t> violations_by_invariant;  // states violating each invariant
  uint64_t violating_states = 0;
  std::vector<FoundViolation> violations;
  // Invariant x operation classes seen past the violations_kept cap (not
  // recorded: raise --violations to keep them).
  uint64_t violation_classes_dropped = 0;
  engine::EngineStats stats;
  uint64_t allocating_writes = 0;
  std::string workload_error;  // a workload operation failed (the run stopped there)
  // States checked at each crash point by verdict, and (the last entry)
  // those that violate an invariant, indexed by point (the report page
  // colours each point by its worst verdict and marks violating ones; a
  // repaired state may violate I1). Bounded by the log: a point per record
  // and one more, a few hundred thousand at most.
  std::vector<PointTally> point_verdicts;

  double states_per_second() const {
    return elapsed_seconds > 0 ? states_checked / elapsed_seconds : 0;
  }
  double recoveries_per_second() const {
    return elapsed_seconds > 0 ? recoveries_run / elapsed_seconds : 0;
  }
  double flushes_per_guest_write() const;
  double flushes_per_allocation() const;
  // Adds another shard's counts (the report of --jobs N is the sum of its workers').
  void Merge(const ExploreReport& other);
};

using ProgressFn = std::function<void(const ExploreReport&)>;

// Counts one state checked at crash `point` (ExploreReport::point_verdicts).
void TallyPoint(ExploreReport& report, uint64_t point, Verdict verdict, bool violating);

Result<ExploreReport> Explore(const ExploreConfig& config, const ProgressFn& progress = nullptr);

// spec, ready for run's timeline: data:<limit> gets run's guest-data records
// (writes ClassifyLogRecords puts in the data zone or on the second device,
// a data file or a committed backing file). Other kinds are returned as given.
sim::EnumeratorSpec ResolveEnumerator(const sim::EnumeratorSpec& spec, const WorkloadRun& run);

// Delta debugging: the smallest workload (by operations) and crash state
// that still violate `invariant`. Bounded by `states_per_try` per candidate.
void Minimize(const ExploreConfig& config, FoundViolation& violation,
              uint64_t states_per_try = 5000);

// Re-runs `workload` and recovers the state with id `state_id`.
Result<StateResult> ReplayState(const Workload& workload, const RunOptions& run,
                                const RecoveryOptions& recovery, const std::string& state_id);

}  // namespace qcrash::properties
