// Explore, Minimize, ReplayState.
#include "properties/explorer.h"

#include <chrono>
#include <set>

#include "properties/dedup.h"
#include "properties/eio.h"
#include "properties/report_page.h"
#include "sim/crash_view.h"

namespace qcrash::properties {

double ExploreReport::flushes_per_guest_write() const {
  return stats.guest_writes ? double(stats.device_flushes) / double(stats.guest_writes) : 0;
}

double ExploreReport::flushes_per_allocation() const {
  return allocating_writes ? double(stats.device_flushes) / double(allocating_writes) : 0;
}

void ExploreReport::Merge(const ExploreReport& other) {
  states_total += other.states_total;
  states_checked += other.states_checked;
  recoveries_run += other.recoveries_run;
  skipped_points += other.skipped_points;
  elapsed_seconds = std::max(elapsed_seconds, other.elapsed_seconds);
  budget_exhausted |= other.budget_exhausted;
  for (int i = 0; i < kVerdictCount; ++i) verdicts[i] += other.verdicts[i];
  for (const auto& [name, count] : other.violations_by_invariant)
    violations_by_invariant[name] += count;
  violating_states += other.violating_states;
  violation_classes_dropped += other.violation_classes_dropped;
  violations.insert(violations.end(), other.violations.begin(), other.violations.end());
  std::sort(violations.begin(), violations.end(),
            [](const FoundViolation& a, const FoundViolation& b) {
              return a.state_index < b.state_index;
            });
  if (point_verdicts.size() < other.point_verdicts.size())
    point_verdicts.resize(other.point_verdicts.size());
  for (size_t p = 0; p < other.point_verdicts.size(); ++p) {
    for (size_t i = 0; i < point_verdicts[p].size(); ++i)
      point_verdicts[p][i] += other.point_verdicts[p][i];
  }
}

void TallyPoint(ExploreReport& report, uint64_t point, Verdict verdict, bool violating) {
  // A point past the log is none (the vector stays bounded by the log).
  if (point >= report.crash_points) return;
  if (point >= report.point_verdicts.size()) report.point_verdicts.resize(point + 1);
  ++report.point_verdicts[point][static_cast<int>(verdict)];
  report.point_verdicts[point][kPointViolating] += violating;
}

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// The guest operation in flight at crash point `point`: the first whose
// span ends after it ("end" past the last one).
std::string OpClassAt(const WorkloadRun& run, uint64_t point) {
  if (!run.span_labels.empty()) {  // an imported log: its marks
    for (size_t i = 0; i < run.spans.size() && i < run.span_labels.size(); ++i) {
      if (point < run.spans[i].end) return run.span_labels[i];
    }
    return "end";
  }
  for (size_t i = 0; i < run.spans.size() && i < run.workload.ops.size(); ++i) {
    if (point < run.spans[i].end) return OpKindName(run.workload.ops[i].kind);
  }
  return "end";
}

// The first state (at most `states_max`) of `workload` violating `invariant`.
bool FindViolation(const Workload& workload, const ExploreConfig& config,
                   const std::string& invariant, uint64_t states_max, FoundViolation& found) {
  auto run = RunWorkload(workload, config.run);
  if (!run.ok()) return false;
  const GuestOracle oracle(*run);
  sim::EnumeratorSpec spec = ResolveEnumerator(config.enumerator, *run);
  spec.shard_index = 0;
  spec.shard_count = 1;
  auto enumerator = sim::CrashEnumerator::Create(*run->timeline, spec);
  sim::CrashState state;
  for (uint64_t n = 0; n < states_max && enumerator->Next(&state); ++n) {
    StateResult result = RecoverState(*run, oracle, enumerator->point(), state, config.recovery);
    for (const Violation& v : result.violations) {
      if (v.invariant != invariant) continue;
      found.minimized_state_id = sim::FormatCrashStateId(state);
      found.minimized_message = v.message;
      return true;
    }
  }
  return false;
}

// Drops deviations from the state's choice vector one at a time while the
// violation persists.
void MinimizeState(const Workload& workload, const ExploreConfig& config, FoundViolation& v) {
  auto run = RunWorkload(workload, config.run);
  auto state = sim::ParseCrashStateId(v.minimized_state_id);
  if (!run.ok() || !state.ok()) return;
  const GuestOracle oracle(*run);
  auto point = run->timeline->Point(state->point);
  for (size_t i = 0; i < state->deviations.size();) {
    sim::CrashState fewer = *state;
    fewer.deviations.erase(fewer.deviations.begin() + static_cast<ptrdiff_t>(i));
    StateResult result = RecoverState(*run, oracle, point, fewer, config.recovery);
    bool still = false;
    for (const Violation& r : result.violations) still |= r.invariant == v.invariant;
    if (still) {
      *state = std::move(fewer);
    } else {
      ++i;
    }
  }
  v.minimized_state_id = sim::FormatCrashStateId(*state);
}

// Counts a violating state and records one violation per invariant x
// operation class (the first state of each), so that one bug's thousand
// states do not hide a second bug.
void Tally(const ExploreConfig& config, const StateResult& result, const std::string& state_id,
           uint64_t state_index, const std::string& op_class, std::set<std::string>& classes,
           ExploreReport& report) {
  ++report.violating_states;
  std::set<std::string> seen;
  for (const Violation& v : result.violations) {
    if (seen.insert(v.invariant).second) ++report.violations_by_invariant[v.invariant];
  }
  for (const Violation& v : result.violations) {
    if (!classes.insert(v.invariant + "/" + op_class).second) continue;
    if (report.violations.size() >= config.violations_kept) {
      ++report.violation_classes_dropped;
      continue;
    }
    FoundViolation found;
    found.invariant = v.invariant;
    found.message = v.message;
    found.op_class = op_class;
    found.state_id = state_id;
    found.state_index = state_index;
    found.raw_findings = result.raw_findings;
    found.minimized_workload = config.workload;
    found.minimized_state_id = found.state_id;
    found.minimized_message = found.message;
    found.minimized_raw_findings = found.raw_findings;
    report.violations.push_back(std::move(found));
  }
}

// The eio pass: each device request of the clean run fails in turn.
Status ExploreIoErrors(const ExploreConfig& config, const WorkloadRun& run, Clock::time_point start,
                       ExploreReport& report) {
  std::vector<IoErrorCase> cases = IoErrorCases(run);
  uint64_t stride = 1, offset = 0;
  if (config.enumerator.shard_count > 1) {
    stride = config.enumerator.shard_count;
    offset = config.enumerator.shard_index;
    report.enumerator = "eio@" + std::to_string(offset) + "/" + std::to_string(stride);
  } else if (config.stride_to_cap && config.states_max > 0 && cases.size() > config.states_max) {
    stride = (cases.size() + config.states_max - 1) / config.states_max;
    offset = config.stride_offset % stride;
    report.enumerator = "eio@" + std::to_string(offset) + "/" + std::to_string(stride);
  }
  report.states_total = cases.size() > offset ? (cases.size() - offset + stride - 1) / stride : 0;
  std::set<std::string> classes;
  for (uint64_t i = offset; i < cases.size(); i += stride) {
    if ((config.states_max && report.states_checked >= config.states_max) ||
        (config.budget_seconds > 0 && Seconds(start) > config.budget_seconds &&
         report.states_checked >= config.states_min)) {
      report.budget_exhausted = true;
      break;
    }
    QCRASH_ASSIGN_OR_RETURN(IoErrorOutcome outcome,
                            CheckIoErrorCase(config.workload, config.run, cases[i]));
    ++report.states_checked;
    ++report.verdicts[static_cast<int>(outcome.result.verdict)];
    if (outcome.result.violations.empty()) continue;
    Tally(config, outcome.result, FormatIoErrorCase(cases[i]), i, outcome.op_class, classes,
          report);
    if (config.stop_at_first_violation) break;
  }
  return Status::Ok();
}

}  // namespace

