// Canary fuzz target, which MUST fail: the workload + crash harness on an
// engine with the skip-refcount-barrier bug switched on (ordered policy). A
// crash state where an L2 entry landed but its cluster's refcount did not
// breaks I1, and the target aborts. If fuzzing this target finds nothing,
// the harness has gone blind (ci/fuzz-smoke.sh then fails the run).
#include <cstddef>
#include <cstdint>

#include "fuzz/workload.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qcrash;
  fuzz::ByteReader reader(data, size);
  fuzz::WorkloadCase workload = fuzz::DecodeWorkload(reader);
  workload.open.policy = engine::OrderingPolicy::kOrdered;
  workload.open.faults.skip_refcount_barrier = true;
  workload.create.lazy_refcounts = false;
  workload.strict_before_repair = true;
  const fuzz::Violation violation = fuzz::RunWorkloadCrashCase(workload, reader);
  if (violation.found()) fuzz::Fail("(canary, expected) " + violation.property, violation.detail);
  return 0;
}
