// Fuzz target: the input decodes to a crash-explorer case (policy, journal
// variant, cluster size, version, refcount width, cache and sector sizes, up
// to 16 guest operations; layout in fuzz/workload.h) and one crash state of
// its run; properties::RecoverState recovers the state and checks every
// invariant of DESIGN.md it checks for `qcrash explore` (I1-I7). Any
// violation aborts with the invariant, the crash-state id and the operations.
#include <cstddef>
#include <cstdint>

#include "fuzz/workload.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qcrash;
  fuzz::ByteReader reader(data, size);
  const fuzz::WorkloadCase workload_case = fuzz::DecodeWorkload(reader);
  const fuzz::Violation violation = fuzz::RunWorkloadCrashCase(workload_case, reader);
  if (violation.found()) fuzz::Fail(violation.property, violation.detail);
  return 0;
}
