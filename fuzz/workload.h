// The fuzz input of workload_crash_fuzzer and the canary as a crash-explorer
// case: the front of the input decodes to a properties::Workload (image
// options and guest operations) and properties::RunOptions (policy, journal
// variant, caches, sector size); the rest picks one crash state of its run.
// The state is recovered and checked by properties/ (RunWorkload,
// GuestOracle, RecoverState), the same code as `qcrash explore`.
//
// Input layout (bytes past the end read as zero, so any input decodes):
//   0      policy: bits 0-2 the policy (value % 5: writethrough, ordered,
//          lazy, extent, journal), bits 3-4 L2 cache tables - 1, bits 5-6
//          refcount cache blocks - 1, bit 7 4096-byte device sectors
//   1      format: bits 0-2 cluster bits - 9 (512 B .. 64 KiB), bit 3 v2
//          (not under lazy or journal), bits 4-6 refcount order (value % 7;
//          v2: always 4)
//   2      journal variant (journal policy only): bit 0 commit flag in the
//          descriptor, bit 1 scan-only recovery, bit 2 escape flag instead of
//          a blank terminator, bits 3-4 checksum (crc32, byte sum, none,
//          crc32; scan-only recovery keeps crc32: without checksums it is
//          known unsafe), bits 5-6 ring of 4, 8, 16 or 64 KiB
//   3      disk size: clusters = 4 + value % 29 (at most 2 MiB)
//   4      operation count (value % 17)
//   5..    4 bytes per operation: kind (value % 8: write, write-zeroes,
//          write-zeroes with unmap, discard, flush, write, resize, close),
//          u16 first sector (% the disk's sectors at that point), u8 length
//          (1 + value % (2 * sectors per cluster), clipped to the disk; a
//          resize grows the disk by 1 + u16 % 256 clusters, to at most 8 MiB).
//          A flush with bit 3 of the kind byte set is a snapshot operation
//          on v3 images with refcounts of 16 bits or more, not under the
//          journal policy: the length byte % 3 picks snapshot-create,
//          snapshot-delete or snapshot-revert (a create while none is live).
//          In other cases outside the journal policy it is an amend: the
//          length byte % 9 picks refcount_bits 1 << (value % 7) (0..6), a
//          compat toggle (7: a downgrade sets refcount_bits 16 and lazy
//          refcounts off with it; none under the lazy policy) or a
//          lazy_refcounts toggle (8; not under the lazy policy)
//   then   u64 crash point (% the run's points), one byte per pending sector
//          of that point choosing its version (missing bytes: latest)
#pragma once

#include <cstdint>
#include <string>

#include "fuzz/fuzz_support.h"
#include "properties/runner.h"
#include "properties/workload.h"

namespace qcrash::fuzz {

struct WorkloadCase {
  properties::Workload workload;
  properties::RunOptions run;
};

// Decodes options and operations from the front of the input; the reader is
// left at the crash choices. The workload always passes ValidateWorkload.
WorkloadCase DecodeWorkload(ByteReader& reader);

// Runs the case, builds the crash state the remaining input chooses and
// recovers it (properties::RecoverState: raw check, open with journal replay,
// repair, repair again, guest data against the oracle). `property` is empty
// when every invariant holds, else the first violated invariant; `detail`
// names every violation, the crash state and the operations.
struct Violation {
  std::string property;
  std::string detail;
  bool found() const { return !property.empty(); }
};
Violation RunWorkloadCrashCase(const WorkloadCase& workload_case, ByteReader& crash_choices);

}  // namespace qcrash::fuzz
