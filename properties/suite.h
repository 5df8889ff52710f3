// The default exploration: every built-in workload, then generated ones
// (properties/generate.h), under every safe policy (or the ones asked for),
// each with the enumerators that suit it, within a time budget. A cell fails
// on a violating crash state, on a workload an engine error stopped, and on a
// clean close that leaves leaks or corruption behind.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "properties/explorer.h"

namespace qcrash::properties {

struct SuiteConfig {
  // Policies to run; empty: every safe one (the journal twice: header
  // bookkeeping and scan-only recovery).
  std::vector<engine::OrderingPolicy> policies;
  engine::BugSwitches bugs;    // switched on in every cell
  double budget_seconds = 20;  // the whole suite; generated workloads fill what the built-ins leave
  uint64_t seed = 1;           // the first generated workload's seed
  uint64_t builtin_states = 2000;   // states per built-in cell and enumerator
  uint64_t generated_states = 400;  // states per generated cell and enumerator
  // States per cell of the data pass (enumerator data:<kDataPointLimit>), a
  // built-in's and a generated workload's: each costs a lookup and the
  // judgement of the data sectors it changes, not a recovery (dedup.h).
  uint64_t data_states = 1 << 20;
  uint64_t generated_data_states = 20000;
  bool skip_costly = false;  // leave out refcount-table-growth (--quick)
  size_t generated_max = 0;  // 0: as many as the budget allows (none without a budget)
  bool dedup = true;         // one recovery per metadata state (properties/dedup.h)
};

struct SuiteCell {
  std::string workload;  // "default", "random:17"
  std::string policy;    // "ordered", "journal/scan"
  std::string enumerator;
  ExploreConfig config;  // what ran (to minimize, replay and write a reproducer)
  ExploreReport report;
  std::string failure;             // beyond violations: "workload stopped: ...", "clean close: ..."
  double finished_at_seconds = 0;  // since the suite started
  bool failed() const { return report.violating_states != 0 || !failure.empty(); }
};

struct SuiteReport {
  std::vector<SuiteCell> cells;
  uint64_t builtin_workloads = 0;
  uint64_t generated_workloads = 0;
  uint64_t states_checked = 0;
  uint64_t recoveries_run = 0;
  double elapsed_seconds = 0;
  bool budget_exhausted = false;      // the built-ins did not all run
  double first_failure_seconds = -1;  // when the first failing cell ended (-1: none)
  size_t failed_cells() const;
};

// Called after each cell, with the report so far.
using SuiteProgressFn = std::function<void(const SuiteReport&)>;

Result<SuiteReport> RunSuite(const SuiteConfig& config, const SuiteProgressFn& progress = {});

// The clean-close invariant on its own: a workload ending in a close, run on
// memory, leaves an image that checks clean (no leak, no corruption).
// Returns "" or what is wrong.
std::string CheckCleanClose(const Workload& workload, const RunOptions& run);

}  // namespace qcrash::properties
