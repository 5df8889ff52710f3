// Fuzz target: the input decodes to image options (policy, cluster size,
// version, refcount width, cache sizes), up to 16 guest operations and one
// crash state of the simulated disk; recovery runs check, repair and check,
// and the DESIGN.md invariants I1, I2 (strict policies), I4, I5 and I7 are
// asserted. Any violation aborts with the crash-state id.
#include <cstddef>
#include <cstdint>

#include "fuzz/workload.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qcrash;
  fuzz::ByteReader reader(data, size);
  const fuzz::WorkloadCase workload = fuzz::DecodeWorkload(reader);
  const fuzz::Violation violation = fuzz::RunWorkloadCrashCase(workload, reader);
  if (violation.found()) fuzz::Fail(violation.property, violation.detail);
  return 0;
}
