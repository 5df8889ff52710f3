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
  fuzz::WorkloadCase workload_case = fuzz::DecodeWorkload(reader);
  workload_case.run.open.policy = engine::OrderingPolicy::kOrdered;
  workload_case.run.open.faults.skip_refcount_barrier = true;
  workload_case.workload.image.lazy_refcounts = false;
  const fuzz::Violation violation = fuzz::RunWorkloadCrashCase(workload_case, reader);
  if (violation.found()) fuzz::Fail("(canary, expected) " + violation.property, violation.detail);
  return 0;
}
