// The journal's crash workloads as properties::Workload, and RunCrashCheck:
// RunWorkload, the enumerators, RecoverState (see journal_crash.h).
#include "tests/journal/journal_crash.h"

#include <cstdio>
#include <cstdlib>
#include <limits>

#include "properties/oracle.h"
#include "properties/recovery.h"
#include "properties/runner.h"
#include "sim/enumerators.h"

namespace qcrash::engine::testing {
namespace {

using properties::GuestOp;
using properties::OpKind;

constexpr uint64_t kBlockBytes = 4096;  // the workloads' unit: one 4 KiB cluster

properties::Workload Make(std::string name, uint64_t size_bytes, std::vector<GuestOp> ops) {
  properties::Workload w;
  w.name = std::move(name);
  w.image.size_bytes = size_bytes;
  w.image.cluster_bits = 12;
  w.ops = std::move(ops);
  return w;
}

GuestOp W(uint64_t block) { return {OpKind::kWrite, block * kBlockBytes, kBlockBytes, false}; }
GuestOp F() { return {OpKind::kFlush, 0, 0, false}; }
GuestOp D(uint64_t block) { return {OpKind::kDiscard, block * kBlockBytes, kBlockBytes, false}; }
GuestOp G(uint64_t size_bytes) { return {OpKind::kResize, 0, size_bytes, false}; }

// "I6: replay of ..." for the state's first violation.
std::string FirstViolation(const properties::StateResult& result) {
  const properties::Violation& v = result.violations.front();
  return v.invariant + ": " + v.message;
}

}  // namespace

properties::Workload ThreadScenario() {
  // 4 KiB clusters: one L1 entry covers 2 MiB, so growing past 2 MiB moves the L1.
  return Make("thread-scenario", 1 << 20, {W(0), F(), G(8 << 20), W(1), F(), W(2), F()});
}

properties::Workload MixedWorkload() {
  std::vector<GuestOp> ops;
  for (uint64_t round = 0; round < 3; ++round) {
    for (uint64_t block : {0, 1, 600, 1100, 5}) ops.push_back(W(block + round));
    ops.push_back(F());
    ops.push_back(D(1 + round));
    ops.push_back(W(600));
    ops.push_back(F());
  }
  ops.push_back(G(12 << 20));
  ops.push_back(W(2000));
  ops.push_back(W(1));
  ops.push_back(F());
  return Make("mixed", 6 << 20, std::move(ops));
}

CrashResult RunCrashCheck(const properties::Workload& workload, const CrashConfig& config) {
  CrashResult result;
  properties::RunOptions run_options;
  run_options.open = config.open;
  run_options.junk_free_clusters = config.junk_free_clusters;
  auto run = properties::RunWorkload(workload, run_options);
  if (!run.ok() || !run->workload_status.ok()) {
    result.violations = 1;
    result.first_violation =
        "workload: " + (run.ok() ? run->workload_status : run.status()).ToString();
    return result;
  }
  result.guest_flushes = run->stats.guest_flushes;
  result.device_flushes = run->stats.device_flushes;
  const properties::GuestOracle oracle(*run);
  properties::RecoveryOptions plain;
  properties::RecoveryOptions nested;
  nested.nested_enumerator = "prefix";  // every point of the recovery's own log
  nested.nested_states_max = std::numeric_limits<uint64_t>::max();
  uint64_t best_point = std::numeric_limits<uint64_t>::max();
  size_t best_deviations = std::numeric_limits<size_t>::max();
  for (const std::string& name : config.enumerators) {
    auto spec = sim::ParseEnumeratorSpec(name);
    if (!spec.ok()) {
      ++result.violations;
      if (result.first_violation.empty())
        result.first_violation = name + ": " + spec.status().ToString();
      continue;
    }
    auto enumerator = sim::CrashEnumerator::Create(*run->timeline, *spec);
    sim::CrashState state;
    while (enumerator->Next(&state)) {
      ++result.states;
      const bool sampled = config.nested_every != 0 && result.states % config.nested_every == 1;
      const properties::StateResult recovered = properties::RecoverState(
          *run, oracle, enumerator->point(), state, sampled ? nested : plain);
      if (recovered.violations.empty()) continue;
      ++result.violations;
      std::map<std::string, bool> seen;
      for (const properties::Violation& v : recovered.violations) {
        if (!seen[v.invariant]) ++result.by_invariant[v.invariant];
        seen[v.invariant] = true;
      }
      const std::string line =
          name + " " + sim::FormatCrashStateId(state) + ": " + FirstViolation(recovered);
      if (std::getenv("QCRASH_JOURNAL_DEBUG") && result.violations <= 5)
        std::fprintf(stderr, "violation: %s\n", line.c_str());
      if (result.first_violation.empty()) result.first_violation = line;
      if (state.point < best_point ||
          (state.point == best_point && state.deviations.size() < best_deviations)) {
        best_point = state.point;
        best_deviations = state.deviations.size();
        result.minimal_violation = line;
      }
    }
  }
  return result;
}

}  // namespace qcrash::engine::testing
