// Recovery of one crash state and the invariants checked on it.
//
// Recovery is what a user would do after the power came back, in order:
//  1. check the raw crash image, before anything writes to it: the evidence;
//  2. open it read-write (a dirty image gets its refcounts rebuilt), close;
//  3. repair everything (`check -r all`);
//  4. repair again: nothing found, nothing written (skipped, with step 3,
//     when the raw image checked clean and the open wrote nothing);
//  5. read the guest view back and hold it against the oracle: the touched
//     ranges, the rest of their clusters (zeroes), and, after a refcount
//     rebuild or a crash of recovery, every other range mapped to data.
// Invariants (DESIGN.md): I1 no dangling pointer and I2 no over-reference in
// a raw image that is not marked dirty, and in a journal-dirty one once its
// journal is replayed; I6 replay wrote nothing stale; I3 leaks gone after repair; I4
// flushed data intact; I5 old-or-new; I7 repair converges and is idempotent;
// I8 a crash during recovery recovers too; I10 (ours, the 2017 reservation
// thread) a preallocated cluster keeps its host cluster.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "properties/oracle.h"
#include "properties/runner.h"
#include "sim/crash_model.h"
#include "sim/enumerators.h"

namespace qcrash::properties {

enum class Verdict : uint8_t {
  kClean,             // the raw image checks clean and every guest sector is allowed
  kLeaksOnly,         // the raw image leaks clusters, nothing worse
  kRepaired,          // the raw image was corrupt (or dirty) and recovery fixed it, data intact
  kStaleDataExposed,  // qemu data ordering: a sector shows what its host cluster held before
  kDataLoss,          // acknowledged data gone or foreign data visible
  kUnrecoverable,     // open or repair failed, or did not converge
};
inline constexpr int kVerdictCount = 6;
const char* VerdictName(Verdict verdict);

struct Violation {
  std::string invariant;  // "I1" ... "I10"
  std::string message;
};

struct StateResult {
  Verdict verdict = Verdict::kClean;
  std::vector<Violation> violations;
  uint64_t raw_leaks = 0;
  uint64_t raw_corruptions = 0;
  bool raw_clean = false;                 // the raw image checked clean and is not marked dirty
  bool raw_refcounts_dirty = false;       // the raw image has the dirty bit (lazy refcounts)
  std::vector<std::string> raw_findings;  // the raw check's findings, one line each (at most 20)
};

struct RecoveryOptions {
  // I8: enumerate crash states of the recovery's own writes with this
  // enumerator (empty: I8 not checked for this state).
  std::string nested_enumerator;
  uint64_t nested_states_max = 64;
  // Holds recovery alone to account (I3, I7, I8): for crash states of the
  // unsafe policy, whose raw images are corrupt by design, so that repair
  // meets real corruption and a crash inside it is checked.
  bool recovery_invariants_only = false;
};

// Recovers `state` of `run` and checks every invariant. `point` must be the
// timeline's point of the state (enumerators hand it out).
StateResult RecoverState(const WorkloadRun& run, const GuestOracle& oracle,
                         std::shared_ptr<const sim::CrashPoint> point, const sim::CrashState& state,
                         const RecoveryOptions& options);

// The same recovery (steps 1-5, no nested crash) of an image that no crash
// view produced: the disk after an injected I/O error and a close
// (properties/eio.h). The oracle is asked at `point`; `data_file` is the
// image's external data file, when it has one.
StateResult RecoverImage(BlockDevice& image, const WorkloadRun& run, const GuestOracle& oracle,
                         uint64_t point, BlockDevice* data_file = nullptr);

}  // namespace qcrash::properties