void Minimize(const ExploreConfig& config, FoundViolation& violation, uint64_t states_per_try) {
  if (IsIoErrorStateId(violation.state_id)) return;  // the case names a request of this workload
  Workload best = violation.minimized_workload;
  // ddmin over operations: try removing chunks, halving the chunk size.
  for (size_t chunk = std::max<size_t>(best.ops.size() / 2, 1); chunk >= 1;) {
    bool removed = false;
    for (size_t start = 0; start < best.ops.size();) {
      Workload candidate = best;
      const size_t end = std::min(start + chunk, candidate.ops.size());
      candidate.ops.erase(candidate.ops.begin() + static_cast<ptrdiff_t>(start),
                          candidate.ops.begin() + static_cast<ptrdiff_t>(end));
      FoundViolation found;
      if (!candidate.ops.empty() && ValidateWorkload(candidate).ok() &&
          FindViolation(candidate, config, violation.invariant, states_per_try, found)) {
        best = std::move(candidate);
        violation.minimized_state_id = found.minimized_state_id;
        violation.minimized_message = found.minimized_message;
        removed = true;
      } else {
        start += chunk;
      }
    }
    if (!removed) {
      if (chunk == 1) break;
      chunk /= 2;
    }
  }
  violation.minimized_workload = best;
  MinimizeState(best, config, violation);
  // The reproducer's findings describe the state it replays.
  auto replayed = ReplayState(best, config.run, config.recovery, violation.minimized_state_id);
  violation.minimized_raw_findings =
      replayed.ok() ? replayed->raw_findings : violation.raw_findings;
}

sim::EnumeratorSpec ResolveEnumerator(const sim::EnumeratorSpec& spec, const WorkloadRun& run) {
  if (spec.kind != sim::EnumeratorKind::kData || spec.data_records) return spec;
  sim::EnumeratorSpec out = spec;
  // A few epoch images classify the writes the final image disowns (a
  // cluster freed later); past them such writes count as metadata, which
  // only narrows the states (the deduplicator decides what recovery read).
  const std::vector<PageZone> zones = ClassifyLogRecords(run, {.epoch_images = 16});
  auto records = std::make_shared<std::vector<bool>>(zones.size());
  for (size_t i = 0; i < zones.size(); ++i)
    (*records)[i] = zones[i] == PageZone::kData || zones[i] == PageZone::kSecondDevice;
  out.data_records = std::move(records);
  return out;
}

