// The journal's crash workloads and their check, on the crash explorer's
// machinery (properties/): each workload runs with properties::RunWorkload
// under the journal policy (and its variant and bug switches), every state
// of the prefix, drop-one and tear-one enumerators is recovered by
// properties::RecoverState, and a sample of states has its recovery crashed
// again at every nested prefix (I8). RecoverState checks what `qcrash
// explore` checks: I1/I2 on the raw image and, journal-dirty, after replay;
// I3; I4/I5 against the GuestOracle; I6 from the replay report (replay wrote
// into no range a later transaction revoked, nor into guest data); I7.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/options.h"
#include "properties/workload.h"

namespace qcrash::engine::testing {

// Kevin's scenario (QCOW2-NOTES §12.9): an L2 allocation journals an L1
// entry; the L1 grows and the old L1 is freed; the freed cluster is reused
// for guest data; crash before any sync. 4 KiB clusters, 4 KiB writes.
properties::Workload ThreadScenario();
// Writes, rewrites, discards and flushes over several L2 tables with a ring
// small enough to wrap and checkpoint, then a resize and writes past the
// old end.
properties::Workload MixedWorkload();

struct CrashConfig {
  OpenOptions open;  // policy, journal variant, bug switches
  std::vector<std::string> enumerators = {"prefix", "drop-one", "tear-one"};
  // Every Nth state checked (the 1st, the N+1st, ...) also has its recovery
  // crashed at every prefix of the recovery's own writes, then recovered
  // again (I8); 0: no I8.
  uint64_t nested_every = 97;
  // Free clusters filled with junk after the created image
  // (properties::RunOptions::junk_free_clusters). 0, a fresh file end, is
  // what docs/journal-variants.md's table was measured on: with the
  // explorer's 64, scan-only recovery with checksums loses acknowledged
  // data on MixedWorkload (drop-one p74:54=0), an open engine finding.
  uint32_t junk_free_clusters = 0;
};

struct CrashResult {
  uint64_t states = 0;
  uint64_t violations = 0;                       // violating states
  std::map<std::string, uint64_t> by_invariant;  // violating states per invariant
  std::string first_violation;                   // "<enumerator> <state id>: <invariant>: <detail>"
  // The violating state with the smallest point and fewest deviations.
  std::string minimal_violation;
  uint64_t guest_flushes = 0;
  uint64_t device_flushes = 0;
};

CrashResult RunCrashCheck(const properties::Workload& workload, const CrashConfig& config);

}  // namespace qcrash::engine::testing