Result<ExploreReport> Explore(const ExploreConfig& config, const ProgressFn& progress) {
  const auto start = Clock::now();
  ExploreReport report;
  report.workload_name = config.workload.name;
  report.policy = engine::PolicyName(config.run.open.policy);
  report.enumerator = sim::FormatEnumeratorSpec(config.enumerator);
  std::shared_ptr<const WorkloadRun> prepared = config.prepared;
  if (!prepared) {
    QCRASH_ASSIGN_OR_RETURN(WorkloadRun fresh, RunWorkload(config.workload, config.run));
    prepared = std::make_shared<const WorkloadRun>(std::move(fresh));
  }
  const WorkloadRun& run = *prepared;
  if (run.engine != "qcrash") {
    report.policy = run.options.qemu ? "qemu/" + run.options.qemu->cache : run.engine;
  }
  if (!run.workload_status.ok()) report.workload_error = run.workload_status.ToString();
  report.stats = run.stats;
  report.allocating_writes = run.allocating_writes;
  report.crash_points = run.timeline->PointCount();
  if (config.io_errors) {
    report.enumerator = "eio";
    QCRASH_RETURN_IF_ERROR(ExploreIoErrors(config, run, start, report));
    report.elapsed_seconds = Seconds(start);
    return report;
  }
  sim::EnumeratorSpec spec = ResolveEnumerator(config.enumerator, run);
  report.states_total = sim::CountCrashStates(*run.timeline, spec);
  if (config.stride_to_cap && config.states_max > 0 && spec.shard_count == 1 &&
      report.states_total > config.states_max) {
    spec.shard_count = (report.states_total + config.states_max - 1) / config.states_max;
    spec.shard_index = config.stride_offset % spec.shard_count;
    report.enumerator = sim::FormatEnumeratorSpec(spec);
    report.states_total = sim::CountCrashStates(*run.timeline, spec);
  }
  const GuestOracle oracle(run);
  StateDeduper deduper(run, oracle, config.recovery);
  StateResult full;
  auto enumerator = sim::CrashEnumerator::Create(*run.timeline, spec);
  sim::CrashState state;
  std::set<std::string> classes;  // invariant/op class of every violation seen
  auto last_progress = start;
  while (enumerator->Next(&state)) {
    if ((config.states_max && report.states_checked >= config.states_max) ||
        (config.budget_seconds > 0 && Seconds(start) > config.budget_seconds &&
         report.states_checked >= config.states_min)) {
      report.budget_exhausted = true;
      break;
    }
    const StateResult* recovered;
    if (config.dedup) {
      recovered = &deduper.Recover(enumerator->point(), state);
    } else {
      full = RecoverState(run, oracle, enumerator->point(), state, config.recovery);
      ++report.recoveries_run;
      recovered = &full;
    }
    const StateResult& result = *recovered;
    ++report.states_checked;
    ++report.verdicts[static_cast<int>(result.verdict)];
    if (config.tally_points)
      TallyPoint(report, state.point, result.verdict, !result.violations.empty());
    if (!result.violations.empty()) {
      Tally(config, result, sim::FormatCrashStateId(state), enumerator->index(),
            OpClassAt(run, state.point), classes, report);
      if (config.stop_at_first_violation) break;
    }
    if (progress && std::chrono::duration<double>(Clock::now() - last_progress).count() > 0.25) {
      report.recoveries_run = config.dedup ? deduper.recoveries_run() : report.recoveries_run;
      report.elapsed_seconds = Seconds(start);
      progress(report);
      last_progress = Clock::now();
    }
  }
  report.skipped_points = enumerator->skipped_points();
  if (config.dedup) report.recoveries_run = deduper.recoveries_run();
  report.elapsed_seconds = Seconds(start);
  return report;
}

Result<StateResult> ReplayState(const Workload& workload, const RunOptions& run_options,
                                const RecoveryOptions& recovery, const std::string& state_id) {
  if (IsIoErrorStateId(state_id)) {
    QCRASH_ASSIGN_OR_RETURN(IoErrorCase c, ParseIoErrorCase(state_id));
    QCRASH_ASSIGN_OR_RETURN(IoErrorOutcome outcome, CheckIoErrorCase(workload, run_options, c));
    if (!outcome.fired)
      return Status::InvalidArgument("state " + state_id + ": the workload makes fewer requests");
    return outcome.result;
  }
  QCRASH_ASSIGN_OR_RETURN(sim::CrashState state, sim::ParseCrashStateId(state_id));
  QCRASH_ASSIGN_OR_RETURN(WorkloadRun run, RunWorkload(workload, run_options));
  if (state.point >= run.timeline->PointCount()) {
    return Status::InvalidArgument("state " + state_id + " names point " +
                                   std::to_string(state.point) + " but the log has " +
                                   std::to_string(run.timeline->PointCount()) + " points");
  }
  const GuestOracle oracle(run);
  return RecoverState(run, oracle, run.timeline->Point(state.point), state, recovery);
}

}  // namespace qcrash::properties
